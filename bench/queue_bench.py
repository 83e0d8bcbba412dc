"""Queue benchmark: gateway's job queue against RQ, Celery, Huey and django-tasks, 4 workers each.

Run it with ``bench/run --only queue [--quick]``, which starts the gateway and redis-server on
Unix sockets in a temporary folder; this script starts each peer's workers itself (see
:mod:`queue_peers`), measures, and stops them. Every peer is measured the same way:

- jobs are the plain functions of :mod:`queue_tasks`; a job reports to the benchmark with one
  datagram on a Unix socket, so no peer's result store is polled;
- **idle CPU**: with the four workers waiting for jobs (after a warm-up), CPU time of the server
  (gateway or redis-server) and of every worker process over a few seconds, then one pickup
  right after that idle time;
- **pickup latency**: one ``stamp`` job at a time, each after a random 0 to 50 ms pause, from
  just before the producer call to the job's first line (``time.monotonic`` is one clock for all
  processes on Linux); at most a number of pickups or seconds, whichever comes first;
- **enqueue latency**: the workers are frozen (SIGSTOP on their process group, never while one
  of them holds the peer's SQLite write lock), and no-op jobs are enqueued one call at a time,
  each call timed with ``time.perf_counter``;
- **drain throughput**: the workers are thawed (SIGCONT) and the clock runs until the last of
  those jobs reported; the same again with jobs that sleep 10 ms. CPU of the server and of the
  workers and their peak RSS (sampled every 0.1 s) are recorded during each drain.

Output: Markdown tables on stdout, ``bench/results/queue-<date>-<mode>.json`` and the
``queue-<mode>`` section of ``bench/RESULTS.md`` (not with ``--no-write``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import signal
import socket
import sqlite3
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from queue_peers import Endpoints, QueuePeer, all_peers
from queue_procs import Meter, WorkerGroup
from queue_report import markdown
from report import machine_facts, update_results_md, write_json

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


@dataclass(frozen=True)
class Plan:
    """How much a mode measures."""

    noop_jobs: int  # drained no-op jobs (and timed enqueues)
    nap_jobs: int  # drained jobs that sleep 10 ms
    pickups: int  # at most this many pickups per peer ...
    pickup_seconds: float  # ... and for at most this long
    pickup_pause_s: float  # a random pause of 0 to this long before each pickup
    idle_s: float  # the idle CPU window
    warmup_jobs: int  # stamp jobs before anything is measured
    drain_limit_s: float  # a drain is cut (and says so) after this long
    noop_rounds: int  # no-op drains per peer, the fastest kept, while each takes < REPEAT_UNDER_S
    description: str


PLANS = {
    "default": Plan(20_000, 2_000, 300, 40.0, 0.05, 5.0, 20, 420.0, 3, ""),
    "quick": Plan(1_000, 200, 50, 8.0, 0.05, 2.0, 8, 60.0, 2, ""),
    "smoke": Plan(200, 20, 10, 3.0, 0.05, 0.5, 3, 30.0, 1, ""),
}

#: A no-op drain is repeated only while it takes less than this: other work on the machine only
#: ever slows a drain down, so the fastest of a few is the least disturbed, and repeating costs
#: little for the fast peers whose ratio decides the goal (the slow ones would take minutes).
REPEAT_UNDER_S = 10.0


def describe(plan: Plan) -> str:
    return (
        f"{plan.noop_jobs:,} no-op jobs and {plan.nap_jobs:,} jobs of 10 ms, 4 workers; up to "
        f"{plan.pickups} pickups or {plan.pickup_seconds:.0f} s per peer; idle CPU over "
        f"{plan.idle_s:.0f} s; a drain is cut after {plan.drain_limit_s:.0f} s; the fastest of "
        f"up to {plan.noop_rounds} no-op drains per peer (repeated while one takes under "
        f"{REPEAT_UNDER_S:.0f} s)"
    )


# --- the jobs' reports --------------------------------------------------------------------------


class Reports:
    """The datagram socket the jobs report to (see :mod:`queue_tasks`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(path)

    def close(self) -> None:
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)

    def _recv(self, deadline: float) -> bytes | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(256)
        except TimeoutError:
            return None

    def stamp(self, token: str, timeout: float) -> float | None:
        """When the ``stamp`` job with ``token`` started; None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        want = token.encode()
        while (message := self._recv(deadline)) is not None:
            parts = message.split()
            if parts[0] == b"s" and parts[1] == want:
                return float(parts[2])
        return None

    def count(self, kind: bytes, n: int, deadline: float) -> tuple[int, float]:
        """Wait for ``n`` reports of ``kind``; return how many came and when the last did."""
        seen, last = 0, time.monotonic()
        while seen < n and (message := self._recv(deadline)) is not None:
            if message == kind:
                seen += 1
                last = time.monotonic()
        return seen, last

    def discard(self) -> None:
        """Drop reports that are already waiting (late ones from an earlier phase)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(256)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)


