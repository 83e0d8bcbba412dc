"""Local faults: the data folder runs out of space, or turns read-only, under a running gateway.

The gateway's databases live on a small filesystem mounted for the test (root only; skipped
otherwise): an 8 MiB tmpfs for the disk-full case, a loop-mounted ext4 image for the read-only
ones. The socket and the replica stay outside it. Expected, each time: writes get a clear
``storage_error`` and change nothing, reads (``cache.get``, ``queue.get``, ``ping``, ``stats``)
keep being served, no database is corrupt (``PRAGMA integrity_check``), and once the fault is
gone writes succeed again and replication carries on.

Linux refuses ``mount -o remount,ro`` while a process holds files open for writing (EBUSY), as
the gateway always does, so a filesystem turns read-only under a running gateway only when the
kernel forces it after an error (ext4 ``errors=remount-ro``). The test triggers exactly that
through ext4's ``trigger_fs_error`` knob; such a filesystem stays read-only until it is unmounted,
checked and mounted again, so recovery there is a restart. ``mount -o remount,ro`` is tested
with the gateway stopped: started on the read-only folder it must either refuse with a clear
error or serve reads and refuse writes clearly, and work normally once the folder is writable.
docs/reliability.md ("Local faults") records the behaviour.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import GatewayProcess, kill_all
from replication_harness import (
    DATABASES,
    diff,
    dump,
    integrity,
    require_new_sqlite,
    restore,
    status,
    sync,
    writer_connection,
)
from wire import RawConnection

Factory = Callable[..., GatewayProcess]

#: The databases on the small filesystem; the socket and the replica next to the config.
OVERRIDES: dict[str, Any] = {
    "databases": {
        "main": {"path": "data/db/app.sqlite3"},
        "cache": {"path": "data/db/cache.sqlite3", "max_size": None},
        "queue": {"path": "data/db/queue.sqlite3"},
    },
    "replica": {"url": "file://replica", "sync_interval": "200ms", "lease_ttl": "1s"},
}
BIG = 1 << 20  # a value that needs new pages in any WAL these tests leave behind


class SmallFilesystem:
    """A filesystem mounted at ``mountpoint`` for one test; always unmounted at the end."""

    def __init__(self, mountpoint: Path, image: Path | None = None) -> None:
        self.mountpoint = mountpoint
        self.image = image  # None: tmpfs; else the ext4 image file (outside the mount)
        self.filler = mountpoint / "filler"

    def mount(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if self.image is None:
            command = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(self.mountpoint)]
        else:
            command = ["mount", "-o", "loop,errors=remount-ro", str(self.image),
                       str(self.mountpoint)]
        run(command)

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.mountpoint)], capture_output=True,
                          check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True,
                           check=False)

    def mounted(self) -> bool:
        return any(line.split()[1] == str(self.mountpoint)
                   for line in Path("/proc/mounts").read_text().splitlines())

    def options(self) -> list[str]:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.mountpoint):
                return fields[3].split(",")
        raise AssertionError(f"{self.mountpoint} is not mounted")

    def fill(self) -> int:
        """Write a file until the filesystem is full; return its size."""
        written = 0
        with open(self.filler, "wb", buffering=0) as f:
            for chunk in (1 << 20, 4096):
                try:
                    while True:
                        written += f.write(b"\0" * chunk)
                except OSError as e:
                    assert e.errno == 28, e  # ENOSPC
        return written

    def free(self) -> None:
        self.filler.unlink()

    def device(self) -> str:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[1] == str(self.mountpoint):
                return Path(fields[0]).name
        raise AssertionError(f"{self.mountpoint} is not mounted")

    def trigger_error(self) -> None:
        """An ext4 error, as after a failed disk write: errors=remount-ro makes it read-only."""
        Path(f"/sys/fs/ext4/{self.device()}/trigger_fs_error").write_text("gateway local faults")


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"{' '.join(command)} failed ({result.returncode}): "
                      f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def mounted_fs(gateway_dir: Path, ext4: bool) -> Iterator[SmallFilesystem]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    image = None
    if ext4:
        image = gateway_dir / "data.img"
        try:
            with open(image, "wb") as f:
                f.truncate(32 << 20)
            run(["mkfs.ext4", "-q", "-F", str(image)])
        except (OSError, FileNotFoundError) as e:
            pytest.skip(f"cannot make an ext4 image: {e}")
    fs = SmallFilesystem(gateway_dir / "data", image)
    try:
        fs.mount()
    except OSError as e:
        pytest.skip(f"cannot mount a small filesystem here: {e}")
    try:
        yield fs
    finally:
        kill_all()  # nothing may hold the filesystem open
        fs.unmount()
        assert not fs.mounted(), f"{fs.mountpoint} is still mounted"


@pytest.fixture
def tmpfs(gateway_dir: Path) -> Iterator[SmallFilesystem]:
    """An 8 MiB tmpfs at ``gateway_dir/data``."""
    yield from mounted_fs(gateway_dir, ext4=False)


@pytest.fixture
def ext4(gateway_dir: Path) -> Iterator[SmallFilesystem]:
    """A 32 MiB ext4 image loop-mounted at ``gateway_dir/data`` with errors=remount-ro."""
    fs = mounted_fs(gateway_dir, ext4=True)
    mounted = next(fs)
    if not Path(f"/sys/fs/ext4/{mounted.device()}/trigger_fs_error").exists():
        with contextlib.suppress(StopIteration):
            next(fs)
        pytest.skip("this kernel's ext4 has no trigger_fs_error")
    yield mounted
    with contextlib.suppress(StopIteration):
        next(fs)


# --- helpers --------------------------------------------------------------------------------------


class Ops:
    """One connection to the gateway; ``ok`` asserts success, ``error`` returns the error body."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.conn = RawConnection(gateway.socket_path, timeout=30)

    def close(self) -> None:
        self.conn.close()

    def call(self, op: str, args: dict[str, Any] | None = None) -> list[Any]:
        return self.conn.call(op, args or {}, 30)

    def ok(self, op: str, args: dict[str, Any] | None = None) -> Any:
        response = self.call(op, args)
        assert response[1] == 0, f"{op}: {response!r:.500}"
        return response[2]

    def error(self, op: str, args: dict[str, Any] | None = None) -> dict[str, str]:
        response = self.call(op, args)
        assert response[1] != 0, f"{op} succeeded: {response!r:.300}"
        return response[2]


