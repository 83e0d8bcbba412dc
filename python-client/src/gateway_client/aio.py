"""The asyncio client: one pipelined connection per event loop, requests matched by id.

:class:`AsyncClient` is the asyncio twin of :class:`gateway_client.Client`. Each event loop (and
each process after ``fork``) gets its own :class:`AsyncConnection`, opened on first use; any
number of coroutines of that loop share it, each request with its own id, and the responses are
handed to whichever coroutine waits for that id, in whatever order the server sends them
(``gateway/PROTOCOL.md``, "Requests and responses").

Unlike the blocking connection, a call that times out or is cancelled does not close the
connection: its id is remembered as abandoned and the late reply is dropped when it comes. The
request itself may still be carried out by the server.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import os
import random
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from types import EllipsisType
from typing import Any

from gateway_client.client import _RETRYABLE_HELLO_ERRORS, PROTOCOL_VERSION, Client, hello_args
from gateway_client.connection import RequestNotSentError, _describe_connect_error
from gateway_client.errors import (
    BadArgument,
    ConnectionError,
    FrameTooLarge,
    ProtocolError,
    ServerError,
    TimeoutError,
    server_error_from_body,
)
from gateway_client.frames import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, FrameDecoder, encode_frame
from gateway_client.frames import unpack_payload as _unpack

__all__ = ["AsyncClient", "AsyncConnection"]

# Same bound as the blocking connection: only stops a corrupt length prefix.
_MAX_RESPONSE_SIZE = 1 << 31


class AsyncConnection(asyncio.Protocol):
    """A connection to the gateway on one asyncio event loop.

    Safe to use from any number of coroutines of the loop it was opened on, and from no other
    loop or thread. Open it with :meth:`open`.

    :ivar path: the socket path this connection was made to.
    :ivar max_frame_size: the largest request payload sent; larger ones are refused locally with
        :class:`~gateway_client.errors.FrameTooLarge`.
    """

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        """Use :meth:`open` instead; this only builds the protocol object."""
        self.path = path
        self.loop = loop
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(_MAX_RESPONSE_SIZE)
        self._next_id = 1
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._abandoned: set[int] = set()  # ids whose caller gave up; their replies are dropped
        self._failure: BaseException | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    @classmethod
    async def open(cls, path: str, *, connect_timeout: float = 1.0) -> AsyncConnection:
        """Connect to the gateway listening on ``path`` (no ``hello`` is sent).

        :raises ConnectionError: if the socket cannot be reached (``errno.ENOENT`` when there is
            no socket file).
        :raises TimeoutError: if the connection was not accepted within ``connect_timeout``.
        """
        loop = asyncio.get_running_loop()
        try:
            _transport, protocol = await asyncio.wait_for(
                loop.create_unix_connection(lambda: cls(path, loop), path), connect_timeout
            )
        except (asyncio.TimeoutError, builtins.TimeoutError) as e:
            raise TimeoutError(
                f"the gateway at {path} did not accept the connection within {connect_timeout:g} s"
            ) from e
        except OSError as e:
            raise ConnectionError(e.errno, _describe_connect_error(path, e)) from e
        return protocol

    # --- asyncio.Protocol callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._decoder.feed(data):
                self._accept_response(_unpack(payload))
        except (ProtocolError, ServerError) as e:
            # A malformed stream, or an id-0 error after which the server closes the connection.
            self._fail(e)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self._fail(
            ConnectionError(
                getattr(exc, "errno", None) or errno.ECONNRESET,
                f"the gateway at {self.path} closed the connection{reason}",
            )
        )

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- calls ---------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection has been closed or has failed."""
        return self._failure is not None or self._transport is None

    def close(self) -> None:
        """Close the connection; calls in flight fail with :class:`ConnectionError`. Idempotent."""
        self._fail(ConnectionError(errno.EBADF, f"the connection to {self.path} was closed"))

    async def call(
        self, op: str, args: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Send one request and return the body of its successful response.

        :raises ServerError: (a subclass per code) if the server answered with an error.
        :raises TimeoutError: if no response came within ``timeout``.
        :raises ConnectionError: if the connection failed or was closed.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        (result,) = await self.call_many([(op, args)], timeout)
        return result

    async def call_many(
        self,
        requests: Iterable[tuple[str, Mapping[str, Any] | None]],
        timeout: float | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Pipeline several requests; return their results in request order.

        :param timeout: seconds for the whole batch; ``None`` waits forever.
        :param return_exceptions: put a failed request's :class:`ServerError` in its place.
        :raises ServerError: the first failed request's error, unless ``return_exceptions``.
        :raises TimeoutError: if the batch did not complete within ``timeout``.
        :raises ConnectionError: if the connection failed or was closed
            (:class:`~gateway_client.connection.RequestNotSentError` if nothing was sent).
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        if self._failure is not None or self._transport is None:
            raise RequestNotSentError(errno.EBADF, f"the connection to {self.path} is closed")
        ids, data = self._encode(requests)
        if not ids:
            return []
        futures = [self.loop.create_future() for _ in ids]
        self._waiters.update(zip(ids, futures, strict=True))
        try:
            self._transport.write(data)
            results = await self._wait(futures, timeout)
        except BaseException:
            self._abandon(ids)
            raise
        if not return_exceptions:
            for result in results:
                if isinstance(result, ServerError):
                    raise result
        return results

    def _encode(
        self, requests: Iterable[tuple[str, Mapping[str, Any] | None]]
    ) -> tuple[list[int], bytes]:
        ids: list[int] = []
        frames: list[bytes] = []
        for op, args in requests:
            request_id = self._next_id
            self._next_id += 1
            frame = encode_frame([request_id, op, dict(args or {})])
            if len(frame) - HEADER_SIZE > self.max_frame_size:
                raise FrameTooLarge(
                    "frame_too_large",
                    f"the {op!r} request is {len(frame) - HEADER_SIZE} bytes, over the "
                    f"server's max_frame_size of {self.max_frame_size}; nothing was sent",
                    2,
                )
            ids.append(request_id)
            frames.append(frame)
        return ids, b"".join(frames)

    async def _wait(self, futures: list[asyncio.Future[Any]], timeout: float | None) -> list[Any]:
        try:
            if not self._writable.is_set():
                # The transport buffers what the socket did not take; wait until it drained
                # below its high-water mark so that one fast producer cannot buffer without bound.
                await asyncio.wait_for(self._writable.wait(), timeout)
            if len(futures) == 1:
                return [await asyncio.wait_for(futures[0], timeout)]
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
        except (asyncio.TimeoutError, builtins.TimeoutError) as e:
            if self._failure is not None:
                raise self._failure from e
            raise TimeoutError(
                f"no response from the gateway at {self.path} within the timeout "
                f"({timeout:g} s, {len(futures)} request(s))"
            ) from e

    def _abandon(self, ids: list[int]) -> None:
        for request_id in ids:
            future = self._waiters.pop(request_id, None)
            if future is not None:
                if not future.done():
                    future.cancel()
                if self._failure is None:
                    self._abandoned.add(request_id)

    def _accept_response(self, response: Any) -> None:
        if not (isinstance(response, list) and len(response) == 3):
            raise ProtocolError(
                f"the gateway sent a response that is not [id, status, body]: {response!r:.200}"
            )
        request_id, status, body = response
        if not isinstance(request_id, int) or not isinstance(status, int) or status < 0:
            raise ProtocolError(
                f"the gateway sent a response with a bad id or status: {response!r:.200}"
            )
        if status != 0:
            body = server_error_from_body(status, body)
        if request_id == 0 and isinstance(body, ServerError):
            raise body
        future = self._waiters.pop(request_id, None)
        if future is None:
            if request_id in self._abandoned:
                self._abandoned.discard(request_id)
                return
            raise ProtocolError(
                f"the gateway answered request id {request_id}, which is not in flight"
            )
        if not future.done():
            future.set_result(body)

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        waiters, self._waiters = self._waiters, {}
        self._abandoned.clear()
        for future in waiters.values():
            if not future.done():
                future.set_exception(self._failure)
                # Retrieved here so a caller that was cancelled meanwhile logs no warning.
                future.exception()
        self._writable.set()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


class _LoopSlot:
    """The connection of one event loop and the lock that serialises opening it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)
        self.lock = asyncio.Lock()
        self.connection: AsyncConnection | None = None


class AsyncClient:
    """An asyncio client for one gateway: one connection per event loop, opened lazily.

    Takes the same parameters as :class:`gateway_client.Client`. Safe to share between event
    loops in different threads and to create before ``fork()``.

    :param socket_path: the gateway's ``[server] socket`` path.
    :param timeout: default seconds a call waits for its response (``None``: forever).
    :param connect_timeout: seconds one connection attempt (connect plus ``hello``) may take.
    :param connect_attempts: how many times to try opening a connection before giving up.
    :param backoff: the delay before the second attempt, in seconds; it doubles per attempt.
    :param max_backoff: the largest delay between two attempts, in seconds.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float | None = 5.0,
        connect_timeout: float = 1.0,
        connect_attempts: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        token: str | None = None,
    ) -> None:
        if connect_attempts < 1:
            raise ValueError("connect_attempts must be at least 1")
        self.socket_path = os.fspath(socket_path)
        #: The gateway's ``[server] token``, sent in ``hello``; by default ``$GATEWAY_TOKEN``.
        self.token = token if token is not None else os.environ.get("GATEWAY_TOKEN") or None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connect_attempts = connect_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        # Keyed by id(loop); each slot checks through a weak reference that its loop is the one
        # asking, since ids are reused once a loop is gone. Guarded by _lock (loops in threads).
        self._slots: dict[int, _LoopSlot] = {}
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()

    def __repr__(self) -> str:
        return f"<AsyncClient socket_path={self.socket_path!r}>"

    # --- operations ------------------------------------------------------------------------------

    async def hello(self) -> dict[str, Any]:
        """Return the server's ``hello`` result.

        :raises ConnectionError: if no connection could be made.
        :raises ProtocolError: if the server does not speak protocol 1.
        """
        result = await self.request("hello", hello_args(self.token))
        Client._check_hello(result)
        return result

    async def ping(self) -> str:
        """Check that the gateway answers; return ``"pong"``.

        :raises ConnectionError: if no connection could be made or it failed.
        :raises ProtocolError: if the answer is not ``"pong"``.
        """
        result = await self.request("ping")
        if result != "pong":
            raise ProtocolError(f"ping was answered with {result!r:.100}, not 'pong'")
        return result

    async def stats(self) -> dict[str, Any]:
        """Return the server's ``stats`` result.

        :raises ConnectionError: if no connection could be made or it failed.
        """
        return await self.request("stats")

    async def call(self, op: str, /, **args: Any) -> Any:
        """Run ``op`` with keyword arguments as its args map; return its result.

        :raises ServerError: (a subclass per error code) if the server answered with an error.
        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the gateway did not answer within the timeout.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        return await self.request(op, args)

    async def request(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        """Run ``op`` with the ``args`` map; return its result.

        :param timeout: seconds to wait; omitted means the client's default, ``None`` forever.
        :raises ServerError: (a subclass per error code) if the server answered with an error.
        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the gateway did not answer within the timeout.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        (result,) = await self.call_many([(op, args)], timeout=timeout)
        return result

    async def call_many(
        self,
        requests: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        timeout: float | EllipsisType | None = ...,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Pipeline ``(op, args)`` requests over this loop's connection; return results in order.

        :raises ServerError: the first failed request's error, unless ``return_exceptions``.
        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the batch did not complete within the timeout.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        batch = list(requests)
        effective_timeout = self.timeout if timeout is ... else timeout
        connection = await self._connection()
        try:
            return await connection.call_many(
                batch, effective_timeout, return_exceptions=return_exceptions
            )
        except RequestNotSentError:
            # The connection was found closed before anything was written: safe to resend.
            connection = await self._connection()
            return await connection.call_many(
                batch, effective_timeout, return_exceptions=return_exceptions
            )

    async def aclose(self) -> None:
        """Close the running loop's connection; the next call opens a new one."""
        slot = self._slot(asyncio.get_running_loop())
        if slot.connection is not None:
            slot.connection.close()
            slot.connection = None

    def close(self) -> None:
        """Close the connections of loops that are not running now, and forget closed loops.

        A running loop's connection is left to :meth:`aclose` from inside that loop, since a
        transport must only be touched by its own loop.
        """
        with self._lock:
            slots = list(self._slots.items())
        for key, slot in slots:
            loop = slot.loop_ref()
            if loop is None or loop.is_closed():
                with self._lock:
                    self._slots.pop(key, None)
            elif not loop.is_running() and slot.connection is not None:
                slot.connection.close()
                slot.connection = None

    # --- connections -----------------------------------------------------------------------------

    def _slot(self, loop: asyncio.AbstractEventLoop) -> _LoopSlot:
        pid = os.getpid()
        with self._lock:
            if pid != self._owner_pid:
                # A forked child must not touch the parent's sockets or loops.
                self._slots = {}
                self._owner_pid = pid
            slot = self._slots.get(id(loop))
            if slot is not None and slot.loop_ref() is loop:
                return slot
            for key, other in list(self._slots.items()):
                other_loop = other.loop_ref()
                if other_loop is None or other_loop.is_closed():
                    del self._slots[key]
            slot = _LoopSlot(loop)
            self._slots[id(loop)] = slot
            return slot

    async def _connection(self) -> AsyncConnection:
        slot = self._slot(asyncio.get_running_loop())
        connection = slot.connection
        if connection is not None and not connection.closed:
            return connection
        async with slot.lock:
            connection = slot.connection
            if connection is None or connection.closed:
                connection = await self._open_with_backoff()
                slot.connection = connection
            return connection

    async def _open_with_backoff(self) -> AsyncConnection:
        started = time.monotonic()
        delay = self.backoff
        last_error: Exception | None = None
        for attempt in range(1, self.connect_attempts + 1):
            try:
                return await self._open_once()
            except ConnectionError as e:
                if e.errno in (errno.EACCES, errno.EPERM):
                    raise
                last_error = e
            except _RETRYABLE_HELLO_ERRORS as e:
                last_error = e
            if attempt < self.connect_attempts:
                await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
                delay = min(delay * 2, self.max_backoff)
        elapsed = time.monotonic() - started
        message = (
            f"cannot connect to the gateway at {self.socket_path} after "
            f"{self.connect_attempts} attempts in {elapsed:.2f} s: "
            f"{getattr(last_error, 'strerror', None) or last_error}"
        )
        code = getattr(last_error, "errno", None)
        error = ConnectionError(code, message) if code is not None else ConnectionError(message)
        raise error from last_error

    async def _open_once(self) -> AsyncConnection:
        connection = await AsyncConnection.open(
            self.socket_path, connect_timeout=self.connect_timeout
        )
        try:
            hello = await connection.call(
                "hello", hello_args(self.token), timeout=self.connect_timeout
            )
            Client._check_hello(hello)
        except BadArgument as e:
            connection.close()
            raise ProtocolError(
                f"the gateway at {self.socket_path} does not speak protocol {PROTOCOL_VERSION}: "
                f"{e.message}"
            ) from e
        except BaseException:
            connection.close()
            raise
        max_frame_size = hello.get("max_frame_size")
        if isinstance(max_frame_size, int) and max_frame_size > 0:
            connection.max_frame_size = max_frame_size
        return connection
