"""Black-box tests of the wire protocol (gateway/PROTOCOL.md) against the real gateway binary.

These use raw sockets and msgpack (tests/wire.py), never gateway_client, so that every byte the
server sends is seen as sent and the tests can send what no well-behaved client would.
"""

from __future__ import annotations

import contextlib
import random
import re
import select
import socket
import struct
import threading
import time
from typing import Any

import msgpack
import pytest
from gateway_harness import GatewayProcess
from wire import Closed, RawConnection, frame, pack, ping_ok, request_frame, wait_until

STATUS = {
    "bad_frame": 1,
    "frame_too_large": 2,
    "bad_request": 3,
    "unknown_op": 4,
    "bad_argument": 5,
    "too_many_connections": 6,
    "shutting_down": 7,
    "internal": 8,
}
MIN_SQLITE = (3, 51, 3)


def assert_error(response: Any, code: str, request_id: int | None = None) -> str:
    """Check ``response`` is ``[id, status, {"code", "message"}]`` for ``code``; return message."""
    assert isinstance(response, list) and len(response) == 3, response
    got_id, status, body = response
    if request_id is not None:
        assert got_id == request_id, f"expected id {request_id} in {response!r}"
    assert isinstance(body, dict), response
    assert body.get("code") == code, f"expected {code}, got {response!r}"
    assert status == STATUS[code], f"status {status} for {code}: {response!r}"
    message = body.get("message")
    assert isinstance(message, str) and message.strip(), f"no message in {response!r}"
    return message


