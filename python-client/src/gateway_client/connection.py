"""One blocking connection to the gateway's Unix socket.

A :class:`Connection` sends requests ``[id, op, args]`` with ids counting up from 1 and matches
the responses by id, since the server may answer pipelined requests out of order. It is not
thread-safe: :class:`~gateway_client.Client` gives each thread (and each process after ``fork``)
its own.

Any failure of the transport, a timeout included, closes the connection: a reply that arrives
after its call gave up would otherwise be taken for the answer to a later request. Error
responses from the server (:class:`~gateway_client.errors.ServerError`) leave it usable.

A connection made with ``spin_us`` waits for a short reply by reading the socket in a loop
instead of sleeping in ``poll()``, for at most that many microseconds, and only while the
machine has a CPU to spare (see :class:`_SpinGate`). Sleeping costs two wake-ups per call, one
on each side of the socket, and on a virtual machine each is an interrupt through the
hypervisor: tens of microseconds of CPU on either side.
"""

from __future__ import annotations

import builtins
import errno
import os
import selectors
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from gateway_client.errors import (
    ConnectionError,
    FrameTooLarge,
    ProtocolError,
    ServerError,
    TimeoutError,
    server_error_from_body,
)
from gateway_client.frames import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, FrameDecoder, encode_frame
from gateway_client.frames import unpack_payload as _unpack

__all__ = ["Connection", "RequestNotSentError"]

_RECV_SIZE = 256 * 1024
# EPIPE instead of SIGPIPE when the server has gone, even in hosts that do not ignore SIGPIPE.
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
# Largest response a client accepts. Responses are bounded by the server's own frame limit in
# practice; this only stops a corrupt length prefix from making the client buffer gigabytes.
_MAX_RESPONSE_SIZE = 1 << 31


class _SpinGate:
    """Decides, call by call, whether waiting for a reply by spinning is worth its CPU.

    Spinning pays only when the CPU it burns would otherwise be idle. The gate reads this
    thread's run delay (the time it spent runnable but waiting for a CPU, from
    ``/proc/thread-self/schedstat``) every few calls and allows spinning only while that stayed
    under a tenth of the wall time: with more runnable threads than CPUs, a spinning client
    would take the CPU its own gateway, or another process, needs. It also keeps a running
    share of spins that got every reply in time and stops while that share is under a half,
    still trying one call in 16 to notice when replies become quick again. Without the
    schedstat file (not Linux) the gate stays shut.

    :param spin_us: the longest spin, in microseconds.
    """

    _CHECK_EVERY = 8  # calls between readings of the run delay (a reading costs about 1 µs)
    _MIN_WINDOW_NS = 1_000_000  # the run delay is compared over at least this much wall time
    _PROBE_EVERY = 16  # a closed gate (by the success share) still spins on one call in this many

    def __init__(self, spin_us: int) -> None:
        self.spin_s = spin_us / 1e6
        self.score = 1.0  # running share of spins that got every reply in time
        self.calls = 0
        self.cpu_free = True
        self._window_ns = time.perf_counter_ns()
        self._window_delay = 0
        try:
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._schedstat = -1
            self.cpu_free = False
            return
        try:
            self._window_delay = self._run_delay()
        except (OSError, IndexError, ValueError):  # not the format this reads: never spin
            self.close()
            self.cpu_free = False

    def close(self) -> None:
        fd, self._schedstat = self._schedstat, -1
        if fd >= 0:
            os.close(fd)

    def allows(self) -> bool:
        """Whether this call should spin."""
        self.calls += 1
        if self.calls % self._CHECK_EVERY == 0:
            self._watch_cpu()
        return self.cpu_free and (self.score >= 0.5 or self.calls % self._PROBE_EVERY == 0)

    def record(self, got_all: bool) -> None:
        """Count a spin that got every reply in time (or did not)."""
        self.score += ((1.0 if got_all else 0.0) - self.score) * 0.125

    def _run_delay(self) -> int:
        # "<ns on CPU> <ns runnable, waiting for a CPU> <timeslices>"
        return int(os.pread(self._schedstat, 64, 0).split()[1])

    def _watch_cpu(self) -> None:
        if self._schedstat < 0:
            return
        now = time.perf_counter_ns()
        span = now - self._window_ns
        if span < self._MIN_WINDOW_NS:
            return
        try:
            delay = self._run_delay()
        except (OSError, IndexError, ValueError):
            self.close()
            self.cpu_free = False
            return
        self.cpu_free = (delay - self._window_delay) * 10 < span
        self._window_ns, self._window_delay = now, delay


class RequestNotSentError(ConnectionError):
    """The connection failed before any byte of the request reached the socket.

    The server cannot have seen the request, so it is safe to send it again on a new
    connection whatever the operation is.
    """


