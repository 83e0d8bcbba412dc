"""A distributed lock on a cache key: ``cache.lock`` / ``cache.unlock`` with a random token.

The lock is an ordinary cache entry holding the holder's token, with a timeout so that a holder
that dies does not keep it forever. Only the holder's token can release it, so a holder whose
lock expired and was taken by someone else cannot release the new holder's lock by mistake.

One :class:`CacheLock` object stands for one attempt to hold the lock; share the key, not the
object, between threads or tasks that compete for it.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from types import EllipsisType, TracebackType
from typing import TYPE_CHECKING, Any

from gateway_client.errors import GatewayError

if TYPE_CHECKING:
    from gateway_client.aio import AsyncClient
    from gateway_client.client import Client

__all__ = ["CacheLock", "LockError", "LockNotOwnedError"]

#: Sent as the lock timeout when the caller asks for none (about ten years): the protocol
#: requires a positive timeout.
FOREVER_SECONDS = 10 * 365 * 24 * 3600
# The first pause of a blocked acquire; it doubles up to the lock's ``sleep``.
_FIRST_PAUSE = 0.002


class LockError(GatewayError):
    """A lock could not be acquired where it had to be (``with lock:``), or was misused."""


class LockNotOwnedError(LockError):
    """``release()`` of a lock this object does not hold (never taken, expired or taken over)."""


class CacheLock:
    """A lock on ``key`` in the gateway cache, usable as a (sync or async) context manager.

    :param client: the blocking client used by the sync methods.
    :param async_client: the asyncio client used by the ``a*`` methods and ``async with``.
    :param key: the cache key of the lock (already made by the caller, prefix included).
    :param timeout: seconds after which the lock expires unless released or reacquired;
        ``None``: it does not expire (about ten years, in fact).
    :param sleep: the longest pause between two tries of a blocked acquire, in seconds.
    :param blocking: whether :meth:`acquire` waits for the lock by default.
    :param blocking_timeout: the longest a blocked acquire waits by default (``None``: forever).
    """

    def __init__(
        self,
        client: Client,
        async_client: AsyncClient | None,
        key: str | bytes,
        *,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"a lock timeout must be positive or None, got {timeout!r}")
        self.client = client
        self.async_client = async_client
        self.key = key
        self.timeout = timeout
        self.sleep = sleep
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        #: The token this object holds the lock with, or None while it does not hold it.
        self.token: str | None = None

    def __repr__(self) -> str:
        state = "held" if self.token is not None else "not held"
        return f"<CacheLock key={self.key!r} {state}>"

    # --- sync ----------------------------------------------------------------------------------

    def acquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | EllipsisType | None = ...,
    ) -> bool:
        """Take the lock; return whether it was taken.

        :param blocking: wait for the lock (default: the lock's ``blocking``).
        :param blocking_timeout: the longest to wait, in seconds (default: the lock's).
        :raises ConnectionError: if the gateway cannot be reached.
        """
        token = secrets.token_hex(16)
        deadline = self._deadline(blocking_timeout)
        pause = min(_FIRST_PAUSE, self.sleep)
        while True:
            if self.client.request("cache.lock", self._lock_args(token)):
                self.token = token
                return True
            if not self._waits(blocking):
                return False
            wait = self._jittered_wait(pause, deadline)
            if wait < 0:
                return False
            time.sleep(wait)
            pause = min(pause * 2, self.sleep)

    def reacquire(self) -> bool:
        """Renew the timeout of the lock this object holds; False if it no longer holds it.

        :raises LockNotOwnedError: if this object never took the lock.
        :raises ConnectionError: if the gateway cannot be reached.
        """
        token = self._held_token()
        if self.client.request("cache.lock", self._lock_args(token)):
            return True
        self.token = None
        return False

    def release(self) -> None:
        """Release the lock.

        :raises LockNotOwnedError: if this object does not hold it (never taken, or it expired;
            a lock someone else took meanwhile is left alone).
        :raises ConnectionError: if the gateway cannot be reached.
        """
        token = self._held_token()
        self.token = None
        if not self.client.request("cache.unlock", {"key": self.key, "token": token}):
            raise LockNotOwnedError(self._lost_message())

    def locked(self) -> bool:
        """True if anyone holds the lock now.

        :raises ConnectionError: if the gateway cannot be reached.
        """
        return bool(self.client.request("cache.has_key", {"key": self.key}))

    def __enter__(self) -> CacheLock:
        if not self.acquire():
            raise LockError(self._not_acquired_message())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    # --- async ---------------------------------------------------------------------------------

    async def aacquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | EllipsisType | None = ...,
    ) -> bool:
        """Async :meth:`acquire`.

        :raises ConnectionError: if the gateway cannot be reached.
        """
        client = self._async_client()
        token = secrets.token_hex(16)
        deadline = self._deadline(blocking_timeout)
        pause = min(_FIRST_PAUSE, self.sleep)
        while True:
            if await client.request("cache.lock", self._lock_args(token)):
                self.token = token
                return True
            if not self._waits(blocking):
                return False
            wait = self._jittered_wait(pause, deadline)
            if wait < 0:
                return False
            await asyncio.sleep(wait)
            pause = min(pause * 2, self.sleep)

    async def areacquire(self) -> bool:
        """Async :meth:`reacquire`.

        :raises LockNotOwnedError: if this object never took the lock.
        :raises ConnectionError: if the gateway cannot be reached.
        """
        token = self._held_token()
        if await self._async_client().request("cache.lock", self._lock_args(token)):
            return True
        self.token = None
        return False

    async def arelease(self) -> None:
        """Async :meth:`release`.

        :raises LockNotOwnedError: if this object does not hold the lock.
        :raises ConnectionError: if the gateway cannot be reached.
        """
        token = self._held_token()
        self.token = None
        unlocked = await self._async_client().request(
            "cache.unlock", {"key": self.key, "token": token}
        )
        if not unlocked:
            raise LockNotOwnedError(self._lost_message())

    async def alocked(self) -> bool:
        """Async :meth:`locked`.

        :raises ConnectionError: if the gateway cannot be reached.
        """
        return bool(await self._async_client().request("cache.has_key", {"key": self.key}))

    async def __aenter__(self) -> CacheLock:
        if not await self.aacquire():
            raise LockError(self._not_acquired_message())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.arelease()

    # --- helpers -------------------------------------------------------------------------------

    def _lock_args(self, token: str) -> dict[str, Any]:
        timeout = FOREVER_SECONDS if self.timeout is None else self.timeout
        return {"key": self.key, "token": token, "timeout": timeout}

    def _waits(self, blocking: bool | None) -> bool:
        return self.blocking if blocking is None else blocking

    def _deadline(self, blocking_timeout: float | EllipsisType | None) -> float | None:
        wait = self.blocking_timeout if blocking_timeout is ... else blocking_timeout
        return None if wait is None else time.monotonic() + wait

    @staticmethod
    def _jittered_wait(pause: float, deadline: float | None) -> float:
        """Half to all of ``pause``, cut to the time left before ``deadline``; -1 once past it.

        Jitter keeps waiters that were turned away together from all retrying in one instant.
        """
        wait = pause / 2 + random.uniform(0, pause / 2)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return -1.0
            wait = min(wait, left)
        return wait

    def _held_token(self) -> str:
        if self.token is None:
            raise LockNotOwnedError(f"the lock {self.key!r} is not held by this CacheLock")
        return self.token

    def _async_client(self) -> AsyncClient:
        if self.async_client is None:
            raise LockError("this CacheLock has no asyncio client")
        return self.async_client

    def _lost_message(self) -> str:
        return (
            f"the lock {self.key!r} was no longer held by this CacheLock when released "
            "(it expired, and may have been taken by someone else)"
        )

    def _not_acquired_message(self) -> str:
        return f"could not acquire the lock {self.key!r} within {self.blocking_timeout} s"
