"""The task the torture's workers run (``tests.torture.tasks.work``).

Each call is one *run* of a job: it appends ``<job id> <attempt> <lease token> <pid> <time>`` to
``$TORTURE_DIR/runs/runs-<pid>.log`` and fsyncs before it returns, so the checker knows every
attempt that started a task (a job may run more than once when its worker dies). Whether the run
was then *completed* (``queue.complete`` acknowledged) is a different record: the worker's own
``state=SUCCESSFUL`` log line, and the job's stored return value, which names the attempt and
lease token of the run that completed it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gateway_client.worker import current_job


def work(slot: int, op_id: str, index: int, sleep_ms: int = 0) -> dict[str, Any]:
    """Record the run durably, sleep ``sleep_ms`` (so kills land inside tasks), and return which
    run this was."""
    job = current_job()
    assert job is not None, "called outside a worker"
    line = f"{job.id} {job.attempts} {job.lease_token} {os.getpid()} {time.time():.6f} .\n"
    path = Path(os.environ["TORTURE_DIR"]) / "runs" / f"runs-{os.getpid()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    return {"attempt": job.attempts, "token": job.lease_token, "pid": os.getpid()}
