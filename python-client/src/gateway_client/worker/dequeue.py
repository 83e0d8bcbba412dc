"""The worker's long-poll for jobs: a ``queue.dequeue`` that a stop request can cut short.

A worker process spends its idle time blocked in ``queue.dequeue`` with a long ``wait_ms``. On
SIGTERM it should stop waiting, but the protocol has no way to cancel a request, and simply
closing the connection could lose a job the server handed out just before: the reply would be
dropped unread and the job would sit ``RUNNING`` until its lease expired. So this channel, on a
stop request, only half-closes the connection (``shutdown(SHUT_WR)``) and keeps reading until the
dequeue's reply or the end of the stream: a server that ends a waiting dequeue when its client's
stream ends answers at once, and one that does not answers when ``wait_ms`` is over. Either way a
job handed out is read, returned and run like any other, never dropped.

The channel has its own connection (not :class:`~gateway_client.Client`'s), since its wait must
watch the stop pipe as well as the socket.

:meth:`DequeueChannel.complete_and_dequeue` reports a finished job and takes the next ones in one
round trip (``queue.dequeue`` with ``complete``). The server answers it without waiting for jobs,
so it does not watch the stop pipe: its reply, which says whether the completion was stored, is
always read.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway_client.connection import _describe_connect_error
from gateway_client.errors import (
    ConnectionError,
    ProtocolError,
    ServerError,
    TimeoutError,
    server_error_from_body,
)
from gateway_client.frames import FrameDecoder, encode_frame, unpack_payload
from gateway_client.queue import Job

__all__ = ["CompletedAndDequeued", "DequeueChannel", "DequeueInterrupted"]

_RECV_SIZE = 256 * 1024
_MAX_RESPONSE_SIZE = 1 << 31


class DequeueInterrupted(Exception):
    """The stop pipe became readable while waiting, and no job had been handed out."""


@dataclass
class CompletedAndDequeued:
    """The answer to :meth:`DequeueChannel.complete_and_dequeue`.

    Exactly one of ``completed`` (the stored job, ``SUCCESSFUL``) and ``completion_error`` (why
    the completion was refused, e.g. :class:`~gateway_client.errors.LeaseLost`) is set.
    """

    completed: Job | None
    completion_error: ServerError | None
    jobs: list[Job]


class DequeueChannel:
    """One connection used only for ``queue.dequeue``; not thread-safe.

    :param socket_path: the gateway's socket.
    :param stop_fd: a file descriptor that becomes readable (and stays readable) once the
        worker should stop; the channel never reads from it.
    :param connect_timeout: seconds to wait for the connection to be accepted.
    """

    def __init__(self, socket_path: str, stop_fd: int, *, connect_timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self.stop_fd = stop_fd
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder(_MAX_RESPONSE_SIZE)
        self._next_id = 1

    def close(self) -> None:
        """Close the connection; the next :meth:`dequeue` opens a new one. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def dequeue(self, args: Mapping[str, Any], timeout: float) -> list[Job]:
        """Send ``queue.dequeue`` with ``args`` and wait for its jobs.

        :param timeout: seconds to wait for the reply (make it longer than ``wait_ms``).
        :raises DequeueInterrupted: if the stop pipe became readable first and no job came.
        :raises ServerError: if the server answered with an error.
        :raises ConnectionError: if the gateway could not be reached or the connection broke.
        :raises TimeoutError: if no reply came within ``timeout``.
        :raises ProtocolError: if the reply does not follow the protocol.
        """
        body = self._call(args, timeout, interruptible=True)
        if not isinstance(body, list):
            raise ProtocolError(f"queue.dequeue answered {type(body).__name__}, not an array")
        return self._jobs(body)

    def complete_and_dequeue(
        self, args: Mapping[str, Any], timeout: float
    ) -> CompletedAndDequeued:
        """Send ``queue.dequeue`` with ``args``, which hold a ``complete`` map; never waits on stop.

        :param timeout: seconds to wait for the reply.
        :raises ServerError: if the server refused the whole request (then nothing was stored).
        :raises ConnectionError: if the gateway could not be reached or the connection broke
            (the completion may or may not have been stored).
        :raises TimeoutError: if no reply came within ``timeout``.
        :raises ProtocolError: if the reply does not follow the protocol.
        """
        body = self._call(args, timeout, interruptible=False)
        if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
            raise ProtocolError(f"queue.dequeue with complete answered {body!r:.200}")
        completed = body.get("completed")
        error = body.get("completion_error")
        return CompletedAndDequeued(
            completed=None if completed is None else Job.from_map(completed),
            completion_error=None if error is None else server_error_from_body(
                error.get("status", 0) if isinstance(error, dict) else 0, error
            ),
            jobs=self._jobs(body["jobs"]),
        )

    def _call(self, args: Mapping[str, Any], timeout: float, *, interruptible: bool) -> Any:
        """Send one ``queue.dequeue`` and return its reply's body (see :meth:`dequeue`)."""
        sock = self._open()
        request_id = self._next_id
        self._next_id += 1
        try:
            sock.sendall(encode_frame([request_id, "queue.dequeue", dict(args)]))
        except OSError as e:
            self.close()
            raise ConnectionError(e.errno, f"lost the gateway at {self.socket_path}: {e}") from e
        deadline = time.monotonic() + timeout
        with selectors.PollSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            if interruptible:
                selector.register(self.stop_fd, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise TimeoutError(f"queue.dequeue got no reply within {timeout:g} s")
                ready = {key.fd for key, _ in selector.select(remaining)}
                if sock.fileno() in ready:
                    # Read first: a job that came together with the stop request is kept.
                    body = self._receive(sock, request_id)
                    if body is not None:
                        return body
                if self.stop_fd in ready:
                    return self._stop_waiting(sock, request_id, deadline)

    def _open(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise ConnectionError(e.errno, _describe_connect_error(self.socket_path, e)) from e
        sock.settimeout(None)
        self._sock = sock
        self._decoder = FrameDecoder(_MAX_RESPONSE_SIZE)
        return sock

    def _receive(self, sock: socket.socket, request_id: int) -> Any:
        """Read what is there; return the reply body once the one for ``request_id`` is in."""
        try:
            data = sock.recv(_RECV_SIZE)
        except OSError as e:
            self.close()
            raise ConnectionError(e.errno, f"lost the gateway at {self.socket_path}: {e}") from e
        if not data:
            self.close()
            raise ConnectionError(
                errno.ECONNRESET, f"the gateway at {self.socket_path} closed the connection"
            )
        try:
            payloads = self._decoder.feed(data)
            for payload in payloads:
                body = self._accept(unpack_payload(payload), request_id)
                if body is not None:
                    return body
        except (ProtocolError, ServerError):
            self.close()
            raise
        return None

    def _accept(self, response: Any, request_id: int) -> Any:
        if not (isinstance(response, list) and len(response) == 3):
            raise ProtocolError(f"the gateway sent a malformed response: {response!r:.200}")
        got_id, status, body = response
        if status != 0:
            error = server_error_from_body(status, body)
            if got_id in (0, request_id):
                raise error
            return None
        if got_id != request_id:
            raise ProtocolError(f"the gateway answered request {got_id}, which is not in flight")
        if body is None:
            raise ProtocolError("queue.dequeue answered nil")
        return body

    def _stop_waiting(self, sock: socket.socket, request_id: int, deadline: float) -> Any:
        """Half-close, then read the reply (or the end of the stream) until ``deadline``."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            raise DequeueInterrupted() from None
        try:
            with selectors.PollSelector() as selector:
                selector.register(sock, selectors.EVENT_READ)
                while (remaining := deadline - time.monotonic()) > 0:
                    if not selector.select(remaining):
                        break
                    body = self._receive(sock, request_id)
                    if body is not None:
                        return body
        except (ConnectionError, ServerError):
            pass  # EOF (the usual end) or the server's goodbye: no job was handed out
        finally:
            self.close()
        raise DequeueInterrupted()

    @staticmethod
    def _jobs(body: list[Any]) -> list[Job]:
        return [Job.from_map(item) for item in body]