# --- one peer -----------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), round(pct / 100 * len(ordered))) - 1)]


def latency_figures(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": statistics.median(ms) if ms else None,
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
    }


def freeze(group: WorkerGroup, sqlite_path: Path | None) -> None:
    """SIGSTOP the workers, but never while one of them holds ``sqlite_path``'s write lock."""
    for _ in range(200):
        group.freeze()
        if sqlite_path is None or not sqlite_path.exists():
            return
        probe = sqlite3.connect(sqlite_path, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            group.thaw()  # a frozen worker holds the lock: let it finish and try again
            time.sleep(0.02)
        finally:
            probe.close()
    raise RuntimeError(f"could not freeze the workers outside a write on {sqlite_path}")


def pickup(peer: QueuePeer, reports: Reports, token: str, timeout: float) -> float:
    sent = time.monotonic()
    peer.enqueue("stamp", token)
    started = reports.stamp(token, timeout)
    if started is None:
        raise RuntimeError(f"stamp job {token} did not run within {timeout:.0f} s")
    return started - sent


def drain(
    peer: QueuePeer,
    group: WorkerGroup,
    reports: Reports,
    job: str,
    count: int,
    plan: Plan,
) -> dict[str, Any]:
    """Enqueue ``count`` ``job`` jobs into frozen workers (timing each call), then drain them."""
    kind = {"noop": b"n", "nap": b"z"}[job]
    freeze(group, peer.sqlite_path)
    reports.discard()
    enqueue_s = []
    loaded = time.monotonic()
    try:
        for _ in range(count):
            sent = time.perf_counter()
            peer.enqueue(job)
            enqueue_s.append(time.perf_counter() - sent)
    finally:
        loaded = time.monotonic() - loaded
        meter = Meter(peer.ep.pids.get(peer.server or ""), group)
        meter.start()
        started = time.monotonic()
        group.thaw()
    done, last = reports.count(kind, count, started + plan.drain_limit_s)
    resources = meter.stop()
    seconds = last - started
    return {
        "jobs": count,
        "done": done,
        "cut": done < count,
        "seconds": seconds,
        "jobs_per_s": done / seconds if seconds > 0 else None,
        "enqueue_all_s": loaded,
        "enqueue": latency_figures(enqueue_s),
        "resources": resources,
    }


def measure(peer: QueuePeer, reports: Reports, plan: Plan, workdir: Path) -> dict[str, Any]:
    """Every figure of one peer (its workers are started and stopped here)."""
    peer.prepare()
    argv, env = peer.worker_command()
    group = WorkerGroup(argv, env, workdir / f"workers-{peer.name}.log", BENCH)
    # bench/run kills the groups listed here if this process dies without stopping them.
    with open(workdir / "worker-groups.txt", "a") as f:
        f.write(f"{group.pgid}\n")
    figures: dict[str, Any] = {"worker_command": " ".join([Path(argv[0]).name, *argv[1:]])}
    try:
        started = time.monotonic()
        pickup(peer, reports, "warm-0", 90)  # workers up: imports, connections, migrations
        figures["start_s"] = time.monotonic() - started
        for i in range(1, plan.warmup_jobs):
            pickup(peer, reports, f"warm-{i}", 30)
        time.sleep(1)
        log(f"  {peer.name}: started in {figures['start_s']:.1f} s; idle for {plan.idle_s:.0f} s")
        meter = Meter(peer.ep.pids.get(peer.server or ""), group)
        meter.start()
        time.sleep(plan.idle_s)
        figures["idle"] = meter.stop()
        figures["pickup_after_idle_ms"] = pickup(peer, reports, "after-idle", 60) * 1000

        latencies: list[float] = []
        deadline = time.monotonic() + plan.pickup_seconds
        while len(latencies) < plan.pickups and time.monotonic() < deadline:
            time.sleep(random.uniform(0, plan.pickup_pause_s))
            latencies.append(pickup(peer, reports, f"p{len(latencies)}", 30))
        figures["pickup"] = latency_figures(latencies)
        figures.update(peer.extra_figures())
        log(
            f"  {peer.name}: pickup p50 {figures['pickup']['p50_ms']:.2f} ms "
            f"({len(latencies)} pickups); enqueueing {plan.noop_jobs:,} no-op jobs"
        )

        rounds = [drain(peer, group, reports, "noop", plan.noop_jobs, plan)]
        log(f"  {peer.name}: {progress(rounds[-1])}")
        while len(rounds) < plan.noop_rounds and rounds[-1]["seconds"] < REPEAT_UNDER_S:
            rounds.append(drain(peer, group, reports, "noop", plan.noop_jobs, plan))
            log(f"  {peer.name}: {progress(rounds[-1])} (round {len(rounds)})")
        figures["noop"] = max(rounds, key=lambda r: r["jobs_per_s"] or 0)
        figures["noop"]["rounds_jobs_per_s"] = [r["jobs_per_s"] for r in rounds]
        figures["nap"] = drain(peer, group, reports, "nap", plan.nap_jobs, plan)
        log(f"  {peer.name}: {progress(figures['nap'])} (10 ms jobs)")
        if not group.alive():
            raise RuntimeError("the workers' command exited during the run")
    finally:
        group.stop()
        peer.close()
    return figures


def progress(d: dict[str, Any]) -> str:
    text = (
        f"enqueue p50 {d['enqueue']['p50_ms']:.3f} ms; drained {d['done']:,} in "
        f"{d['seconds']:.2f} s ({d['jobs_per_s'] or 0:,.0f} jobs/s)"
    )
    return text + (" CUT at the time limit" if d["cut"] else "")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(PLANS), default="default")
    ap.add_argument("--peers", help="comma-separated peer names (default: every available)")
    ap.add_argument("--workdir", type=Path, help="temp folder for files (required to measure)")
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the report of an earlier run's JSON and put it in RESULTS.md",
    )
    ap.add_argument("--gateway-socket")
    ap.add_argument("--redis-socket")
    ap.add_argument(
        "--pid", action="append", default=[], metavar="SERVER=PID", help="gateway, redis"
    )
    ap.add_argument("--no-write", action="store_true", help="print only; no JSON, no RESULTS.md")
    ap.add_argument("--results-dir", type=Path, default=BENCH / "results")
    ap.add_argument("--results-md", type=Path, default=BENCH / "RESULTS.md")
    return ap.parse_args(argv)


