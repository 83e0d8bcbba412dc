"""Replication benchmark: lag, the write throughput it costs, restore time, idle store requests.

Run from the repository root (after ``scripts/setup``)::

    LD_LIBRARY_PATH=build .venv/bin/python bench/replication_bench.py            # full run
    LD_LIBRARY_PATH=build .venv/bin/python bench/replication_bench.py --quick    # a smaller one

It starts ``build/gateway`` (or ``$GATEWAY_BIN``) on temporary folders with a ``file://``
replica, measures, prints a Markdown table and stops everything it started. Writers use Python's
``sqlite3`` set up as ``gateway_client.django.database()`` sets up Django's connections (WAL,
``synchronous=NORMAL``, ``BEGIN IMMEDIATE``, busy timeout 5 s, ``wal_autocheckpoint=0``); with
``LD_LIBRARY_PATH=build`` that is the gateway's SQLite 3.53.

- **sync latency**: one writer commits a row every 20 ms; every so often the benchmark commits
  its own row and calls ``replica.sync`` at once: time from that COMMIT returning to the sync's
  answer (the row is then in the replica).
- **natural lag**: the same steady writer, nobody asking for syncs; ``replica.status`` is polled
  every 10 ms. A commit's lag is from its COMMIT returning to the first poll whose ``last_txid``
  covers it (it is then in the replica; the poll adds up to 10 ms). ``last_txid_at`` (when the
  gateway read the transaction from the WAL) minus the commit time is shown as the read lag.
  Goal: p99 <= sync_interval + 250 ms.
- **write throughput**: 4 processes, each committing small transactions (insert a ~200 B row,
  update a counter row) to the main database as fast as they can, for a fixed time; gateway
  without a ``[replica]`` (it checkpoints on its own) vs with one. Rounds alternate between the
  two; the best round of each is reported. Goal: under 5% lower with replication.
- **restore time**: a main database of 1 GiB (100 MiB with ``--quick``) built from random 4 MiB
  blobs (incompressible: the worst case for zstd) in a few transactions, replicated, then
  ``gateway restore`` timed twice: from the first generation (an empty snapshot plus segments)
  and from a full snapshot (a new generation, forced by a foreign ``wal_checkpoint(TRUNCATE)``).
- **idle requests**: a gateway whose databases see no writes; ``replica.status``
  ``requests.count`` over 30 s (10 s with ``--quick``), extrapolated to an hour. The replica
  lease (``lease_ttl`` 30 s, renewed every third of it) is the only expected traffic.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


# --- processes ------------------------------------------------------------------------------------


def gateway_binary() -> Path:
    return Path(os.environ.get("GATEWAY_BIN") or REPO / "build" / "gateway")


class Gateway:
    """A gateway on its own folder; ``replica`` is a ``[replica]`` table body or None."""

    def __init__(self, folder: Path, replica: dict[str, str] | None) -> None:
        self.folder = folder
        (folder / "db").mkdir(parents=True, exist_ok=True)
        text = (
            '[server]\nsocket = "gateway.sock"\n'
            '[databases.main]\npath = "db/app.sqlite3"\n'
            '[databases.cache]\npath = "db/cache.sqlite3"\n'
            '[databases.queue]\npath = "db/queue.sqlite3"\n'
        )
        if replica:
            text += "[replica]\n" + "".join(f'{k} = "{v}"\n' for k, v in replica.items())
        self.config = folder / "gateway.toml"
        self.config.write_text(text)
        self.main = folder / "db" / "app.sqlite3"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Any = None

    def start(self) -> Gateway:
        from gateway_client import Client

        with open(self.folder / "gateway.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(gateway_binary()), "--config", str(self.config)],
                stdout=log,
                stderr=log,
                cwd=self.folder,
            )
        self.client = Client(str(self.folder / "gateway.sock"), timeout=600, connect_attempts=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                return self
            except Exception:  # noqa: BLE001 - not up yet; retried until the deadline
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError((self.folder / "gateway.log").read_text()) from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def sync(self) -> None:
        assert self.client.request("replica.sync", timeout=600) is True

    def status(self) -> dict[str, Any]:
        return self.client.request("replica.status")

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(gateway_binary()), args[0], "--config", str(self.config), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
        )


def writer_connection(path: Path) -> sqlite3.Connection:
    """A connection set up as gateway_client.django.database() sets up Django's."""
    c = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "wal_autocheckpoint=0",
        "busy_timeout=5000",
        "mmap_size=134217728",
        "journal_size_limit=67108864",
        "cache_size=-32768",
        "temp_store=MEMORY",
        "foreign_keys=ON",
    ):
        c.execute(f"PRAGMA {pragma}")
    return c


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# --- lag ------------------------------------------------------------------------------------------


