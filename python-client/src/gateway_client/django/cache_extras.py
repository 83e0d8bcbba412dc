"""django-redis style extras of ``GatewayCache``: ttl, expire, persist, key patterns, locks.

:class:`RedisExtrasMixin` is mixed into :class:`~gateway_client.django.cache.GatewayCache` and
uses its key making (``_key``, ``key_func``) and its :class:`.cache_transport.CacheTransport`.
The signatures follow django-redis, so code written for it keeps working; the differences:

- patterns are prefixes only (literal text and an optional trailing ``*``, see
  :func:`.cache_keys.pattern_prefix`); other glob characters raise ``ValueError``;
- pattern operations need a key function that builds keys as a fixed head followed by the user
  key (Django's default does); others raise ``NotImplementedError``;
- ``ttl``/``pttl`` round up, so a live key never reports 0.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from gateway_client.cache_lock import CacheLock
from gateway_client.django.cache_keys import key_layout, pattern_prefix
from gateway_client.django.cache_transport import DOWN

if TYPE_CHECKING:
    from gateway_client.django.cache_transport import CacheTransport

__all__ = ["RedisExtrasMixin"]


class RedisExtrasMixin:
    """The django-redis extras; see the module docstring."""

    _transport: CacheTransport
    key_func: Any
    key_prefix: str
    version: int

    if TYPE_CHECKING:

        def _key(self, key: Any, version: int | None) -> str: ...

        def get_backend_timeout(self, timeout: Any = ...) -> float | int | None: ...

    def ttl(self, key: Any, version: int | None = None) -> int | None:
        """Seconds ``key`` has left (rounded up), ``None`` if it never expires, 0 if missing.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        return _whole_seconds(
            self._transport.call("cache.ttl", {"key": self._key(key, version)}, False)
        )

    async def attl(self, key: Any, version: int | None = None) -> int | None:
        """Async :meth:`ttl`.

        :raises GatewayError: if the gateway fails.
        """
        made = self._key(key, version)
        return _whole_seconds(await self._transport.acall("cache.ttl", {"key": made}, False))

    def pttl(self, key: Any, version: int | None = None) -> int | None:
        """Milliseconds ``key`` has left (rounded up), ``None`` if it never expires, 0 if missing.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        left = self._transport.call("cache.ttl", {"key": self._key(key, version)}, False)
        return _whole_seconds(left * 1000 if _is_number(left) else left)

    async def apttl(self, key: Any, version: int | None = None) -> int | None:
        """Async :meth:`pttl`.

        :raises GatewayError: if the gateway fails.
        """
        left = await self._transport.acall("cache.ttl", {"key": self._key(key, version)}, False)
        return _whole_seconds(left * 1000 if _is_number(left) else left)

    def expire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        """Give ``key`` a new timeout (``None``: never expires; 0 or less: deletes it).

        :returns: whether ``key`` had a live entry.
        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        op, args = self._expire_request(key, timeout, version)
        return bool(self._transport.call(op, args, False))

    async def aexpire(self, key: Any, timeout: Any, version: int | None = None) -> bool:
        """Async :meth:`expire`.

        :raises GatewayError: if the gateway fails.
        """
        op, args = self._expire_request(key, timeout, version)
        return bool(await self._transport.acall(op, args, False))

    def _expire_request(
        self, key: Any, timeout: Any, version: int | None
    ) -> tuple[str, dict[str, Any]]:
        made = self._key(key, version)
        seconds = self.get_backend_timeout(timeout)
        if seconds is None:
            return "cache.persist", {"key": made}
        return "cache.expire", {"key": made, "timeout": seconds}

    def persist(self, key: Any, version: int | None = None) -> bool:
        """Make ``key`` never expire; return whether it had a live entry.

        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        return bool(self._transport.call("cache.persist", {"key": self._key(key, version)}, False))

    async def apersist(self, key: Any, version: int | None = None) -> bool:
        """Async :meth:`persist`.

        :raises GatewayError: if the gateway fails.
        """
        return bool(
            await self._transport.acall("cache.persist", {"key": self._key(key, version)}, False)
        )

    def delete_pattern(
        self,
        pattern: str,
        version: int | None = None,
        prefix: str | None = None,
        itersize: int | None = None,
    ) -> int:
        """Delete the keys matching the prefix ``pattern`` (``"user:*"``); return how many.

        :param prefix: a ``KEY_PREFIX`` to use instead of the cache's.
        :param itersize: accepted for django-redis compatibility; the server deletes in one go.
        :raises ValueError: if ``pattern`` is not a prefix pattern.
        :raises NotImplementedError: if the key function does not append user keys.
        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        op, args = self._delete_pattern_request(pattern, version, prefix)
        return int(self._transport.call(op, args, 0))

    async def adelete_pattern(
        self,
        pattern: str,
        version: int | None = None,
        prefix: str | None = None,
        itersize: int | None = None,
    ) -> int:
        """Async :meth:`delete_pattern`.

        :raises ValueError: if ``pattern`` is not a prefix pattern.
        :raises NotImplementedError: if the key function does not append user keys.
        :raises GatewayError: if the gateway fails.
        """
        op, args = self._delete_pattern_request(pattern, version, prefix)
        return int(await self._transport.acall(op, args, 0))

    def _delete_pattern_request(
        self, pattern: str, version: int | None, prefix: str | None
    ) -> tuple[str, dict[str, Any]]:
        _head, stored_prefix = self._stored_prefix(pattern, version, prefix)
        if not stored_prefix:
            return "cache.clear_all", {}
        return "cache.delete_prefix", {"prefix": stored_prefix}

    def iter_keys(
        self, search: str = "*", itersize: int | None = None, version: int | None = None
    ) -> Iterator[Any]:
        """Yield the user keys (prefix and version removed) matching the prefix ``search``.

        Pages through ``cache.keys`` (``itersize`` keys per page, default 1000); keys written
        while iterating may or may not be listed.

        :raises ValueError: if ``search`` is not a prefix pattern.
        :raises NotImplementedError: if the key function does not append user keys.
        :raises GatewayError: if the gateway fails (not with ``IGNORE_EXCEPTIONS`` when down).
        """
        head, stored_prefix = self._stored_prefix(search, version, None)
        after: Any = None
        while True:
            page = self._transport.call("cache.keys", _keys_args(stored_prefix, after, itersize))
            if page is DOWN:
                return
            for stored in page["keys"]:
                yield _user_key(stored, head)
            after = page.get("next")
            if after is None:
                return

    async def aiter_keys(
        self, search: str = "*", itersize: int | None = None, version: int | None = None
    ) -> AsyncIterator[Any]:
        """Async :meth:`iter_keys` (an async generator).

        :raises ValueError: if ``search`` is not a prefix pattern.
        :raises NotImplementedError: if the key function does not append user keys.
        :raises GatewayError: if the gateway fails.
        """
        head, stored_prefix = self._stored_prefix(search, version, None)
        after: Any = None
        while True:
            page = await self._transport.acall(
                "cache.keys", _keys_args(stored_prefix, after, itersize)
            )
            if page is DOWN:
                return
            for stored in page["keys"]:
                yield _user_key(stored, head)
            after = page.get("next")
            if after is None:
                return

    def keys(self, search: str = "*", version: int | None = None) -> list[Any]:
        """The list of :meth:`iter_keys`.

        :raises ValueError: if ``search`` is not a prefix pattern.
        :raises NotImplementedError: if the key function does not append user keys.
        :raises GatewayError: if the gateway fails.
        """
        return list(self.iter_keys(search, version=version))

    async def akeys(self, search: str = "*", version: int | None = None) -> list[Any]:
        """Async :meth:`keys`.

        :raises ValueError: if ``search`` is not a prefix pattern.
        :raises NotImplementedError: if the key function does not append user keys.
        :raises GatewayError: if the gateway fails.
        """
        return [key async for key in self.aiter_keys(search, version=version)]

    def _stored_prefix(
        self, pattern: str, version: int | None, key_prefix: str | None
    ) -> tuple[str, str]:
        """``(stored form of the empty user key, stored prefix matching pattern)``."""
        literal = pattern_prefix(pattern)
        key_prefix = self.key_prefix if key_prefix is None else key_prefix
        version = self.version if version is None else version
        if not key_layout(self.key_func, key_prefix, version).appends_key:
            raise NotImplementedError(
                "this cache's KEY_FUNCTION does not build keys as a fixed head followed by the "
                "user key, so key patterns cannot be turned into a stored-key prefix"
            )
        head = self.key_func("", key_prefix, version)
        return head, head + literal

    def lock(
        self,
        key: Any,
        version: int | None = None,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
    ) -> CacheLock:
        """Return a lock on ``key`` for ``with cache.lock("k", timeout=10): ...``.

        :param timeout: seconds until the lock expires on its own; ``None``: it does not.
        :param sleep: the longest pause between two tries while blocked.
        :param blocking: whether acquiring waits for the lock.
        :param blocking_timeout: the longest acquiring waits; ``with`` raises
            :class:`~gateway_client.cache_lock.LockError` past it.
        """
        return CacheLock(
            self._transport.client,
            self._transport.async_client,
            self._key(key, version),
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole_seconds(left: Any) -> int | None:
    """django-redis's ttl convention from ``cache.ttl``'s result: 0 missing, None forever."""
    if left is None:
        return None
    if not _is_number(left) or left <= 0:
        return 0
    return math.ceil(left)


def _keys_args(prefix: str, after: Any, limit: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if prefix:
        args["prefix"] = prefix
    if after is not None:
        args["after"] = after
    if limit is not None:
        args["limit"] = limit
    return args


def _user_key(stored: Any, head: str) -> Any:
    text = stored.decode("utf-8", "surrogateescape") if isinstance(stored, bytes) else stored
    return text[len(head) :] if text.startswith(head) else text
