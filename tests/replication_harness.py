"""Helpers for the replication tests: replica configs, the replica ops, the replica commands, and
whole-database comparisons.

Everything here drives the real binary: ``replica.sync``/``replica.status`` over the socket and
``gateway restore|generations|verify`` as subprocesses. Databases are compared table by table,
row by row (:func:`dump`), opened read-only so that reading a primary never writes to it.

Run as a script, this module is a Django writer process (``django-writer``) for the tests that
need real Django processes writing through the ORM; see :func:`django_writer_main`.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DJANGO_PROJECT = TESTS / "django_project"
DATABASES = ("main", "cache", "queue")
MIN_SQLITE = (3, 51, 3)

if __name__ != "__main__":
    from gateway_harness import GatewayProcess, build_dir, run_gateway_command
    from wire import RawConnection


def replica_overrides(
    url: str = "file://replica", sync_interval: str = "200ms", **extra: Any
) -> dict[str, Any]:
    """Config overrides that turn on replication to ``url`` (relative to the config's folder)."""
    return {"replica": {"url": url, "sync_interval": sync_interval, **extra}}


# --- the replica ops ------------------------------------------------------------------------------


class OpFailed(AssertionError):
    """An op answered with an error status."""


def call(
    gateway: GatewayProcess,
    op: str,
    args: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> Any:
    """One request on a fresh connection; returns the body or raises :class:`OpFailed`."""
    with RawConnection(gateway.socket_path, timeout=timeout) as conn:
        response = conn.call(op, dict(args or {}), timeout)
    if response[1] != 0:
        raise OpFailed(f"{op} failed: {response!r}")
    return response[2]


def sync(gateway: GatewayProcess, timeout: float = 30.0) -> None:
    """``replica.sync``: returns once everything committed before the call is in the replica."""
    assert call(gateway, "replica.sync", timeout=timeout) is True


def status(gateway: GatewayProcess) -> dict[str, Any]:
    return call(gateway, "replica.status")


def txids(replica_status: Mapping[str, Any]) -> dict[str, int]:
    """``{db: last_txid}`` from a ``replica.status`` body."""
    return {name: d["last_txid"] for name, d in replica_status["databases"].items()}


def assert_healthy(replica_status: Mapping[str, Any]) -> None:
    for name, d in replica_status["databases"].items():
        assert d["last_error"] is None, f"{name}: last_error {d['last_error']!r}"
        assert d["generation"], f"{name}: no generation"


# --- the replica commands -------------------------------------------------------------------------


def command(
    gateway: GatewayProcess, name: str, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``gateway NAME --config <gateway's config> ARGS...``, run to completion."""
    return run_gateway_command(
        [name, "--config", str(gateway.config_path), *args], timeout=timeout
    )


def restore(
    gateway: GatewayProcess,
    db: str,
    output: Path,
    *,
    txid: int | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Restore ``db`` into ``output``; asserts success and returns what the command printed:
    ``{"db", "path", "txid", "time"}``."""
    args = ["--db", db, "-o", str(output)]
    if txid is not None:
        args += ["--txid", str(txid)]
    if timestamp is not None:
        args += ["--timestamp", timestamp]
    result = command(gateway, "restore", *args)
    assert result.returncode == 0, (
        f"restore {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    fields = result.stdout.strip().split("\t")
    assert len(fields) == 4 and fields[2].startswith("txid "), result.stdout
    return {
        "db": fields[0],
        "path": fields[1],
        "txid": int(fields[2][5:]),
        "time": fields[3],
    }


_GENERATION_LINE = re.compile(
    r"^(?P<db>\w+)\s+(?P<id>[0-9a-f]{16}-[0-9a-f]{8})\s+(?P<created>\S+)\s+(?P<last_at>\S+)\s+"
    r"(?P<first_txid>\d+)\s+(?P<last_txid>\d+)\s+(?P<snapshots>\d+)\s+(?P<segments>\d+)\s"
)


def generations(gateway: GatewayProcess, db: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``gateway generations``, parsed (one dict per generation, oldest first)."""
    result = command(gateway, "generations", *(["--db", db] if db else []))
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines()[1:]:
        m = _GENERATION_LINE.match(line)
        assert m, f"unexpected generations line: {line!r}"
        row: dict[str, Any] = m.groupdict()
        for key in ("first_txid", "last_txid", "snapshots", "segments"):
            row[key] = int(row[key])
        rows.append(row)
    return rows


def format_ms(ms: int) -> str:
    """Unix ms as the RFC 3339 UTC text ``restore --timestamp`` takes (``...T12:00:00.250Z``)."""
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        + f".{ms % 1000:03d}Z"
    )


# --- comparing databases --------------------------------------------------------------------------


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection: reading a primary must not write to it (or checkpoint it)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def dump(
    path: Path, tables: Iterable[str] | None = None
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (or of ``tables``), each table's rows in a canonical order.

    One read transaction, so the result is one consistent state of the database.
    """
    connection = connect_ro(path)
    try:
        connection.execute("BEGIN")
        names = (
            list(tables)
            if tables is not None
            else [
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
                )
            ]
        )
        out = {}
        for name in names:
            rows = connection.execute(f'SELECT * FROM "{name}"').fetchall()
            out[name] = sorted(rows, key=repr)
        connection.execute("COMMIT")
        return out
    finally:
        connection.close()


def integrity(path: Path) -> str:
    connection = connect_ro(path)
    try:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


def diff(
    expected: Mapping[str, list[Any]], got: Mapping[str, list[Any]], limit: int = 5
) -> str:
    """A short description of how two dumps differ (for assertion messages)."""
    lines = []
    for table in sorted(set(expected) | set(got)):
        a, b = expected.get(table), got.get(table)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"{table}: only in {'restored' if a is None else 'expected'}")
            continue
        missing = [r for r in a if r not in b][:limit]
        extra = [r for r in b if r not in a][:limit]
        lines.append(
            f"{table}: {len(a)} rows expected, {len(b)} restored; "
            f"missing {missing!r}; unexpected {extra!r}"
        )
    return "\n".join(lines)


def require_new_sqlite() -> None:
    """Skip unless this process loaded SQLite >= 3.51.3 (run pytest with LD_LIBRARY_PATH=build):
    writing the gateway's databases with an older library risks the WAL-reset bug."""
    import pytest

    if sqlite3.sqlite_version_info < MIN_SQLITE:
        pytest.skip(
            f"this Python loaded SQLite {sqlite3.sqlite_version}; run with "
            f"LD_LIBRARY_PATH={build_dir()} to write the gateway's databases"
        )


def writer_connection(path: Path) -> sqlite3.Connection:
    """A connection that writes like Django does through gateway_client.django.database():
    autocommit off (explicit BEGIN IMMEDIATE), busy_timeout, and no checkpoints of its own."""
    connection = sqlite3.connect(
        path, timeout=10, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    return connection


# --- cache and queue traffic ---------------------------------------------------------------------


class SocketTraffic(threading.Thread):
    """Cache and queue traffic through the socket from a thread, pausable between operations.

    Each round sets, increments or deletes a few cache entries (no timeouts, so nothing expires
    on its own), enqueues a job and now and then dequeues and completes one, so a paused traffic
    thread leaves no lease to expire later.
    """

    def __init__(self, socket_path: str, seed: int) -> None:
        super().__init__(daemon=True)
        import random

        self.socket_path = socket_path
        self.rng = random.Random(seed)
        self.rounds = 0
        self.slowest = (0.0, "")  # (seconds, op) of the slowest operation
        self.error: BaseException | None = None
        self._pause = threading.Event()
        self._paused = threading.Event()
        self._resume = threading.Event()
        self._stop = threading.Event()

    def _ok(self, conn: RawConnection, op: str, args: dict[str, Any]) -> Any:
        started = time.monotonic()
        response = conn.call(op, args, 10.0)
        elapsed = time.monotonic() - started
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, op)
        if response[1] != 0:
            raise OpFailed(f"{op} failed: {response!r}")
        return response[2]

    def run(self) -> None:
        try:
            with RawConnection(self.socket_path, timeout=10.0) as conn:
                self._ok(conn, "cache.set", {"key": "counter", "value": 0})
                while not self._stop.is_set():
                    if self._pause.is_set():
                        self._paused.set()
                        self._resume.wait()
                        self._resume.clear()
                        continue
                    self._round(conn)
                    self.rounds += 1
        except Exception as e:
            self.error = e
            self._paused.set()

    def _round(self, conn: RawConnection) -> None:
        rng = self.rng
        key = f"k{rng.randrange(200)}"
        choice = rng.random()
        if choice < 0.5:
            value: Any = rng.choice(
                [
                    os.urandom(rng.randrange(1, 400)),
                    f"text {self.rounds}",
                    rng.randrange(-1000, 1000),
                ]
            )
            self._ok(conn, "cache.set", {"key": key, "value": value})
        elif choice < 0.7:
            self._ok(
                conn,
                "cache.set_many",
                {"items": {f"m{rng.randrange(50)}": b"x" * i for i in range(1, 4)}},
            )
        elif choice < 0.8:
            self._ok(conn, "cache.delete", {"key": key})
        else:
            self._ok(conn, "cache.incr", {"key": "counter", "delta": 1})
        self._ok(
            conn,
            "queue.enqueue",
            {"task": "tests.replication.job", "args": [self.rounds], "queue": "repl"},
        )
        if rng.random() < 0.5:
            jobs = self._ok(
                conn,
                "queue.dequeue",
                {"queues": ["repl"], "worker_id": "traffic", "max_jobs": 2},
            )
            for job in jobs:
                self._ok(
                    conn,
                    "queue.complete",
                    {
                        "id": job["id"],
                        "lease_token": job["lease_token"],
                        "return_value": job["args"],
                    },
                )

    def pause(self, timeout: float = 30.0) -> None:
        """Returns once the thread is between operations and waiting."""
        self._paused.clear()
        self._pause.set()
        assert self._paused.wait(timeout), "cache/queue traffic did not pause"
        if self.error:
            raise AssertionError(
                f"cache/queue traffic failed: {self.error!r}"
            ) from self.error

    def resume(self) -> None:
        self._pause.clear()
        self._resume.set()

    def stop(self) -> int:
        self._stop.set()
        self.resume()
        self.join(30)
        if self.error:
            raise AssertionError(
                f"cache/queue traffic failed: {self.error!r}"
            ) from self.error
        return self.rounds


# --- real Django writer processes -----------------------------------------------------------------


class DjangoWriter:
    """A Django process writing Notes through the ORM in small transactions until told to stop.

    Control is a line protocol on its stdin/stdout, checked between transactions, so a pause
    never lands inside a transaction: ``pause`` is answered with ``paused <transactions>`` and
    the process then waits for ``resume`` or ``stop`` (answered ``stopped <transactions>``).
    """

    def __init__(self, db: Path, writer_id: int, seed: int) -> None:
        self.lock_timeouts = (
            0  # transactions given up on "database is locked", known at stop
        )
        env = django_env(db)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "django-writer",
                str(writer_id),
                str(seed),
            ],
            cwd=DJANGO_PROJECT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _expect(self, word: str) -> int:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.startswith("stopped "):
            self.lock_timeouts = int(line.split()[2])
        if not line.startswith(word + " "):
            stderr = ""
            if not line:  # EOF: the process is exiting; its stderr says why
                self.proc.wait(30)
                stderr = self.proc.stderr.read()[-4000:]
            raise AssertionError(
                f"Django writer answered {line!r}, expected {word}; {stderr}"
            )
        return int(line.split()[1])

    def wait_started(self) -> None:
        self._expect("started")

    def pause_send(self) -> None:
        self._send("pause")

    def pause_wait(self) -> int:
        return self._expect("paused")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> int:
        """Stop (running or paused); returns the number of transactions it committed."""
        self._send("stop")
        count = self._expect("stopped")
        self.proc.wait(30)
        return count

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def django_env(db: Path) -> dict[str, str]:
    """Environment of a Django process of tests/django_project on database ``db``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env["GATEWAY_TEST_DB"] = str(db)
    env["DJANGO_SETTINGS_MODULE"] = "testsite.settings"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["LD_LIBRARY_PATH"] = str(build_dir())
    env["PYTHONPATH"] = os.pathsep.join([str(DJANGO_PROJECT), str(TESTS)])
    return env


def migrate(db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=DJANGO_PROJECT,
        env=django_env(db),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"migrate failed:\n{result.stdout}\n{result.stderr}"


def django_writer_main(writer_id: int, seed: int) -> None:
    """The writer process: notes created, edited and deleted in small ORM transactions."""
    import random
    import select

    import django

    django.setup()
    from django.db import OperationalError, connection, transaction
    from notes.models import Note

    rng = random.Random(seed)
    mine: list[int] = []
    done = 0
    locked = 0
    pending = b""

    def read_command(block: bool) -> str | None:
        nonlocal pending
        while b"\n" not in pending:
            ready, _, _ = select.select([0], [], [], None if block else 0)
            if not ready:
                return None
            chunk = os.read(0, 4096)
            if not chunk:
                return "stop"
            pending += chunk
        line, pending = pending.split(b"\n", 1)
        return line.decode().strip()

    def reply(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    connection.ensure_connection()
    reply(f"started {done}")
    while True:
        cmd = read_command(block=False)
        if cmd == "pause":
            reply(f"paused {done}")
            cmd = read_command(block=True)
        if cmd == "stop":
            reply(f"stopped {done} {locked}")
            connection.close()
            return
        # A little time between requests, as a web worker has; it also keeps four writers on a
        # small, busy machine from starving each other past the 5 s busy timeout.
        time.sleep(rng.uniform(0, 0.004))
        created: list[int] = []
        victim = None
        try:
            with transaction.atomic():
                for _ in range(rng.randint(1, 3)):
                    note = Note.objects.create(
                        title=f"w{writer_id}-{done}",
                        body=os.urandom(rng.randint(0, 300)).hex(),
                    )
                    created.append(note.id)
                if mine and rng.random() < 0.4:
                    Note.objects.filter(id=rng.choice(mine)).update(
                        body=f"edited {done}"
                    )
                if len(mine) > 5 and rng.random() < 0.15:
                    victim = mine[rng.randrange(len(mine))]
                    Note.objects.filter(id=victim).delete()
        except OperationalError as e:
            # "database is locked": the busy timeout ran out; Django rolled the transaction
            # back, as a view would answer 500. Count it and go on.
            if "locked" not in str(e):
                raise
            locked += 1
            continue
        mine.extend(created)
        if victim is not None:
            mine.remove(victim)
        done += 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "django-writer":
        django_writer_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: replication_harness.py django-writer ID SEED")