class SteadyWriter(threading.Thread):
    """Commits one row every ``period`` seconds; records (wall time after COMMIT) per commit."""

    def __init__(self, db: Path, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.period = period
        self.commits: list[float] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def commit_one(self, c: sqlite3.Connection) -> float:
        with self.lock:  # one commit at a time, so commit k is transaction base + k
            c.execute("BEGIN IMMEDIATE")
            c.execute(
                "INSERT INTO lag (at, payload) VALUES (?, randomblob(200))",
                (time.time(),),
            )
            c.execute("COMMIT")
            at = time.time()
            self.commits.append(at)
            return at

    def run(self) -> None:
        c = writer_connection(self.db)
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.commit_one(c)
            next_at += self.period
            time.sleep(max(0.0, next_at - time.monotonic()))
        c.close()


def measure_lag(root: Path, sync_interval: str, samples: int, natural_s: float) -> dict[str, Any]:
    gw = Gateway(root / "lag", {"url": "file://replica", "sync_interval": sync_interval}).start()
    try:
        setup = writer_connection(gw.main)
        setup.execute("CREATE TABLE lag (id INTEGER PRIMARY KEY, at REAL, payload BLOB)")
        gw.sync()

        # Natural lag: steady commits, replica.status polled every 10 ms.
        writer = SteadyWriter(gw.main)
        base = gw.status()["databases"]["main"]["last_txid"]
        generation = gw.status()["databases"]["main"]["generation"]
        writer.start()
        observations: list[tuple[float, int, float]] = []  # (seen at, last_txid, last_txid_at)
        end = time.monotonic() + natural_s
        while time.monotonic() < end:
            d = gw.status()["databases"]["main"]
            observations.append((time.time(), d["last_txid"], d["last_txid_at"] or 0.0))
            time.sleep(0.01)
        writer.stopping.set()
        writer.join()
        gw.sync()
        d = gw.status()["databases"]["main"]
        observations.append((time.time(), d["last_txid"], d["last_txid_at"] or 0.0))
        same_generation = d["generation"] == generation
        visible, read = [], []
        i = 0
        for k, committed in enumerate(writer.commits, start=1):
            while observations[i][1] < base + k:
                i += 1
            seen_at, _, read_at = observations[i]
            visible.append(seen_at - committed)
            read.append(read_at - committed)

        # Sync latency, with the steady writer running in the background.
        writer = SteadyWriter(gw.main)
        writer.start()
        own = writer_connection(gw.main)
        latencies = []
        for _ in range(samples):
            time.sleep(0.05)
            committed = writer.commit_one(own)
            gw.sync()
            latencies.append(time.time() - committed)
        writer.stopping.set()
        writer.join()
        return {
            "sync_interval": sync_interval,
            "natural_commits": len(visible),
            "natural_p50": percentile(visible, 50),
            "natural_p99": percentile(visible, 99),
            "natural_max": max(visible),
            "read_p50": percentile(read, 50),
            "read_p99": percentile(read, 99),
            "same_generation": same_generation,
            "sync_samples": len(latencies),
            "sync_p50": percentile(latencies, 50),
            "sync_p99": percentile(latencies, 99),
            "sync_max": max(latencies),
        }
    finally:
        gw.stop()


# --- write throughput -----------------------------------------------------------------------------


def throughput_worker(db: str, worker: int, barrier: Any, seconds: float, out: Any) -> None:
    c = writer_connection(Path(db))
    payload = os.urandom(200)
    latencies = []
    barrier.wait()
    end = time.monotonic() + seconds
    n = 0
    locked = 0
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            # The 5 s busy timeout ran out (Django would raise "database is locked").
            if "locked" not in str(e):
                raise
            locked += 1
            continue
        c.execute(
            "INSERT INTO item (owner, n, payload, created) VALUES (?, ?, ?, datetime('now'))",
            (worker, n, payload),
        )
        c.execute("UPDATE counter SET n = n + 1 WHERE id = ?", (worker,))
        c.execute("COMMIT")
        latencies.append(time.perf_counter() - started)
        n += 1
    c.close()
    out.put((n, latencies, locked))


def django_env(db: Path) -> dict[str, str]:
    """tests/django_project (its Note model) on ``db``, with the gateway's SQLite."""
    env = dict(os.environ)
    env["GATEWAY_TEST_DB"] = str(db)
    env["DJANGO_SETTINGS_MODULE"] = "testsite.settings"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "tests" / "django_project"), str(REPO / "python-client" / "src")]
    )
    env["LD_LIBRARY_PATH"] = str(REPO / "build")
    return env