class Connection:
    """A connected, blocking client socket speaking the gateway protocol.

    :ivar path: the socket path this connection was made to.
    :ivar max_frame_size: the largest request payload sent; larger ones are refused locally with
        :class:`~gateway_client.errors.FrameTooLarge` (set from the server's ``hello``).
    """

    def __init__(self, path: str, *, connect_timeout: float = 1.0, spin_us: int = 0) -> None:
        """Connect to the gateway listening on ``path``.

        :param path: filesystem path of the gateway's Unix socket.
        :param connect_timeout: seconds to wait for the connection to be accepted.
        :param spin_us: wait up to this many microseconds for replies without sleeping, while a
            CPU is free (0: always sleep in ``poll()``). Meant for calls the server answers at
            once, such as the cache's; the connection must stay in the thread that made it.
        :raises ConnectionError: if the socket cannot be reached (its ``__cause__`` is the
            ``OSError``); a missing socket file raises it with ``errno.ENOENT``.
        :raises TimeoutError: if the connection was not accepted within ``connect_timeout``.
        """
        self.path = path
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._next_id = 1
        self._decoder = FrameDecoder(_MAX_RESPONSE_SIZE)
        self._pending: dict[int, Any] = {}  # responses read for ids not yet collected
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(path)
        except builtins.TimeoutError as e:  # socket.timeout
            sock.close()
            raise TimeoutError(
                f"the gateway at {path} did not accept the connection within {connect_timeout:g} s"
            ) from e
        except OSError as e:
            sock.close()
            raise ConnectionError(e.errno, _describe_connect_error(path, e)) from e
        sock.setblocking(False)
        self._sock: socket.socket | None = sock
        # poll() keeps no kernel object, unlike epoll, so nothing is shared with a forked child.
        self._selector: selectors.BaseSelector = (
            selectors.PollSelector()
            if hasattr(selectors, "PollSelector")
            else selectors.SelectSelector()
        )
        self._selector.register(sock, selectors.EVENT_READ)
        self._events = selectors.EVENT_READ  # what the selector watches, to skip no-op modify()
        self._spin = _SpinGate(spin_us) if spin_us > 0 else None

    @property
    def closed(self) -> bool:
        """True once the connection has been closed, by :meth:`close` or after a failure."""
        return self._sock is None

    def close(self) -> None:
        """Close the socket; further calls raise :class:`ConnectionError`. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._selector.close()
            sock.close()
            if self._spin is not None:
                self._spin.close()

    def is_idle_and_open(self) -> bool:
        """Check, without blocking, that the server has not closed this idle connection.

        The server sends nothing unasked except an error with id 0 right before it closes a
        connection, so anything readable on an idle connection means it is finished; in that
        case the connection is closed here and False returned.
        """
        if self._sock is None:
            return False
        if not self._selector.select(timeout=0):
            return True
        self.close()
        return False

    def call(
        self, op: str, args: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Send one request and return the body of its successful response.

        :param op: the operation name, such as ``"ping"``.
        :param args: the operation's named arguments.
        :param timeout: seconds to wait for the response; ``None`` waits forever.
        :raises ServerError: (a subclass per code) if the server answered with an error.
        :raises TimeoutError: if no response came within ``timeout`` (the connection is closed).
        :raises ConnectionError: if the connection failed or was closed by the server.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
        (result,) = self.call_many([(op, args)], timeout=timeout)
        return result

    def call_many(
        self,
        requests: Iterable[tuple[str, Mapping[str, Any] | None]],
        timeout: float | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Pipeline several requests and return their results in request order.

        All requests are written before waiting for answers (the socket is read while writing so
        that a server applying flow control cannot deadlock with this client), and responses are
        matched by id whatever order they come in.

        :param requests: ``(op, args)`` pairs.
        :param timeout: seconds for the whole batch; ``None`` waits forever.
        :param return_exceptions: put the :class:`ServerError` of a failed request in its place in
            the result list instead of raising it.
        :raises ServerError: the first failed request's error (in request order), raised only
            after every response has been read, so the connection stays usable.
        :raises TimeoutError: if the batch did not complete within ``timeout``.
        :raises ConnectionError: if the connection failed or was closed by the server.
        :raises ProtocolError: if the server's reply does not follow the protocol.
        """
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
        if not ids:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        self._exchange(b"".join(frames), set(ids), deadline)
        results = [self._pending.pop(request_id) for request_id in ids]
        if not return_exceptions:
            for result in results:
                if isinstance(result, ServerError):
                    raise result
        return results

    def _exchange(self, data: bytes, wanted: set[int], deadline: float | None) -> None:
        """Write ``data`` and read until every id in ``wanted`` has a response in ``_pending``."""
        sock = self._require_open()
        view = memoryview(data)
        missing = set(wanted)
        try:
            # Most batches fit the socket buffer: write at once and only poll for the replies.
            sent = self._send_some(sock, view, 0)
            spin = self._spin
            if spin is not None and sent == len(view) and spin.allows():
                spin_s = spin.spin_s
                if deadline is not None:  # never past the call's timeout
                    spin_s = min(spin_s, deadline - time.monotonic())
                if spin_s > 0:
                    spin.record(self._spin_for_replies(sock, missing, spin_s))
            while missing:
                want_write = sent < len(view)
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
                if events != self._events:
                    self._selector.modify(sock, events)
                    self._events = events
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"no response from the gateway at {self.path} within the timeout "
                        f"({len(missing)} of {len(wanted)} requests unanswered)"
                    )
                for _key, mask in self._selector.select(remaining):
                    if mask & selectors.EVENT_WRITE and sent < len(view):
                        sent += self._send_some(sock, view[sent:], sent)
                    if mask & selectors.EVENT_READ:
                        self._receive_some(sock, missing)
        except (KeyError, ValueError) as e:
            # The selector or socket was closed under us (close() from another thread).
            self.close()
            raise ConnectionError(
                errno.EBADF, f"the connection to {self.path} was closed during the call"
            ) from e
        except BaseException:
            self.close()
            raise

    def _spin_for_replies(self, sock: socket.socket, missing: set[int], spin_s: float) -> bool:
        """Read replies without sleeping for up to ``spin_s`` seconds; True if all came."""
        clock = time.perf_counter
        give_up_at = clock() + spin_s
        while missing:
            if not self._receive_some(sock, missing) and clock() > give_up_at:
                return False
        return True

    def _send_some(self, sock: socket.socket, chunk: memoryview, sent_before: int) -> int:
        try:
            return sock.send(chunk, _SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            farewell = self._farewell(sock)
            if farewell is not None:
                raise farewell from e
            cls = RequestNotSentError if sent_before == 0 else ConnectionError
            raise cls(
                e.errno, f"lost the connection to the gateway at {self.path} while sending: {e}"
            ) from e

    def _farewell(self, sock: socket.socket) -> ServerError | None:
        """After a failed send, the id-0 error the server sent before closing, if any.

        The server refuses a connection (too_many_connections, shutting_down) by replying and
        closing at once, so the request write can fail while the reason sits unread.
        """
        data = bytearray()
        while True:
            try:
                chunk = sock.recv(_RECV_SIZE)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        try:
            payloads = FrameDecoder(_MAX_RESPONSE_SIZE).feed(bytes(data))
            for payload in payloads:
                response = _unpack(payload)
                if isinstance(response, list) and len(response) == 3 and response[0] == 0:
                    return server_error_from_body(response[1], response[2])
        except ProtocolError:
            pass
        return None

    def _receive_some(self, sock: socket.socket, missing: set[int]) -> bool:
        """Read what the socket has and take the responses in it; False if it had nothing."""
        try:
            data = sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            raise ConnectionError(
                e.errno, f"lost the connection to the gateway at {self.path}: {e}"
            ) from e
        if not data:
            raise ConnectionError(
                errno.ECONNRESET,
                f"the gateway at {self.path} closed the connection "
                f"with {len(missing)} request(s) unanswered",
            )
        for payload in self._decoder.feed(data):
            self._accept_response(_unpack(payload), missing)
        return True

    def _accept_response(self, response: Any, missing: set[int]) -> None:
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
            # An error about the stream itself (such as too_many_connections): it concerns every
            # request in flight and the server closes the connection after it.
            raise body
        if request_id not in missing:
            raise ProtocolError(
                f"the gateway answered request id {request_id}, which is not in flight"
            )
        missing.discard(request_id)
        self._pending[request_id] = body

    def _require_open(self) -> socket.socket:
        if self._sock is None:
            raise RequestNotSentError(errno.EBADF, f"the connection to {self.path} is closed")
        return self._sock


def _describe_connect_error(path: str, error: OSError) -> str:
    if error.errno == errno.ENOENT:
        return (
            f"no gateway socket at {path} (is the gateway running, and is this its "
            "[server] socket?)"
        )
    if error.errno == errno.ECONNREFUSED:
        return f"the gateway socket {path} refuses connections (gateway stopped or overloaded)"
    if error.errno in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to connect to {path} (check [server] socket_mode and this "
            "user's groups)"
        )
    if error.errno == errno.EAGAIN:
        return f"the gateway socket {path} has a full accept backlog"
    return f"cannot connect to the gateway at {path}: {error}"
