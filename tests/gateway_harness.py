"""Start and stop the real ``gateway`` binary for black-box tests.

:class:`GatewayProcess` writes a config file into a folder, starts ``build/gateway --config`` on
it with stderr captured to a file, waits until the socket answers ``hello``, and stops or kills
the process. Every process started is remembered in :data:`RUNNING` so that the fixtures can kill
whatever a failing test left behind.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
from wire import SLOWDOWN, Closed, RawConnection

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 10.0

#: The config every test starts from; tests pass overrides that are merged into it.
BASE_CONFIG: dict[str, Any] = {
    "server": {"socket": "gateway.sock", "socket_mode": "0660"},
    "sqlite": {
        "busy_timeout_ms": 5000,
        "synchronous": "NORMAL",
        "mmap_size": "128MiB",
        "journal_size_limit": "64MiB",
        "cache_size": "32MiB",
    },
    "databases": {
        "main": {"path": "db/app.sqlite3"},
        "cache": {"path": "db/cache.sqlite3", "max_size": "512MiB"},
        "queue": {"path": "db/queue.sqlite3"},
    },
}

#: Processes started and not yet reaped, killed by the test fixtures at teardown.
RUNNING: set[GatewayProcess] = set()


def gateway_binary() -> Path:
    """The binary under test: ``$GATEWAY_BIN`` or ``<repo>/build/gateway``."""
    return Path(os.environ.get("GATEWAY_BIN") or REPO / "build" / "gateway")


def build_dir() -> Path:
    """The folder holding the gateway's ``libsqlite3.so.0``: next to the binary, else build/."""
    beside = gateway_binary().resolve().parent
    return beside if (beside / "libsqlite3.so.0").exists() else REPO / "build"


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a value of None deletes the key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(config: Mapping[str, Any]) -> str:
    """Write nested dicts as TOML tables (``[a]``, ``[a.b]``) with scalar or list values."""
    lines: list[str] = []

    def table(name: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        if name and (scalars or not body):
            lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        if name and scalars:
            lines.append("")
        for key, value in body.items():
            if isinstance(value, Mapping):
                table(f"{name}.{key}" if name else key, value)

    table("", config)
    return "\n".join(lines) + "\n"


class GatewayError(AssertionError):
    """The gateway did not start or stop as expected; the message includes its log."""


class GatewayProcess:
    """One ``gateway`` process on a config in ``folder``.

    :param folder: where the config, socket, databases and logs go (relative paths in the config
        resolve against it).
    :param overrides: merged into :data:`BASE_CONFIG`.
    :param config_text: if given, written verbatim instead of the rendered config.
    :param env: extra environment variables for the process.
    :param name: distinguishes the config and log files of several processes in one folder.
    """

    def __init__(
        self,
        folder: Path,
        overrides: Mapping[str, Any] | None = None,
        *,
        config_text: str | None = None,
        env: Mapping[str, str] | None = None,
        name: str = "gateway",
    ) -> None:
        self.folder = Path(folder)
        self.config = merge_config(BASE_CONFIG, overrides or {})
        self.config_path = self.folder / f"{name}.toml"
        self.log_path = self.folder / f"{name}.log"
        self.stdout_path = self.folder / f"{name}.stdout"
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after: float | None = None  # seconds from Popen to the first hello answered
        self.folder.mkdir(parents=True, exist_ok=True)
        for database in self.config.get("databases", {}).values():
            if "path" in database:
                (self.folder / database["path"]).parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            config_text if config_text is not None else render_toml(self.config)
        )

    # --- paths ---------------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return str(self.folder / self.config["server"]["socket"])

    def db_path(self, name: str) -> Path:
        """Absolute path of database ``name`` (main, cache, queue) from the config."""
        return self.folder / self.config["databases"][name]["path"]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "gateway not started"
        return self.proc.pid

    def log_text(self) -> str:
        """Everything the process wrote to stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- lifecycle -----------------------------------------------------------------------------

    def start(
        self, wait: bool = True, timeout: float = READY_TIMEOUT, extra_args: tuple[str, ...] = ()
    ) -> GatewayProcess:
        """Start the process; with ``wait``, return once it answers ``hello``.

        :param extra_args: more command-line arguments, such as ``("--lease-wait", "30s")``.

        :raises GatewayError: if it exits or does not answer within ``timeout``.
        """
        binary = gateway_binary()
        if not binary.exists():
            raise GatewayError(f"gateway binary {binary} does not exist: run scripts/setup first")
        env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as log, open(self.stdout_path, "ab") as out:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [str(binary), "--config", str(self.config_path), *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                cwd=self.folder,
                env=env,
            )
        RUNNING.add(self)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll until a fresh connection gets a successful ``hello`` reply from this process."""
        deadline = self.started_at + timeout * SLOWDOWN
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self._forget()
                raise GatewayError(
                    f"gateway exited with {self.proc.returncode} while starting; "
                    f"log:\n{self.log_text()}"
                )
            try:
                with RawConnection(self.socket_path, timeout=1.0) as conn:
                    response = conn.call("hello", {"protocol": 1, "client": "tests/harness"}, 1.0)
                    peer = conn.peer_pid()
                if response[1] == 0 and peer == self.pid:
                    self.ready_after = time.monotonic() - self.started_at
                    return
                last_error = AssertionError(f"hello answered {response!r} by pid {peer}")
            except (OSError, Closed, msgpack.UnpackException, ValueError) as e:
                last_error = e
            time.sleep(0.005)
        raise GatewayError(
            f"gateway did not answer hello within {timeout} s (last error: {last_error!r}); "
            f"log:\n{self.log_text()}"
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit and return the exit code.

        :raises GatewayError: if still running after ``timeout``.
        """
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout * SLOWDOWN)
        except subprocess.TimeoutExpired as e:
            raise GatewayError(
                f"gateway {self.pid} still running {timeout} s later; log:\n{self.log_text()}"
            ) from e
        self._forget()
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.running():
            self.send_signal(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if still running and reap; safe to call any number of times."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            self._forget()

    def _forget(self) -> None:
        RUNNING.discard(self)

    def rss_bytes(self) -> int:
        """Resident memory of the process now (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")


def kill_all() -> None:
    """Kill every gateway process still registered (teardown helper)."""
    for process in list(RUNNING):
        process.kill()


def run_gateway_command(
    args: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """Run ``gateway ARGS...`` to completion (``--version``, ``check-config``), capturing output."""
    binary = gateway_binary()
    if not binary.exists():
        raise GatewayError(f"gateway binary {binary} does not exist: run scripts/setup first")
    return subprocess.run(
        [str(binary), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout * SLOWDOWN,
        check=False,
    )