def django_worker(worker: int, start_at: float, seconds: float) -> None:
    """One Django process: from ``start_at`` (wall clock) for ``seconds``, each transaction
    creates a Note and edits the previous one through the ORM. Prints a JSON result line."""
    import json

    import django

    django.setup()
    from django.db import OperationalError, connection, transaction
    from notes.models import Note

    connection.ensure_connection()
    payload = os.urandom(100).hex()
    latencies: list[float] = []
    locked = 0
    last = None
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    while time.time() < end:
        started = time.perf_counter()
        try:
            with transaction.atomic():
                note = Note.objects.create(title=f"w{worker}", body=payload)
                if last is not None:
                    Note.objects.filter(id=last).update(title=f"w{worker} edited")
        except OperationalError as e:
            if "locked" not in str(e):
                raise
            locked += 1
            continue
        last = note.id
        latencies.append(time.perf_counter() - started)
    print(json.dumps([len(latencies), latencies, locked]))


def start_workers(workload: str, db: Path, seconds: float) -> tuple[float, list[Any]]:
    """Starts 4 writer processes; returns (when they start writing, a way to collect each)."""
    if workload == "django":
        start_at = time.time() + 4.0  # Django's start-up happens before this
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--django-worker", str(i), str(start_at), str(seconds)],
                env=django_env(db),
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]

        def collect(p: subprocess.Popen[str]) -> tuple[int, list[float], int]:
            import json

            out, _ = p.communicate(timeout=seconds + 120)
            assert p.returncode == 0, out
            n, latencies, locked = json.loads(out.strip().splitlines()[-1])
            return n, latencies, locked

        return start_at, [lambda p=p: collect(p) for p in procs]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(5)
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=throughput_worker, args=(str(db), i, barrier, seconds, queue))
        for i in range(4)
    ]
    for w in workers:
        w.start()
    barrier.wait()
    return time.time(), [lambda: queue.get(timeout=seconds + 120) for _ in workers]


def one_throughput_round(
    root: Path, workload: str, replica: dict[str, str] | None, seconds: float
) -> dict:
    folder = Path(tempfile.mkdtemp(dir=root, prefix="tp-"))
    gw = Gateway(folder, replica).start()
    try:
        if workload == "django":
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                cwd=REPO / "tests" / "django_project",
                env=django_env(gw.main),
                check=True,
            )
        else:
            c = writer_connection(gw.main)
            c.execute(
                "CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, owner INTEGER, "
                "n INTEGER, payload BLOB, created TEXT)"
            )
            c.execute("CREATE INDEX item_owner ON item (owner, n)")
            c.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
            c.executemany("INSERT INTO counter VALUES (?, 0)", [(i,) for i in range(4)])
            c.close()
        if replica:
            gw.sync()
        started, collectors = start_workers(workload, gw.main, seconds)
        time.sleep(max(0.0, started - time.time()))
        cpu_before = process_cpu(gw.process.pid)
        results = [collect() for collect in collectors]
        cpu = process_cpu(gw.process.pid) - cpu_before
        wall = max(seconds, time.time() - started) if workload == "sqlite" else seconds
        commits = sum(r[0] for r in results)
        latencies = [x for r in results for x in r[1]]
        locked = sum(r[2] for r in results)
        extra = {}
        if replica:
            synced = time.monotonic()
            gw.sync()
            extra["catch_up"] = time.monotonic() - synced
            extra["generations"] = len(
                gw.command("generations", "--db", "main").stdout.splitlines()[1:]
            )
        return {
            "commits_per_s": commits / wall,
            "gateway_cpu_ms_per_1000": cpu * 1e6 / max(1, commits),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
            "locked": locked,
            **extra,
        }
    finally:
        gw.stop()
        shutil.rmtree(folder, ignore_errors=True)