def version_tuple(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", text)
    assert match, f"not a version: {text!r}"
    return tuple(int(part) for part in match.groups())


# --- basic operations ---------------------------------------------------------------------------


def test_ping_answers_pong_with_the_request_id(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send(41, "ping")
        assert conn.recv() == [41, 0, "pong"]
        conn.send(2**64 - 1, "ping")  # ids span the whole uint64 range
        assert conn.recv() == [2**64 - 1, 0, "pong"]


def test_hello_describes_the_server(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        _request_id, status, body = conn.call("hello", {"protocol": 1, "client": "tests/1.0"})
    assert status == 0
    assert body["protocol"] == 1
    version_tuple(body["server_version"])
    assert version_tuple(body["sqlite_version"]) >= MIN_SQLITE, body["sqlite_version"]
    features = body["features"]
    assert {"hello", "ping", "stats"} <= set(features)
    assert features == sorted(features), "features must be sorted"
    assert body["max_frame_size"] == 32 * 1024 * 1024


def test_hello_without_arguments_is_answered(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        assert conn.call("hello")[1] == 0


@pytest.mark.gateway_config({"server": {"max_frame_size": "1MiB"}})
def test_hello_reports_the_configured_max_frame_size(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        assert conn.call("hello")[2]["max_frame_size"] == 1024 * 1024


# --- pipelining and concurrency -----------------------------------------------------------------


def test_ten_thousand_pipelined_pings_are_all_answered(gateway: GatewayProcess) -> None:
    count = 10_000
    with RawConnection(gateway.socket_path, timeout=10) as conn:
        conn.send_raw(b"".join(request_frame(i, "ping") for i in range(1, count + 1)))
        replies = [conn.recv(timeout=10) for _ in range(count)]
    assert {reply[0] for reply in replies} == set(range(1, count + 1))
    assert all(reply[1:] == [0, "pong"] for reply in replies)


def test_fifty_concurrent_clients(gateway: GatewayProcess) -> None:
    clients, pings = 50, 200
    start = threading.Barrier(clients)
    failures: list[str] = []

    def run(index: int) -> None:
        try:
            with RawConnection(gateway.socket_path, timeout=10) as conn:
                start.wait(10)
                for n in range(pings):
                    request_id = index * 1000 + n + 1
                    conn.send(request_id, "ping")
                    reply = conn.recv(timeout=10)
                    if reply != [request_id, 0, "pong"]:
                        failures.append(f"client {index}: {reply!r}")
                        return
        except Exception as e:
            failures.append(f"client {index}: {e!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:5]
    assert gateway.running()


# --- broken frames ------------------------------------------------------------------------------


def test_text_garbage_gets_frame_too_large_and_a_close_without_hurting_others(
    gateway: GatewayProcess,
) -> None:
    with RawConnection(gateway.socket_path) as bystander:
        assert bystander.call("ping")[2] == "pong"
        with RawConnection(gateway.socket_path) as conn:
            conn.send_raw(b"hello world\n")  # "hell" is a length of 1.7 GB
            assert_error(conn.recv(), "frame_too_large", request_id=0)
            conn.expect_eof()
        assert bystander.call("ping")[2] == "pong"


def test_random_garbage_is_refused_and_closed(gateway: GatewayProcess) -> None:
    garbage = random.Random(20240601).randbytes(4096)
    with RawConnection(gateway.socket_path) as bystander:
        assert bystander.call("ping")[2] == "pong"
        with RawConnection(gateway.socket_path) as conn:
            conn.send_raw(garbage)
            conn.sock.shutdown(socket.SHUT_WR)
            leftover = conn.expect_eof()
        # Whatever came back before the close must be well-framed error replies.
        offset = 0
        while offset < len(leftover):
            (length,) = struct.unpack_from(">I", leftover, offset)
            reply = msgpack.unpackb(leftover[offset + 4 : offset + 4 + length], raw=False)
            assert reply[1] != 0, reply
            offset += 4 + length
        assert bystander.call("ping")[2] == "pong"
    assert ping_ok(gateway.socket_path)


def test_length_prefix_of_2_to_the_31_is_refused_before_any_payload(
    gateway: GatewayProcess,
) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(struct.pack(">I", 2**31))  # header only: the reply must not wait for 2 GiB
        assert_error(conn.recv(), "frame_too_large", request_id=0)
        conn.expect_eof()
    assert ping_ok(gateway.socket_path)


@pytest.mark.gateway_config({"server": {"max_frame_size": "1KiB"}})
def test_max_frame_size_boundary(gateway: GatewayProcess) -> None:
    def payload(size: int) -> bytes:
        # [1, "xxx...", {}] with a str8/str16 op: 1 + 1 + 3 + n + 1 bytes for n >= 256.
        data = pack([1, "x" * (size - 6), {}])
        assert len(data) == size
        return data

    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(frame(payload(1024)))  # exactly the limit: accepted, it is just unknown
        assert_error(conn.recv(), "unknown_op", request_id=1)
        conn.send_raw(frame(payload(1025)))
        assert_error(conn.recv(), "frame_too_large", request_id=0)
        conn.expect_eof()


def test_zero_length_frame_is_bad_frame_and_closed(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(b"\x00\x00\x00\x00")
        assert_error(conn.recv(), "bad_frame", request_id=0)
        conn.expect_eof()
    assert ping_ok(gateway.socket_path)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(pack(1) + pack(2), id="trailing-value"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(b"\xa5abc", id="truncated-str"),
        pytest.param(b"\x93\x01\xa4ping\x80\x00", id="trailing-byte-after-request"),
    ],
)
def test_malformed_msgpack_is_bad_frame_and_the_connection_stays(
    gateway: GatewayProcess, payload: bytes
) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(frame(payload))
        assert_error(conn.recv(), "bad_frame", request_id=0)
        conn.send(9, "ping")
        assert conn.recv() == [9, 0, "pong"]


def _nested(depth: int) -> bytes:
    """``depth`` one-element arrays around a 0, written directly (msgpack's packer limits depth)."""
    return b"\x91" * depth + b"\x00"


def test_nesting_limit(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        # 64 levels is well-formed (just not a request); well past 64 is refused as a frame.
        conn.send_raw(frame(_nested(64)))
        assert_error(conn.recv(), "bad_request")
        conn.send_raw(frame(_nested(66)))
        assert_error(conn.recv(), "bad_frame", request_id=0)
        conn.send_raw(frame(_nested(100_000)))
        assert_error(conn.recv(), "bad_frame", request_id=0)
        assert conn.call("ping")[2] == "pong"


def test_container_element_limit(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path, timeout=10) as conn:
        conn.send_raw(frame(pack([0] * 1_000_000)))
        assert_error(conn.recv(10), "bad_request", request_id=0)
        conn.send_raw(frame(pack([0] * 1_000_001)))
        assert_error(conn.recv(10), "bad_frame", request_id=0)
        # A header claiming 2^32-1 elements must be refused without trying to allocate them.
        conn.send_raw(frame(b"\xdd\xff\xff\xff\xff"))
        assert_error(conn.recv(10), "bad_frame", request_id=0)
        assert conn.call("ping")[2] == "pong"


def test_truncated_frame_then_eof_runs_nothing(gateway: GatewayProcess) -> None:
    request = pack([1, "ping", {}])
    with RawConnection(gateway.socket_path) as conn:
        # A complete request inside a frame that announces more bytes than ever arrive.
        conn.send_raw(struct.pack(">I", len(request) + 50) + request)
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.expect_eof() == b"", "nothing of a partial frame may be answered"
    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(b"\x00\x00")  # half a length prefix
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.expect_eof() == b""
    assert ping_ok(gateway.socket_path)
    assert gateway.running()


# --- requests that are well-formed msgpack but wrong --------------------------------------------


@pytest.mark.parametrize(
    ("value", "echoed_id"),
    [
        pytest.param([7, "ping"], 7, id="two-elements"),
        pytest.param([7, 8, {}], 7, id="op-not-str"),
        pytest.param([7, b"ping", {}], 7, id="op-is-bin"),
        pytest.param([7, "ping", []], 7, id="args-array"),
        pytest.param([7, "ping", "x"], 7, id="args-str"),
        pytest.param([7, "ping", None], 7, id="args-nil"),
        pytest.param(["7", "ping", {}], 0, id="id-str"),
        pytest.param([-7, "ping", {}], 0, id="id-negative"),
        pytest.param([7.0, "ping", {}], 0, id="id-float"),
        pytest.param([None, "ping", {}], 0, id="id-nil"),
        pytest.param({"id": 7, "op": "ping"}, 0, id="map"),
        pytest.param(42, 0, id="int"),
        pytest.param("ping", 0, id="str"),
        pytest.param([], 0, id="empty-array"),
        pytest.param([7, "ping", {}, 1], None, id="four-elements"),
    ],
)
def test_bad_request_shapes(gateway: GatewayProcess, value: Any, echoed_id: int | None) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(frame(pack(value)))
        reply = conn.recv()
        assert_error(reply, "bad_request")
        if echoed_id is not None:
            assert reply[0] == echoed_id, reply
        else:
            assert reply[0] in (0, 7), reply
        assert conn.call("ping")[2] == "pong", "the connection must stay usable"


def test_unknown_op(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send(12, "no.such.op")
        message = assert_error(conn.recv(), "unknown_op", request_id=12)
        assert "no.such.op" in message
        assert conn.call("ping")[2] == "pong"


@pytest.mark.parametrize(
    ("op", "args", "named"),
    [
        pytest.param("hello", {"protocol": "x"}, "protocol", id="hello-protocol-str"),
        pytest.param("hello", {"protocol": -1}, "protocol", id="hello-protocol-negative"),
        pytest.param("hello", {"protocol": 1.5}, "protocol", id="hello-protocol-float"),
        pytest.param("hello", {"client": 5}, "client", id="hello-client-int"),
        pytest.param("hello", {"protocol": 2}, "protocol", id="hello-protocol-unsupported"),
        pytest.param("hello", {"surprise_argument": 1}, "surprise_argument", id="hello-unknown"),
        pytest.param("ping", {"surprise_argument": 1}, "surprise_argument", id="ping-unknown"),
        pytest.param("stats", {"surprise_argument": 1}, "surprise_argument", id="stats-unknown"),
    ],
)
def test_bad_argument_names_the_argument(
    gateway: GatewayProcess, op: str, args: dict[str, Any], named: str
) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.send(5, op, args)
        message = assert_error(conn.recv(), "bad_argument", request_id=5)
        assert named in message, message
        assert conn.call("ping")[2] == "pong"


def test_integer_arguments_accept_any_integer_encoding(gateway: GatewayProcess) -> None:
    # protocol=1 as uint64 (0xcf) instead of a positive fixint.
    payload = b"\x93\x03\xa5hello\x81\xa8protocol\xcf" + (1).to_bytes(8, "big")
    assert msgpack.unpackb(payload) == [3, "hello", {"protocol": 1}]
    with RawConnection(gateway.socket_path) as conn:
        conn.send_raw(frame(payload))
        reply = conn.recv()
        assert reply[:2] == [3, 0], reply


# --- stats --------------------------------------------------------------------------------------


def test_stats_shape(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        _, status, stats = conn.call("stats")
    assert status == 0
    assert isinstance(stats["uptime_seconds"], float | int) and stats["uptime_seconds"] >= 0
    for key in ("connections", "connections_total", "connections_rejected"):
        assert isinstance(stats[key], int) and stats[key] >= 0, key
    assert stats["connections"] >= 1
    assert stats["connections_total"] >= stats["connections"]
    assert isinstance(stats["requests_by_op"], dict)
    assert isinstance(stats["errors_by_code"], dict)
    assert set(stats["databases"]) == {"main", "cache", "queue"}


def test_stats_counts_requests_and_errors(gateway: GatewayProcess) -> None:
    def get(stats: dict[str, Any], key: str, name: str) -> int:
        return stats[key].get(name, 0)

    with RawConnection(gateway.socket_path) as conn:
        s0 = conn.call("stats")[2]
        for _ in range(3):
            conn.call("ping")
        conn.call("no.such.op")
        conn.call("no.such.op")
        conn.call("hello", {"protocol": "x"})
        s1 = conn.call("stats")[2]
        conn.send_raw(frame(b"\xc1"))
        assert_error(conn.recv(), "bad_frame")
        s2 = conn.call("stats")[2]

    assert get(s1, "requests_by_op", "ping") - get(s0, "requests_by_op", "ping") == 3
    assert get(s1, "requests_by_op", "hello") - get(s0, "requests_by_op", "hello") == 1
    assert get(s1, "requests_by_op", "stats") - get(s0, "requests_by_op", "stats") == 1
    assert "no.such.op" not in s1["requests_by_op"], "unknown op names must not be listed"
    assert get(s1, "errors_by_code", "unknown_op") - get(s0, "errors_by_code", "unknown_op") == 2
    assert (
        get(s1, "errors_by_code", "bad_argument") - get(s0, "errors_by_code", "bad_argument") == 1
    )
    # Between the two stats: 3 pings, 2 unknown ops, 1 hello, and one of the two stats calls.
    assert s1["requests_total"] - s0["requests_total"] == 7
    assert s1["errors_total"] - s0["errors_total"] == 3
    assert get(s2, "errors_by_code", "bad_frame") - get(s1, "errors_by_code", "bad_frame") == 1
    assert s2["errors_total"] - s1["errors_total"] == 1
    assert sum(s2["errors_by_code"].values()) == s2["errors_total"]


# --- connection limit and flow control ----------------------------------------------------------


@pytest.mark.gateway_config({"server": {"max_connections": 4}})
def test_connection_over_the_limit_is_refused_and_the_others_keep_working(
    gateway: GatewayProcess,
) -> None:
    conns = [RawConnection(gateway.socket_path)]
    try:
        # The harness's readiness connection may still be closing: wait until only ours counts.
        wait_until(lambda: conns[0].call("stats")[2]["connections"] == 1, 5)
        conns += [RawConnection(gateway.socket_path) for _ in range(3)]
        for conn in conns:
            assert conn.call("ping")[2] == "pong"
        assert conns[0].call("stats")[2]["connections"] == 4
        rejected_before = conns[0].call("stats")[2]["connections_rejected"]

        with RawConnection(gateway.socket_path) as fifth:
            assert_error(fifth.recv(), "too_many_connections", request_id=0)
            fifth.expect_eof()

        for conn in conns:
            assert conn.call("ping")[2] == "pong"
        assert conns[0].call("stats")[2]["connections_rejected"] == rejected_before + 1

        conns.pop().close()

        def new_connection_served() -> bool:
            try:
                return ping_ok(gateway.socket_path, timeout=2)
            except (Closed, OSError, AssertionError):
                return False

        wait_until(new_connection_served, 5, message="a freed slot was not reusable")
    finally:
        for conn in conns:
            conn.close()


def _parse_frames(buffer: bytearray) -> list[Any]:
    replies = []
    offset = 0
    while len(buffer) - offset >= 4:
        (length,) = struct.unpack_from(">I", buffer, offset)
        if len(buffer) - offset - 4 < length:
            break
        replies.append(msgpack.unpackb(bytes(buffer[offset + 4 : offset + 4 + length])))
        offset += 4 + length
    del buffer[:offset]
    return replies


@pytest.mark.parametrize(
    "pending_limit",
    [pytest.param("64KiB", id="small-limit"), pytest.param(None, id="default-limit")],
)
def test_client_that_does_not_read_is_slowed_not_buffered(
    gateway_factory: Any, pending_limit: str | None
) -> None:
    overrides = {"server": {"max_pending_reply_size": pending_limit}} if pending_limit else {}
    gateway = gateway_factory(overrides)
    count = 200_000
    blob = b"".join(request_frame(i, "ping") for i in range(1, count + 1))
    rss_before = gateway.rss_bytes()
    started = time.monotonic()

    greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    greedy.connect(gateway.socket_path)
    greedy.setblocking(False)
    try:
        view = memoryview(blob)
        sent = 0
        # Send without reading until the socket stays unwritable for 0.5 s (the server stopped
        # reading us) or everything is sent.
        while sent < len(blob) and time.monotonic() - started < 8:
            if not select.select([], [greedy], [], 0.5)[1]:
                break
            with contextlib.suppress(BlockingIOError):
                sent += greedy.send(view[sent : sent + 65536])
        if pending_limit:
            assert sent < len(blob), (
                "the server kept reading a client whose replies were piling up "
                f"({sent} of {len(blob)} bytes accepted)"
            )

        grown = gateway.rss_bytes() - rss_before
        assert grown < 48 * 1024 * 1024, f"server memory grew by {grown} bytes"
        with RawConnection(gateway.socket_path, timeout=1.0) as other:
            assert other.call("ping", timeout=1.0)[2] == "pong", "another client was held up"

        # Now read: every request must get its reply.
        received = bytearray()
        ids: set[int] = set()
        while len(ids) < count:
            assert time.monotonic() - started < 10, f"only {len(ids)} of {count} replies in 10 s"
            writers = [greedy] if sent < len(blob) else []
            readable, writable, _ = select.select([greedy], writers, [], 1.0)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += greedy.send(view[sent : sent + 65536])
            if readable:
                data = greedy.recv(1 << 20)
                assert data, f"connection closed after {len(ids)} replies"
                received += data
                for reply in _parse_frames(received):
                    assert reply[1:] == [0, "pong"], reply
                    ids.add(reply[0])
        assert ids == set(range(1, count + 1))
    finally:
        greedy.close()
    assert gateway.running()
