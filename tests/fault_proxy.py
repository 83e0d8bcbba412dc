"""A fault-injecting HTTP proxy in front of an S3 server, with a fault rate that can be changed
while it runs, for the store-fault tests (tests/test_store_faults.py).

:class:`s3_server.FaultProxy` injects faults that a test schedules one by one ("fail the next 3
requests"). :class:`RandomFaultProxy` instead draws, for every request, whether to inject a fault
(with probability :attr:`rate`) and which kind (from :attr:`mix`):

``500``, ``503``
    the request never reaches the store; answered with that status and an S3 error document.
``slow``
    the request waits (``slow_seconds``, drawn uniformly) before it is forwarded, then succeeds.
``reset``
    the connection is reset (RST) as soon as the request line and headers have arrived; the
    store never sees the request.
``truncate``
    the request reaches the store; the answer is cut short: its headers announce the whole body
    but only half of it is sent (or, with no body, the header block stops half way), then the
    connection is closed.
``lost``
    the request reaches the store, but the client is told 503 (a lost answer).

An even mix is drawn from a shuffled bag holding every kind once, refilled when empty, so each
kind shows up equally often even in a short run.

Besides random faults the store can be made unavailable as a whole with :meth:`down`: ``"503"``
answers every request 503 SlowDown, ``"refuse"`` closes the listening socket and every open
connection, so new connections are refused until :meth:`up`.

:meth:`stop_faults` ends every fault at once, slow requests in progress included (they are
forwarded without waiting any longer), so a test can time recovery from a definite moment.

For faults aimed at particular requests, :attr:`RandomFaultProxy.rule` may be set to a function
of (method, path) returning a fault kind (or ``"down"`` for a 503), ``"ok"`` for none, or None
to let the random draw decide; it runs with the proxy's lock held and must not call the proxy.

Counts (:meth:`counts`): requests received, forwarded to the store, and faults injected by kind.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from s3_server import RcloneS3Server

KINDS = ("500", "503", "slow", "reset", "truncate", "lost")
#: An even mix of every kind.
EVEN_MIX: dict[str, float] = dict.fromkeys(KINDS, 1.0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections we broke on purpose raise in the handler; that is the point


class RandomFaultProxy:
    """A loopback proxy to ``upstream`` injecting faults at random; see the module doc.

    :param rate: probability that a request gets a fault (0 to 1); change it any time with
        :meth:`set_faults`.
    :param mix: relative weights of the fault kinds (missing kinds: 0).
    :param slow_seconds: (min, max) delay of a ``slow`` request.
    :param seed: for the random draws, so a failing run can be repeated.
    """

    def __init__(
        self,
        upstream: RcloneS3Server,
        *,
        rate: float = 0.0,
        mix: Mapping[str, float] | None = None,
        slow_seconds: tuple[float, float] = (0.2, 1.5),
        seed: int = 0,
    ) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.slow_seconds = slow_seconds
        self._released = threading.Event()  # set by stop_faults: slow requests stop waiting
        self.rate = 0.0
        self.mix: dict[str, float] = {}
        self.set_faults(rate, mix)
        self.mode = "ok"  # "ok", "503" or "refuse"
        self.stats: Counter[str] = Counter()  # requests, forwarded, and one count per fault kind
        self.by_method: Counter[str] = Counter()
        self.rule: Callable[[str, str], str | None] | None = None
        self._bag: list[str] = []  # kinds still to draw in this round of an even mix
        self._open: set[socket.socket] = set()  # client connections, to break them on "refuse"
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- control -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> RandomFaultProxy:
        self._listen()
        return self

    def stop(self) -> None:
        self._close_listener()
        self._break_connections()

    def set_faults(self, rate: float, mix: Mapping[str, float] | None = None) -> None:
        """Inject a fault into a fraction ``rate`` of the requests from now on."""
        weights = dict(EVEN_MIX if mix is None else mix)
        unknown = set(weights) - set(KINDS)
        if unknown or not 0.0 <= rate <= 1.0 or (rate > 0 and sum(weights.values()) <= 0):
            raise ValueError(f"bad fault settings: rate {rate}, mix {weights}")
        with self.lock:
            self.rate = rate
            self.mix = weights
            self._released.clear()

    def stop_faults(self) -> None:
        """No more faults of any kind from now on; slow requests waiting are sent on at once.

        A store that was :meth:`down` comes back up.
        """
        with self.lock:
            self.rate = 0.0
            self._released.set()
        self.up()

    def down(self, how: str = "503") -> None:
        """The store becomes unavailable: ``"503"`` answers everything 503, ``"refuse"`` refuses
        connections (and breaks the open ones)."""
        if how not in ("503", "refuse"):
            raise ValueError(how)
        with self.lock:
            self.mode = how
        if how == "refuse":
            self._close_listener()
            self._break_connections()

    def up(self) -> None:
        """The store is available again (random faults, if a rate is set, go on)."""
        with self.lock:
            was, self.mode = self.mode, "ok"
        if was == "refuse":
            self._listen()

    def counts(self) -> dict[str, int]:
        """``requests``, ``forwarded``, and faults injected by kind (every kind, zeros too)."""
        with self.lock:
            out = {"requests": 0, "forwarded": 0, **dict.fromkeys(KINDS, 0), "down": 0}
            out.update(self.stats)
            return out

    def faults_injected(self) -> int:
        c = self.counts()
        return sum(c[k] for k in (*KINDS, "down"))

    # --- the listener --------------------------------------------------------------------------

    def _listen(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy._open.add(self.connection)

            def finish(self) -> None:
                with proxy.lock:
                    proxy._open.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        server = _Server(("127.0.0.1", self._port), Handler)
        self._port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._server, self._thread = server, thread
        thread.start()

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _break_connections(self) -> None:
        with self.lock:
            conns = list(self._open)
        for conn in conns:
            _reset(conn, wake=True)

    # --- requests ------------------------------------------------------------------------------

    def _draw(self, method: str, path: str) -> str | None:
        """The fault for the next request, or None. Called with the lock held."""
        if self.mode == "503":
            return "down"
        if self.rule is not None:
            chosen = self.rule(method, path)
            if chosen is not None:
                return None if chosen == "ok" else chosen
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        kinds = [k for k in KINDS if self.mix.get(k, 0) > 0]
        if len({self.mix[k] for k in kinds}) > 1:
            return self.rng.choices(kinds, [self.mix[k] for k in kinds])[0]
        # An even mix is drawn from a shuffled bag of every kind, so that every kind shows up
        # equally often even in a short run.
        self._bag = [k for k in self._bag if k in kinds]
        if not self._bag:
            self._bag = self.rng.sample(kinds, len(kinds))
        return self._bag.pop()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.stats["requests"] += 1
            self.by_method[h.command] += 1
            fault = self._draw(h.command, h.path)
            if fault is not None:
                self.stats[fault] += 1
            delay = self.rng.uniform(*self.slow_seconds) if fault == "slow" else 0.0
        if fault == "reset":
            h.close_connection = True
            _reset(h.connection)
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if fault == "down":
            _reply_error(h, 503, "SlowDown", "the store is down (injected)")
            return
        if fault in ("500", "503"):
            code = "InternalError" if fault == "500" else "ServiceUnavailable"
            _reply_error(h, int(fault), code, "injected by the test proxy")
            return
        if fault == "slow":
            self._released.wait(delay)
        try:
            status, headers, data = self._forward(h, body)
        except OSError:
            # The store itself failed (or is gone): say so as a store would.
            _reply_error(h, 502, "BadGateway", "the proxy could not reach the store")
            return
        with self.lock:
            self.stats["forwarded"] += 1
        if fault == "lost":
            _reply_error(h, 503, "InternalError", "answer lost (injected)")
            return
        if fault == "truncate":
            _send_truncated(h, status, headers, data)
            return
        _send(h, status, headers, data)

    def _forward(
        self, h: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=60)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in h.headers.items():
                conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()


def _reset(conn: socket.socket, wake: bool = False) -> None:
    """Abort a TCP connection with a RST (SO_LINGER 0, then close). ``wake``: shut it down first,
    so a handler thread blocked reading it returns (closing alone does not wake it)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if wake:
            conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()


def _reply_error(h: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/xml")
    h.send_header("Content-Length", str(0 if h.command == "HEAD" else len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def _header_block(
    h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], length: str
) -> bytes:
    lines = [f"HTTP/1.1 {status} {h.responses.get(status, ('',))[0]}"]
    for name, value in headers:
        if name.lower() not in ("transfer-encoding", "content-length", "connection"):
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _send(
    h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], data: bytes
) -> None:
    head = h.command == "HEAD"
    length = dict((k.lower(), v) for k, v in headers).get("content-length", "0") if head else None
    h.wfile.write(_header_block(h, status, headers, length or str(len(data))))
    if not head:
        h.wfile.write(data)
    h.wfile.flush()


def _send_truncated(
    h: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], data: bytes
) -> None:
    h.close_connection = True
    if data and h.command != "HEAD":
        h.wfile.write(_header_block(h, status, headers, str(len(data))))
        h.wfile.write(data[: len(data) // 2])
    else:
        block = _header_block(h, status, headers, "0")
        h.wfile.write(block[: len(block) // 2])
    h.wfile.flush()
    time.sleep(0.01)
    _reset(h.connection)