def measure_throughput(
    root: Path, workload: str, seconds: float, rounds: int, sync_interval: str
) -> dict:
    replica = {"url": "file://replica", "sync_interval": sync_interval}
    off: list[dict] = []
    on: list[dict] = []
    for r in range(rounds):
        order = [(None, off), (replica, on)] if r % 2 == 0 else [(replica, on), (None, off)]
        for config, bucket in order:
            bucket.append(one_throughput_round(root, workload, config, seconds))
    best_off = max(off, key=lambda x: x["commits_per_s"])
    best_on = max(on, key=lambda x: x["commits_per_s"])
    return {
        "workload": workload,
        "seconds": seconds,
        "rounds": rounds,
        "sync_interval": sync_interval,
        "off": best_off,
        "on": best_on,
        "all_off": [round(x["commits_per_s"]) for x in off],
        "all_on": [round(x["commits_per_s"]) for x in on],
        "max_off": max(x["max"] for x in off),
        "max_on": max(x["max"] for x in on),
        "locked_off": sum(x["locked"] for x in off),
        "locked_on": sum(x["locked"] for x in on),
        "catch_up_max": max(x["catch_up"] for x in on),
        "ratio": best_on["commits_per_s"] / best_off["commits_per_s"],
        "cpu_off": statistics.median(x["gateway_cpu_ms_per_1000"] for x in off),
        "cpu_on": statistics.median(x["gateway_cpu_ms_per_1000"] for x in on),
        "median_ratio": statistics.median(x["commits_per_s"] for x in on)
        / statistics.median(x["commits_per_s"] for x in off),
    }


# --- restore time ---------------------------------------------------------------------------------


def measure_restore(root: Path, size: int) -> dict[str, Any]:
    folder = root / "restore"
    gw = Gateway(folder, {"url": "file://replica", "sync_interval": "1s"}).start()
    result: dict[str, Any] = {"size": size}
    try:
        c = writer_connection(gw.main)
        c.execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB)")
        blob = 4 * MiB
        per_txn = 32
        started = time.monotonic()
        written = 0
        while written < size:
            c.execute("BEGIN IMMEDIATE")
            for _ in range(per_txn):
                if written >= size:
                    break
                c.execute("INSERT INTO blob (data) VALUES (?)", (os.urandom(blob),))
                written += blob
            c.execute("COMMIT")
        result["build_s"] = time.monotonic() - started
        c.close()
        started = time.monotonic()
        gw.sync()
        result["sync_s"] = time.monotonic() - started
        result["db_bytes"] = gw.main.stat().st_size
        out = root / "restored-segments.sqlite3"
        started = time.monotonic()
        r = gw.command("restore", "--db", "main", "-o", str(out))
        result["from_segments_s"] = time.monotonic() - started
        assert r.returncode == 0, r.stderr
        result["from_segments_objects"] = r.stderr.count("applied") + 1
        out.unlink()
        # A full snapshot: the same database replicated to a second, empty replica starts
        # there with a snapshot of the whole file.
        gw.stop()
        gw = Gateway(folder, {"url": "file://replica2", "sync_interval": "1s"}).start()
        started = time.monotonic()
        gw.sync()
        result["snapshot_sync_s"] = time.monotonic() - started
        result["generations"] = (
            len(gw.command("generations", "--db", "main").stdout.splitlines()) - 1
        )
        started = time.monotonic()
        r = gw.command("restore", "--db", "main", "-o", str(out))
        result["from_snapshot_s"] = time.monotonic() - started
        assert r.returncode == 0, r.stderr
        result["from_snapshot_log"] = r.stderr.strip().splitlines()[-1]
        out.unlink()
        return result
    finally:
        gw.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- idle requests --------------------------------------------------------------------------------


