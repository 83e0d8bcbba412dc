"""The user-facing client: a connection per thread and process, opened lazily, reopened on loss.

``Client`` is safe to share between threads and to create before ``fork()`` (for example in a
Django settings module loaded by a pre-forking app server): each thread of each process gets its
own :class:`~gateway_client.connection.Connection`, opened on first use. A connection that fails
is closed and the next call opens a new one; opening retries with exponential backoff and jitter
for a bounded number of attempts, so a gateway that is restarting is waited for briefly, while a
gateway that is not running is reported quickly.

Requests are not retried once they may have reached the server, since operations such as a queue
enqueue are not idempotent. A request is sent again on a new connection only when the old one is
known to have been closed before any byte of it was written.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from types import EllipsisType
from typing import Any

from gateway_client.connection import Connection, RequestNotSentError
from gateway_client.errors import (
    BadArgument,
    ConnectionError,
    ProtocolError,
    ShuttingDown,
    TooManyConnections,
)

__all__ = ["DEFAULT_SPIN_US", "PROTOCOL_VERSION", "Client", "check_spin_us"]

#: The protocol version this client speaks (``gateway/PROTOCOL.md``).
PROTOCOL_VERSION = 1

#: The ``spin_us`` the Django cache and tasks backends use when their settings give none: long
#: enough for a reply the gateway sends at once, short enough to cost little when it does not.
DEFAULT_SPIN_US = 150


def check_spin_us(value: Any) -> int:
    """Return ``value`` if it is a valid ``spin_us``.

    :raises ValueError: if it is not a whole number of microseconds >= 0 (0 turns spinning off).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"spin_us must be a whole number of microseconds >= 0 (0: off), got {value!r}"
        )
    return value


_CLIENT_NAME = "gateway_client/{version} python/{major}.{minor}"
# Server errors during the handshake that mean "try again shortly", not "give up".
_RETRYABLE_HELLO_ERRORS = (TooManyConnections, ShuttingDown)