def server_facts(ep: Endpoints) -> dict[str, Any] | None:
    if not ep.gateway_socket:
        return None
    from gateway_client import Client

    try:
        with Client(ep.gateway_socket, connect_attempts=2) as client:
            return client.hello()
    except Exception as e:
        log(f"queue_bench: no hello from the gateway: {e}")
        return None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM (from bench/run's cleanup) unwinds like Ctrl-C, so the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.render:
        return render(args)
    if args.workdir is None:
        sys.exit("queue_bench: --workdir is required (bench/run gives it)")
    plan = PLANS[args.mode]
    pids = {k: int(v) for k, v in (p.split("=", 1) for p in args.pid)}
    workdir = args.workdir.resolve()
    ep = Endpoints(
        workdir, str(workdir / "queue-report.sock"), args.gateway_socket, args.redis_socket, pids
    )
    peers = all_peers(ep)
    if args.peers:
        wanted = args.peers.split(",")
        unknown = set(wanted) - {p.name for p in peers}
        if unknown:
            sys.exit(f"queue_bench: unknown peer(s) {sorted(unknown)}")
        peers = [p for p in peers if p.name in wanted]
    skipped = {p.name: r for p in peers if (r := p.skip_reason())}
    for name, reason in skipped.items():
        log(f"queue_bench: skipping {name}: {reason}")

    facts = machine_facts(REPO, workdir, server_facts(ep), ep.redis_socket, None)
    facts["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    facts["packages"].update(_versions("rq", "celery", "kombu", "huey", "django-tasks-db"))
    reports = Reports(ep.report_socket)
    rows, failures = [], {}
    started = time.monotonic()
    try:
        for peer in peers:
            if peer.name in skipped:
                continue
            log(f"queue_bench: {peer.label} [{time.monotonic() - started:.0f} s]")
            try:
                figures = measure(peer, reports, plan, workdir)
            except Exception as e:  # one broken peer must not lose the others' figures
                failures[peer.name] = f"{type(e).__name__}: {e}"
                log(f"queue_bench: {peer.name} FAILED: {failures[peer.name]}")
                continue
            rows.append({"peer": peer.name, "label": peer.label, "server": peer.server, **figures})
    finally:
        reports.close()
    facts["duration_s"] = round(time.monotonic() - started, 1)
    facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    plan_facts = {**asdict(plan), "description": describe(plan)}
    text = markdown(rows, facts, plan_facts, skipped, failures, args.mode)
    print(text)
    if not args.no_write and args.mode != "smoke":
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
        json_path = args.results_dir / f"queue-{stamp}-{args.mode}.json"
        document = {
            "mode": args.mode,
            "plan": plan_facts,
            "machine": facts,
            "skipped": skipped,
            "failures": failures,
            "results": rows,
        }
        write_json(json_path, document)
        update_results_md(args.results_md, f"queue-{args.mode}", text)
        log(f"queue_bench: wrote {json_path.relative_to(REPO)} and {args.results_md.name}")
    return 1 if failures else 0


def render(args: argparse.Namespace) -> int:
    """Rebuild the Markdown of a saved run (after a change to the tables, say)."""
    import json

    doc = json.loads(args.render.read_text())
    text = markdown(
        doc["results"], doc["machine"], doc["plan"], doc["skipped"], doc["failures"], doc["mode"]
    )
    print(text)
    if not args.no_write:
        update_results_md(args.results_md, f"queue-{doc['mode']}", text)
    return 0


def _versions(*names: str) -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
