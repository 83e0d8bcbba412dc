"""Tasks the queue tests' workers run (imported by path, ``queue_tasks.<name>``).

Every task appends one line per call to ``$QUEUE_TEST_DIR/records-<pid>.txt`` (one file per
worker process, each line written with a single ``O_APPEND`` write so lines never interleave):
``<job id> <attempt> <pid> <unix time> <label>``. The tests read these files to prove which jobs
ran, how often, where and in what order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gateway_client.worker import current_job


def _record(label: str = "-") -> None:
    job = current_job()
    assert job is not None, "called outside a worker"
    line = f"{job.id} {job.attempts} {os.getpid()} {time.time():.6f} {label}\n"
    folder = Path(os.environ["QUEUE_TEST_DIR"])
    fd = os.open(folder / f"records-{os.getpid()}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(label: str = "-") -> str:
    """Record the call; return the label."""
    _record(label)
    return label


def noop() -> None:
    """Do nothing (for throughput)."""


def add(a: int, b: int) -> int:
    """Record and return ``a + b``."""
    _record("add")
    return a + b


def block_until(path: str, label: str = "block") -> str:
    """Record the start (with the lease token), wait until ``path`` exists, record the end."""
    job = current_job()
    assert job is not None
    _record(f"{label} start {job.lease_token}")
    while not os.path.exists(path):
        time.sleep(0.005)
    _record(f"{label} done {job.lease_token}")
    return "released"


def fail_first(times: int) -> str:
    """Record, then raise ValueError on the first ``times`` attempts; succeed after."""
    job = current_job()
    assert job is not None
    _record("fail_first")
    if job.attempts <= times:
        raise ValueError(f"attempt {job.attempts} fails on purpose")
    return "finally"


def boom() -> None:
    """Record, then raise ValueError."""
    _record("boom")
    raise ValueError("boom")


def sleep_for(seconds: float) -> str:
    """Record, then sleep ``seconds``."""
    _record("sleep")
    time.sleep(seconds)
    return "slept"


def big(size: int) -> str:
    """Return a string of ``size`` characters."""
    return "x" * size


def not_json() -> Any:
    """Return something JSON cannot carry."""
    return {1, 2}


async def async_add(a: int, b: int) -> int:
    """A coroutine task."""
    _record("async_add")
    return a + b


def tick() -> str:
    """The recurring job of the schedule tests."""
    _record("tick")
    return "tick"
