"""Tests of gateway_client.Client against the real gateway (and a fake server where needed)."""

from __future__ import annotations

import builtins
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gateway_client
import msgpack
import pytest
from gateway_client import Client
from gateway_harness import GatewayProcess
from wire import Closed, RawConnection, frame, pack, wait_until


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[Client]:
    with Client(gateway.socket_path) as c:
        yield c


def test_hello_ping_stats(client: Client) -> None:
    hello = client.hello()
    assert hello["protocol"] == 1
    assert "ping" in hello["features"]
    assert client.ping() == "pong"
    stats = client.stats()
    assert set(stats["databases"]) == {"main", "cache", "queue"}
    assert stats["requests_by_op"]["ping"] >= 1


def test_client_sends_hello_on_each_new_connection(client: Client) -> None:
    before = client.stats()["requests_by_op"].get("hello", 0)
    client.close()
    client.ping()  # a new connection: hello first, then ping
    assert client.stats()["requests_by_op"].get("hello", 0) == before + 1


def test_call_many_pipelines_and_keeps_order(client: Client) -> None:
    client.ping()
    before = client.stats()["connections_total"]
    results = client.call_many([("ping", {})] * 500 + [("hello", {"protocol": 1})])
    assert results[:500] == ["pong"] * 500
    assert results[500]["protocol"] == 1
    assert client.stats()["connections_total"] == before, "call_many must reuse the connection"


def test_generic_call_and_typed_errors(client: Client) -> None:
    assert client.call("ping") == "pong"
    with pytest.raises(gateway_client.UnknownOp) as info:
        client.call("no.such.op")
    assert info.value.code == "unknown_op"
    assert info.value.status == 4
    assert "no.such.op" in info.value.message
    with pytest.raises(gateway_client.BadArgument) as bad:
        client.call("hello", protocol="x")
    assert "protocol" in bad.value.message
    assert isinstance(bad.value, gateway_client.ServerError)
    assert isinstance(bad.value, gateway_client.GatewayError)
    assert client.ping() == "pong", "an error reply must leave the connection usable"


@pytest.mark.gateway_config({"server": {"max_frame_size": "1KiB"}})
def test_request_over_max_frame_size_is_refused_before_sending(client: Client) -> None:
    assert client.ping() == "pong"
    before = client.stats()["connections_total"]
    with pytest.raises(gateway_client.FrameTooLarge) as info:
        client.call("ping", padding="x" * 2000)
    assert "nothing was sent" in info.value.message
    assert client.ping() == "pong"
    assert client.stats()["connections_total"] == before, "the connection must survive"


def test_call_many_errors(client: Client) -> None:
    results = client.call_many(
        [("ping", {}), ("no.such.op", {}), ("ping", {})], return_exceptions=True
    )
    assert results[0] == "pong" and results[2] == "pong"
    assert isinstance(results[1], gateway_client.UnknownOp)
    with pytest.raises(gateway_client.UnknownOp):
        client.call_many([("ping", {}), ("no.such.op", {}), ("ping", {})])
    assert client.ping() == "pong"


def test_threads_get_their_own_connections(client: Client) -> None:
    client.ping()
    before = client.stats()["connections_total"]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                assert client.ping() == "pong"
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert client.stats()["connections_total"] == before + 8


