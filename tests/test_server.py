"""Black-box tests of the gateway process: start-up, databases, signals, socket, command line."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import (
    BASE_CONFIG,
    GatewayProcess,
    merge_config,
    render_toml,
    run_gateway_command,
)
from wire import RawConnection, ping_ok

DATABASES = ("main", "cache", "queue")
MIN_SQLITE = (3, 51, 3)
MiB = 1024 * 1024
DOCUMENTED_PRAGMAS = (
    "journal_mode",
    "synchronous",
    "busy_timeout",
    "mmap_size",
    "journal_size_limit",
    "cache_size",
    "foreign_keys",
    "temp_store",
)


def read_pragma(path: Path, pragma: str) -> Any:
    connection = sqlite3.connect(path, timeout=5)
    try:
        return connection.execute(f"PRAGMA {pragma}").fetchone()[0]
    finally:
        connection.close()


def stats_of(gateway: GatewayProcess) -> dict[str, Any]:
    with RawConnection(gateway.socket_path) as conn:
        _, status, body = conn.call("stats")
    assert status == 0, body
    return body


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# --- databases ----------------------------------------------------------------------------------


def test_databases_are_created_in_wal_mode(gateway: GatewayProcess) -> None:
    for name in DATABASES:
        path = gateway.db_path(name)
        assert path.is_file(), f"{name} database {path} was not created"
        assert read_pragma(path, "journal_mode") == "wal", name


def test_cache_and_queue_have_a_schema_version(gateway: GatewayProcess) -> None:
    databases = stats_of(gateway)["databases"]
    for name in ("cache", "queue"):
        assert databases[name]["user_version"] > 0, name
        assert read_pragma(gateway.db_path(name), "user_version") == databases[name]["user_version"]


def test_stats_reports_each_database(gateway: GatewayProcess) -> None:
    databases = stats_of(gateway)["databases"]
    assert set(databases) == set(DATABASES)
    for name in DATABASES:
        entry = databases[name]
        assert entry["path"] == str(gateway.db_path(name).resolve()), entry["path"]
        assert os.path.isabs(entry["path"])
        assert isinstance(entry["size_bytes"], int) and entry["size_bytes"] > 0
        assert entry["size_bytes"] == gateway.db_path(name).stat().st_size
        assert isinstance(entry["wal_bytes"], int) and entry["wal_bytes"] >= 0
        assert isinstance(entry["user_version"], int)


def expected_pragmas(
    *, synchronous: int, busy_timeout: int, mmap_size: int, journal_size_limit: int, cache_kib: int
) -> dict[str, Any]:
    return {
        "journal_mode": "wal",
        "synchronous": synchronous,
        "busy_timeout": busy_timeout,
        "mmap_size": mmap_size,
        "journal_size_limit": journal_size_limit,
        "cache_size": -cache_kib,
        "foreign_keys": 1,
        "temp_store": 2,
    }


def documented(pragmas: dict[str, Any]) -> dict[str, Any]:
    """The PROTOCOL.md keys of a ``pragmas`` map (a server may report more)."""
    return {key: pragmas.get(key) for key in DOCUMENTED_PRAGMAS}


def test_pragmas_follow_the_default_test_config(gateway: GatewayProcess) -> None:
    want = expected_pragmas(
        synchronous=1,
        busy_timeout=5000,
        mmap_size=128 * MiB,
        journal_size_limit=64 * MiB,
        cache_kib=32 * 1024,
    )
    databases = stats_of(gateway)["databases"]
    for name in DATABASES:
        assert documented(databases[name]["pragmas"]) == want, name


@pytest.mark.gateway_config(
    {
        "sqlite": {
            "synchronous": "FULL",
            "busy_timeout_ms": 1234,
            "mmap_size": "64MiB",
            "journal_size_limit": "16MiB",
            "cache_size": "8MiB",
        }
    }
)
def test_pragmas_follow_a_non_default_config(gateway: GatewayProcess) -> None:
    want = expected_pragmas(
        synchronous=2,
        busy_timeout=1234,
        mmap_size=64 * MiB,
        journal_size_limit=16 * MiB,
        cache_kib=8 * 1024,
    )
    databases = stats_of(gateway)["databases"]
    for name in DATABASES:
        assert documented(databases[name]["pragmas"]) == want, name


@pytest.mark.parametrize(("level", "value"), [("OFF", 0), ("EXTRA", 3)])
def test_every_synchronous_level(
    gateway_factory: Callable[..., GatewayProcess], level: str, value: int
) -> None:
    gateway = gateway_factory({"sqlite": {"synchronous": level}})
    for name, entry in stats_of(gateway)["databases"].items():
        assert entry["pragmas"]["synchronous"] == value, name


# --- start-up and shutdown ----------------------------------------------------------------------


def test_answers_hello_within_one_second_of_start(gateway: GatewayProcess) -> None:
    # The fixture started it on an empty folder, so this includes creating all three databases.
    assert gateway.ready_after is not None
    assert gateway.ready_after < 1.0, (
        f"first hello answered {gateway.ready_after:.3f} s after start"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(gateway: GatewayProcess, sig: int) -> None:
    with RawConnection(gateway.socket_path) as busy:
        assert busy.call("ping")[2] == "pong"
        with RawConnection(gateway.socket_path) as idle:
            idle.call("hello", {"protocol": 1})
            started = time.monotonic()
            gateway.send_signal(sig)
            code = gateway.wait(timeout=2.0)
            elapsed = time.monotonic() - started
            idle.expect_eof(timeout=1.0)
    assert code == 0, f"exit code {code}; log:\n{gateway.log_text()}"
    assert elapsed < 2.0
    assert not os.path.exists(gateway.socket_path), "the socket file was left behind"
    for name in DATABASES:
        assert read_pragma(gateway.db_path(name), "integrity_check") == "ok", name


def test_second_gateway_on_the_same_socket_refuses_to_start(
    gateway: GatewayProcess, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    second = gateway_factory(start=False, name="second")
    assert second.socket_path == gateway.socket_path
    second.start(wait=False)
    code = second.wait(timeout=5.0)
    assert code != 0, "a second gateway started on a socket that is in use"
    log = second.log_text() + second.stdout_text()
    assert re.search(r"socket|another gateway|already|in use", log, re.IGNORECASE), log
    # The first one still owns the socket and serves.
    assert os.path.exists(gateway.socket_path)
    with RawConnection(gateway.socket_path) as conn:
        assert conn.peer_pid() == gateway.pid
        assert conn.call("ping")[2] == "pong"


def test_stale_socket_file_is_replaced(
    gateway_dir: Path, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    stale_path = gateway_dir / BASE_CONFIG["server"]["socket"]
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale_path))
    leftover.close()  # the file stays, but nobody listens on it any more
    assert stat.S_ISSOCK(stale_path.stat().st_mode)

    gateway = gateway_factory()
    with RawConnection(gateway.socket_path) as conn:
        assert conn.peer_pid() == gateway.pid
        assert conn.call("ping")[2] == "pong"


@pytest.mark.parametrize(("mode", "expected"), [("0660", 0o660), ("0600", 0o600)])
def test_socket_file_mode(
    gateway_factory: Callable[..., GatewayProcess], mode: str, expected: int
) -> None:
    gateway = gateway_factory({"server": {"socket_mode": mode}})
    st = os.stat(gateway.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == expected, oct(stat.S_IMODE(st.st_mode))


def test_restart_on_existing_databases(
    gateway: GatewayProcess, gateway_factory: Callable[..., GatewayProcess]
) -> None:
    first_versions = {n: e["user_version"] for n, e in stats_of(gateway)["databases"].items()}
    assert gateway.stop() == 0
    again = gateway_factory()
    assert {n: e["user_version"] for n, e in stats_of(again)["databases"].items()} == first_versions
    assert ping_ok(again.socket_path)


# --- command line -------------------------------------------------------------------------------


def test_version_prints_gateway_and_sqlite_versions(gateway: GatewayProcess) -> None:
    result = run_gateway_command(["--version"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout
    gateway_match = re.fullmatch(r"gateway (\d+\.\d+\.\d+)", lines[0].strip())
    sqlite_match = re.fullmatch(r"sqlite (\d+\.\d+\.\d+)", lines[1].strip())
    assert gateway_match and sqlite_match, result.stdout
    assert version_tuple(sqlite_match.group(1)) >= MIN_SQLITE
    with RawConnection(gateway.socket_path) as conn:
        hello = conn.call("hello")[2]
    assert hello["server_version"] == gateway_match.group(1)
    assert hello["sqlite_version"] == sqlite_match.group(1)


def write_config(folder: Path, overrides: dict[str, Any]) -> Path:
    path = folder / "check.toml"
    path.write_text(render_toml(merge_config(BASE_CONFIG, overrides)))
    return path


REPLICA = {
    "url": "s3://bucket/p",
    "endpoint": "http://127.0.0.1:9000",
    "access_key_id": "${TEST_KEY_ID}",
    "secret_access_key": "${TEST_SECRET}",
}


def test_check_config_masks_secrets(gateway_dir: Path) -> None:
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz-VERY-SECRET"
    config = write_config(gateway_dir, {"replica": REPLICA})
    result = run_gateway_command(
        ["check-config", "--config", str(config)],
        env={"TEST_KEY_ID": "AKIDTESTKEY", "TEST_SECRET": secret},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert secret not in output
    assert secret[:12] not in output, "a prefix of the secret leaked"
    assert "secret_access_key" in output
    # The effective config has relative paths resolved against the config file's folder.
    assert str(gateway_dir / "gateway.sock") in output, output


def test_check_config_names_an_unset_variable(
    gateway_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GW_TEST_SURELY_UNSET", raising=False)
    replica = dict(REPLICA, secret_access_key="${GW_TEST_SURELY_UNSET}")
    config = write_config(gateway_dir, {"replica": replica})
    result = run_gateway_command(
        ["check-config", "--config", str(config)], env={"TEST_KEY_ID": "k"}
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "GW_TEST_SURELY_UNSET" in output, output


def _config_with_unknown_key(folder: Path) -> tuple[Path, int]:
    lines = render_toml(BASE_CONFIG).splitlines()
    at = lines.index("[sqlite]") + 1
    lines.insert(at, "bogus_setting = 1")
    path = folder / "bad.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, at + 1  # 1-based line number


def test_check_config_names_an_unknown_key_and_line(gateway_dir: Path) -> None:
    config, line = _config_with_unknown_key(gateway_dir)
    result = run_gateway_command(["check-config", "--config", str(config)])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "bogus_setting" in output, output
    assert re.search(rf"\b{line}\b", output), f"line {line} not named: {output}"


def test_gateway_refuses_to_start_on_an_unknown_key(gateway_dir: Path) -> None:
    config, _line = _config_with_unknown_key(gateway_dir)
    result = run_gateway_command(["--config", str(config)], timeout=5)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "bogus_setting" in output, output
    assert not (gateway_dir / "gateway.sock").exists()


# --- logging ------------------------------------------------------------------------------------

LOGFMT_PAIR = r'[A-Za-z_][A-Za-z0-9_.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
LOGFMT_LINE = re.compile(rf"^{LOGFMT_PAIR}(?: {LOGFMT_PAIR})*$")


def test_stderr_is_one_logfmt_line_per_event(gateway: GatewayProcess) -> None:
    with RawConnection(gateway.socket_path) as conn:
        conn.call("ping")
    assert gateway.stop() == 0
    lines = [line for line in gateway.log_text().splitlines() if line.strip()]
    assert lines, "the gateway logged nothing"
    for line in lines:
        assert LOGFMT_LINE.match(line), f"not logfmt: {line!r}"
        keys = {pair.split("=", 1)[0] for pair in re.findall(LOGFMT_PAIR, line)}
        assert {"ts", "level", "event"} <= keys, line