def write_baseline(gateway: GatewayProcess, ops: Ops) -> dict[str, Any]:
    """Acknowledged writes in all three databases before the fault, and a sync."""
    values = {f"base{i}": os.urandom(1000) for i in range(20)}
    for key, value in values.items():
        assert ops.ok("cache.set", {"key": key, "value": value}) is True
    ops.ok("cache.set", {"key": "hits", "value": 41})
    jobs = [ops.ok("queue.enqueue", {"task": "shop.tasks.send", "args": [i]})["id"]
            for i in range(5)]
    with contextlib.closing(writer_connection(gateway.db_path("main"))) as c:
        c.execute("BEGIN IMMEDIATE")
        c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
        c.executemany("INSERT INTO orders (note) VALUES (?)", [(f"order {i}",) for i in range(50)])
        c.execute("COMMIT")
    sync(gateway)
    return {"values": values, "jobs": jobs}


def assert_reads_served(ops: Ops, baseline: dict[str, Any], more_jobs: int = 0) -> None:
    """The baseline's cache entries and jobs read back (``more_jobs`` READY jobs added since)."""
    assert ops.ok("ping") == "pong"
    for key, value in baseline["values"].items():
        assert ops.ok("cache.get", {"key": key}) == value
    got = ops.ok("cache.get_many", {"keys": list(baseline["values"])})
    assert len(got) == len(baseline["values"])
    for job_id in baseline["jobs"]:
        assert ops.ok("queue.get", {"id": job_id})["state"] == "READY"
    assert ops.ok("queue.stats")["queues"]["default"]["states"]["READY"] == len(
        baseline["jobs"]) + more_jobs
    assert set(ops.ok("stats")["databases"]) == set(DATABASES)


def assert_intact(gateway: GatewayProcess) -> None:
    for db in DATABASES:
        assert integrity(gateway.db_path(db)) == "ok", db


def assert_writes_work_and_replicate(gateway: GatewayProcess, ops: Ops) -> None:
    value = os.urandom(BIG)
    assert ops.ok("cache.set", {"key": "after", "value": value}) is True
    assert ops.ok("cache.get", {"key": "after"}) == value
    assert ops.ok("cache.incr", {"key": "hits", "delta": 1}) == 42
    ops.ok("queue.enqueue", {"task": "shop.tasks.send", "args": ["x" * BIG]})
    with contextlib.closing(writer_connection(gateway.db_path("main"))) as c:
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO orders (note) VALUES (?)", ("y" * BIG,))
        c.execute("COMMIT")
    sync(gateway)
    for name, d in status(gateway)["databases"].items():
        assert d["last_error"] is None, (name, d)
    restored = gateway.folder / "restored"
    for db in DATABASES:
        restore(gateway, db, restored / f"{db}.sqlite3")
        expected, got = dump(gateway.db_path(db)), dump(restored / f"{db}.sqlite3")
        assert got == expected, f"{db}:\n{diff(expected, got)}"


