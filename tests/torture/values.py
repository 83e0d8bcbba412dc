"""Names and digests shared by the load processes and the checker.

Journals hold digests, not values: a digest names a value exactly (type and content) in a few
characters without spaces, so the checker compares what the gateway holds with what was
acknowledged without the journals growing with the payloads.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: The queue the torture's jobs go to and the task the workers run.
QUEUE = "torture"
TASK = "tests.torture.tasks.work"

#: Cache keys of cache slot ``slot``: ``KEYS_PER_SLOT`` value keys and one counter.
KEYS_PER_SLOT = 40

#: Main-database tables of the direct writers (created by the driver, as a migration would).
MAIN_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS torture_rows ("
    " key TEXT PRIMARY KEY NOT NULL, slot INTEGER NOT NULL, txn TEXT NOT NULL,"
    " payload BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS torture_rows_slot ON torture_rows(slot)",
    "CREATE TABLE IF NOT EXISTS torture_writers ("
    " slot INTEGER PRIMARY KEY NOT NULL, txns INTEGER NOT NULL)",
)

#: Digest of "no entry".
ABSENT = "-"


def cache_key(slot: int, index: int) -> str:
    return f"t:{slot}:k{index}"


def counter_key(slot: int) -> str:
    return f"t:{slot}:n"


def digest(value: Any) -> str:
    """A short exact name for a cache value or a row payload (bytes, str, int or None)."""
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        raise TypeError("bool is not a cache value")
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, str):
        return "s" + hashlib.sha256(value.encode()).hexdigest()[:20]
    if isinstance(value, bytes | bytearray | memoryview):
        return "b" + hashlib.sha256(bytes(value)).hexdigest()[:20]
    raise TypeError(f"no digest for {type(value).__name__}")
