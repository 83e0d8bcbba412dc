"""The client's spin-wait for replies (``Client(spin_us=...)``, GatewayCache ``SPIN_US``).

A spinning connection reads the socket in a loop for a short while instead of sleeping in
``poll()``. These tests check that it still reads every reply right (pipelined, large, errors),
that it stops spinning when replies are slow or when the thread has to wait for a CPU, and that
it starts again when that changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import gateway_client
import pytest
from gateway_client import Client
from gateway_client import connection as connection_module
from gateway_client.connection import Connection, _SpinGate
from gateway_harness import GatewayProcess


@pytest.fixture
def spins(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every spin any connection makes from now on: True if it got all its replies."""
    seen: list[bool] = []
    real = Connection._spin_for_replies

    def counting(self: Connection, *args: Any) -> bool:
        got_all = real(self, *args)
        seen.append(got_all)
        return got_all

    monkeypatch.setattr(Connection, "_spin_for_replies", counting)
    return seen


def test_spinning_client_reads_every_reply_right(
    gateway: GatewayProcess, spins: list[bool]
) -> None:
    with Client(gateway.socket_path, spin_us=2_000) as client:
        for i in range(200):
            assert client.call("cache.set", key=f"k{i}", value=i) is True
            assert client.call("cache.get", key=f"k{i}") == i
        assert client.call_many([("ping", {})] * 500) == ["pong"] * 500
        # A reply far larger than one recv(): read partly while spinning, then by poll().
        big = os.urandom(3 * 1024 * 1024)
        client.call("cache.set", key="big", value=big)
        assert client.call("cache.get", key="big") == big
        with pytest.raises(gateway_client.UnknownOp):
            client.call("no.such.op")
        assert client.ping() == "pong", "an error reply leaves the connection usable"
        gate = client._connection()._spin
        assert gate is not None and gate.calls > 400
    # The gate starts open (the first reading of the run delay is after 8 calls), so at least
    # the connection's first calls spun, whatever the machine's load.
    assert len(spins) >= 1


def test_without_spin_us_nothing_spins(gateway: GatewayProcess, spins: list[bool]) -> None:
    with Client(gateway.socket_path) as client:
        for _ in range(50):
            client.ping()
        assert client._connection()._spin is None
    assert spins == []


def test_spinning_stops_while_replies_are_slow_and_resumes_when_they_are_quick(
    gateway: GatewayProcess, spins: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep the CPU side of the gate open, so that only the replies' speed decides.
    monkeypatch.setattr(_SpinGate, "_watch_cpu", lambda self: None)
    # A dequeue from an empty queue with wait_ms=20 is answered 20 ms later: far over the spin.
    slow = {"queues": ["spin-test"], "worker_id": "w", "wait_ms": 20}
    client = Client(gateway.socket_path, timeout=5, spin_us=2_000)
    gate = client._connection()._spin  # opens the connection (hello)
    assert gate is not None
    spins.clear()
    gate.score = 1.0
    for _ in range(48):
        assert client.call("queue.dequeue", **slow) == []
    failed = len(spins)
    assert not any(spins), "no reply can come within the spin"
    # 0.875 ** 6 < 0.5: six calls spin before the share of good spins drops under a half;
    # after that only one call in 16 tries, so about 3 more.
    assert 6 <= failed <= 6 + 48 // 16 + 1, failed

    # Quick replies from here on. A long spin window keeps a loaded machine (a sanitizer run)
    # from making them late: what is tested is that the gate opens again.
    gate.spin_s = 0.05
    for _ in range(400):
        assert client.ping() == "pong"
    assert gate.score >= 0.5, gate.score
    recent = spins[failed:]
    assert recent.count(True) > 200, "quick replies make every call spin again"
    client.close()


class _FakeClock:
    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns


def test_gate_shuts_while_the_thread_waits_for_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(connection_module.time, "perf_counter_ns", clock)
    gate = _SpinGate(100)
    if gate._schedstat < 0:
        pytest.skip("no /proc/thread-self/schedstat")
    run_delay = {"ns": 0}
    monkeypatch.setattr(gate, "_run_delay", lambda: run_delay["ns"])
    gate._window_delay = 0

    def calls(n: int) -> list[bool]:
        return [gate.allows() for _ in range(n)]

    assert all(calls(8)), "a thread that never waited for a CPU spins"
    # 2 ms later it had waited 0.5 ms of them for a CPU: a quarter, over the tenth allowed.
    clock.ns += 2_000_000
    run_delay["ns"] += 500_000
    assert calls(8)[-1] is False and not any(calls(8))
    # Under 1 ms of wall time is too short a window to judge: the gate stays as it was.
    clock.ns += 500_000
    assert not any(calls(8))
    # Then 4 ms (from the last reading) with 0.1 ms of waiting: 2.5%, so it opens again.
    clock.ns += 3_500_000
    run_delay["ns"] += 100_000
    assert calls(8)[-1] is True
    gate.close()
    gate.close()  # idempotent


def test_gate_sees_a_machine_with_more_busy_threads_than_cpus() -> None:
    """The run delay of the real kernel, not a fake: with several busy processes per CPU, a
    thread that wants the CPU all the time waits for it most of the time, and the gate shuts."""
    gate = _SpinGate(100)
    if gate._schedstat < 0:
        pytest.skip("no /proc/thread-self/schedstat")
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(3 * (os.cpu_count() or 1))
    ]
    try:
        time.sleep(0.2)  # let every hog start spinning
        shut = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not shut:
            shut = not gate.allows() and not gate.cpu_free
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
        gate.close()
    assert shut, "the gate stayed open while the thread waited for a CPU"
