"""The thread that keeps a running job's lease alive and enforces the worker's deadlines.

Each worker process runs one job at a time in its main thread; its :class:`LeaseKeeper` thread
meanwhile sends ``queue.heartbeat`` every ``heartbeat_interval`` seconds (a third of the lease by
default, so two heartbeats may fail before the lease ends) and watches three things:

- the task timeout: the job is failed with :class:`~gateway_client.worker.errors.TaskTimeout`
  (retried if attempts remain) and the process ends, since a Python thread cannot be stopped
  from outside; the supervisor starts a new one;
- cancellation or a lost lease, reported by a heartbeat: the process ends without reporting
  (the job is no longer this worker's);
- the shutdown deadline after SIGTERM: the job is given back (failed with
  :class:`~gateway_client.worker.errors.WorkerShutdown` and retry, and re-queued with
  ``queue.retry_failed`` if that used up its attempts, so it runs again) and the process ends.

The thread sleeps in ``select`` on a wake-up pipe until the next of these deadlines (and, while
the process is idle, for one heartbeat interval at a time), so it costs nothing per job.

Thread safety: ``begin``/``end`` are called by the main thread and take ``_lock``;
:meth:`request_stop` is called from a signal handler and only stores a float and writes to the
pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import NoReturn

from gateway_client.errors import ConnectionError, GatewayError, LeaseLost, ServerError
from gateway_client.queue import FAILED, Job, QueueClient
from gateway_client.worker.errors import TaskTimeout, WorkerShutdown, class_path
from gateway_client.worker.joblog import flush_logs, log_job, logger

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_GAVE_BACK",
    "EXIT_LEASE_LOST",
    "EXIT_TIMEOUT",
    "PLANNED_EXITS",
    "LeaseKeeper",
]

# Exit codes of a worker process that ended itself on purpose; the supervisor replaces it.
EXIT_TIMEOUT = 75
EXIT_CANCELLED = 76
EXIT_LEASE_LOST = 77
EXIT_GAVE_BACK = 78
PLANNED_EXITS = frozenset({0, EXIT_TIMEOUT, EXIT_CANCELLED, EXIT_LEASE_LOST, EXIT_GAVE_BACK})


@dataclass
class _Running:
    job: Job
    token: str
    started: float  # time.monotonic()
    next_beat: float


class LeaseKeeper(threading.Thread):
    """Heartbeats and deadlines for the job the main thread is running (see the module doc).

    :param queue: the client to send heartbeats and failures with (its connections are
        per thread, so this thread has its own).
    :param lease_seconds: the lease each heartbeat asks for.
    :param heartbeat_interval: seconds between heartbeats.
    :param task_timeout: seconds a job may run, or None for no limit.
    :param shutdown_timeout: seconds a running job may go on after :meth:`request_stop`.
    :param worker_id: this worker's id, for the log.
    """

    def __init__(
        self,
        queue: QueueClient,
        *,
        lease_seconds: float,
        heartbeat_interval: float,
        task_timeout: float | None,
        shutdown_timeout: float,
        worker_id: str,
    ) -> None:
        super().__init__(name="gateway-lease-keeper", daemon=True)
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.task_timeout = task_timeout
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = worker_id
        self._lock = threading.Lock()
        self._running: _Running | None = None  # guarded by _lock
        self._acted = False  # guarded by _lock: this thread ended the current job itself
        self._closed = False
        self._stop_requested_at: float | None = None  # set once, from the signal handler
        self._sleep_until = 0.0  # guarded by _lock: when this thread wakes next by itself
        self._main_ident = threading.main_thread().ident
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # --- called by the main thread -------------------------------------------------------------

    def begin(self, job: Job) -> None:
        """Start looking after ``job`` (just dequeued, with its lease token)."""
        now = time.monotonic()
        with self._lock:
            self._running = _Running(job, job.lease_token or "", now, now + self.heartbeat_interval)
            self._acted = False
            # An idle keeper wakes every heartbeat interval anyway, so the first heartbeat is at
            # most one interval late (two intervals are still well inside the lease). Only an
            # earlier task deadline needs a wake-up, which saves two thread switches per job.
            due = now + (self.task_timeout or self.heartbeat_interval)
            wake = due < self._sleep_until
        if wake:
            self._wake()

    def end(self) -> bool:
        """Stop looking after the current job; False if this thread already ended it itself.

        When False is returned the process is about to exit; the caller must not report the
        job or take another.
        """
        with self._lock:
            self._running = None
            return not self._acted

    def close(self) -> None:
        """Stop the thread (at its next wake-up, which this causes)."""
        self._closed = True
        self._wake()

    # --- called from a signal handler ----------------------------------------------------------

    def request_stop(self) -> None:
        """Start the shutdown deadline; async-signal-safe enough for a Python signal handler."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._wake()

    # --- the thread ------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._closed:
            with self._lock:
                wait = self._tick()
                self._sleep_until = time.monotonic() + wait
            self._sleep(wait)

    def _tick(self) -> float:
        """Do what is due for the running job; return seconds until the next deadline."""
        running = self._running
        if running is None or self._acted:
            return self.heartbeat_interval
        now = time.monotonic()
        deadlines = [running.next_beat]
        if self.task_timeout is not None:
            timeout_at = running.started + self.task_timeout
            if now >= timeout_at:
                self._end_job(running, "timeout")
            deadlines.append(timeout_at)
        if self._stop_requested_at is not None:
            give_back_at = max(self._stop_requested_at + self.shutdown_timeout, running.started)
            if now >= give_back_at:
                self._end_job(running, "shutdown")
            deadlines.append(give_back_at)
        if now >= running.next_beat:
            self._heartbeat(running)
            if self._acted:
                return self.heartbeat_interval
            deadlines[0] = running.next_beat
        return max(0.0, min(deadlines) - time.monotonic())

    def _heartbeat(self, running: _Running) -> None:
        job = running.job
        try:
            beat = self.queue.heartbeat(job.id, running.token, self.lease_seconds)
        except LeaseLost:
            self._end_job(running, "lease_lost")
            return
        except (ConnectionError, ServerError) as e:
            # Try again soon; the lease is three intervals long, so one miss is harmless.
            logger.warning("heartbeat of job %s failed: %s", job.id, e)
            running.next_beat = time.monotonic() + min(self.heartbeat_interval, 1.0)
            return
        if beat.cancelled:
            self._end_job(running, "cancelled")
            return
        running.next_beat = time.monotonic() + self.heartbeat_interval

    def _end_job(self, running: _Running, reason: str) -> NoReturn:
        """End the job on behalf of the main thread, log its line, and end the process."""
        self._acted = True
        job = running.job
        duration = time.monotonic() - running.started
        state, error, code = "CANCELLED", None, EXIT_CANCELLED
        if reason == "lease_lost":
            state, code = "LEASE_LOST", EXIT_LEASE_LOST
        elif reason == "timeout":
            error = class_path(TaskTimeout)
            state, code = self._fail(running, TaskTimeout, "timed out"), EXIT_TIMEOUT
        elif reason == "shutdown":
            error = class_path(WorkerShutdown)
            state, code = self._give_back(running), EXIT_GAVE_BACK
        log_job(
            job, state=state, duration=duration, worker_id=self.worker_id, error=error, note=reason
        )
        flush_logs()
        os._exit(code)

    def _fail(self, running: _Running, cls: type[BaseException], what: str) -> str:
        limit = self.task_timeout if cls is TaskTimeout else self.shutdown_timeout
        stack = self._main_stack()
        text = f"{class_path(cls)}: the task {what} after {limit:g} s\n{stack}"
        try:
            stored = self.queue.fail(
                running.job.id,
                running.token,
                exception_class_path=class_path(cls),
                traceback=text,
                retry=True,
            )
        except LeaseLost:
            return "LEASE_LOST"
        except GatewayError as e:
            logger.error("could not fail job %s (%s); its lease will expire", running.job.id, e)
            return "UNKNOWN"
        return stored.state

    def _give_back(self, running: _Running) -> str:
        state = self._fail(running, WorkerShutdown, "was still running at shutdown")
        if state == FAILED:
            # That was its last attempt, but the shutdown is not the task's fault: run it again.
            with contextlib.suppress(GatewayError):
                if self.queue.retry_failed(ids=[running.job.id]) == 1:
                    state = "READY"
        return state

    def _main_stack(self) -> str:
        frame = sys._current_frames().get(self._main_ident or -1)
        if frame is None:
            return ""
        return "Traceback of the task when it was stopped:\n" + "".join(
            traceback.format_stack(frame)
        )

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"w")

    def _sleep(self, timeout: float) -> None:
        readable, _, _ = select.select([self._wake_r], [], [], timeout)
        if readable:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._wake_r, 4096):
                    pass