def test_reconnects_after_the_gateway_restarts(
    gateway: GatewayProcess, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    with Client(gateway.socket_path) as client:
        assert client.ping() == "pong"
        assert gateway.stop() == 0
        restarted = gateway_factory()
        assert restarted.pid != gateway.pid
        assert client.ping() == "pong"
        assert client.stats()["uptime_seconds"] < 30


def test_no_gateway_raises_connection_error_after_bounded_backoff(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.sock"
    client = Client(path, connect_attempts=4, backoff=0.05, max_backoff=0.2)
    started = time.monotonic()
    with pytest.raises(gateway_client.ConnectionError) as info:
        client.ping()
    elapsed = time.monotonic() - started
    assert isinstance(info.value, builtins.ConnectionError)
    assert not isinstance(info.value, gateway_client.TimeoutError)
    message = str(info.value)
    assert str(path) in message and "4 attempts" in message, message
    # Three waits of at least half of 0.05, 0.1 and 0.2 s, and not much more than the full ones.
    assert 0.17 <= elapsed < 1.5, elapsed
    assert info.value.__cause__ is not None


@pytest.mark.gateway_config({"server": {"max_connections": 1}})
def test_full_gateway_is_retried_then_reported(gateway: GatewayProcess) -> None:
    def take_the_only_slot() -> RawConnection | None:
        # The harness's readiness connection may still hold the slot for a moment.
        conn = RawConnection(gateway.socket_path)
        try:
            if conn.call("stats")[2]["connections"] == 1:
                return conn
        except (AssertionError, Closed, OSError):
            pass
        conn.close()
        return None

    with wait_until(take_the_only_slot, 5, interval=0.02) as holder:
        rejected_before = holder.call("stats")[2]["connections_rejected"]
        client = Client(gateway.socket_path, connect_attempts=3, backoff=0.02)
        with pytest.raises(gateway_client.ConnectionError) as info:
            client.ping()
        assert isinstance(info.value.__cause__, gateway_client.TooManyConnections)
        assert "3 attempts" in str(info.value)
        assert holder.call("stats")[2]["connections_rejected"] == rejected_before + 3
    # Once the slot is free the same client connects (the server may need a moment to notice).
    wait_until(lambda: _pings(client), 5, interval=0.05)


def _pings(client: Client) -> bool:
    try:
        return client.ping() == "pong"
    except gateway_client.ConnectionError:
        return False


# --- a fake server for the failure modes the real one will not produce on demand ------------------


class FakeServer:
    """A Unix-socket server that answers ``hello`` and hands every other request to ``handler``.

    ``handler(conn, requests)`` gets the connected socket and the list of requests decoded so far
    that are not hello, and returns the requests it did not consume.
    """

    def __init__(
        self, path: Path, handler: Callable[[socket.socket, list[Any]], list[Any]]
    ) -> None:
        self.path = str(path)
        self.handler = handler
        self.connections = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        waiting: list[Any] = []
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while len(buffer) >= 4:
                    length = int.from_bytes(buffer[:4], "big")
                    if len(buffer) < 4 + length:
                        break
                    request = msgpack.unpackb(bytes(buffer[4 : 4 + length]), raw=False)
                    del buffer[: 4 + length]
                    if request[1] == "hello":
                        conn.sendall(frame(pack([request[0], 0, {"protocol": 1}])))
                    else:
                        waiting.append(request)
                waiting = self.handler(conn, waiting)

    def close(self) -> None:
        self.stopping = True
        self.listener.close()


@pytest.fixture
def fake_server(gateway_dir: Path) -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(handler: Callable[[socket.socket, list[Any]], list[Any]]) -> FakeServer:
        server = FakeServer(gateway_dir / "fake.sock", handler)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_per_call_timeout_raises_timeout_error_and_reconnects(fake_server: Any) -> None:
    server = fake_server(lambda conn, waiting: waiting)  # never answers anything but hello
    client = Client(server.path, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(gateway_client.TimeoutError) as info:
        client.ping()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5, elapsed
    assert isinstance(info.value, builtins.TimeoutError)
    assert isinstance(info.value, gateway_client.ConnectionError)
    with pytest.raises(gateway_client.TimeoutError):
        client.request("ping", timeout=0.05)
    # The timed-out connection was dropped: each call after a timeout opened a new one.
    assert server.connections == 2


def test_responses_out_of_order_are_matched_by_id(fake_server: Any) -> None:
    def answer_in_reverse(conn: socket.socket, waiting: list[Any]) -> list[Any]:
        if len(waiting) < 3:
            return waiting
        for request_id, op, args in reversed(waiting):
            if op == "fail":
                body = {"code": "bad_argument", "message": "n is wrong"}
                conn.sendall(frame(pack([request_id, 5, body])))
            else:
                conn.sendall(frame(pack([request_id, 0, args["n"]])))
        return []

    server = fake_server(answer_in_reverse)
    client = Client(server.path, timeout=2)
    assert client.call_many([("echo", {"n": 1}), ("echo", {"n": 2}), ("echo", {"n": 3})]) == [
        1,
        2,
        3,
    ]
    results = client.call_many(
        [("echo", {"n": 1}), ("fail", {}), ("echo", {"n": 3})], return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], gateway_client.BadArgument) and results[1].message == "n is wrong"
    assert server.connections == 1


def test_unknown_error_codes_map_to_server_error(fake_server: Any) -> None:
    def answer(conn: socket.socket, waiting: list[Any]) -> list[Any]:
        for request_id, _op, _args in waiting:
            body = {"code": "some_future_code", "message": "new"}
            conn.sendall(frame(pack([request_id, 40, body])))
        return []

    client = Client(fake_server(answer).path, timeout=2)
    with pytest.raises(gateway_client.ServerError) as info:
        client.call("anything")
    assert type(info.value) is gateway_client.ServerError
    assert (info.value.code, info.value.status) == ("some_future_code", 40)


def test_garbled_reply_is_a_protocol_error(fake_server: Any) -> None:
    def answer(conn: socket.socket, waiting: list[Any]) -> list[Any]:
        for _ in waiting:
            conn.sendall(frame(b"\xc1"))
        return []

    client = Client(fake_server(answer).path, timeout=2)
    with pytest.raises(gateway_client.ProtocolError):
        client.ping()


# --- fork ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_uses_its_own_connection(gateway: GatewayProcess) -> None:
    client = Client(gateway.socket_path)
    assert client.ping() == "pong"
    before = client.stats()["connections_total"]
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            ok = all(client.ping() == "pong" for _ in range(20))
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection is intact and the child opened exactly one of its own.
    assert all(client.ping() == "pong" for _ in range(20))
    assert client.stats()["connections_total"] == before + 1
    client.close()