def assert_storage_error(body: dict[str, str], *words: str) -> None:
    assert body["code"] == "storage_error", body
    message = body["message"].lower()
    assert any(word in message for word in words), body


# --- disk full ------------------------------------------------------------------------------------


def test_disk_full_refuses_writes_keeps_reads_and_recovers(
    tmpfs: SmallFilesystem, gateway_factory: Factory
) -> None:
    require_new_sqlite()
    gateway = gateway_factory(OVERRIDES)
    ops = Ops(gateway)
    baseline = write_baseline(gateway, ops)

    assert tmpfs.fill() > 0
    # Writes that need space fail, say why, and leave nothing behind.
    assert_storage_error(ops.error("cache.set", {"key": "big", "value": os.urandom(BIG)}),
                         "disk is full")
    assert_storage_error(ops.error("cache.set_many", {"items": {"m1": os.urandom(BIG),
                                                                "m2": b"small"}}),
                         "disk is full")
    assert_storage_error(ops.error("queue.enqueue", {"task": "shop.tasks.send",
                                                     "args": ["x" * BIG]}), "disk is full")
    assert ops.ok("cache.get", {"key": "big"}) is None
    assert ops.ok("cache.get_many", {"keys": ["m1", "m2"]}) == {}
    # The operator sees it too: one error line per second at most, naming the op and the cause.
    failures = [line for line in gateway.log_text().splitlines()
                if "event=request_failed" in line and "code=storage_error" in line]
    assert failures, gateway.log_text()
    assert "op=cache.set" in failures[0] and "full" in failures[0], failures[0]
    # Django's own writes to the main database fail the same way, and the gateway does not mind.
    with contextlib.closing(writer_connection(gateway.db_path("main"))) as c:
        c.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception, match="full"):
            c.execute("INSERT INTO orders (note) VALUES (?)", ("z" * BIG,))
            c.execute("COMMIT")
        if c.in_transaction:
            c.execute("ROLLBACK")
    # Reads are served all along, replication answers, nothing is corrupt.
    assert_reads_served(ops, baseline)
    sync(gateway)
    assert_intact(gateway)
    assert gateway.running()

    tmpfs.free()
    assert_writes_work_and_replicate(gateway, ops)
    assert_reads_served(ops, baseline, more_jobs=1)
    assert_intact(gateway)
    ops.close()


# --- read-only ------------------------------------------------------------------------------------


def test_filesystem_forced_read_only_refuses_writes_keeps_reads_and_recovers_on_restart(
    ext4: SmallFilesystem, gateway_factory: Factory
) -> None:
    require_new_sqlite()
    gateway = gateway_factory(OVERRIDES)
    ops = Ops(gateway)
    baseline = write_baseline(gateway, ops)

    ext4.trigger_error()
    with pytest.raises(OSError, match="Read-only"):
        (ext4.mountpoint / "probe").write_bytes(b"x")
    for op, args in (
        ("cache.set", {"key": "new", "value": b"v"}),
        ("cache.set", {"key": "big", "value": os.urandom(BIG)}),
        ("cache.incr", {"key": "hits", "delta": 1}),
        ("cache.delete", {"key": "base0"}),
        ("queue.enqueue", {"task": "shop.tasks.send"}),
        ("queue.dequeue", {"queues": ["default"], "worker_id": "w1"}),
    ):
        body = ops.error(op, args)
        assert body["code"] == "storage_error", (op, body)
    assert ops.ok("cache.get", {"key": "new"}) is None
    assert ops.ok("cache.get", {"key": "hits"}) == 41
    assert_reads_served(ops, baseline)  # base0 is still there, the jobs still READY
    assert ops.ok("replica.sync") is True
    assert_intact(gateway)
    ops.close()

    # An ext4 forced read-only stays so until it is unmounted: stop, repair, start again.
    assert gateway.stop(signal.SIGTERM, timeout=20) == 0
    ext4.unmount()
    assert ext4.image is not None
    fsck = subprocess.run(["e2fsck", "-fy", str(ext4.image)], capture_output=True, text=True,
                          check=False)
    assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr  # 1: errors corrected
    ext4.mount()
    gateway.start(extra_args=("--lease-wait", "10s"))
    ops = Ops(gateway)
    assert_intact(gateway)
    assert_reads_served(ops, baseline)
    assert_writes_work_and_replicate(gateway, ops)
    ops.close()