def idle_gateway(folder: Path, replica: dict[str, str]) -> Gateway:
    gw = Gateway(folder, replica).start()
    c = writer_connection(gw.main)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    c.close()
    gw.sync()
    return gw


def measure_idle(root: Path, seconds: float) -> dict[str, Any]:
    """Idle gateways on a file replica and, if rclone is there, on S3 behind a counting proxy."""
    gateways = {"file": idle_gateway(root / "idle-file", {"url": "file://replica"})}
    s3 = proxy = None
    try:
        sys.path.insert(0, str(REPO / "tests"))
        import s3_server

        if s3_server.rclone_binary() is not None:
            s3 = s3_server.RcloneS3Server(root / "s3").start()
            proxy = s3_server.FaultProxy(s3)
            proxy.conditional = "native"  # conditional writes as a store that supports them
            proxy.start()
            gateways["s3"] = idle_gateway(
                root / "idle-s3",
                {
                    "url": f"s3://{s3_server.BUCKET}/idle",
                    "endpoint": proxy.endpoint,
                    "access_key_id": s3_server.ACCESS_KEY,
                    "secret_access_key": s3_server.SECRET_KEY,
                },
            )
    except ImportError:
        pass
    try:
        time.sleep(2)  # the checkpoint after the first sync settles
        before = {name: gw.status()["requests"]["count"] for name, gw in gateways.items()}
        if proxy is not None:
            with proxy.lock:
                proxy.seen.clear()
        time.sleep(seconds)
        after = {name: gw.status()["requests"]["count"] for name, gw in gateways.items()}
        out: dict[str, Any] = {"seconds": seconds}
        for name in gateways:
            n = after[name] - before[name]
            out[name] = {"requests": n, "per_hour": n * 3600 / seconds}
        if proxy is not None:
            with proxy.lock:
                seen = list(proxy.seen)
            kinds: dict[str, int] = {}
            for method, path, _ in seen:
                what = "lease" if path.split("?")[0].endswith("/lease") else "other"
                kinds[f"{method} {what}"] = kinds.get(f"{method} {what}", 0) + 1
            out["s3"]["http"] = kinds
        return out
    finally:
        for gw in gateways.values():
            gw.stop()
        if proxy is not None:
            proxy.stop()
        if s3 is not None:
            s3.stop()


