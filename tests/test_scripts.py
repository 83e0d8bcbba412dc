"""The README's run command: ``scripts/run`` starts the gateway with examples/app.toml."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
from gateway_harness import REPO
from wire import RawConnection

SOCKET = REPO / "examples" / "run" / "mysite.sock"
SITE = "http://127.0.0.1:8000/"


def _read_lines(stream, lines: list[tuple[float, str]]) -> None:
    for raw in stream:
        lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))


@pytest.mark.skipif(
    (SOCKET.parent / "gateway.sock.lock").exists() and SOCKET.exists(),
    reason="a gateway from scripts/run may be running on examples/ already",
)
def test_scripts_run_starts_the_site_and_the_gateway_answers_hello_within_a_second() -> None:
    env = dict(os.environ)
    process = subprocess.Popen(
        [str(REPO / "scripts" / "run")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    try:
        # scripts/run sets up first (quick when already set up); the clock starts when it execs
        # the gateway, which logs "event=starting" as its first line.
        deadline = time.monotonic() + 300
        started = None
        while started is None and time.monotonic() < deadline and process.poll() is None:
            started = next((t for t, line in lines if "event=starting" in line), None)
            time.sleep(0.01)
        log = "\n".join(text for _, text in lines)
        assert started is not None, "gateway never started:\n" + log
        answered = None
        while time.monotonic() < started + 5:
            try:
                with RawConnection(str(SOCKET), timeout=1.0) as conn:
                    reply = conn.call("hello", {"protocol": 1})
                answered = time.monotonic()
                break
            except OSError:
                time.sleep(0.005)
        assert answered is not None, "no hello answer:\n" + "\n".join(text for _, text in lines)
        assert reply[1] == 0 and reply[2]["protocol"] == 1
        assert answered - started < 1.0, f"hello answered {answered - started:.3f}s after start"
        # The example site comes up under [exec] (migrations first, then gunicorn).
        page = None
        deadline = time.monotonic() + 60
        while page is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(SITE, timeout=5) as resp:
                    page = resp.read().decode()
            except OSError:
                time.sleep(0.2)
        log = "\n".join(text for _, text in lines)
        assert page is not None, "the example site never answered:\n" + log
        assert "<html" in page.lower()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
        reader.join(timeout=5)
    assert not SOCKET.exists(), "the socket should be removed on SIGINT"
    assert any("event=stopped" in line for _, line in lines)
