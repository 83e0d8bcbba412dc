#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz targets: ``fuzz/corpus/<target>/seed-*``.

Seeds are a few small valid inputs per target (and a few invalid ones the decoders must refuse),
so the fuzzer starts from real structure instead of discovering msgpack, WAL frames and zstd from
nothing. Each seed starts with the target's mode bytes (see the top of each ``*_fuzz.cc``).

WAL seeds are real WAL files written by SQLite through Python's ``sqlite3``; replica objects
follow ``replica/FORMAT.md`` and are compressed with the ``zstd`` command (Debian package
``zstd``). Run it again after a format change; output is deterministic except the WAL salts.

Usage: ``.venv/bin/python fuzz/make_corpus.py`` (needs ``msgpack``).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack

CORPUS = Path(__file__).resolve().parent / "corpus"


def frame(payload: bytes) -> bytes:
    """A protocol frame: 4-byte big-endian length, then the payload."""
    return struct.pack(">I", len(payload)) + payload


def request(req_id: int, op: str, args: dict) -> bytes:
    return msgpack.packb([req_id, op, args], use_bin_type=True)


# --- frame_decoder: [limit mode][chunk seed][stream] ----------------------------------------------


def frame_decoder_seeds() -> dict[str, bytes]:
    hello = frame(request(1, "hello", {"protocol": 1}))
    get = frame(request(2, "cache.get", {"key": b"user:1"}))
    big = frame(request(3, "cache.set", {"key": b"k", "value": b"v" * 300, "ttl": 30.0}))
    stream = hello + get + big
    return {
        "pipelined-whole": bytes([0, 0]) + stream,
        "pipelined-tiny-reads": bytes([0, 2]) + stream,
        "pipelined-medium-reads": bytes([0, 1]) + stream,
        "over-tiny-limit": bytes([1, 3]) + frame(b"x" * 17),
        "empty-frame-after-one": bytes([0, 5]) + hello + b"\0\0\0\0",
        "partial-last-frame": bytes([0, 7]) + hello + get[:6],
        "no-limit": bytes([2, 9]) + hello + b"\xff\xff\xff\xff",
        "limit-of-20": bytes([(19 << 2) | 3, 4]) + frame(b"a" * 20) + frame(b"b" * 21),
    }


# --- request: one frame payload ----------------------------------------------------------------


def request_seeds() -> dict[str, bytes]:
    nested = 1
    for _ in range(70):
        nested = [nested]
    return {
        "hello": request(1, "hello", {"protocol": 1, "client": "fuzz"}),
        "types": request(
            2,
            "t.types",
            {
                "any": None, "bool": True, "int": -5, "uint": 2**64 - 1, "float": 1.5,
                "str": "s", "bin": b"\x00\x01", "key": "k", "array": [1, "x"], "map": {"a": 1},
            },
        ),
        "required": request(3, "t.required", {"key": b"k", "value": {"x": [1, 2]}, "delta": 7}),
        "required-missing": request(4, "t.required", {"key": "k"}),
        "wrong-type": request(5, "t.types", {"uint": -1, "bool": 1}),
        "duplicate-arg": b"\x93\x06\xa7t.types\x82\xa3int\x01\xa3int\x02",
        "unknown-arg": request(7, "t.none", {"what": 1}),
        "non-str-arg-name": b"\x93\x08\xa6t.none\x81\x01\x02",
        "cache-set-many": request(
            9, "cache.set_many", {"items": [[b"a", b"1"], [b"b", b"2"]], "ttl": 60}
        ),
        "queue-enqueue": request(10, "queue.enqueue", {"queue": "default", "payload": b"{}"}),
        "not-an-array": msgpack.packb({"id": 1}),
        "four-elements": msgpack.packb([1, "hello", {}, 4]),
        "negative-id": msgpack.packb([-1, "hello", {}]),
        "args-not-map": msgpack.packb([11, "hello", []]),
        "trailing-bytes": request(12, "hello", {}) + b"\xc0",
        "truncated": request(13, "cache.get", {"key": "abc"})[:-2],
        "too-deep": msgpack.packb([14, "hello", {"a": nested}]),
        "huge-array-header": b"\x93\x0f\xa5hello\x81\xa1a\xdd\xff\xff\xff\xff",
        "huge-map-header": b"\x93\x10\xa5hello\xdf\x7f\xff\xff\xff",
        "huge-str-header": b"\x93\x11\xa5hello\x81\xa1a\xdb\xff\xff\xff\xf0abc",
        "not-msgpack": b"\xc1\xc1",
        "ext-and-floats": msgpack.packb(
            [18, "t.types", {"any": msgpack.ExtType(5, b"xyz"), "float": 3, "int": 2**63}]
        ),
    }


# --- wal_reader: [mode][WAL file] ----------------------------------------------------------------


