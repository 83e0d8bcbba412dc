"""The processes the torture starts and kills: load processes and job workers.

Every process is started here and remembered by its pid; nothing is ever killed by name. A worker
runs in its own process group (``start_new_session``) so that SIGKILL reaches the supervisor and
the worker processes it forked in one call, as when a container or a node dies.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child_env(folder: Path, build: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of load and worker processes: the repository importable (``tests.torture``),
    the gateway's SQLite first on the library path."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(build), env.get("LD_LIBRARY_PATH")) if p)
    env["TORTURE_DIR"] = str(folder)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


class LoadProcess:
    """One ``python -m tests.torture.load KIND`` process."""

    def __init__(self, kind: str, slot: int, args: list[str], folder: Path, env: dict[str, str]
                 ) -> None:
        self.kind = kind
        self.slot = slot
        self.log_path = folder / "logs" / f"{kind}-{slot}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.torture.load", kind, "--dir", str(folder),
                 "--slot", str(slot), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=REPO)

    def started(self, cycle: int) -> bool:
        """True once the process logged that it runs (its imports done, its journal open)."""
        try:
            return f"{self.kind} {self.slot} cycle {cycle} started" in self.log_path.read_text()
        except FileNotFoundError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM: finish the operation in progress, journal its outcome, exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed."""
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class WorkerGroup:
    """``python -m gateway_client.worker`` (the code under test) in its own process group."""

    def __init__(self, index: int, socket_path: str, folder: Path, env: dict[str, str],
                 concurrency: int, lease_seconds: float) -> None:
        self.index = index
        self.socket_path = socket_path
        self.folder = folder
        self.env = env
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log_path = self.folder / "workers" / f"worker-{self.index}-{self.starts}.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway_client.worker", "--socket", self.socket_path,
                 "--queue", "torture", "--concurrency", str(self.concurrency),
                 "--lease-seconds", str(self.lease_seconds), "--dequeue-wait", "1",
                 "--shutdown-timeout", "10"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, cwd=REPO,
                start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return []
        return [int(pid) for pid in text.split()]

    def kill(self) -> None:
        """SIGKILL the whole group: supervisor and worker processes at once."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def kill_one_child(self, rng: random.Random) -> bool:
        """SIGKILL one worker process (its supervisor replaces it); False if there was none."""
        pids = self.children()
        if not pids:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(rng.choice(pids), signal.SIGKILL)
        return True

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (running jobs finish) and wait; the exit code, or None if it had to be killed.
        """
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
