"""gateway_client.aio: the asyncio connection (pipelining by id) and the per-loop client.

Most tests use the real gateway; matching replies that come out of order, and dropping the late
reply of a call that gave up, need a server that misbehaves on purpose, which a small fake server
in a thread provides.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gateway_client
import msgpack
import pytest
from gateway_client.aio import AsyncClient, AsyncConnection
from gateway_harness import GatewayProcess
from wire import frame, pack


def run(coroutine_function: Callable[[], Any]) -> Any:
    return asyncio.run(coroutine_function())


class FakeServer:
    """A Unix-socket server that hands each request to ``respond(request, send)`` in a thread.

    ``respond`` decides when and in which order replies are sent (``send(response)``).
    """

    def __init__(self, path: Path, respond: Callable[[list[Any], Callable[[Any], None]], None]):
        self.path = str(path)
        self.respond = respond
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        lock = threading.Lock()

        def send(response: Any) -> None:
            with lock:
                conn.sendall(frame(pack(response)))

        buffer = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while len(buffer) >= 4:
                    (length,) = struct.unpack(">I", buffer[:4])
                    if len(buffer) < 4 + length:
                        break
                    request = msgpack.unpackb(buffer[4 : 4 + length], raw=False)
                    buffer = buffer[4 + length :]
                    if request[1] == "hello":
                        send([request[0], 0, {"protocol": 1, "max_frame_size": 1 << 20}])
                    else:
                        self.respond(request, send)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def fake_server(gateway_dir: Path) -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(respond: Callable[[list[Any], Callable[[Any], None]], None]) -> FakeServer:
        server = FakeServer(gateway_dir / f"fake{len(servers)}.sock", respond)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


# --- against the real gateway ---------------------------------------------------------------------


def test_hello_ping_stats_and_calls(gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        client = AsyncClient(gateway.socket_path)
        hello = await client.hello()
        assert hello["protocol"] == 1 and "cache.get" in hello["features"]
        assert await client.ping() == "pong"
        assert "databases" in await client.stats()
        assert await client.call("cache.set", key="k", value=b"v") is True
        assert await client.request("cache.get", {"key": "k"}) == b"v"
        with pytest.raises(gateway_client.UnknownOp):
            await client.call("no.such.op")
        with pytest.raises(gateway_client.KeyNotFound):
            await client.call("cache.incr", key="missing", delta=1)
        assert await client.ping() == "pong", "an error reply leaves the connection usable"
        results = await client.call_many(
            [("cache.incr", {"key": "missing", "delta": 1}), ("ping", {})],
            return_exceptions=True,
        )
        assert isinstance(results[0], gateway_client.KeyNotFound) and results[1] == "pong"
        await client.aclose()

    run(scenario)


def test_concurrent_coroutines_share_one_connection(gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        client = AsyncClient(gateway.socket_path)
        await client.ping()
        before = (await client.stats())["connections_total"]
        await asyncio.gather(*(client.call("cache.set", key=f"k{i}", value=i) for i in range(500)))
        values = await asyncio.gather(*(client.call("cache.get", key=f"k{i}") for i in range(500)))
        assert values == list(range(500))
        assert (await client.stats())["connections_total"] == before
        await client.aclose()

    run(scenario)


def test_large_pipelined_batch(gateway: GatewayProcess) -> None:
    """More than the socket buffers hold, so the transport has to pause and resume writing."""

    async def scenario() -> None:
        client = AsyncClient(gateway.socket_path, timeout=60)
        value = b"x" * 20_000
        requests = [("cache.set", {"key": f"big{i}", "value": value}) for i in range(1500)]
        assert await client.call_many(requests) == [True] * 1500
        assert await client.call("cache.get", key="big1499") == value
        await client.aclose()

    run(scenario)


def test_each_event_loop_gets_its_own_connection(gateway: GatewayProcess) -> None:
    client = AsyncClient(gateway.socket_path)
    peers = []

    async def use() -> None:
        await client.ping()
        peers.append(id(await client._connection()))

    asyncio.run(use())
    asyncio.run(use())
    assert len(set(peers)) == 2
    assert len(client._slots) == 1, "the closed loop's slot was dropped"
    client.close()


def test_reconnects_after_the_gateway_restarts(gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        client = AsyncClient(gateway.socket_path, connect_attempts=1)
        await client.call("cache.set", key="k", value=1)
        gateway.stop()
        await asyncio.sleep(0.05)  # the connection sees EOF
        with pytest.raises(gateway_client.ConnectionError):
            await client.call("cache.get", key="k", timeout=0.5)
        gateway.start()
        assert await client.call("cache.get", key="k") == 1
        await client.aclose()

    run(scenario)


def test_no_gateway(tmp_path: Path) -> None:
    async def scenario() -> None:
        client = AsyncClient(tmp_path / "none.sock", connect_attempts=2, backoff=0.01)
        with pytest.raises(gateway_client.ConnectionError) as info:
            await client.ping()
        assert "after 2 attempts" in str(info.value)

    run(scenario)


@pytest.mark.gateway_config({"server": {"max_frame_size": "1KiB"}})
def test_request_over_max_frame_size_is_refused_before_sending(gateway: GatewayProcess) -> None:
    async def scenario() -> None:
        client = AsyncClient(gateway.socket_path)
        await client.ping()
        with pytest.raises(gateway_client.FrameTooLarge, match="nothing was sent"):
            await client.call("cache.set", key="k", value=b"x" * 2000)
        assert await client.ping() == "pong"
        await client.aclose()

    run(scenario)


# --- against a fake server ------------------------------------------------------------------------


def test_replies_out_of_order_are_matched_by_id(fake_server: Callable[..., FakeServer]) -> None:
    held: list[list[Any]] = []
    lock = threading.Lock()

    def respond(request: list[Any], send: Callable[[Any], None]) -> None:
        with lock:
            held.append(request)
            if len(held) < 3:
                return
            batch = list(held)
            held.clear()
        for request_id, _op, args in reversed(batch):
            send([request_id, 0, args["n"]])

    server = fake_server(respond)

    async def scenario() -> None:
        client = AsyncClient(server.path)
        results = await asyncio.gather(*(client.call("echo", n=n) for n in (1, 2, 3)))
        assert results == [1, 2, 3]
        assert await client.call_many([("echo", {"n": n}) for n in (4, 5, 6)]) == [4, 5, 6]
        await client.aclose()

    run(scenario)


def test_a_timed_out_call_leaves_the_connection_usable(
    fake_server: Callable[..., FakeServer],
) -> None:
    def respond(request: list[Any], send: Callable[[Any], None]) -> None:
        request_id, op, _args = request
        if op == "slow":
            threading.Timer(0.3, send, args=([request_id, 0, "late"],)).start()
        else:
            send([request_id, 0, "quick"])

    server = fake_server(respond)

    async def scenario() -> None:
        client = AsyncClient(server.path)
        connection = await client._connection()
        with pytest.raises(gateway_client.TimeoutError):
            await client.call_many([("slow", {})], timeout=0.05)
        task = asyncio.create_task(client.call("slow"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.4)  # both late replies arrive and are dropped
        assert await client.call("fast") == "quick"
        assert await client._connection() is connection
        await client.aclose()

    run(scenario)


def test_an_unknown_reply_id_is_a_protocol_error(fake_server: Callable[..., FakeServer]) -> None:
    def respond(request: list[Any], send: Callable[[Any], None]) -> None:
        send([request[0] + 1000, 0, "stray"])

    server = fake_server(respond)

    async def scenario() -> None:
        client = AsyncClient(server.path)
        with pytest.raises(gateway_client.ProtocolError, match="not in flight"):
            await client.call("anything", timeout=2)
        await client.aclose()

    run(scenario)


def test_a_server_error_with_id_0_fails_the_calls_in_flight(
    fake_server: Callable[..., FakeServer],
) -> None:
    def respond(request: list[Any], send: Callable[[Any], None]) -> None:
        send([0, 7, {"code": "shutting_down", "message": "bye"}])

    server = fake_server(respond)

    async def scenario() -> None:
        connection = await AsyncConnection.open(server.path)
        with pytest.raises(gateway_client.ShuttingDown):
            await connection.call("anything", timeout=2)
        assert connection.closed

    run(scenario)
