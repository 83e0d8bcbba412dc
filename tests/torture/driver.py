"""The crash torture's cycles: load, a SIGKILL at a random moment, restart, check; and at the end
a restore from the replica compared with the primary.

One cycle:

1. start the load processes (:mod:`.load`): direct main-database writers, cache clients and
   enqueuers; the job workers run across cycles and are (re)started when not running;
2. at a random moment SIGKILL a victim: the gateway, the workers (the whole group, or one worker
   process that its supervisor replaces), both, or the gateway twice (again while it starts up);
   sometimes also a load process, in the middle of whatever it was doing;
3. after a random downtime restart what was killed and let the load go on to the cycle's end;
4. stop the load (SIGTERM: each finishes its operation and journals the outcome) and check:
   ``PRAGMA integrity_check`` of the three databases and the journals against them
   (:mod:`.checker`); every ``restore_every`` cycles also ``replica.sync``, a restore of main and
   cache at the synced transaction, and a row-by-row comparison with the primary.

At the end the remaining jobs are drained, the workers stopped, all three databases checked and
restored from the replica into an empty folder and compared; then the primary is stopped and a
fresh gateway in an empty folder restores all three on boot, which must equal the primary too.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway_client import Client
from gateway_harness import GatewayError, GatewayProcess, build_dir, gateway_binary
from replication_harness import DJANGO_PROJECT, dump, migrate, restore, status, sync

from .checker import CacheChecker, MainChecker, Problem, QueueChecker, integrity, sha256_file
from .processes import REPO, LoadProcess, WorkerGroup, child_env
from .values import MAIN_SCHEMA, QUEUE, counter_key

DATABASES = ("main", "cache", "queue")
VICTIMS = ("gateway", "workers", "both", "gateway-twice")
VICTIM_WEIGHTS = (35, 25, 30, 10)
UNFINISHED_STATES = ("SCHEDULED", "READY", "RUNNING")
# A SIGKILL'd gateway does not release the replica lease, so its restart must wait for the lease
# to expire (docs/deploying.md, "When the old machine dies").
START_ARGS = ("--lease-wait", "60s")


@dataclass
class Settings:
    """How big and how long a torture run is."""

    cycles: int = 5
    seconds: float = 3.0  # load time per cycle
    writers: int = 3
    django_writers: int = 1  # Django ORM writers (tests/django_project); 0 without Django
    cache_clients: int = 2
    enqueuers: int = 2
    worker_groups: int = 2
    worker_concurrency: int = 2
    lease_seconds: float = 2.0
    enqueue_pause: float = 0.03
    restore_every: int = 1  # replica check of main and cache every N cycles (0: only at the end)
    max_downtime: float = 0.5
    # The replica lease: a SIGKILL'd gateway does not release it, and its restart waits until it
    # expires, so it bounds how long the gateway is down after a kill.
    lease_ttl: str = "2s"
    min_load_after_restart: float = 1.0  # seconds of load on a restarted gateway, at least
    seed: int = 20261121
    folder: Path | None = None  # default: a new folder under /tmp (sockets need short paths)
    keep: bool = False  # keep the folder even when everything passed
    # Run a copy of build/gateway (and its libsqlite3.so.0) taken at the start, so that a rebuild
    # during a long run does not change the binary under test halfway.
    copy_binary: bool = True


@dataclass
class Report:
    """What a run did and found; ``problems`` empty means every guarantee held."""

    settings: dict[str, Any] = field(default_factory=dict)
    cycles: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, int] = field(default_factory=dict)
    unknown_outcomes: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, Any] = field(default_factory=dict)
    corrupt_databases: int = 0
    lost_acknowledged: int = 0
    jobs_completed_twice: int = 0
    replica_checks: int = 0
    final_replica: dict[str, Any] = field(default_factory=dict)
    gateway_log: dict[str, int] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    problem_counts: Counter[str] = field(default_factory=Counter)
    replica_generations: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)
    folder: str = ""

    def add(self, problems: list[Problem], cycle: int | str) -> None:
        for p in problems:
            self.problem_counts[p.kind] += 1
            if p.kind == "corrupt_database":
                self.corrupt_databases += 1
            elif p.kind.startswith("lost_"):
                self.lost_acknowledged += 1
            elif p.kind == "completed_twice":
                self.jobs_completed_twice += 1
            if len(self.problems) < 200:
                self.problems.append({"cycle": str(cycle), "kind": p.kind, "detail": p.detail})

    def to_json(self) -> str:
        # Not asdict(): it rebuilds a Counter from (key, value) pairs, counting the pairs.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps(data, indent=2, default=str)

    def summary(self) -> str:
        a = self.acknowledged
        lines = [
            f"cycles: {self.cycles} in {self.duration_seconds:.0f} s ({self.folder})",
            "kills: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kills.items())),
            f"acknowledged and checked: main transactions {a.get('main_transactions', 0)} "
            f"direct + {a.get('django_transactions', 0)} Django ORM (rows live at the end "
            f"{a.get('main_rows', 0)} + {a.get('django_rows', 0)}), cache writes "
            f"{a.get('cache_writes', 0)}, cache reads {a.get('cache_reads', 0)}, enqueued jobs "
            f"{a.get('jobs', 0)}, completions logged {a.get('completions', 0)}",
            "unknown outcomes (in flight at a kill): "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.unknown_outcomes.items())),
            "jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(self.jobs.items())),
            f"replica checks: {self.replica_checks} per-cycle restores; final: "
            f"{json.dumps(self.final_replica)}",
            f"corrupt databases: {self.corrupt_databases}; lost acknowledged writes: "
            f"{self.lost_acknowledged}; jobs completed twice: {self.jobs_completed_twice}",
            "replica generations started: " + ", ".join(
                f"{k} {v}" for k, v in sorted(self.replica_generations.items())),
            "gateway log warnings/errors: " + (", ".join(
                f"{k} {v}" for k, v in sorted(self.gateway_log.items())) or "none"),
            "problems: " + (", ".join(f"{k} {v}" for k, v in sorted(self.problem_counts.items()))
                            or "none"),
        ]
        lines += [f"  [{p['cycle']}] {p['kind']}: {p['detail']}" for p in self.problems[:20]]
        return "\n".join(lines)


class Torture:
    """One torture run in one folder. :meth:`run` returns the :class:`Report`."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.s = settings
        self.log = log
        self.rng = random.Random(settings.seed)
        self.report = Report(settings={k: str(v) for k, v in asdict(settings).items()})
        self.own_folder = settings.folder is None
        self.folder = settings.folder or Path(tempfile.mkdtemp(prefix="torture-", dir="/tmp"))
        for sub in ("journal", "runs", "workers", "logs", "restores"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.report.folder = str(self.folder)
        self.gateway = GatewayProcess(self.folder / "primary", {
            "databases": {"cache": {"max_size": None}},  # no budget: nothing may be evicted
            "replica": {"url": "file://replica", "sync_interval": "200ms",
                        "lease_ttl": self.s.lease_ttl},
        })
        self.env: dict[str, str] = {}
        self.workers: list[WorkerGroup] = []
        self.loads: list[LoadProcess] = []
        journal = self.folder / "journal"
        self.main_checker = MainChecker(journal, self.gateway.db_path("main"))
        self.django_checker = MainChecker(journal, self.gateway.db_path("main"), "django")
        self.cache_checker = CacheChecker(journal, self.s.cache_clients)
        self.queue_checker = QueueChecker(journal, self.folder / "runs", self.folder / "workers")

    # --- the run ----------------------------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        saved_bin = os.environ.get("GATEWAY_BIN")
        try:
            if self.s.copy_binary:
                os.environ["GATEWAY_BIN"] = str(self._copy_binary())
            self.report.machine = machine()
            self._setup()
            for cycle in range(1, self.s.cycles + 1):
                self._cycle(cycle)
                self.report.cycles = cycle
                if self.report.corrupt_databases:
                    self.log("stopping early: a database is corrupt")
                    break
            self._finish()
        except (GatewayError, AssertionError, OSError) as e:
            self.report.add([Problem("harness_failure", f"{type(e).__name__}: {e}"[:4000])],
                            self.report.cycles + 1)
        finally:
            self._teardown()
            if saved_bin is None:
                os.environ.pop("GATEWAY_BIN", None)
            else:
                os.environ["GATEWAY_BIN"] = saved_bin
            self.report.duration_seconds = time.monotonic() - started
            self._gateway_log_summary()
            (self.folder / "report.json").write_text(self.report.to_json())
        if self.own_folder and not self.s.keep and not self.report.problems:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.s.copy_binary:
            shutil.rmtree(self.folder / "bin", ignore_errors=True)  # 50 MB; its hash is recorded
        return self.report

    def _copy_binary(self) -> Path:
        """Copy the gateway and the SQLite library beside it into the run's folder."""
        folder = self.folder / "bin"
        folder.mkdir(exist_ok=True)
        shutil.copy2(gateway_binary(), folder / "gateway")
        shutil.copy2((build_dir() / "libsqlite3.so.0").resolve(), folder / "libsqlite3.so.0")
        return folder / "gateway"

    def _setup(self) -> None:
        self.env = child_env(self.folder, build_dir())
        main = self.gateway.db_path("main")
        self.django_env = child_env(self.folder, build_dir(), {
            "DJANGO_SETTINGS_MODULE": "testsite.settings",
            "GATEWAY_TEST_DB": str(main),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(DJANGO_PROJECT)]),
        })
        self.workers = [
            WorkerGroup(i, self.gateway.socket_path, self.folder, self.env,
                        self.s.worker_concurrency, self.s.lease_seconds)
            for i in range(self.s.worker_groups)
        ]
        self.gateway.start(timeout=60, extra_args=START_ARGS)
        # The writers' tables, created as a Django migration would create its tables.
        from .load import connect_like_django

        connection = connect_like_django(str(main))
        try:
            connection.execute("BEGIN IMMEDIATE")
            for statement in MAIN_SCHEMA:
                connection.execute(statement)
            connection.execute("COMMIT")
        finally:
            connection.close()
        if self.s.django_writers:
            migrate(main)  # Django's own tables and the Note model's
        with Client(self.gateway.socket_path) as client:
            for slot in range(self.s.cache_clients):
                client.call("cache.set", key=counter_key(slot), value=0)
        for group in self.workers:
            group.start()

    def _start_loads(self, cycle: int) -> None:
        common = ["--cycle", str(cycle)]
        self.loads = []
        for slot in range(self.s.writers):
            self.loads.append(LoadProcess(
                "writer", slot, [*common, "--seed", str(self.rng.randrange(2**32)),
                                 "--db", str(self.gateway.db_path("main"))],
                self.folder, self.env))
        for slot in range(self.s.django_writers):
            self.loads.append(LoadProcess(
                "django", slot, [*common, "--seed", str(self.rng.randrange(2**32))],
                self.folder, self.django_env))
        for slot in range(self.s.cache_clients):
            self.loads.append(LoadProcess(
                "cache", slot, [*common, "--seed", str(self.rng.randrange(2**32)),
                                "--socket", self.gateway.socket_path], self.folder, self.env))
        for slot in range(self.s.enqueuers):
            self.loads.append(LoadProcess(
                "enqueue", slot, [*common, "--seed", str(self.rng.randrange(2**32)),
                                  "--socket", self.gateway.socket_path,
                                  "--pause", str(self.s.enqueue_pause)], self.folder, self.env))

    def _cycle(self, cycle: int) -> None:
        rng = self.rng
        self._start_loads(cycle)
        for group in self.workers:
            if not group.running():
                group.start()
        # Python takes a while to start on a busy machine; the cycle's time counts from when
        # every load process runs.
        deadline = time.monotonic() + 60
        while not all(load.started(cycle) for load in self.loads):
            if time.monotonic() > deadline:
                raise AssertionError(f"load processes of cycle {cycle} did not start in 60 s")
            time.sleep(0.02)
        began = time.monotonic()
        self.log_event(f"cycle {cycle} begins")
        kill_at = began + rng.uniform(0.25, 0.85) * self.s.seconds
        time.sleep(max(0.0, kill_at - time.monotonic()))
        victim = rng.choices(VICTIMS, VICTIM_WEIGHTS)[0]
        what = self._kill(victim, rng)
        # At least a second of load on the restarted gateway, however long the restart took.
        end = max(began + self.s.seconds, time.monotonic() + self.s.min_load_after_restart)
        time.sleep(max(0.0, end - time.monotonic()))
        loaded = time.monotonic() - began
        for load in self.loads:
            load.terminate()  # all at once; stop() below waits for each
        stopped = [load.stop(20.0) for load in self.loads]
        hung = [f"{load.kind}-{load.slot}" for load, code in zip(self.loads, stopped, strict=True)
                if code is None]
        problems = [Problem("load_hung", f"{name} did not stop within 20 s of SIGTERM")
                    for name in hung]
        checking = time.monotonic()
        problems += self._check(cycle)
        self.report.add(problems, cycle)
        self._totals()
        self.log(f"cycle {cycle}/{self.s.cycles}: {what}; load {loaded:.1f} s, "
                 f"checks {time.monotonic() - checking:.1f} s; "
                 f"main {self.main_checker.committed}+{self.django_checker.committed} txns, "
                 f"cache {self.cache_checker.acked_writes} writes, "
                 f"jobs {len(self.queue_checker.acked)}; problems {len(problems)}"
                 + "".join(f"\n  {p.kind}: {p.detail}" for p in problems[:5]))

    def _kill(self, victim: str, rng: random.Random) -> str:
        """SIGKILL ``victim`` (and maybe a load process), wait a random downtime, restart."""
        done = []
        gateway_down = victim in ("gateway", "both", "gateway-twice")
        if gateway_down:
            self.gateway.kill()
            self.report.kills["gateway"] += 1
            done.append("gateway")
        if victim in ("workers", "both"):
            if victim == "workers" and rng.random() < 0.5:
                if rng.choice(self.workers).kill_one_child(rng):
                    self.report.kills["worker_process"] += 1
                    done.append("a worker process")
            else:
                for group in self.workers:
                    group.kill()
                self.report.kills["worker_group"] += len(self.workers)
                done.append("all workers")
        for kind, chance in (("writer", 0.3), ("django", 0.15), ("cache", 0.15),
                             ("enqueue", 0.15)):
            candidates = [load for load in self.loads if load.kind == kind]
            if candidates and rng.random() < chance:
                load = rng.choice(candidates)
                load.kill()
                self.report.kills[f"load_{kind}"] += 1
                done.append(f"{kind}-{load.slot}")
        self.log_event(f"killed {' + '.join(done)}")
        downtime = rng.uniform(0, self.s.max_downtime)
        time.sleep(downtime)
        if gateway_down:
            if victim == "gateway-twice":
                self._start_gateway(wait=False)
                time.sleep(rng.uniform(0, 0.2))
                self.gateway.kill()
                self.report.kills["gateway_while_starting"] += 1
                done.append("the gateway again while starting")
            self._start_gateway()
            self.log_event(f"gateway {self.gateway.pid} ready")
        for group in self.workers:
            if not group.running():
                group.start()
        return f"killed {' + '.join(done) or 'nothing'} (down {downtime:.2f} s)"

    def log_event(self, text: str) -> None:
        """A timestamped line in the run's events.log (to line up with the processes' logs)."""
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        with open(self.folder / "events.log", "a") as f:
            f.write(f"{stamp} {text}\n")

    def _start_gateway(self, wait: bool = True) -> None:
        """Start the gateway again after a kill (it reclaims the replica lease it held)."""
        self.gateway.start(wait=wait, timeout=60, extra_args=START_ARGS)

    # --- checks -----------------------------------------------------------------------------------

    def _check(self, cycle: int) -> list[Problem]:
        problems = self._local_checks()
        if self.s.restore_every and cycle % self.s.restore_every == 0:
            problems += self._replica_check(("main", "cache"), f"cycle-{cycle}")
            self.report.replica_checks += 1
        return problems

    def _local_checks(self) -> list[Problem]:
        """integrity_check of the three databases, then every journal against them."""
        problems = []
        for db in DATABASES:
            result = integrity(self.gateway.db_path(db))
            if result != "ok":
                problems.append(Problem("corrupt_database", f"{db}: {result[:2000]}"))
        problems += self.main_checker.check()
        problems += self.django_checker.check()
        with Client(self.gateway.socket_path, timeout=60) as client:
            problems += self.cache_checker.check(client)
            problems += self.queue_checker.check(client)
        return problems

    def _consistent_point(self, dbs: tuple[str, ...]) -> tuple[dict[str, int], dict[str, Any]]:
        """Sync, read the primaries, sync again: equal txids mean the content is that state."""
        for _ in range(20):
            sync(self.gateway, timeout=60)
            first = status(self.gateway)
            content = {db: dump(self.gateway.db_path(db)) for db in dbs}
            sync(self.gateway, timeout=60)
            second = status(self.gateway)
            txids = {db: second["databases"][db]["last_txid"] for db in dbs}
            if txids == {db: first["databases"][db]["last_txid"] for db in dbs}:
                return txids, content
            time.sleep(0.2)
        raise AssertionError(f"{dbs} kept changing with every load process stopped")

    def _replica_check(self, dbs: tuple[str, ...], label: str) -> list[Problem]:
        txids, expected = self._consistent_point(dbs)
        problems = [Problem("replica_error", f"{label} {db}: {d['last_error']}")
                    for db, d in status(self.gateway)["databases"].items() if d["last_error"]]
        for db in dbs:
            out = self.folder / "restores" / label / f"{db}.sqlite3"
            try:
                done = restore(self.gateway, db, out, txid=txids[db])
            except AssertionError as e:
                problems.append(Problem("restore_failed", f"{label} {db}: {e}"[:3000]))
                continue
            problems += short_restore(f"{label} {db}", txids[db], done)
            problems += compare(f"{label} {db} restored at txid {txids[db]}", expected[db],
                                dump(out))
        if not problems:
            shutil.rmtree(self.folder / "restores" / label, ignore_errors=True)
        return problems

    def _totals(self) -> None:
        main, cache, queue = self.main_checker, self.cache_checker, self.queue_checker
        dj = self.django_checker
        self.report.acknowledged = {
            "main_transactions": main.committed,
            "main_rows": main.rows_checked,
            "django_transactions": dj.committed,
            "django_rows": dj.rows_checked,
            "cache_writes": cache.acked_writes,
            "cache_reads": cache.acked_reads,
            "jobs": len(queue.acked),
            "completions": sum(len(a) for a in queue.completions.values()),
        }
        self.report.unknown_outcomes = {
            "main_applied": main.unknown_applied + dj.unknown_applied,
            "main_not_applied": main.unknown_not_applied + dj.unknown_not_applied,
            "cache": cache.unknown,
            "enqueue": queue.unknown,
            **{f"cache_{k}": v for k, v in cache.unknown_reasons.items()},
            **{f"enqueue_{k}": v for k, v in queue.unknown_reasons.items()},
        }
        self.report.refused = {
            **{f"main_{k}": v for k, v in main.rolled_back.items()},
            **{f"django_{k}": v for k, v in dj.rolled_back.items()},
            **{f"cache_{k}": v for k, v in cache.refused.items()},
            **{f"enqueue_{k}": v for k, v in queue.refused.items()},
        }
        self.report.jobs = {
            **{f"state_{k}": v for k, v in queue.states.items()},
            "rerun_after_worker_death": queue.rerun_jobs(),
            "runs": sum(len(r) for r in queue.runs.values()),
            **{f"worker_logged_{k}": v for k, v in queue.outcomes.items()},
        }

    # --- the end ----------------------------------------------------------------------------------

    def _finish(self) -> None:
        self.log("draining the queue")
        with Client(self.gateway.socket_path, timeout=60) as client:
            deadline = time.monotonic() + 180
            while True:
                left = self.queue_checker.unfinished(client)
                states = client.call("queue.stats")["queues"].get(QUEUE, {}).get("states", {})
                busy = sum(states.get(s, 0) for s in UNFINISHED_STATES)
                if not left and not busy:
                    break
                if time.monotonic() > deadline:
                    self.report.add([Problem("jobs_not_finished",
                                             f"{len(left)} acknowledged jobs unfinished after "
                                             f"180 s, e.g. {left[:5]}; states {states}")], "end")
                    break
                time.sleep(0.5)
        for group in self.workers:
            if group.stop(30) is None:
                self.report.add([Problem("worker_hung", f"worker {group.index} ignored SIGTERM")],
                                "end")
        problems = self._local_checks()
        self._totals()
        self.log("final restore from the replica into an empty folder")
        txids, expected = self._consistent_point(DATABASES)
        final: dict[str, Any] = {"txids": txids}
        out_dir = self.folder / "restores" / "final"
        for db in DATABASES:
            out = out_dir / f"{db}.sqlite3"
            try:
                done = restore(self.gateway, db, out, txid=txids[db])
            except AssertionError as e:
                problems.append(Problem("restore_failed", f"final {db}: {e}"[:3000]))
                continue
            problems += short_restore(f"final {db}", txids[db], done)
            got = dump(out)
            problems += compare(f"final {db}", expected[db], got)
            final[db] = {table: len(rows) for table, rows in got.items()}
        self.log("stopping the primary; restore on boot into a fresh folder")
        code = self.gateway.stop(timeout=60)
        if code != 0:
            problems.append(Problem("gateway_exit", f"SIGTERM'd primary exited with {code}"))
        after_stop = {db: dump(self.gateway.db_path(db)) for db in DATABASES}
        fresh = GatewayProcess(self.folder / "reboot", {
            "databases": {"cache": {"max_size": None}},
            "replica": {"url": f"file://{self.gateway.folder / 'replica'}",
                        "sync_interval": "200ms", "lease_ttl": self.s.lease_ttl},
        })
        try:
            fresh.start(timeout=60, extra_args=START_ARGS)
            log = fresh.log_text()
            for db in DATABASES:
                if f"event=restore_done db={db}" not in log:
                    problems.append(Problem("restore_failed", f"on boot: no restore_done for "
                                                              f"{db}:\n{log[-3000:]}"))
            for db in DATABASES:
                problems += compare(f"restored on boot {db}", after_stop[db],
                                    dump(fresh.db_path(db)))
            fresh.stop(timeout=60)
        except GatewayError as e:
            problems.append(Problem("restore_failed", f"restore on boot: {e}"[:3000]))
        finally:
            fresh.kill()
        # Temporary files of uploads cut short by the kills, left in the replica.
        final["replica_temp_files_left"] = sum(
            1 for _ in (self.gateway.folder / "replica").rglob("*.tmp-*"))
        final["restore_on_boot"] = "equal" if not any(
            p.detail.startswith("restored on boot") for p in problems) else "DIFFERENT"
        self.report.final_replica = final
        self.report.add(problems, "end")

    def _teardown(self) -> None:
        for load in self.loads:
            load.kill()
        for group in self.workers:
            if group.running():
                group.kill()
        self.gateway.kill()

    def _gateway_log_summary(self) -> None:
        counts: Counter[str] = Counter()
        generations: Counter[str] = Counter()
        for line in self.gateway.log_text().splitlines():
            fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
            if fields.get("level") in ("warn", "error"):
                counts[f"{fields['level']}:{fields.get('event', '?')}"] += 1
            if fields.get("event") == "replica_new_generation":
                reason = line.split(": ", 1)[1].rstrip('"') if ": " in line else "?"
                generations[f"{fields.get('db')} ({reason})"] += 1
        self.report.gateway_log = dict(counts)
        self.report.replica_generations = dict(generations)


