"""The connections behind ``GatewayCache``, shared by every instance with the same settings.

Django makes a cache backend object per thread (and per async context) and calls ``close()`` on
it at the end of every request. Connections must outlive that: :func:`shared_transport` hands all
backend objects of one configuration the same :class:`CacheTransport`, whose
:class:`~gateway_client.Client` keeps one connection per thread and whose
:class:`~gateway_client.aio.AsyncClient` keeps one per event loop.

The transport also owns the direct reader (``OPTIONS["READ"] = "direct"``). Its file path comes
from ``OPTIONS["CACHE_PATH"]`` or, once, from the server's ``stats``. When the file cannot be read
the transport says so once in the log, serves reads over the socket, and tries the file again
after :data:`DIRECT_RETRY_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from gateway_client.aio import AsyncClient
from gateway_client.cache_file import CacheFileReader, CacheFileUnavailable
from gateway_client.client import Client
from gateway_client.errors import (
    ConnectionError,
    GatewayError,
    ShuttingDown,
    StorageError,
    TooManyConnections,
)

__all__ = ["DIRECT_RETRY_SECONDS", "DOWN", "CacheTransport", "shared_transport"]

logger = logging.getLogger("gateway_client.django.cache")

#: Seconds between attempts to (re)open the cache file after direct reading failed.
DIRECT_RETRY_SECONDS = 5.0
#: Returned by :meth:`CacheTransport.call` when ``IGNORE_EXCEPTIONS`` swallowed a failure and
#: the caller gave no fallback.
DOWN: Any = object()

# Failures that mean "the gateway is not there or cannot serve now", which IGNORE_EXCEPTIONS
# turns into misses and dropped writes. Errors in the request itself always raise.
_UNAVAILABLE = (ConnectionError, ShuttingDown, TooManyConnections, StorageError)
_READ_OPS = frozenset({"cache.get", "cache.get_many", "cache.has_key", "cache.ttl", "cache.keys"})


class CacheTransport:
    """A blocking client, an asyncio client and an optional direct reader for one gateway.

    Thread-safe; the state of the direct reader is guarded by ``_lock``.

    :param location: the gateway's socket path (the cache's ``LOCATION``).
    :param client_options: keyword arguments for :class:`~gateway_client.Client` and
        :class:`~gateway_client.aio.AsyncClient`.
    :param read_direct: read ``get``/``get_many``/``has_key`` from the cache file.
    :param cache_path: the cache file; ``None`` asks the server's ``stats`` for it.
    :param ignore_exceptions: make :meth:`call` return a fallback instead of raising when the
        gateway is unavailable.
    :param spin_us: the synchronous client's ``spin_us`` (the async client never spins).
    """

    def __init__(
        self,
        location: str,
        client_options: Mapping[str, Any],
        *,
        read_direct: bool,
        cache_path: str | None,
        ignore_exceptions: bool = False,
        spin_us: int = 0,
    ) -> None:
        self.location = location
        self.ignore_exceptions = ignore_exceptions
        self.client = Client(location, spin_us=spin_us, **client_options)
        self.async_client = AsyncClient(location, **client_options)
        self.read_direct = read_direct
        self.cache_path = cache_path
        self._lock = threading.Lock()
        self._reader: CacheFileReader | None = None
        self._retry_at = 0.0  # time.monotonic() before which the file is not tried again
        self._failing = False  # a failure was logged and no read has succeeded since

    # --- calls -----------------------------------------------------------------------------------

    def call(self, op: str, args: Mapping[str, Any], fallback: Any = DOWN) -> Any:
        """Run ``op``; with ``ignore_exceptions``, return ``fallback`` if the gateway is down.

        :raises GatewayError: the failure, unless it is ignored.
        """
        try:
            return self.client.request(op, args)
        except _UNAVAILABLE as e:
            if not self.ignore_exceptions:
                raise
            self._log_ignored(op, e)
            return fallback

    async def acall(self, op: str, args: Mapping[str, Any], fallback: Any = DOWN) -> Any:
        """Async :meth:`call`.

        :raises GatewayError: the failure, unless it is ignored.
        """
        try:
            return await self.async_client.request(op, args)
        except _UNAVAILABLE as e:
            if not self.ignore_exceptions:
                raise
            self._log_ignored(op, e)
            return fallback

    def call_many(self, requests: list[tuple[str, Mapping[str, Any]]], fallback: Any) -> Any:
        """Pipeline ``requests``; with ``ignore_exceptions``, ``fallback`` if the gateway is down.

        :raises GatewayError: the first failure, unless it is ignored.
        """
        try:
            return self.client.call_many(requests)
        except _UNAVAILABLE as e:
            if not self.ignore_exceptions:
                raise
            self._log_ignored(requests[0][0], e)
            return fallback

    async def acall_many(self, requests: list[tuple[str, Mapping[str, Any]]], fallback: Any) -> Any:
        """Async :meth:`call_many`.

        :raises GatewayError: the first failure, unless it is ignored.
        """
        try:
            return await self.async_client.call_many(requests)
        except _UNAVAILABLE as e:
            if not self.ignore_exceptions:
                raise
            self._log_ignored(requests[0][0], e)
            return fallback

    @staticmethod
    def _log_ignored(op: str, error: Exception) -> None:
        outcome = "treated as a miss" if op in _READ_OPS else "dropped"
        logger.warning("gateway cache: %s failed, %s (IGNORE_EXCEPTIONS): %s", op, outcome, error)

    # --- direct reads ----------------------------------------------------------------------------

    def reader(self) -> CacheFileReader | None:
        """The direct reader to try, or ``None`` to use the socket (no ``READ = "direct"``, or
        direct reading failed recently)."""
        if not self.read_direct:
            return None
        reader = self._reader
        if reader is not None or time.monotonic() < self._retry_at:
            return reader
        if self.cache_path is not None:
            return self._install(self.cache_path)
        try:
            stats = self.client.stats()
        except GatewayError as e:
            self._postpone(f"cannot ask the gateway for the cache file path: {e}")
            return None
        return self._install_from_stats(stats)

    async def areader(self) -> CacheFileReader | None:
        """:meth:`reader` for asyncio code (asks ``stats`` over the asyncio client)."""
        if not self.read_direct:
            return None
        reader = self._reader
        if reader is not None or time.monotonic() < self._retry_at:
            return reader
        if self.cache_path is not None:
            return self._install(self.cache_path)
        try:
            stats = await self.async_client.stats()
        except GatewayError as e:
            self._postpone(f"cannot ask the gateway for the cache file path: {e}")
            return None
        return self._install_from_stats(stats)

    def reader_failed(self, reader: CacheFileReader, error: CacheFileUnavailable) -> None:
        """Record that ``reader`` could not read; reads use the socket for a while."""
        with self._lock:
            if self._reader is reader:
                self._reader = None
        reader.close()
        self._postpone(str(error))

    def reader_succeeded(self) -> None:
        """Note a successful direct read (logs the recovery after a failure)."""
        if self._failing:
            self._failing = False
            logger.info("direct reads of the gateway cache file work again")

    def close(self) -> None:
        """Close this process's connections and the calling thread's direct-read connection."""
        self.client.close()
        self.async_client.close()
        reader = self._reader
        if reader is not None:
            reader.close()

    def _install_from_stats(self, stats: Any) -> CacheFileReader | None:
        try:
            path = stats["databases"]["cache"]["path"]
        except (KeyError, TypeError):
            path = None
        if not isinstance(path, str) or not path:
            self._postpone("the gateway's stats do not name a cache database path")
            return None
        return self._install(path)

    def _install(self, path: str) -> CacheFileReader:
        with self._lock:
            if self._reader is None:
                self._reader = CacheFileReader(path)
            return self._reader

    def _postpone(self, reason: str) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + DIRECT_RETRY_SECONDS
            first = not self._failing
            self._failing = True
        if first:
            logger.warning(
                "gateway cache: direct reads unavailable (%s); reading over the socket at %s "
                "and trying the file again every %g s",
                reason,
                self.location,
                DIRECT_RETRY_SECONDS,
            )


_SHARED: dict[tuple[Any, ...], CacheTransport] = {}
_SHARED_LOCK = threading.Lock()


def shared_transport(
    location: str,
    client_options: Mapping[str, Any],
    *,
    read_direct: bool,
    cache_path: str | None,
    ignore_exceptions: bool,
    spin_us: int = 0,
) -> CacheTransport:
    """Return the process-wide :class:`CacheTransport` for these settings, creating it once."""
    options = tuple(sorted(client_options.items()))
    key = (location, options, read_direct, cache_path, ignore_exceptions, spin_us)
    with _SHARED_LOCK:
        transport = _SHARED.get(key)
        if transport is None:
            transport = CacheTransport(
                location,
                client_options,
                read_direct=read_direct,
                cache_path=cache_path,
                ignore_exceptions=ignore_exceptions,
                spin_us=spin_us,
            )
            _SHARED[key] = transport
        return transport
