"""Helpers of the queue tests: real worker processes, their job records, waiting on jobs.

:class:`WorkerPool` starts ``python -m gateway_client.worker`` (the code under test) as separate
processes with ``tests/`` on ``PYTHONPATH`` so that ``queue_tasks`` imports, and kills whatever is
still running when the pool closes. The tasks write records (see :mod:`queue_tasks`) that
:func:`read_records` parses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway_client.queue import FINISHED_STATES, Job, QueueClient
from gateway_harness import build_dir
from wire import wait_until

TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Record:
    """One line a task wrote: which job, which attempt, which process, when, what."""

    job_id: str
    attempt: int
    pid: int
    at: float
    label: str


def read_records(folder: Path) -> list[Record]:
    """Every record in ``folder``, sorted by time."""
    records = []
    for path in folder.glob("records-*.txt"):
        for line in path.read_text().splitlines():
            job_id, attempt, pid, at, label = line.split(" ", 4)
            records.append(Record(job_id, int(attempt), int(pid), float(at), label))
    return sorted(records, key=lambda r: r.at)


def run_counts(folder: Path) -> Counter[str]:
    """How many times each job id was recorded."""
    return Counter(r.job_id for r in read_records(folder))


class WorkerRun:
    """One ``python -m gateway_client.worker`` process (the supervisor) and its log."""

    def __init__(
        self,
        socket_path: str,
        folder: Path,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        name: str = "worker",
        python: str = sys.executable,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.folder = folder
        self.log_path = folder / f"{name}.log"
        base = [python, "-m", "gateway_client.worker", "--socket", socket_path]
        self.argv = list(command) if command is not None else [*base, *args]
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            "PYTHONPATH": str(TESTS),
            "QUEUE_TEST_DIR": str(folder),
            "LD_LIBRARY_PATH": str(build_dir()),
            "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        }
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerRun:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def job_lines(self) -> list[str]:
        """The worker's per-job log lines."""
        return [line for line in self.log_text().splitlines() if " job=" in line]

    def children(self) -> list[int]:
        """The pids of the worker processes the supervisor runs now."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in text.split()]

    def wait_children(self, count: int, timeout: float = 10.0) -> list[int]:
        """Wait until the supervisor runs ``count`` worker processes; return their pids."""
        return wait_until(
            lambda: (pids := self.children()) and len(pids) == count and pids,
            timeout,
            message=f"the worker did not start {count} processes; log:\n{self.log_text()}",
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"worker still running; log:\n{self.log_text()}") from e

    def kill(self) -> None:
        """SIGKILL the supervisor and its worker processes."""
        if self.proc is None:
            return
        for pid in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class WorkerPool:
    """Starts workers for one test and kills all of them at the end (a context manager)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.records = folder / "records"
        self.records.mkdir(exist_ok=True)
        self.runs: list[WorkerRun] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for run in self.runs:
            run.kill()

    def start(self, socket_path: str, *args: str, **kwargs: Any) -> WorkerRun:
        """Start ``python -m gateway_client.worker --socket socket_path ARGS``.

        Unless ARGS say otherwise, each ``queue.dequeue`` waits 1 s: a stopped worker reads its
        last dequeue's reply before it exits, and the gateway answers it when the wait ends.
        """
        if "--dequeue-wait" not in args:
            args = (*args, "--dequeue-wait", "1")
        name = kwargs.pop("name", f"worker-{len(self.runs) + 1}")
        run = WorkerRun(socket_path, self.records, args, name=name, **kwargs)
        self.runs.append(run.start())
        return run

    def read(self) -> list[Record]:
        return read_records(self.records)

    def counts(self) -> Counter[str]:
        return run_counts(self.records)

    def wait_records(self, count: int, timeout: float = 20.0) -> list[Record]:
        """Wait until at least ``count`` records were written; return them."""
        return wait_until(
            lambda: (records := self.read()) and len(records) >= count and records,
            timeout,
            message=f"fewer than {count} records within {timeout} s: {self.read()!r:.2000}\n"
            + "\n".join(run.log_text()[-3000:] for run in self.runs),
        )


def wait_finished(queue: QueueClient, job_ids: Iterable[str], timeout: float = 30.0) -> list[Job]:
    """Wait (``queue.wait``, no polling) until every job finished; return them in order.

    :raises AssertionError: if one is not finished within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    jobs = []
    for job_id in job_ids:
        remaining = max(0.0, deadline - time.monotonic())
        job = queue.wait(job_id, timeout=remaining)
        assert job.state in FINISHED_STATES, f"job {job_id} is still {job.state} after {timeout}s"
        jobs.append(job)
    return jobs


def state_counts(queue: QueueClient, name: str) -> dict[str, int]:
    """The number of jobs in each state of queue ``name`` (states with none left out)."""
    states = queue.stats()["queues"].get(name, {}).get("states", {})
    return {state: count for state, count in states.items() if count}


def get_many(queue: QueueClient, ids: list[str]) -> list[Job]:
    """``queue.get`` for many ids, pipelined in batches."""
    jobs: list[Job] = []
    for start in range(0, len(ids), 1000):
        batch = [("queue.get", {"id": job_id}) for job_id in ids[start : start + 1000]]
        jobs.extend(Job.from_map(m) for m in queue.client.call_many(batch, timeout=30))
    return jobs


def wait_state(queue: QueueClient, job_id: str, states: set[str], timeout: float = 10.0) -> Job:
    """Poll ``queue.get`` until the job is in one of ``states``; return it."""
    return wait_until(
        lambda: (job := queue.get(job_id)).state in states and job,
        timeout,
        message=f"job {job_id} did not reach {states}: {queue.get(job_id)!r}",
    )