# --- report ---------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "gateway": str(gateway_binary()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter")
    parser.add_argument("--sync-interval", default="200ms")
    parser.add_argument("--only", choices=["lag", "throughput", "restore", "idle"], action="append")
    args = parser.parse_args()
    if sqlite3.sqlite_version_info < (3, 51, 3):
        print(
            f"warning: Python's SQLite is {sqlite3.sqlite_version}; run with LD_LIBRARY_PATH=build"
        )
    only = set(args.only or ["lag", "throughput", "restore", "idle"])
    quick = args.quick
    root = Path(tempfile.mkdtemp(prefix="gw-repl-bench-"))
    facts = machine()
    out: dict[str, Any] = {}
    try:
        if "lag" in only:
            out["lag"] = measure_lag(
                root, args.sync_interval, 40 if quick else 200, 10 if quick else 30
            )
        if "throughput" in only:
            out["throughput"] = [
                measure_throughput(
                    root, "django", 8 if quick else 15, 2 if quick else 4, args.sync_interval
                ),
                measure_throughput(
                    root, "sqlite", 5 if quick else 10, 2 if quick else 4, args.sync_interval
                ),
            ]
        if "restore" in only:
            out["restore"] = measure_restore(root, 100 * MiB if quick else 1024 * MiB)
        if "idle" in only:
            out["idle"] = measure_idle(root, 10 if quick else 30)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"## Replication ({'quick' if quick else 'full'} run)\n")
    print(
        f"{facts['date']}; {facts['nproc']} CPUs ({facts['cpu']}), load {facts['load']} at the "
        f"end; Python {facts['python']}, SQLite {facts['sqlite']}; {facts['gateway']}\n"
    )
    print("| measure | result | goal |")
    print("|---|---|---|")
    if "lag" in out:
        lag = out["lag"]
        interval = lag["sync_interval"]
        print(
            f"| commit -> in replica, natural (sync_interval {interval}, "
            f"{lag['natural_commits']} commits at 50/s) | p50 {ms(lag['natural_p50'])}, "
            f"p99 {ms(lag['natural_p99'])}, max {ms(lag['natural_max'])} | p99 <= {interval} + 250 ms |"
        )
        print(
            f"| commit -> read from the WAL (last_txid_at) | p50 {ms(lag['read_p50'])}, "
            f"p99 {ms(lag['read_p99'])} | |"
        )
        print(
            f"| commit -> replica.sync answered ({lag['sync_samples']} samples) | "
            f"p50 {ms(lag['sync_p50'])}, p99 {ms(lag['sync_p99'])}, max {ms(lag['sync_max'])} | |"
        )
        if not lag["same_generation"]:
            print("| (a new generation started during the lag run) | | |")
    if "throughput" in out:
        for tp in out["throughput"]:
            off, on = tp["off"], tp["on"]
            what = (
                "Django ORM (create a Note, edit the previous one)"
                if tp["workload"] == "django"
                else "raw sqlite3 tight loop (insert a row, update a counter)"
            )
            print(
                f"| {what}, 4 processes, no replica: best of {tp['rounds']} x "
                f"{tp['seconds']:.0f} s {tp['all_off']} | {off['commits_per_s']:.0f} commits/s, "
                f"commit p50 {off['p50'] * 1000:.2f} ms, p99 {off['p99'] * 1000:.2f} ms; "
                f"slowest {ms(tp['max_off'])}; {tp['locked_off']} 'database is locked' | |"
            )
            print(
                f"| the same with a replica every {tp['sync_interval']}: {tp['all_on']} | "
                f"{on['commits_per_s']:.0f} commits/s, commit p50 {on['p50'] * 1000:.2f} ms, "
                f"p99 {on['p99'] * 1000:.2f} ms; slowest {ms(tp['max_on'])}; "
                f"{tp['locked_on']} 'database is locked'; replica.sync right after the writers "
                f"stop: up to {ms(tp['catch_up_max'])}; {on['generations']} generation(s) | |"
            )
            print(
                f"| throughput with / without replication ({tp['workload']}) | best "
                f"{tp['ratio']:.3f} ({(tp['ratio'] - 1) * 100:+.1f}%), median "
                f"{tp['median_ratio']:.3f}; gateway CPU per 1000 commits (median) "
                f"{tp['cpu_off']:.0f} ms without, {tp['cpu_on']:.0f} ms with | > 0.95 |"
            )
    if "restore" in out:
        rs = out["restore"]
        size = f"{rs['size'] / MiB:.0f} MiB"
        print(
            f"| build {size} of random 4 MiB blobs / first sync of it | "
            f"{rs['build_s']:.1f} s / {rs['sync_s']:.1f} s | |"
        )
        print(
            f"| restore {size} from segments ({rs['from_segments_objects']} objects) | "
            f"{rs['from_segments_s']:.1f} s | |"
        )
        print(
            f"| restore {size} from a full snapshot (a second replica of the same file; "
            f"taking and uploading the snapshot: {rs['snapshot_sync_s']:.1f} s; "
            f"{rs['from_snapshot_log']!r}) | {rs['from_snapshot_s']:.1f} s | |"
        )
    if "idle" in out:
        idle = out["idle"]
        for name in ("file", "s3"):
            if name not in idle:
                continue
            got = idle[name]
            http = f"; HTTP: {got['http']}" if "http" in got else ""
            print(
                f"| {name} store requests when idle ({got['requests']} in "
                f"{idle['seconds']:.0f} s{http}) | {got['per_hour']:.0f} per hour | "
                f"only lease renewals |"
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--django-worker":
        django_worker(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    sys.path.insert(0, str(REPO / "python-client" / "src"))
    sys.exit(main())