class Client:
    """A client for one gateway, usable from any number of threads and forked processes.

    :param socket_path: the gateway's ``[server] socket`` path.
    :param timeout: default seconds a call waits for its response (``None``: forever).
    :param connect_timeout: seconds one connection attempt (connect plus ``hello``) may take.
    :param connect_attempts: how many times to try opening a connection before giving up.
    :param backoff: the delay before the second attempt, in seconds; it doubles per attempt.
    :param max_backoff: the largest delay between two attempts, in seconds.
    :param spin_us: wait up to this many microseconds for a reply without sleeping, while the
        machine has a CPU to spare (0, the default: always sleep until it comes). Worth it for
        calls the gateway answers at once, such as the cache's; not for blocking dequeues.
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
        spin_us: int = 0,
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
        self.spin_us = check_spin_us(spin_us)
        self._local = threading.local()
        # Every connection this process opened, so close() can reach other threads' ones.
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._owner_pid = os.getpid()
        _LIVE_CLIENTS.add(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client socket_path={self.socket_path!r}>"

    # --- operations ------------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Return the server's ``hello`` result (protocol, versions, features, max_frame_size).

        :raises ConnectionError: if no connection could be made.
        :raises ProtocolError: if the server does not speak protocol 1.
        """
        result = self.request("hello", hello_args(self.token))
        self._check_hello(result)
        return result

    def ping(self) -> str:
        """Check that the gateway answers; return ``"pong"``.

        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the gateway did not answer within the timeout.
        :raises ProtocolError: if the answer is not ``"pong"``.
        """
        result = self.request("ping")
        if result != "pong":
            raise ProtocolError(f"ping was answered with {result!r:.100}, not 'pong'")
        return result

    def stats(self) -> dict[str, Any]:
        """Return the server's counters and per-database state (see PROTOCOL.md, ``stats``).

        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the gateway did not answer within the timeout.
        """
        return self.request("stats")

    def call(self, op: str, /, **args: Any) -> Any:
        """Run operation ``op`` with keyword arguments as its args map; return its result.

        Uses the client's default timeout; :meth:`request` takes an explicit one.

        :raises ServerError: (a subclass per error code) if the server answered with an error.
        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the gateway did not answer within the timeout.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        return self.request(op, args)

    def request(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | EllipsisType | None = ...,
    ) -> Any:
        """Run operation ``op`` with the ``args`` map; return its result.

        :param timeout: seconds to wait; omitted means the client's default, ``None`` forever.
        :raises ServerError: (a subclass per error code) if the server answered with an error.
        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the gateway did not answer within the timeout.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        (result,) = self.call_many([(op, args)], timeout=timeout)
        return result

    def call_many(
        self,
        requests: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        timeout: float | EllipsisType | None = ...,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Pipeline ``(op, args)`` requests over one connection; return results in order.

        :param timeout: seconds for the whole batch; omitted means the client's default.
        :param return_exceptions: return a failed request's :class:`ServerError` in its place
            instead of raising the first one.
        :raises ServerError: the first failed request's error, unless ``return_exceptions``.
        :raises ConnectionError: if no connection could be made or it failed.
        :raises TimeoutError: if the batch did not complete within the timeout.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        batch = list(requests)
        effective_timeout = self.timeout if timeout is ... else timeout
        connection = self._connection()
        try:
            return connection.call_many(
                batch, effective_timeout, return_exceptions=return_exceptions
            )
        except RequestNotSentError:
            # The server closed the idle connection (restart, idle limit) and never saw the
            # batch, so sending it once more on a fresh connection cannot run anything twice.
            connection = self._connection()
            return connection.call_many(
                batch, effective_timeout, return_exceptions=return_exceptions
            )

    def close(self) -> None:
        """Close every connection this client opened in this process.

        The client stays usable: the next call opens a new connection. A call that another
        thread has in progress at that moment fails with :class:`ConnectionError`.
        """
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            connection.close()
        self._local.__dict__.clear()

    # --- connections -----------------------------------------------------------------------------

    def _connection(self) -> Connection:
        """Return this thread's open connection, opening one if needed."""
        pid = os.getpid()
        if pid != self._owner_pid:
            self._after_fork(pid)
        local = self._local  # after the fork check, which replaces it
        connection: Connection | None = getattr(local, "connection", None)
        if connection is not None and connection.is_idle_and_open():
            return connection
        connection = self._open_with_backoff()
        local.connection = connection
        with self._lock:
            self._connections.add(connection)
        return connection

    def _after_fork(self, pid: int) -> None:
        """Forget the parent's connections in a forked child without disturbing the parent.

        The child holds copies of the parent's sockets; closing a copy does not end the parent's
        connection (no shutdown is sent), but using it would interleave the two processes' frames.
        """
        with self._lock:
            inherited = list(self._connections)
            self._connections.clear()
            self._owner_pid = pid
        for connection in inherited:
            connection.close()
        self._local = threading.local()

    def _open_with_backoff(self) -> Connection:
        """Open a connection and say hello, retrying with backoff.

        :raises ConnectionError: after ``connect_attempts`` failed attempts, chained to the last.
        :raises ProtocolError: if the server does not speak this client's protocol.
        """
        started = time.monotonic()
        delay = self.backoff
        last_error: Exception | None = None
        for attempt in range(1, self.connect_attempts + 1):
            try:
                return self._open_once()
            except ConnectionError as e:
                if e.errno in (errno.EACCES, errno.EPERM):
                    raise  # retrying will not grant access
                last_error = e
            except _RETRYABLE_HELLO_ERRORS as e:
                last_error = e
            if attempt < self.connect_attempts:
                # Equal jitter: wait between half and all of the delay, so clients that lost
                # the gateway together do not all come back in the same instant.
                time.sleep(delay / 2 + random.uniform(0, delay / 2))
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

    def _open_once(self) -> Connection:
        connection = Connection(
            self.socket_path, connect_timeout=self.connect_timeout, spin_us=self.spin_us
        )
        try:
            hello = connection.call(
                "hello", hello_args(self.token), timeout=self.connect_timeout
            )
            self._check_hello(hello)
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

    @staticmethod
    def _check_hello(hello: Any) -> None:
        if not isinstance(hello, Mapping):
            raise ProtocolError(f"hello was answered with {type(hello).__name__}, not a map")
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"the gateway speaks protocol {hello.get('protocol')!r}, "
                f"this client speaks {PROTOCOL_VERSION}"
            )


# Clients alive in this process, so that a forked child can give each a fresh lock: the parent's
# may have been held by a thread that does not exist in the child.
_LIVE_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _fresh_locks_after_fork() -> None:
    for client in list(_LIVE_CLIENTS):
        client._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_after_fork)


def hello_args(token: str | None) -> dict[str, object]:
    """The arguments of ``hello``: protocol version, client name and, if set, the token."""
    args: dict[str, object] = {"protocol": PROTOCOL_VERSION, "client": _client_name()}
    if token:
        args["token"] = token
    return args


def _client_name() -> str:
    from gateway_client import __version__

    return _CLIENT_NAME.format(
        version=__version__, major=sys.version_info.major, minor=sys.version_info.minor
    )
