"""Read the gateway's cache database file directly, read-only, without a round trip.

``gateway/PROTOCOL.md`` ("Reading the cache file directly") makes the ``cache_entries`` table a
stable interface within schema version 2. :class:`CacheFileReader` opens the file read-only, one
SQLite connection per thread (and per process after ``fork``), in autocommit, so every read is
its own short read transaction that sees the latest commit: a write the gateway acknowledged is
visible to the next read. Reads apply the same expiry rule as the server (an entry is live while
``expires_at`` is NULL or later than now) with the same wall clock, since reader and gateway are
on the same host.

What is not guaranteed: direct reads are not counted in ``cache.stats`` and do not refresh
access times for ``eviction = "lru"``. Any failure (no such file, wrong schema, I/O error) raises
:class:`CacheFileUnavailable`, and the caller is expected to ask the server instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from gateway_client.errors import GatewayError

__all__ = [
    "LONG_KEY_BYTES",
    "MISSING",
    "SCHEMA_VERSION",
    "CacheFileReader",
    "CacheFileUnavailable",
    "stored_key",
]

#: The ``PRAGMA user_version`` of the newest schema this module reads.
SCHEMA_VERSION = 3
# Version 2 has the same columns in another order (``value`` before ``expires_at``); the queries
# name their columns, so it reads the same.
_READABLE_VERSIONS = (2, 3)
#: Keys longer than this are stored as ``x'00' || sha256(key)`` with the whole key beside it.
LONG_KEY_BYTES = 250
#: Returned by :meth:`CacheFileReader.get` when there is no live entry.
MISSING: Any = object()

# SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 32766; stay well below it per statement.
_MANY_CHUNK = 500
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_GET_SQL = f"SELECT value FROM cache_entries WHERE key = ? AND long_key IS ? AND {_LIVE}"
_HAS_SQL = f"SELECT 1 FROM cache_entries WHERE key = ? AND long_key IS ? AND {_LIVE}"


class CacheFileUnavailable(GatewayError):
    """The cache file cannot be read directly now; ask the server instead."""


def stored_key(key: bytes) -> tuple[bytes, bytes | None]:
    """Return ``(key column, long_key column)`` of the row that stores ``key``."""
    if len(key) > LONG_KEY_BYTES:
        return b"\x00" + hashlib.sha256(key).digest(), key
    return key, None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _ThreadState(threading.local):
    connection: sqlite3.Connection | None = None
    pid: int = 0
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file when opened
    checked_at: float = 0.0


class CacheFileReader:
    """Reads live cache entries from the gateway's cache database at ``path``.

    Thread-safe: each thread uses its own connection. Every ``recheck_interval`` seconds a thread
    checks that ``path`` is still the file it has open (the gateway may have replaced it, for
    example by a restore), and reopens it if not.

    :param path: the cache database file (``[databases.cache] path``).
    :param busy_timeout: seconds a read may wait on a lock (only WAL recovery takes one).
    :param recheck_interval: seconds between checks that ``path`` names the open file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 0.5,
        recheck_interval: float = 1.0,
    ) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.recheck_interval = recheck_interval
        self._state = _ThreadState()
        # Connections inherited over fork(): never used nor closed in the child (SQLite forbids
        # carrying a connection across fork), only kept referenced so they are not finalised.
        self._inherited: list[sqlite3.Connection] = []

    def __repr__(self) -> str:
        return f"<CacheFileReader path={self.path!r}>"

    def get(self, key: bytes) -> Any:
        """Return the stored value of ``key`` (bytes, str or int), or :data:`MISSING`.

        :raises CacheFileUnavailable: if the file cannot be read now.
        """
        row = self._fetch_one(_GET_SQL, key)
        return MISSING if row is None else row[0]

    def has_key(self, key: bytes) -> bool:
        """True if ``key`` has a live entry.

        :raises CacheFileUnavailable: if the file cannot be read now.
        """
        return self._fetch_one(_HAS_SQL, key) is not None

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, Any]:
        """Return ``{key: stored value}`` for the keys that have a live entry.

        :raises CacheFileUnavailable: if the file cannot be read now.
        """
        wanted: dict[tuple[bytes, bytes | None], bytes] = {stored_key(k): k for k in keys}
        columns = list({column for column, _long in wanted})
        found: dict[bytes, Any] = {}
        connection = self._connection()
        now = _now_ms()
        try:
            for start in range(0, len(columns), _MANY_CHUNK):
                chunk = columns[start : start + _MANY_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    "SELECT key, long_key, value FROM cache_entries "
                    f"WHERE key IN ({marks}) AND {_LIVE}",
                    (*chunk, now),
                ).fetchall()
                for column, long_key, value in rows:
                    original = wanted.get((column, long_key))
                    if original is not None:
                        found[original] = value
        except sqlite3.Error as e:
            self._discard(connection)
            raise CacheFileUnavailable(f"reading {self.path} failed: {e}") from e
        return found

    def close(self) -> None:
        """Close the calling thread's connection; the next read opens a new one."""
        connection = self._state.connection
        self._state.connection = None
        if connection is not None and self._state.pid == os.getpid():
            connection.close()

    # --- connections -----------------------------------------------------------------------------

    def _fetch_one(self, sql: str, key: bytes) -> tuple[Any, ...] | None:
        column, long_key = stored_key(key)
        connection = self._connection()
        try:
            return connection.execute(sql, (column, long_key, _now_ms())).fetchone()
        except sqlite3.Error as e:
            self._discard(connection)
            raise CacheFileUnavailable(f"reading {self.path} failed: {e}") from e

    def _connection(self) -> sqlite3.Connection:
        state = self._state
        connection = state.connection
        if connection is not None and state.pid != os.getpid():
            self._inherited.append(connection)
            connection = state.connection = None
        if connection is not None:
            now = time.monotonic()
            if now - state.checked_at < self.recheck_interval:
                return connection
            state.checked_at = now
            if self._identity() == state.identity:
                return connection
            self._discard(connection)
        return self._open()

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _open(self) -> sqlite3.Connection:
        identity = self._identity()
        if identity is None:
            raise CacheFileUnavailable(f"no cache database file at {self.path}")
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro"
        try:
            # isolation_level=None: autocommit, so each SELECT is its own read transaction and
            # sees the latest commit; no transaction is ever left open to pin the WAL.
            connection = sqlite3.connect(
                uri, uri=True, timeout=self.busy_timeout, isolation_level=None
            )
        except sqlite3.Error as e:
            raise CacheFileUnavailable(f"cannot open {self.path} read-only: {e}") from e
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in _READABLE_VERSIONS:
                raise CacheFileUnavailable(
                    f"{self.path} has schema version {version}; this client reads "
                    f"versions {', '.join(map(str, _READABLE_VERSIONS))}: upgrade gateway-client"
                )
            # Compiles the statements once, which checks the table and columns exist.
            connection.execute(_GET_SQL, (b"", None, 0)).fetchone()
        except sqlite3.Error as e:
            connection.close()
            raise CacheFileUnavailable(f"{self.path} is not a readable cache file: {e}") from e
        except CacheFileUnavailable:
            connection.close()
            raise
        state = self._state
        state.connection = connection
        state.pid = os.getpid()
        state.identity = identity
        state.checked_at = time.monotonic()
        return connection

    def _discard(self, connection: sqlite3.Connection) -> None:
        if self._state.connection is connection:
            self._state.connection = None
        with contextlib.suppress(sqlite3.Error):
            connection.close()