def make_wal(page_size: int, transactions: int, restart: bool = False) -> bytes:
    """A real WAL written by SQLite, copied while the connection still holds it open."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db.sqlite3"
        con = sqlite3.connect(db, isolation_level=None)
        con.execute(f"PRAGMA page_size={page_size}")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE t(x TEXT)")
        if restart:
            # Fill a few frames, checkpoint them all, then write again: SQLite restarts the WAL
            # from its first frame with new salts, leaving the older frames after it.
            for i in range(3):
                con.execute("INSERT INTO t VALUES (?)", (f"old {i}" * 20,))
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        for i in range(transactions):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t VALUES (?)", (f"row {i} " * (5 + 10 * i),))
            con.execute("COMMIT")
        wal = (Path(tmp) / "db.sqlite3-wal").read_bytes()
        con.close()
    return wal


def wal_reader_seeds() -> dict[str, bytes]:
    wal512 = make_wal(512, 3)
    page512 = 24 + 512
    return {
        "wal-512-three-txns": b"\x00" + wal512,
        "wal-1024-two-txns": b"\x00" + make_wal(1024, 2),
        "wal-512-restarted": b"\x00" + make_wal(512, 1, restart=True),
        "wal-512-cut-mid-frame": b"\x00" + wal512[: 32 + 2 * page512 + 100],
        "wal-512-bad-checksum": b"\x00" + wal512[:60] + bytes([wal512[60] ^ 0xFF]) + wal512[61:],
        # Repaired by the target (mode bit 0): page size 512, all frames / only the first frame.
        "repaired-512": b"\x01" + wal512,
        "repaired-512-first-frame-only": bytes([1 | (2 << 5)]) + wal512,
        "repaired-512-big-endian": bytes([1 | 0x10]) + wal512,
        "zero-header": b"\x00" + bytes(32),
        "bad-magic": b"\x00" + b"\x37\x7f\x06\x84" + wal512[4:64],
    }


# --- replica_object: [mode][object] --------------------------------------------------------------


def zstd(data: bytes) -> bytes:
    if shutil.which("zstd") is None:
        sys.exit("make_corpus: needs the zstd command (apt-get install zstd)")
    return subprocess.run(
        ["zstd", "-q", "-c", "--check", "-3"], input=data, capture_output=True, check=True
    ).stdout


def object_header(snapshot: bool, page_size: int, first: int, last: int, body: bytes,
                  db_pages: int) -> bytes:
    """The 128-byte header of replica/FORMAT.md."""
    magic = b"GWSNAP\x00\x01" if snapshot else b"GWSEG\x00\x00\x01"
    h = magic + struct.pack(">IIQQqqQ", 1, page_size, first, last, 1_700_000_000_000,
                            1_700_000_001_000, len(body))
    h += hashlib.sha256(body).digest()
    h += struct.pack(">IIIQIII", 0x1234, 0x5678, 3, 5, 0xAAAA, 0xBBBB, db_pages)
    return h.ljust(128, b"\x00")


def segment_body(page_size: int) -> bytes:
    body = b""
    for txid, pages in ((7, [1]), (8, [2, 1])):
        body += struct.pack(">QqII", txid, 1_700_000_000_000 + txid, 2, len(pages))
        for pgno in pages:
            body += struct.pack(">I", pgno) + bytes([pgno]) * page_size
    return body


def replica_object_seeds() -> dict[str, bytes]:
    seg = segment_body(512)
    snap = bytes(range(256)) * 4  # two 512-byte pages
    seg_object = object_header(False, 512, 7, 8, seg, 2) + zstd(seg)
    snap_object = object_header(True, 512, 6, 6, snap, 2) + zstd(snap)
    return {
        "segment": b"\x00" + seg_object,
        "snapshot": b"\x00" + snap_object,
        "segment-truncated": b"\x00" + seg_object[:-9],
        "snapshot-wrong-sha": b"\x00" + snap_object[:60] + b"\x00" + snap_object[61:],
        "header-only": b"\x00" + seg_object[:128],
        # Built by the target (mode bit 0): header bytes, then the uncompressed body.
        "built-segment": b"\x01" + object_header(False, 512, 7, 8, seg, 2) + seg,
        "built-snapshot": b"\x03" + object_header(True, 512, 6, 6, snap, 2) + snap,
        "built-segment-page-overrun": b"\x01" + object_header(False, 512, 1, 1, b"", 1)
        + struct.pack(">QqII", 1, 0, 1, 1000) + b"\x00" * 600,
    }


def main() -> None:
    targets = {
        "frame_decoder": frame_decoder_seeds(),
        "request": request_seeds(),
        "wal_reader": wal_reader_seeds(),
        "replica_object": replica_object_seeds(),
    }
    for target, seeds in targets.items():
        folder = CORPUS / target
        if folder.exists():
            for old in folder.glob("seed-*"):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
