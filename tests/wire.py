"""A raw protocol client for tests: frames and msgpack by hand, no gateway_client involved.

Tests of the wire protocol must be able to send what a well-behaved client never would (garbage,
truncated frames, wrong shapes) and see every reply exactly as it came, so they use this instead of
``gateway_client``. It is deliberately independent of the package under test.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

import msgpack

#: How much slower than a normal build the gateway under test runs: scripts/sanitize sets it for
#: sanitized builds (ThreadSanitizer makes the gateway about 25 times slower). Every wait and
#: deadline of the harness is stretched by it; what a test asserts about results is not.
SLOWDOWN = float(os.environ.get("GATEWAY_TEST_SLOWDOWN", "1"))

HEADER = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """Length-prefix ``payload``."""
    return HEADER.pack(len(payload)) + payload


def pack(value: Any) -> bytes:
    """msgpack with the str/bin distinction, as PROTOCOL.md requires."""
    return msgpack.packb(value, use_bin_type=True)


def request_frame(request_id: int, op: str, args: dict[str, Any] | None = None) -> bytes:
    """The frame of request ``[request_id, op, args]``."""
    return frame(pack([request_id, op, {} if args is None else args]))


class Closed(Exception):
    """The server closed the connection (EOF) where a frame was expected."""


class RawConnection:
    """A blocking Unix-socket connection that sends and receives raw frames."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self._buffer = bytearray()
        self._next_id = 1

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def peer_pid(self) -> int:
        """The pid of the process on the other end (SO_PEERCRED), i.e. which gateway answers."""
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", creds)
        return pid

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, request_id: int, op: str, args: dict[str, Any] | None = None) -> None:
        self.sock.sendall(request_frame(request_id, op, args))

    def _fill(self, need: int, deadline: float) -> None:
        while len(self._buffer) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no complete frame within the timeout ({len(self._buffer)} bytes)"
                )
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                raise Closed(f"connection closed with {len(self._buffer)} bytes of a frame pending")
            self._buffer += data

    def recv_payload(self, timeout: float = 5.0) -> bytes:
        """Read one frame's payload. :raises Closed: on EOF. :raises TimeoutError: on timeout."""
        deadline = time.monotonic() + timeout * SLOWDOWN
        self._fill(4, deadline)
        (length,) = HEADER.unpack_from(self._buffer)
        self._fill(4 + length, deadline)
        payload = bytes(self._buffer[4 : 4 + length])
        del self._buffer[: 4 + length]
        return payload

    def recv(self, timeout: float = 5.0) -> Any:
        """Read and decode one response frame."""
        return msgpack.unpackb(self.recv_payload(timeout), raw=False, strict_map_key=False)

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> list[Any]:
        """Send one request with a fresh id and return its response ``[id, status, body]``."""
        request_id = self._next_id
        self._next_id += 1
        self.send(request_id, op, args)
        response = self.recv(timeout)
        assert response[0] == request_id, f"expected a reply to {request_id}, got {response!r}"
        return response

    def expect_eof(self, timeout: float = 5.0) -> bytes:
        """Wait until the server closes the connection; return any bytes that came before EOF.

        :raises TimeoutError: if the connection is still open after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        extra = bytearray(self._buffer)
        self._buffer.clear()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server did not close the connection")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return bytes(extra)
            if not data:
                return bytes(extra)
            extra += data


def ping_ok(path: str, timeout: float = 5.0) -> bool:
    """Open a fresh connection, ping, and report whether "pong" came back."""
    with RawConnection(path, timeout) as conn:
        response = conn.call("ping", timeout=timeout)
    return response[1] == 0 and response[2] == "pong"


def wait_until(predicate: Any, timeout: float, interval: float = 0.01, message: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout * SLOWDOWN
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout} s")
        time.sleep(interval)
