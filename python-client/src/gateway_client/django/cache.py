"""``GatewayCache``: a Django cache backend served by the gateway.

In ``settings.py``::

    CACHES = {
        "default": {
            "BACKEND": "gateway_client.django.GatewayCache",
            "LOCATION": "/srv/mysite/run/gateway.sock",
            "OPTIONS": {"READ": "direct"},
        }
    }

It behaves like Django's own backends (``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION``,
``TIMEOUT``, ``validate_key`` warnings, ``None`` values, pickling with the highest protocol) and
has native ``a*`` methods over an asyncio connection. Integers (exactly ``int``, not ``bool``, in
the signed 64-bit range) are stored as integers so that ``incr``/``decr`` are atomic on the
server; every other value is pickled.

Where this backend has to choose, it does as follows:

- ``incr``/``decr`` on a value that is not such an integer (a float, a ``bool``, a pickled big
  int, a value that is not a number) compute ``value + delta`` in Python like Django's locmem
  backend (so ``None + 1`` raises ``TypeError``) and store the result with the entry's remaining
  timeout. That fallback is a read then a write, not atomic; it is the only non-atomic path.
- ``add`` with a timeout of 0 or less stores nothing and returns whether it *would* have stored
  (True when there is no live entry), as Django's database and Redis backends do.
- ``clear()`` with a ``KEY_PREFIX`` removes only keys that start with the prefix all of this
  cache's keys share (``f"{KEY_PREFIX}:"`` with Django's key function; with a custom
  ``KEY_FUNCTION`` the common prefix found by probing it, see :mod:`.cache_keys`). Without a
  ``KEY_PREFIX``, or when the custom key function does not keep it at the start of its keys,
  ``clear()`` clears the whole cache, as every Django backend does.
- ``close()`` keeps the connections: they are per thread (per event loop for the ``a*`` methods)
  and shared by every backend object with the same settings, so closing them at the end of each
  request would only cost a reconnect on the next one.
- ``set()`` of a value over the server's ``max_value_size`` raises
  :class:`~gateway_client.errors.ValueTooLarge`; ``set_many()`` stores the other values and
  returns the keys of those that were too large.

Extras for django-redis users: :meth:`ttl`, :meth:`pttl`, :meth:`expire`, :meth:`persist`,
:meth:`delete_pattern`, :meth:`iter_keys`, :meth:`keys` and :meth:`lock` (and their ``a*`` forms).
Patterns are prefixes: literal text and an optional trailing ``*``; other glob characters raise
``ValueError``.

``OPTIONS``:

- ``READ``: ``"direct"`` (the default) reads ``get``/``get_many``/``has_key`` from the cache file
  through a read-only SQLite connection per thread, falling back to the socket when the file
  cannot be read; ``"socket"`` asks the server for everything. Direct reads are not counted in
  the server's hit/miss stats and do not refresh ``eviction = "lru"`` access times.
- ``CACHE_PATH``: the cache file for direct reads; by default the server's ``stats`` say.
- ``IGNORE_EXCEPTIONS``: when the gateway cannot be reached, reads miss and writes are dropped,
  each with a warning on the ``gateway_client.django.cache`` logger, instead of raising. The
  client then tries to connect once per call (``CONNECT_ATTEMPTS`` 1) unless told otherwise.
- ``TIMEOUT`` (seconds a call waits for its answer), ``CONNECT_TIMEOUT``, ``CONNECT_ATTEMPTS``,
  ``BACKOFF``, ``MAX_BACKOFF``: passed to :class:`~gateway_client.Client`.
- ``SPIN_US`` (default 150): how long a call over the socket waits for its reply by reading
  the socket in a loop before it sleeps, and only while the machine has a CPU to spare (the
  calling thread got a CPU whenever it wanted one); 0 turns this off. Each sleep costs a
  wake-up on both sides of the socket, which on a virtual machine is tens of microseconds of
  CPU; spinning made single-process sets about 1.8x faster on the benchmark VM. Under CPU
  contention the client sleeps as before. See :class:`gateway_client.Client`.
- ``MAX_ENTRIES`` and ``CULL_FREQUENCY``: Django's culling, done by the server, only when one of
  them is given (the server's own ``max_size``/``max_entries`` budget applies regardless).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, MEMCACHE_MAX_KEY_LENGTH, BaseCache
from django.core.exceptions import ImproperlyConfigured

from gateway_client.cache_file import MISSING, CacheFileReader, CacheFileUnavailable
from gateway_client.cache_values import decode_value, encode_value, is_native_int
from gateway_client.client import DEFAULT_SPIN_US, check_spin_us
from gateway_client.django.cache_extras import RedisExtrasMixin
from gateway_client.django.cache_keys import KeyLayout, key_layout
from gateway_client.django.cache_transport import DOWN, CacheTransport, shared_transport
from gateway_client.errors import KeyNotFound, NotInteger, OutOfRange, ValueTooLarge

__all__ = ["DEFAULT_READ", "DEFAULT_SPIN_US", "GatewayCache"]

#: ``OPTIONS["READ"]`` when not given.
DEFAULT_READ = "direct"

_READ_MODES = ("direct", "socket")
_CLIENT_OPTIONS = {
    "TIMEOUT": "timeout",
    "CONNECT_TIMEOUT": "connect_timeout",
    "CONNECT_ATTEMPTS": "connect_attempts",
    "BACKOFF": "backoff",
    "MAX_BACKOFF": "max_backoff",
}
_OWN_OPTIONS = {
    "READ",
    "CACHE_PATH",
    "IGNORE_EXCEPTIONS",
    "MAX_ENTRIES",
    "CULL_FREQUENCY",
    "SPIN_US",
}
# The characters Django's validate_key warns about (memcached's control characters and space).
_MEMCACHE_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
# Returned by the direct-read helpers when the socket must be asked instead.
_ASK_SERVER: Any = object()


class GatewayCache(RedisExtrasMixin, BaseCache):
    """Django's cache API on the gateway (see the module docstring for settings and choices).

    :param server: ``LOCATION``, the gateway's socket path.
    :param params: the rest of the ``CACHES`` entry.
    :raises ImproperlyConfigured: if ``LOCATION`` or an option is not valid.
    """

    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(params)
        if not isinstance(server, str) or not server:
            raise ImproperlyConfigured(
                f"GatewayCache: LOCATION must be the gateway's socket path, got {server!r}"
            )
        options: dict[str, Any] = dict(params.get("OPTIONS") or {})
        unknown = set(options) - _OWN_OPTIONS - set(_CLIENT_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"GatewayCache: unknown OPTIONS {sorted(unknown)}; known: "
                f"{sorted(_OWN_OPTIONS | set(_CLIENT_OPTIONS))}"
            )
        read = options.get("READ", DEFAULT_READ)
        if read not in _READ_MODES:
            raise ImproperlyConfigured(
                f"GatewayCache: OPTIONS['READ'] must be one of {_READ_MODES}, got {read!r}"
            )
        ignore_exceptions = bool(options.get("IGNORE_EXCEPTIONS", False))
        try:
            spin_us = check_spin_us(options.get("SPIN_US", DEFAULT_SPIN_US))
        except ValueError as e:
            raise ImproperlyConfigured(f"GatewayCache: OPTIONS['SPIN_US']: {e}") from e
        self._cull = self._cull_setting(params, options)
        client_options = {
            name: options[option] for option, name in _CLIENT_OPTIONS.items() if option in options
        }
        if ignore_exceptions:
            client_options.setdefault("connect_attempts", 1)
        cache_path = options.get("CACHE_PATH")
        self._transport: CacheTransport = shared_transport(
            server,
            client_options,
            read_direct=read == "direct",
            cache_path=str(cache_path) if cache_path else None,
            ignore_exceptions=ignore_exceptions,
            spin_us=spin_us,
        )

    def _cull_setting(self, params: Mapping[str, Any], options: Mapping[str, Any]) -> list[int]:
        """``[MAX_ENTRIES, CULL_FREQUENCY]`` to send as ``cull``; empty unless either was given
        (BaseCache already parsed both, with Django's defaults of 300 and 3)."""
        given = {"max_entries", "cull_frequency"} & set(params)
        given |= {"MAX_ENTRIES", "CULL_FREQUENCY"} & set(options)
        if not given:
            return []
        if self._max_entries < 0 or self._cull_frequency < 0:
            raise ImproperlyConfigured(
                "GatewayCache: MAX_ENTRIES and CULL_FREQUENCY must not be negative"
            )
        return [self._max_entries, self._cull_frequency]

    @property
    def transport(self) -> CacheTransport:
        """The shared clients (``.client``, ``.async_client``) for operations not wrapped here."""
        return self._transport

    # --- keys, values and timeouts ---------------------------------------------------------------

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> float | int | None:
        """Return the ``timeout`` argument to send: seconds from now, or ``None`` for forever.

        ``DEFAULT_TIMEOUT`` means the cache's ``TIMEOUT``; 0 and negative values come back as 0,
        which the server takes as already expired. Unlike Django's base class this is relative,
        as in Django's Redis backend, since the server keeps its own clock.
        """
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            timeout = float(timeout)
        return timeout if timeout > 0 else 0

    def validate_key(self, key: Any) -> None:
        """Warn (``CacheKeyWarning``) about keys memcached would reject, exactly as Django does.

        Keys that pass are recognised here without Django's lazily compiled pattern, which costs
        more than the rest of a direct read; the others go to Django's check for its messages.
        """
        if len(key) > MEMCACHE_MAX_KEY_LENGTH or _MEMCACHE_UNSAFE.search(key):
            super().validate_key(key)

    def _key(self, key: Any, version: int | None) -> str:
        return self.make_and_validate_key(key, version=version)

    def _encode(self, value: Any) -> bytes | int:
        return encode_value(value, self.pickle_protocol)

    def _write_args(self, key: str, value: bytes | int, seconds: float | None) -> dict[str, Any]:
        args: dict[str, Any] = {"key": key, "value": value}
        if seconds is not None:
            args["timeout"] = seconds
        if self._cull:
            args["cull"] = self._cull
        return args

    def _layout(self, key_prefix: str | None = None, version: int | None = None) -> KeyLayout:
        return key_layout(
            self.key_func,
            self.key_prefix if key_prefix is None else key_prefix,
            self.version if version is None else version,
        )

    # --- direct reads ----------------------------------------------------------------------------

    def _direct(
        self, reader: CacheFileReader | None, read: Callable[[CacheFileReader], Any]
    ) -> Any:
        """``read(reader)``, or ``_ASK_SERVER`` when there is no reader or it failed."""
        if reader is None:
            return _ASK_SERVER
        try:
            result = read(reader)
        except CacheFileUnavailable as e:
            self._transport.reader_failed(reader, e)
            return _ASK_SERVER
        self._transport.reader_succeeded()
        return result

    # --- Django's cache API ----------------------------------------------------------------------

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Store ``value`` unless ``key`` has a live entry; return whether it was stored.

        :raises pickle.PicklingError: (or what ``pickle.dumps`` raises) if ``value`` cannot be
            pickled.
        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        made = self._key(key, version)
        encoded = self._encode(value)
        seconds = self.get_backend_timeout(timeout)
        if seconds is not None and seconds <= 0:
            return self._transport.call("cache.has_key", {"key": made}, True) is False
        return bool(
            self._transport.call("cache.add", self._write_args(made, encoded, seconds), False)
        )

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Async :meth:`add`.

        :raises pickle.PicklingError: if ``value`` cannot be pickled.
        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        encoded = self._encode(value)
        seconds = self.get_backend_timeout(timeout)
        if seconds is not None and seconds <= 0:
            return await self._transport.acall("cache.has_key", {"key": made}, True) is False
        args = self._write_args(made, encoded, seconds)
        return bool(await self._transport.acall("cache.add", args, False))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Return the value of ``key``, or ``default`` if it has no live entry.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        made = self._key(key, version)
        raw = self._direct(self._transport.reader(), lambda r: r.get(made.encode()))
        if raw is _ASK_SERVER:
            raw = self._transport.call("cache.get", {"key": made}, None)
            raw = MISSING if raw is None else raw
        return default if raw is MISSING else decode_value(raw)

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """Async :meth:`get`.

        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        raw = self._direct(await self._transport.areader(), lambda r: r.get(made.encode()))
        if raw is _ASK_SERVER:
            raw = await self._transport.acall("cache.get", {"key": made}, None)
            raw = MISSING if raw is None else raw
        return default if raw is MISSING else decode_value(raw)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Store ``value`` under ``key`` (a timeout of 0 or less removes the key).

        :raises pickle.PicklingError: if ``value`` cannot be pickled.
        :raises ValueTooLarge: if the value is over the server's ``max_value_size``.
        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        made = self._key(key, version)
        args = self._write_args(made, self._encode(value), self.get_backend_timeout(timeout))
        self._transport.call("cache.set", args, None)

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        """Async :meth:`set`.

        :raises pickle.PicklingError: if ``value`` cannot be pickled.
        :raises ValueTooLarge: if the value is over the server's ``max_value_size``.
        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        args = self._write_args(made, self._encode(value), self.get_backend_timeout(timeout))
        await self._transport.acall("cache.set", args, None)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new timeout; return False if it has no live entry.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        return bool(
            self._transport.call("cache.touch", self._touch_args(key, timeout, version), False)
        )

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        """Async :meth:`touch`.

        :raises GatewayError: if the gateway fails.
        """
        args = self._touch_args(key, timeout, version)
        return bool(await self._transport.acall("cache.touch", args, False))

    def _touch_args(self, key: Any, timeout: Any, version: int | None) -> dict[str, Any]:
        args: dict[str, Any] = {"key": self._key(key, version)}
        seconds = self.get_backend_timeout(timeout)
        if seconds is not None:
            args["timeout"] = seconds
        return args

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; return whether it had a live entry.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        return bool(self._transport.call("cache.delete", {"key": self._key(key, version)}, False))

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        """Async :meth:`delete`.

        :raises GatewayError: if the gateway fails.
        """
        return bool(
            await self._transport.acall("cache.delete", {"key": self._key(key, version)}, False)
        )

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Return ``{key: value}`` for those of ``keys`` that have a live entry.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        wanted = self._many_keys(keys, version)
        if not wanted:
            return {}
        found = self._direct(self._transport.reader(), lambda r: r.get_many(list(wanted)))
        if found is _ASK_SERVER:
            found = self._transport.call("cache.get_many", {"keys": self._key_strs(wanted)}, {})
        return self._many_result(wanted, found)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """Async :meth:`get_many`.

        :raises GatewayError: if the gateway fails.
        """
        wanted = self._many_keys(keys, version)
        if not wanted:
            return {}
        reader = await self._transport.areader()
        found = self._direct(reader, lambda r: r.get_many(list(wanted)))
        if found is _ASK_SERVER:
            found = await self._transport.acall(
                "cache.get_many", {"keys": self._key_strs(wanted)}, {}
            )
        return self._many_result(wanted, found)

    def _many_keys(self, keys: Iterable[Any], version: int | None) -> dict[bytes, list[Any]]:
        """``{made key bytes: [the caller's keys that make it]}``, in the caller's order."""
        wanted: dict[bytes, list[Any]] = {}
        for key in keys:
            wanted.setdefault(self._key(key, version).encode(), []).append(key)
        return wanted

    @staticmethod
    def _key_strs(wanted: Mapping[bytes, Any]) -> list[str]:
        return [made.decode() for made in wanted]

    @staticmethod
    def _many_result(wanted: Mapping[bytes, list[Any]], found: Mapping[Any, Any]) -> dict:
        result: dict[Any, Any] = {}
        for made, raw in found.items():
            made_bytes = made.encode() if isinstance(made, str) else bytes(made)
            value = decode_value(raw)
            for key in wanted.get(made_bytes, ()):
                result[key] = value
        return result

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        """Return the value of ``key``; if it has none, ``add`` ``default`` (called first if it
        is callable) and return what the cache then holds.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        value = self.get(key, MISSING, version=version)
        if value is not MISSING:
            return value
        if callable(default):
            default = default()
        self.add(key, default, timeout=timeout, version=version)
        # Read again: another process may have added a value between the get and the add.
        return self.get(key, default, version=version)

    async def aget_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> Any:
        """Async :meth:`get_or_set` (a callable ``default`` is called, not awaited).

        :raises GatewayError: if the gateway fails.
        """
        value = await self.aget(key, MISSING, version=version)
        if value is not MISSING:
            return value
        if callable(default):
            default = default()
        await self.aadd(key, default, timeout=timeout, version=version)
        return await self.aget(key, default, version=version)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """True if ``key`` has a live entry.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        made = self._key(key, version)
        found = self._direct(self._transport.reader(), lambda r: r.has_key(made.encode()))
        if found is _ASK_SERVER:
            found = self._transport.call("cache.has_key", {"key": made}, False)
        return bool(found)

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        """Async :meth:`has_key`.

        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        reader = await self._transport.areader()
        found = self._direct(reader, lambda r: r.has_key(made.encode()))
        if found is _ASK_SERVER:
            found = await self._transport.acall("cache.has_key", {"key": made}, False)
        return bool(found)

    def incr(self, key: Any, delta: Any = 1, version: int | None = None) -> Any:
        """Add ``delta`` to the value of ``key`` and return the new value (atomic for ints).

        :raises ValueError: if ``key`` has no live entry (also when the gateway is down and
            ``IGNORE_EXCEPTIONS`` is set).
        :raises TypeError: if the value does not support ``+ delta`` (Django's behaviour).
        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        if is_native_int(delta):
            try:
                result = self._transport.call("cache.incr", {"key": made, "delta": delta})
            except KeyNotFound as e:
                raise ValueError(f"Key '{made}' not found") from e
            except (NotInteger, OutOfRange):
                pass
            else:
                if result is DOWN:
                    raise ValueError(f"Key '{made}' not found")
                return result
        raw, remaining = self._transport.call_many(
            [("cache.get", {"key": made}), ("cache.ttl", {"key": made})], [None, False]
        )
        new_value = self._add_in_python(made, raw, remaining, delta)
        self._transport.call(
            "cache.set", self._write_args(made, self._encode(new_value), remaining), None
        )
        return new_value

    async def aincr(self, key: Any, delta: Any = 1, version: int | None = None) -> Any:
        """Async :meth:`incr`.

        :raises ValueError: if ``key`` has no live entry.
        :raises TypeError: if the value does not support ``+ delta``.
        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        if is_native_int(delta):
            try:
                result = await self._transport.acall("cache.incr", {"key": made, "delta": delta})
            except KeyNotFound as e:
                raise ValueError(f"Key '{made}' not found") from e
            except (NotInteger, OutOfRange):
                pass
            else:
                if result is DOWN:
                    raise ValueError(f"Key '{made}' not found")
                return result
        raw, remaining = await self._transport.acall_many(
            [("cache.get", {"key": made}), ("cache.ttl", {"key": made})], [None, False]
        )
        new_value = self._add_in_python(made, raw, remaining, delta)
        args = self._write_args(made, self._encode(new_value), remaining)
        await self._transport.acall("cache.set", args, None)
        return new_value

    def _add_in_python(self, made: str, raw: Any, remaining: Any, delta: Any) -> Any:
        if raw is None or remaining is False:
            raise ValueError(f"Key '{made}' not found")
        return decode_value(raw) + delta

    def decr(self, key: Any, delta: Any = 1, version: int | None = None) -> Any:
        """Subtract ``delta`` from the value of ``key``; see :meth:`incr`.

        :raises ValueError: if ``key`` has no live entry.
        :raises TypeError: if the value does not support ``+ (-delta)``.
        :raises GatewayError: if the gateway fails.
        """
        return self.incr(key, -delta, version=version)

    async def adecr(self, key: Any, delta: Any = 1, version: int | None = None) -> Any:
        """Async :meth:`decr`.

        :raises ValueError: if ``key`` has no live entry.
        :raises GatewayError: if the gateway fails.
        """
        return await self.aincr(key, -delta, version=version)

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        """Store every item of ``data`` in one transaction; return the keys that failed.

        The list is empty unless values were over the server's ``max_value_size`` (those are
        left out and listed, the others stored) or the gateway was down with
        ``IGNORE_EXCEPTIONS`` (all keys are listed).

        :raises pickle.PicklingError: if a value cannot be pickled (nothing is stored).
        :raises GatewayError: if the gateway fails.
        """
        items, originals = self._many_items(data, version)
        if not items:
            return []
        seconds = self.get_backend_timeout(timeout)
        try:
            failed = self._transport.call("cache.set_many", self._set_many_args(items, seconds))
        except ValueTooLarge:
            requests = [("cache.set", self._write_args(k, v, seconds)) for k, v in items.items()]
            results = self._transport.client.call_many(requests, return_exceptions=True)
            return self._failed_sets(list(items), results, originals)
        return self._failed_keys(failed, originals)

    async def aset_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        """Async :meth:`set_many`.

        :raises pickle.PicklingError: if a value cannot be pickled (nothing is stored).
        :raises GatewayError: if the gateway fails.
        """
        items, originals = self._many_items(data, version)
        if not items:
            return []
        seconds = self.get_backend_timeout(timeout)
        try:
            failed = await self._transport.acall(
                "cache.set_many", self._set_many_args(items, seconds)
            )
        except ValueTooLarge:
            requests = [("cache.set", self._write_args(k, v, seconds)) for k, v in items.items()]
            client = self._transport.async_client
            results = await client.call_many(requests, return_exceptions=True)
            return self._failed_sets(list(items), results, originals)
        return self._failed_keys(failed, originals)

    def _many_items(
        self, data: Mapping[Any, Any], version: int | None
    ) -> tuple[dict[str, bytes | int], dict[str, Any]]:
        items: dict[str, bytes | int] = {}
        originals: dict[str, Any] = {}
        for key, value in data.items():
            made = self._key(key, version)
            items[made] = self._encode(value)
            originals[made] = key
        return items, originals

    def _set_many_args(self, items: dict[str, bytes | int], seconds: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"items": items}
        if seconds is not None:
            args["timeout"] = seconds
        if self._cull:
            args["cull"] = self._cull
        return args

    @staticmethod
    def _failed_keys(failed: Any, originals: Mapping[str, Any]) -> list[Any]:
        if failed is DOWN:
            return list(originals.values())
        result = []
        for made in failed or ():
            text = made.decode() if isinstance(made, bytes | bytearray) else made
            result.append(originals.get(text, text))
        return result

    @staticmethod
    def _failed_sets(
        made_keys: list[str], results: list[Any], originals: Mapping[str, Any]
    ) -> list[Any]:
        failed = []
        for made, result in zip(made_keys, results, strict=True):
            if isinstance(result, ValueTooLarge):
                failed.append(originals[made])
            elif isinstance(result, Exception):
                raise result
        return failed

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove every key of ``keys``.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        made = [self._key(key, version) for key in keys]
        if made:
            self._transport.call("cache.delete_many", {"keys": made}, None)

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Async :meth:`delete_many`.

        :raises GatewayError: if the gateway fails.
        """
        made = [self._key(key, version) for key in keys]
        if made:
            await self._transport.acall("cache.delete_many", {"keys": made}, None)

    def clear(self) -> None:
        """Remove this cache's entries: those under its ``KEY_PREFIX``, or all (see module doc).

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        prefix = self._layout().clear_prefix
        if prefix:
            self._transport.call("cache.clear", {"prefix": prefix}, None)
        else:
            self._transport.call("cache.clear_all", {}, None)

    async def aclear(self) -> None:
        """Async :meth:`clear`.

        :raises GatewayError: if the gateway fails.
        """
        prefix = self._layout().clear_prefix
        if prefix:
            await self._transport.acall("cache.clear", {"prefix": prefix}, None)
        else:
            await self._transport.acall("cache.clear_all", {}, None)

    def incr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` from ``version`` to ``version + delta``; return the new version.

        :raises ValueError: if ``key`` has no live entry at ``version``.
        :raises GatewayError: if the gateway fails.
        """
        if version is None:
            version = self.version
        value = self.get(key, MISSING, version=version)
        if value is MISSING:
            raise ValueError(f"Key '{key}' not found")
        self.set(key, value, version=version + delta)
        self.delete(key, version=version)
        return version + delta

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Async :meth:`incr_version`.

        :raises ValueError: if ``key`` has no live entry at ``version``.
        :raises GatewayError: if the gateway fails.
        """
        if version is None:
            version = self.version
        value = await self.aget(key, MISSING, version=version)
        if value is MISSING:
            raise ValueError(f"Key '{key}' not found")
        await self.aset(key, value, version=version + delta)
        await self.adelete(key, version=version)
        return version + delta

    def decr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Move ``key`` from ``version`` to ``version - delta``; return the new version.

        :raises ValueError: if ``key`` has no live entry at ``version``.
        :raises GatewayError: if the gateway fails.
        """
        return self.incr_version(key, -delta, version)

    async def adecr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Async :meth:`decr_version`.

        :raises ValueError: if ``key`` has no live entry at ``version``.
        :raises GatewayError: if the gateway fails.
        """
        return await self.aincr_version(key, -delta, version)

    def close(self, **kwargs: Any) -> None:
        """Keep the shared per-thread connections open (called by Django after each request)."""

    async def aclose(self, **kwargs: Any) -> None:
        """Keep the shared per-loop connection open (see :meth:`close`)."""