def short_restore(label: str, asked: int, done: dict[str, Any]) -> list[Problem]:
    """A restore that succeeded but stopped before the transaction it was asked for."""
    if done["txid"] == asked:
        return []
    return [Problem("restore_short", f"{label}: asked for transaction {asked}, the restore "
                                     f"exited 0 at transaction {done['txid']}")]


def compare(label: str, expected: dict[str, list[Any]], got: dict[str, list[Any]]
            ) -> list[Problem]:
    """Row-by-row equality of two dumps (every table), as a problem per differing table."""
    problems = []
    for table in sorted(set(expected) | set(got)):
        a, b = expected.get(table), got.get(table)
        if a == b:
            continue
        if a is None or b is None:
            where = "the restore" if a is None else "the primary"
            problems.append(Problem("replica_mismatch", f"{label}: table {table} only in {where}"))
            continue
        missing = [r for r in a if r not in b]
        extra = [r for r in b if r not in a]
        problems.append(Problem("replica_mismatch",
                                f"{label}: {table}: {len(a)} rows in the primary, {len(b)} "
                                f"restored; missing {repr(missing[:3])[:600]}; unexpected "
                                f"{repr(extra[:3])[:600]}"))
    return problems


def machine() -> dict[str, str]:
    """Where and with what the run happened (for the record in docs/reliability.md)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    binary = gateway_binary()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": commit,
        "gateway_binary": f"{binary} sha256:{sha256_file(binary)[:16]}",
    }
