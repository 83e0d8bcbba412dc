"""Running in production: /metrics, [exec], and blue/green handoff through the replica lease."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

from gateway_harness import REPO, GatewayProcess, build_dir
from prometheus_client.parser import text_string_to_metric_families
from wire import RawConnection, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_endpoint_serves_valid_prometheus_text(gateway_dir: Path) -> None:
    port = free_port()
    gw = GatewayProcess(
        gateway_dir,
        {
            "server": {"metrics_addr": f"127.0.0.1:{port}"},
            "replica": {"url": "file://replica", "sync_interval": "100ms"},
        },
    ).start()
    try:
        with RawConnection(gw.socket_path) as conn:
            for _ in range(7):
                assert conn.call("ping")[2] == "pong"
            conn.call("cache.set", {"key": "k", "value": 1})
            conn.call("cache.get", {"key": "k"})
            conn.call("cache.get", {"key": "missing"})
            conn.call("queue.enqueue", {"task": "t.t", "queue": "mail"})
            conn.call("nope.nope")
            conn.call("replica.sync")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        assert samples[("gateway_up", ())] == 1
        assert samples[("gateway_requests_total", (("op", "ping"),))] == 7
        assert samples[("gateway_errors_total", (("code", "unknown_op"),))] == 1
        assert samples[("gateway_cache_hits_total", ())] == 1
        assert samples[("gateway_cache_misses_total", ())] == 1
        assert samples[("gateway_queue_jobs", (("queue", "mail"), ("state", "READY")))] == 1
        assert samples[("gateway_replica_last_txid", (("db", "cache"),))] >= 1
        assert samples[("gateway_replica_failing", (("db", "main"),))] == 0
        assert families["gateway_requests"].type == "counter"
        assert families["gateway_connections_open"].type == "gauge"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5) as resp:
            raise AssertionError("expected a 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    finally:
        gw.stop()


APP = textwrap.dedent(
    """
    import os, signal, sqlite3, sys, time
    sys.path.insert(0, {tests!r})
    from wire import RawConnection
    # The gateway gives its socket and its SQLite (through LD_LIBRARY_PATH) to the app.
    assert sqlite3.sqlite_version_info >= (3, 51, 3), sqlite3.sqlite_version
    with RawConnection(os.environ["GATEWAY_SOCKET"]) as c:
        assert c.call("cache.set", {{"key": "from-app", "value": os.environ["APP_VALUE"]}})[1] == 0
    db = sqlite3.connect(os.environ["GATEWAY_DB_MAIN"], isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE IF NOT EXISTS t(x)")
    db.execute("INSERT INTO t VALUES ('last write')")
    with open(os.environ["READY_FILE"] + ".tmp", "w") as ready:
        ready.write(str(os.getpid()))
    os.rename(os.environ["READY_FILE"] + ".tmp", os.environ["READY_FILE"])
    code = int(os.environ.get("EXIT_CODE", "-1"))
    if code >= 0:
        sys.exit(code)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)
    """
)


def exec_gateway(folder: Path, **env: str) -> GatewayProcess:
    app = folder / "app.py"
    app.write_text(APP.format(tests=str(REPO / "tests")))
    return GatewayProcess(
        folder,
        {
            "replica": {"url": "file://replica", "sync_interval": "100ms"},
            "exec": {
                "command": [sys.executable, str(app)],
                "env": {"APP_VALUE": "hello", "READY_FILE": str(folder / "ready"), **env},
            },
        },
        # The app must find the gateway's SQLite through the gateway, not through our own env.
        env={"LD_LIBRARY_PATH": ""},
    )


def test_exec_runs_the_app_and_sigterm_stops_everything_with_the_last_write_replicated(
    gateway_dir: Path,
) -> None:
    gw = exec_gateway(gateway_dir).start()
    wait_until(lambda: (gateway_dir / "ready").exists(), 10, message="the app never started")
    started = time.monotonic()
    assert gw.stop(signal.SIGTERM, timeout=10) == 0, gw.log_text()
    assert time.monotonic() - started < 10
    log = gw.log_text()
    assert "exec_started" in log and "replica_final_sync" in log and "replica_lease_released" in log
    # The replica holds the app's last writes: restore it elsewhere and look.
    out = gateway_dir / "restored"
    for db in ("main", "cache"):
        subprocess.run(
            [
                str(build_dir() / "gateway"),
                "restore",
                "--config",
                str(gw.config_path),
                "--db",
                db,
                "-o",
                str(out / f"{db}.sqlite3"),
            ],
            check=True,
            capture_output=True,
        )
    main = sqlite3.connect(out / "main.sqlite3")
    assert main.execute("SELECT x FROM t").fetchall() == [("last write",)]
    cache = sqlite3.connect(out / "cache.sqlite3")
    assert cache.execute(
        "SELECT value FROM cache_entries WHERE key = x'66726f6d2d617070'"
    ).fetchone() == ("hello",)


def test_a_gateway_killed_with_sigkill_leaves_no_app_server_running(gateway_dir: Path) -> None:
    """Otherwise the orphan keeps the site's port, and the restarted gateway's app cannot bind."""
    gw = exec_gateway(gateway_dir).start()
    ready = gateway_dir / "ready"
    wait_until(ready.exists, 10, message="the app never started")
    app = int(ready.read_text())
    assert app != gw.proc.pid
    gw.kill()

    def gone() -> bool:
        try:
            os.kill(app, 0)
        except ProcessLookupError:
            return True
        # A zombie (not yet reaped by init) counts as gone.
        return Path(f"/proc/{app}/stat").read_text().split(") ")[1].startswith("Z")

    wait_until(gone, 10, message=f"the app (pid {app}) outlived the gateway killed with SIGKILL")
    # And a new gateway starts its own app again.
    ready.unlink()
    gw.start(extra_args=("--lease-wait", "10s"))
    wait_until(ready.exists, 10, message="the app never started again")
    assert gw.stop(signal.SIGTERM, timeout=10) == 0, gw.log_text()


def test_an_exec_command_that_does_not_exist_stops_the_start_with_its_name(
    gateway_dir: Path,
) -> None:
    gw = GatewayProcess(gateway_dir, {"exec": {"command": ["no-such-app-server", "--bind", "x"]}})
    gw.start(wait=False)
    assert gw.wait(timeout=15) != 0
    log = gw.log_text()
    assert "exec_failed" in log and "no-such-app-server" in log and "PATH" in log, log


def test_the_gateway_exits_with_the_app_servers_status(gateway_dir: Path) -> None:
    gw = exec_gateway(gateway_dir, EXIT_CODE="5").start(wait=False)
    assert gw.wait(timeout=15) == 5, gw.log_text()
    assert "exec_exited" in gw.log_text()


def test_a_second_gateway_on_the_same_replica_waits_and_takes_over_without_losing_writes(
    tmp_path_factory,
) -> None:
    root = Path(tmp_path_factory.mktemp("bg", numbered=True))
    short = Path(os.path.realpath("/tmp")) / f"bg-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    short.mkdir()
    replica = root / "replica"
    config = {"replica": {"url": f"file://{replica}", "sync_interval": "100ms", "lease_ttl": "3s"}}
    blue = GatewayProcess(short / "blue", config).start()
    green = GatewayProcess(short / "green", config)

    acked: list[int] = []
    stop = threading.Event()

    def write_load() -> None:
        n = 0
        try:
            with RawConnection(blue.socket_path) as conn:
                while not stop.is_set():
                    reply = conn.call("cache.set", {"key": f"k{n}", "value": n})
                    if reply[1] != 0:
                        return
                    acked.append(n)
                    n += 1
        except (OSError, EOFError, Exception):
            return  # blue went away: what it acknowledged is what counts

    writer = threading.Thread(target=write_load)
    writer.start()
    try:
        wait_until(lambda: len(acked) > 200, 10, message="blue took no writes")
        wait_until(
            lambda: (replica / "cache" / "generations").exists(),
            10,
            message="blue never replicated the cache",
        )
        green.start(wait=False, extra_args=("--lease-wait", "30s"))
        wait_until(
            lambda: "replica_lease_waiting" in green.log_text(),
            10,
            message="green did not wait for the lease",
        )
        assert not os.path.exists(green.socket_path), (
            "green must not serve while blue holds the lease"
        )
        before_handoff = {p.name for p in (replica / "cache" / "generations").iterdir()}
        blue.send_signal(signal.SIGTERM)
        assert blue.wait(timeout=10) == 0, blue.log_text()
        stop.set()
        writer.join(10)
        blue_objects = list((replica / "cache" / "generations").rglob("*.s*"))
        blue_last = max(p.stat().st_mtime_ns for p in blue_objects)
        green.wait_ready(30)
        # Every write blue acknowledged is in green's databases.
        with RawConnection(green.socket_path) as conn:
            for n in acked:
                assert conn.call("cache.get", {"key": f"k{n}"})[2] == n, f"k{n} lost in the handoff"
            conn.call("cache.set", {"key": "green", "value": 1})
            assert conn.call("replica.sync")[1] == 0
        # Green wrote only after blue stopped: its objects all come later, in new generations.
        after = {p.name for p in (replica / "cache" / "generations").iterdir()}
        new_generations = after - before_handoff
        assert new_generations, "green should write its own generation"
        for gen in new_generations:
            for obj in (replica / "cache" / "generations" / gen).rglob("*.s*"):
                assert obj.stat().st_mtime_ns >= blue_last
        assert "replica_lease_acquired" in green.log_text()
    finally:
        stop.set()
        writer.join(5)
        for gw in (blue, green):
            if gw.proc is not None and gw.running():
                gw.stop()
        subprocess.run(["rm", "-rf", str(short)], check=False)


def test_a_second_gateway_without_lease_wait_refuses_clearly(gateway_dir: Path) -> None:
    config = {"replica": {"url": f"file://{gateway_dir}/replica"}}
    first = GatewayProcess(gateway_dir / "a", config).start()
    second = GatewayProcess(gateway_dir / "b", config)
    try:
        second.start(wait=False)
        assert second.wait(timeout=10) != 0
        assert "held by" in second.log_text() and "--lease-wait" in second.log_text()
    finally:
        first.stop()


def test_a_token_is_required_when_configured_and_never_printed(gateway_dir: Path) -> None:
    from gateway_client import Client, GatewayError

    token = "s3cret-token-0123456789"
    gw = GatewayProcess(gateway_dir, {"server": {"token": token}}).start(wait=False)
    wait_until(lambda: os.path.exists(gw.socket_path), 10, message="gateway did not start")
    try:
        with RawConnection(gw.socket_path) as conn:
            reply = conn.call("ping")
            assert reply[2]["code"] == "unauthorized"
            reply = conn.call("hello", {"token": "wrong-token-0123456789"})
            assert reply[2]["code"] == "unauthorized"
            conn.expect_eof()  # one guess per connection
        with RawConnection(gw.socket_path) as conn:
            assert conn.call("hello", {"token": token})[1] == 0
            assert conn.call("ping")[2] == "pong"
        assert Client(gw.socket_path, token=token).ping() == "pong"
        try:
            Client(gw.socket_path, token="nope-nope-nope-nope", connect_attempts=1).ping()
            raise AssertionError("a wrong token must be refused")
        except GatewayError:
            pass
        checked = subprocess.run(
            [str(build_dir() / "gateway"), "check-config", "--config", str(gw.config_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert token not in checked.stdout and 'token = "********"' in checked.stdout
        status = subprocess.run(
            [str(build_dir() / "gateway"), "status", "--config", str(gw.config_path)],
            capture_output=True,
            text=True,
        )
        assert status.returncode == 0, status.stderr
    finally:
        gw.stop()
    assert token not in gw.log_text()
