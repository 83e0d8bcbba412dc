"""Replication to a file replica and restores from it, against the real binary.

Restore on boot into an empty folder, point-in-time restores by time, `verify`, and the restore
command's refusals and skips. The writers here use Python's sqlite3 the way Django's connections
are set up by gateway_client.django.database() (BEGIN IMMEDIATE, wal_autocheckpoint=0).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from gateway_harness import GatewayProcess, run_gateway_command
from replication_harness import (
    DATABASES,
    call,
    command,
    diff,
    dump,
    format_ms,
    generations,
    integrity,
    replica_overrides,
    require_new_sqlite,
    restore,
    status,
    sync,
    writer_connection,
)

Factory = Callable[..., GatewayProcess]

ORDERS_SCHEMA = """
CREATE TABLE shop_order (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  customer VARCHAR(100) NOT NULL,
  total_cents INTEGER NOT NULL,
  note TEXT NOT NULL,
  created DATETIME NOT NULL
);
CREATE INDEX shop_order_customer ON shop_order (customer);
"""


def write_orders(main: Path, first: int, count: int) -> None:
    """``count`` small transactions, each inserting an order and touching an older one."""
    with closing(writer_connection(main)) as c:
        for i in range(first, first + count):
            c.execute("BEGIN IMMEDIATE")
            c.execute(
                "INSERT INTO shop_order (customer, total_cents, note, created) "
                "VALUES (?, ?, ?, datetime('now'))",
                (f"customer {i % 7}", i * 100, "x" * (i % 50)),
            )
            if i % 3 == 0:
                c.execute(
                    "UPDATE shop_order SET total_cents = total_cents + 1 WHERE id = ?",
                    (i // 2 + 1,),
                )
            if i % 10 == 9:
                c.execute("DELETE FROM shop_order WHERE id = ?", (i - 5,))
            c.execute("COMMIT")


def create_orders(main: Path) -> None:
    with closing(writer_connection(main)) as c:
        c.execute("BEGIN IMMEDIATE")
        for statement in ORDERS_SCHEMA.split(";"):
            if statement.strip():
                c.execute(statement)
        c.execute("COMMIT")


def test_restore_on_boot_brings_back_all_three_databases(
    gateway_factory: Factory,
) -> None:
    require_new_sqlite()
    gw = gateway_factory(replica_overrides())
    main = gw.db_path("main")
    create_orders(main)
    write_orders(main, 0, 40)
    assert call(gw, "cache.set", {"key": "greeting", "value": "hello"}) is True
    assert call(gw, "cache.set", {"key": b"\x00bin", "value": b"\x01\x02\x03"}) is True
    assert call(gw, "cache.set", {"key": "hits", "value": 41}) is True
    job = call(
        gw,
        "queue.enqueue",
        {
            "task": "shop.tasks.send_receipt",
            "args": [7],
            "kwargs": {"to": "a@example.com"},
            "priority": 5,
        },
    )
    sync(gw)
    before = {db: dump(gw.db_path(db)) for db in DATABASES}
    assert gw.stop() == 0

    shutil.rmtree(main.parent)
    gw.start()
    log = gw.log_text()
    for db in DATABASES:
        assert f"event=restore_done db={db}" in log, log
    # Row by row, every table of the three databases, as synced before the stop.
    for db in DATABASES:
        restored = dump(gw.db_path(db))
        assert restored == before[db], f"{db}:\n{diff(before[db], restored)}"
    # The gateway serves what came back.
    assert call(gw, "cache.get", {"key": "greeting"}) == "hello"
    assert call(gw, "cache.get", {"key": b"\x00bin"}) == b"\x01\x02\x03"
    assert call(gw, "cache.incr", {"key": "hits", "delta": 1}) == 42
    got = call(gw, "queue.get", {"id": job["id"]})
    assert (got["state"], got["task"], got["args"], got["kwargs"], got["priority"]) == (
        "READY",
        "shop.tasks.send_receipt",
        [7],
        {"to": "a@example.com"},
        5,
    )
    jobs = call(gw, "queue.dequeue", {"queues": ["default"], "worker_id": "w1"})
    assert [j["id"] for j in jobs] == [job["id"]]
    assert call(
        gw, "queue.complete", {"id": job["id"], "lease_token": jobs[0]["lease_token"]}
    )

    # Replication carries on from the restored files.
    write_orders(main, 40, 10)
    sync(gw)
    st = status(gw)
    for name, d in st["databases"].items():
        assert d["last_error"] is None, (name, d)
    out = gw.folder / "again"
    restore(gw, "main", out / "main.sqlite3")
    assert dump(out / "main.sqlite3") == dump(main)


def test_point_in_time_restore_by_timestamp(gateway_factory: Factory) -> None:
    require_new_sqlite()
    gw = gateway_factory(replica_overrides())
    main = gw.db_path("main")
    create_orders(main)
    sync(gw)
    points: list[tuple[int, int, dict]] = []  # (time ms, txid, content)
    for batch in range(5):
        write_orders(main, batch * 10, 10)
        sync(gw)
        d = status(gw)["databases"]["main"]
        at_ms = round(d["last_txid_at"] * 1000)
        points.append((at_ms, d["last_txid"], dump(main)))
        # The next batch is read from the WAL at a later millisecond (this is not an assertion).
        while time.time() * 1000 < at_ms + 5:
            time.sleep(0.002)
    assert [p[0] for p in points] == sorted({p[0] for p in points}), points

    out = gw.folder / "pitr"
    for i, (at_ms, txid, content) in enumerate(points):
        # Both spellings: RFC 3339 UTC with milliseconds, and Unix seconds.
        spelled = format_ms(at_ms) if i % 2 == 0 else f"{at_ms / 1000:.3f}"
        r = restore(gw, "main", out / f"at-{i}.sqlite3", timestamp=spelled)
        assert r["txid"] == txid, (spelled, r)
        assert r["time"] == format_ms(at_ms)
        assert integrity(out / f"at-{i}.sqlite3") == "ok"
        restored = dump(out / f"at-{i}.sqlite3")
        assert restored == content, f"at {spelled}:\n{diff(content, restored)}"
        if i + 1 < len(points):
            # Between two recorded states: the earlier one.
            between = (at_ms + points[i + 1][0]) // 2
            r = restore(
                gw, "main", out / f"between-{i}.sqlite3", timestamp=format_ms(between)
            )
            assert r["txid"] == txid
            assert dump(out / f"between-{i}.sqlite3") == content

    # Before the replica's first snapshot there is nothing to restore, and the command says so.
    first_ms = int(generations(gw, "main")[0]["id"][:16], 16)
    result = command(
        gw,
        "restore",
        "--db",
        "main",
        "-o",
        str(out / "too-early.sqlite3"),
        "--timestamp",
        format_ms(first_ms - 60_000),
    )
    assert result.returncode != 0
    assert "no snapshot" in result.stderr and "target" in result.stderr, result.stderr
    assert not (out / "too-early.sqlite3").exists()
    # A timestamp the command cannot read is a usage error naming the accepted forms.
    result = command(
        gw,
        "restore",
        "--db",
        "main",
        "-o",
        str(out / "bad.sqlite3"),
        "--timestamp",
        "yesterday",
    )
    assert result.returncode == 2 and "2026-11-21T12:00:00Z" in result.stderr, (
        result.stderr
    )


def test_verify_passes_on_a_healthy_replica_and_fails_without_a_gateway(
    gateway_factory: Factory,
) -> None:
    gw = gateway_factory(replica_overrides())
    assert call(gw, "cache.set", {"key": "a", "value": "b"}) is True
    result = command(gw, "verify")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "verify: OK" in result.stdout
    for db in DATABASES:
        assert f"{db}\trestorable" in result.stdout
    assert "marker found" in result.stdout
    # The marker is cleaned up again.
    keys = call(gw, "cache.keys", {"prefix": "gateway:verify:"})["keys"]
    assert keys == []

    assert gw.stop() == 0
    result = command(gw, "verify")
    assert result.returncode != 0
    assert "OK" not in result.stdout
    assert gw.socket_path in result.stderr or "connect" in result.stderr, result.stderr


def test_restore_refuses_to_overwrite_and_skips_on_request(
    gateway_factory: Factory,
) -> None:
    gw = gateway_factory(replica_overrides())
    assert call(gw, "cache.set", {"key": "a", "value": "b"}) is True
    sync(gw)
    assert gw.stop() == 0

    # Every database file exists: a plain restore refuses and touches nothing.
    before = {db: gw.db_path(db).read_bytes() for db in DATABASES}
    result = command(gw, "restore")
    assert result.returncode == 1
    assert "exists" in result.stderr and "--if-db-not-exists" in result.stderr, (
        result.stderr
    )
    # -o onto an existing file is refused the same way.
    target = gw.folder / "occupied.sqlite3"
    target.write_bytes(b"precious")
    result = command(gw, "restore", "--db", "cache", "-o", str(target))
    assert result.returncode == 1 and "exists" in result.stderr, result.stderr
    assert target.read_bytes() == b"precious"

    result = command(gw, "restore", "--if-db-not-exists")
    assert result.returncode == 0, result.stderr
    for db in DATABASES:
        assert f"restore: {db}: " in result.stderr and "skipped" in result.stderr
        assert gw.db_path(db).read_bytes() == before[db]

    # A missing file among existing ones is restored; the others are skipped.
    gw.db_path("cache").unlink()
    result = command(gw, "restore", "--if-db-not-exists")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cache\t"), result.stdout
    assert dump(gw.db_path("cache"))["cache_entries"][0][1] == b"a"
    leftovers = [
        p.name for p in gw.db_path("cache").parent.iterdir() if "restoring" in p.name
    ]
    assert leftovers == []


def test_restore_from_an_empty_replica(gateway_dir: Path) -> None:
    (gateway_dir / "empty").mkdir()
    gw = GatewayProcess(gateway_dir, replica_overrides("file://empty"))
    # Nothing in the replica: an error by default, success with --if-replica-exists.
    result = command(
        gw, "restore", "--db", "main", "-o", str(gateway_dir / "m.sqlite3")
    )
    assert result.returncode == 1
    assert "no snapshot" in result.stderr, result.stderr
    result = command(gw, "restore", "--if-replica-exists")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("nothing in the replica, skipped") == 3, result.stderr
    for db in DATABASES:
        assert not gw.db_path(db).exists()
    # Listing an empty replica is not an error either.
    assert generations(gw) == []


def test_replica_commands_need_a_replica_url(gateway_dir: Path) -> None:
    gw = GatewayProcess(gateway_dir)
    for name in ("restore", "generations", "snapshots", "verify"):
        result = run_gateway_command([name, "--config", str(gw.config_path)])
        assert result.returncode != 0, name
        assert "[replica] url" in result.stderr, (name, result.stderr)
