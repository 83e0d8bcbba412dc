"""The worker's own connection: long-poll dequeues a stop request can cut short, and pipelining.

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

:meth:`DequeueChannel.send` pipelines a request (a worker's ``queue.complete`` of a prefetched
job) without waiting. Its answer is read whenever the channel reads (while it waits for a dequeue,
or in :meth:`DequeueChannel.answers`) and kept until :meth:`DequeueChannel.answers` hands it out.
When the connection breaks, the ids of the requests it leaves unanswered are kept too, for
:meth:`DequeueChannel.take_lost`: the caller must find out itself what became of them.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway_client.connection import _describe_connect_error
from gateway_client.errors import (
    ConnectionError,
    FrameTooLarge,
    ProtocolError,
    ServerError,
    TimeoutError,
    server_error_from_body,
)
from gateway_client.frames import HEADER_SIZE, FrameDecoder, encode_frame, unpack_payload
from gateway_client.queue import Job

__all__ = ["Answer", "CompletedAndDequeued", "DequeueChannel", "DequeueInterrupted"]

_RECV_SIZE = 256 * 1024
_MAX_RESPONSE_SIZE = 1 << 31
_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR


class DequeueInterrupted(Exception):
    """The stop pipe became readable while waiting, and no job had been handed out."""


@dataclass
class CompletedAndDequeued:
    """The answer to :meth:`DequeueChannel.complete_and_dequeue`.

    Exactly one of ``completed_map`` (the stored job as the server sent it, ``SUCCESSFUL``) and
    ``completion_error`` (why the completion was refused, e.g.
    :class:`~gateway_client.errors.LeaseLost`) is set.
    """

    completed_map: dict[str, Any] | None
    completion_error: ServerError | None
    jobs: list[Job]

    @property
    def completed(self) -> Job | None:
        """The stored job, decoded (only on demand: a worker needs just its state)."""
        return None if self.completed_map is None else Job.from_map(self.completed_map)


@dataclass(slots=True)
class Answer:
    """The answer to a request sent with :meth:`DequeueChannel.send`.

    A success keeps its response undecoded until :meth:`body` is asked for: a worker needs only
    to know that its completion was stored, not the stored job.
    """

    request_id: int
    error: ServerError | None
    payload: bytes | None  # the whole response payload of a success

    def body(self) -> Any:
        """The body of a success, decoded (None for an error).

        :raises ProtocolError: if the response is not one msgpack value.
        """
        return None if self.payload is None else unpack_payload(self.payload)[2]


class DequeueChannel:
    """One connection for a worker's dequeues and pipelined completions; not thread-safe.

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
        # poll objects hold no kernel state, so making them once per connection is all it costs.
        self._poll_sock = select.poll()
        self._poll_sock_or_stop = select.poll()
        self._next_id = 1
        self._unanswered: set[int] = set()  # ids of sent requests whose answer was not read
        self._answers: list[Answer] = []  # answers read, not yet handed out
        self._lost: list[int] = []  # ids left unanswered by a connection that broke

    @property
    def unanswered(self) -> int:
        """How many requests of :meth:`send` are waiting for their answer."""
        return len(self._unanswered)

    def close(self) -> None:
        """Close the connection; the next call opens a new one. Idempotent.

        Requests of :meth:`send` still unanswered become lost (see :meth:`take_lost`).
        """
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._unanswered:
            self._lost.extend(sorted(self._unanswered))
            self._unanswered.clear()

    # --- pipelined requests ------------------------------------------------------------------

    def send(self, op: str, args: Mapping[str, Any], *, max_payload: int | None = None) -> int:
        """Send one request without waiting for its answer; return its id.

        :param max_payload: refuse (locally, sending nothing) a request whose payload is larger.
        :raises FrameTooLarge: if the payload is over ``max_payload``; nothing was sent.
        :raises ConnectionError: if the gateway could not be reached or the connection broke
            (the request may have been sent; its id is then among :meth:`take_lost`'s).
        """
        request_id = self._next_id
        frame = encode_frame([request_id, op, args])
        if max_payload is not None and len(frame) - HEADER_SIZE > max_payload:
            raise FrameTooLarge(
                "frame_too_large",
                f"the {op!r} request is {len(frame) - HEADER_SIZE} bytes, over the "
                f"{max_payload} this channel pipelines; nothing was sent",
                2,
            )
        sock = self._open()
        self._next_id += 1
        self._unanswered.add(request_id)
        self._send_frame(sock, frame)
        return request_id

    def answers(self, timeout: float = 0.0) -> list[Answer]:
        """Hand out the answers read so far, after reading what the socket holds.

        :param timeout: seconds to wait for every request of :meth:`send` to be answered;
            0 reads only what is there.
        :raises ConnectionError: if the connection broke (the answers read before are still
            handed out by the next call; the unanswered requests are in :meth:`take_lost`).
        :raises TimeoutError: if requests were still unanswered after ``timeout`` (the
            connection is then closed, and they are lost).
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        sock = self._sock
        if sock is not None and self._unanswered:
            if timeout <= 0:
                if self._poll_sock.poll(0):
                    self._receive(sock, 0)
            else:
                deadline = time.monotonic() + timeout
                while self._unanswered:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.close()
                        raise TimeoutError(f"pipelined requests unanswered after {timeout:g} s")
                    if self._poll_sock.poll(remaining * 1000):
                        self._receive(sock, 0)
        answers, self._answers = self._answers, []
        return answers

    def take_lost(self) -> list[int]:
        """The ids of :meth:`send` requests whose connection broke before they were answered."""
        lost, self._lost = self._lost, []
        return lost

    # --- dequeues ----------------------------------------------------------------------------

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
        return [Job.from_map(item) for item in body]

    def complete_and_dequeue(self, args: Mapping[str, Any], timeout: float) -> CompletedAndDequeued:
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
        if (error is None) == (completed is None) or not isinstance(completed, dict | None):
            raise ProtocolError(f"queue.dequeue with complete answered {body!r:.200}")
        return CompletedAndDequeued(
            completed_map=completed,
            completion_error=None
            if error is None
            else server_error_from_body(
                error.get("status", 0) if isinstance(error, dict) else 0, error
            ),
            jobs=[Job.from_map(item) for item in body["jobs"]],
        )

    def _call(self, args: Mapping[str, Any], timeout: float, *, interruptible: bool) -> Any:
        """Send one ``queue.dequeue`` and return its reply's body (see :meth:`dequeue`)."""
        sock = self._open()
        request_id = self._next_id
        self._next_id += 1
        self._send_frame(sock, encode_frame([request_id, "queue.dequeue", args]))
        deadline = time.monotonic() + timeout
        poll = self._poll_sock_or_stop if interruptible else self._poll_sock
        sock_fd = sock.fileno()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise TimeoutError(f"queue.dequeue got no reply within {timeout:g} s")
            ready = {fd for fd, _ in poll.poll(remaining * 1000)}
            if sock_fd in ready:
                # Read first: a job that came together with the stop request is kept.
                found, body = self._receive(sock, request_id)
                if found:
                    return body
            if self.stop_fd in ready:
                return self._stop_waiting(sock, request_id, deadline)

    # --- the connection ----------------------------------------------------------------------

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
        self._poll_sock = select.poll()
        self._poll_sock.register(sock, _READABLE)
        self._poll_sock_or_stop = select.poll()
        self._poll_sock_or_stop.register(sock, _READABLE)
        self._poll_sock_or_stop.register(self.stop_fd, _READABLE)
        return sock

    def _send_frame(self, sock: socket.socket, frame: bytes) -> None:
        try:
            sock.sendall(frame)
        except OSError as e:
            self.close()
            raise ConnectionError(e.errno, f"lost the gateway at {self.socket_path}: {e}") from e

    def _receive(self, sock: socket.socket, request_id: int) -> tuple[bool, Any]:
        """Read what is there; keep answers to :meth:`send`'s requests.

        :return: ``(True, body)`` once the reply to ``request_id`` is among what was read,
            else ``(False, None)``.
        """
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
        found, wanted = False, None
        failure: Exception | None = None
        try:
            # Every payload is looked at, even after the wanted one: answers to pipelined
            # requests may have come in the same read.
            for payload in self._decoder.feed(data):
                got_id = _success_id(payload)
                if got_id in self._unanswered:
                    self._unanswered.discard(got_id)
                    self._answers.append(Answer(got_id, None, payload))
                    continue
                got_id, status, body = self._split(unpack_payload(payload))
                if got_id in self._unanswered:
                    self._unanswered.discard(got_id)
                    error = server_error_from_body(status, body) if status else None
                    self._answers.append(Answer(got_id, error, None if status else payload))
                elif got_id == request_id and request_id:
                    found, wanted = True, body
                    if status:
                        failure = server_error_from_body(status, body)
                    elif body is None:
                        raise ProtocolError("queue.dequeue answered nil")
                elif status and got_id == 0:
                    raise server_error_from_body(status, body)  # the server's goodbye
                elif not status:
                    raise ProtocolError(
                        f"the gateway answered request {got_id}, which is not in flight"
                    )
        except (ProtocolError, ServerError):
            self.close()
            raise
        if failure is not None:
            raise failure  # an error answer leaves the stream in sync: the connection stays
        return found, wanted

    @staticmethod
    def _split(response: Any) -> tuple[Any, int, Any]:
        if not (isinstance(response, list) and len(response) == 3 and isinstance(response[0], int)):
            raise ProtocolError(f"the gateway sent a malformed response: {response!r:.200}")
        return response[0], response[1], response[2]

    def _stop_waiting(self, sock: socket.socket, request_id: int, deadline: float) -> Any:
        """Half-close, then read the reply (or the end of the stream) until ``deadline``."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            raise DequeueInterrupted() from None
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if not self._poll_sock.poll(remaining * 1000):
                    break
                found, body = self._receive(sock, request_id)
                if found:
                    return body
        except (ConnectionError, ServerError):
            pass  # EOF (the usual end) or the server's goodbye: no job was handed out
        finally:
            self.close()
        raise DequeueInterrupted()


# How msgpack writes the id of a response: its first byte after the array header, and how many
# bytes of big-endian integer follow it (a positive fixint is the id itself).
_UINT_LENGTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def _success_id(payload: bytes) -> int | None:
    """The id of a response ``[id, 0, body]``, read from its first bytes; None if it is not a
    success (or not in the form msgpack gives it), which the caller then decodes in full."""
    if len(payload) < 3 or payload[0] != 0x93:  # an array of 3
        return None
    first = payload[1]
    if first < 0x80:
        request_id, at = first, 2
    else:
        length = _UINT_LENGTHS.get(first)
        if length is None or len(payload) < 2 + length + 1:
            return None
        request_id, at = int.from_bytes(payload[2 : 2 + length], "big"), 2 + length
    return request_id if payload[at] == 0 else None  # status 0, as a positive fixint
