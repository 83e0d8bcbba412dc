"""``python -m tests.torture``: run the crash torture and print its report.

Run from the repository root (``build/gateway`` must exist, see scripts/setup):

    python -m tests.torture                       # quick: 5 cycles of 3 s
    python -m tests.torture --long                # 100 cycles of 5 s
    python -m tests.torture --cycles 20 --seconds-per-cycle 4 --keep --json report.json

Exits 0 when every guarantee held, 1 otherwise. The process re-executes itself with the gateway's
build folder on ``LD_LIBRARY_PATH`` when Python loaded an older SQLite: the checker reads the
gateway's databases, and SQLite before 3.51.3 has the WAL-reset bug.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from gateway_harness import build_dir

from .driver import Settings, Torture

MIN_SQLITE = (3, 51, 3)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.torture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true",
                        help="the long mode: 100 cycles of 5 s (explicit options still win)")
    parser.add_argument("--cycles", type=int, help="crash cycles (quick 5, long 100)")
    parser.add_argument("--seconds-per-cycle", type=float, help="load time per cycle (3; long 5)")
    parser.add_argument("--writers", type=int, default=3, help="direct main-database writers")
    parser.add_argument("--django-writers", type=int, default=1,
                        help="Django ORM writers (tests/django_project); 0 to leave Django out")
    parser.add_argument("--cache-clients", type=int, default=2)
    parser.add_argument("--enqueuers", type=int, default=2)
    parser.add_argument("--worker-groups", type=int, default=2,
                        help="python -m gateway_client.worker supervisors")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--lease-seconds", type=float, default=2.0)
    parser.add_argument("--restore-every", type=int, default=1,
                        help="restore main and cache from the replica every N cycles "
                        "(0: only at the end)")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--folder", type=Path, help="work folder (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder after a pass")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if sqlite3.sqlite_version_info < MIN_SQLITE and not os.environ.get("TORTURE_REEXEC"):
        env = {**os.environ, "TORTURE_REEXEC": "1",
               "LD_LIBRARY_PATH": os.pathsep.join(
                   p for p in (str(build_dir()), os.environ.get("LD_LIBRARY_PATH")) if p)}
        os.execve(sys.executable, [sys.executable, "-m", "tests.torture", *sys.argv[1:]], env)
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        sys.exit(f"Python loaded SQLite {sqlite3.sqlite_version}; the torture needs >= 3.51.3 "
                 f"(LD_LIBRARY_PATH={build_dir()})")
    settings = Settings(
        cycles=args.cycles or (100 if args.long else 5),
        seconds=args.seconds_per_cycle or (5.0 if args.long else 3.0),
        writers=args.writers,
        django_writers=args.django_writers,
        cache_clients=args.cache_clients,
        enqueuers=args.enqueuers,
        worker_groups=args.worker_groups,
        worker_concurrency=args.worker_concurrency,
        lease_seconds=args.lease_seconds,
        restore_every=args.restore_every,
        seed=args.seed,
        folder=args.folder,
        keep=args.keep,
    )

    def log(text: str) -> None:
        print(text, flush=True)

    report = Torture(settings, log).run()
    print(report.summary())
    if args.json:
        args.json.write_text(report.to_json())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