def test_read_only_storage_error_names_the_condition(
    ext4: SmallFilesystem, gateway_factory: Factory
) -> None:
    gateway = gateway_factory(OVERRIDES)
    ops = Ops(gateway)
    ops.ok("cache.set", {"key": "k", "value": b"v"})
    ext4.trigger_error()
    body = ops.error("cache.set", {"key": "k", "value": b"w"})
    ops.close()
    assert_storage_error(body, "read-only", "readonly")


def start_on_read_only(gateway: GatewayProcess, fs: SmallFilesystem) -> bool:
    """Stop the gateway, remount its folder read-only and start it again.

    :returns: True if it runs (read-only), False if it refused to start; either way it must not
        hang and a refusal must name the condition.
    """
    assert gateway.stop(signal.SIGTERM, timeout=20) == 0
    run(["mount", "-o", "remount,ro", str(fs.mountpoint)])
    assert "ro" in fs.options()
    gateway.start(wait=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not gateway.running():
            failure = [line for line in gateway.log_text().splitlines()
                       if "event=start_failed" in line]
            assert failure and "readonly" in failure[-1].replace("-", "").lower(), (
                gateway.log_text())
            return False
        with contextlib.suppress(OSError), RawConnection(gateway.socket_path, timeout=1) as conn:
            if conn.call("ping", {}, 1)[1] == 0:
                return True
        time.sleep(0.05)
    raise AssertionError(f"the gateway neither ran nor failed on a read-only folder:\n"
                         f"{gateway.log_text()}")


def test_read_only_folder_at_start_refuses_writes_keeps_reads_and_recovers(
    ext4: SmallFilesystem, gateway_factory: Factory
) -> None:
    require_new_sqlite()
    gateway = gateway_factory(OVERRIDES)
    ops = Ops(gateway)
    baseline = write_baseline(gateway, ops)
    ops.close()

    if start_on_read_only(gateway, ext4):
        # It runs read-only: reads are served, writes refused with a message that says why.
        ops = Ops(gateway)
        assert_reads_served(ops, baseline)
        for op, args in (("cache.set", {"key": "new", "value": b"v"}),
                         ("queue.enqueue", {"task": "shop.tasks.send"})):
            assert_storage_error(ops.error(op, args), "readonly", "read-only")
        ops.close()
        assert_intact(gateway)
        assert gateway.stop(signal.SIGTERM, timeout=20) == 0
    assert_intact(gateway)

    run(["mount", "-o", "remount,rw", str(ext4.mountpoint)])
    gateway.start(extra_args=("--lease-wait", "10s"))
    ops = Ops(gateway)
    assert_reads_served(ops, baseline)
    assert_writes_work_and_replicate(gateway, ops)
    ops.close()


def test_a_read_only_folder_at_start_is_refused_with_the_reason(
    ext4: SmallFilesystem, gateway_factory: Factory
) -> None:
    """SQLite opens a file it cannot write read-only without a word; a gateway running on that
    would fail every write until restarted, even once the folder is writable again. So it
    refuses to start, naming the condition, and starts normally once the folder is writable."""
    gateway = gateway_factory(OVERRIDES)
    assert not start_on_read_only(gateway, ext4), "the gateway ran on a read-only folder"
    assert "remount" in gateway.log_text()
    run(["mount", "-o", "remount,rw", str(ext4.mountpoint)])
    gateway.start(extra_args=("--lease-wait", "10s"))
    ops = Ops(gateway)
    ops.ok("cache.set", {"key": "k", "value": b"v"})
    assert ops.ok("cache.get", {"key": "k"}) == b"v"
    ops.close()


def test_a_failed_start_does_not_hold_the_replica_lease(
    tmpfs: SmallFilesystem, gateway_factory: Factory
) -> None:
    """A start that fails after taking the replica lease must not block the next start."""
    overrides = {**OVERRIDES, "replica": {**OVERRIDES["replica"], "lease_ttl": "30s"}}
    gateway = gateway_factory(overrides, start=False)
    cache = gateway.db_path("cache")
    with contextlib.closing(sqlite3.connect(cache)) as c:  # not a cache database
        c.execute("CREATE TABLE someone_elses (x)")
        c.commit()
    gateway.start(wait=False)
    assert gateway.wait(20) != 0
    assert "event=start_failed" in gateway.log_text()
    cache.unlink()
    gateway.start(timeout=10)  # no --lease-wait: the lease must not be in the way
