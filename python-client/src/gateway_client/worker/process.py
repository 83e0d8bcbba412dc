"""One worker process: take a job, run it, store the outcome, repeat.

The main thread blocks in ``queue.dequeue`` (on a :class:`DequeueChannel` that SIGTERM can cut
short), runs the job it gets, and reports it with ``queue.complete`` or ``queue.fail``; a
:class:`LeaseKeeper` thread heartbeats meanwhile and enforces the deadlines. SIGTERM or SIGINT
makes the process stop taking jobs and exit once the running one is done (or given back by the
keeper at the shutdown deadline).

A job that succeeded is reported together with the request for the next one (``queue.dequeue``
with ``complete``: one round trip and one commit per job while jobs are waiting). Only when that
combined request goes wrong (the gateway is away, or refused it) is the job reported again on its
own, as below; a completion refused for a lost lease is handled as ``queue.complete``'s would be.

Reports that fail because the gateway is away (restarting) are retried with backoff for up to
the lease's length; after that the lease has expired and the job runs again elsewhere anyway.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from gateway_client.client import Client
from gateway_client.errors import (
    ConnectionError,
    GatewayError,
    LeaseLost,
    ProtocolError,
    ServerError,
    ShuttingDown,
    TimeoutError,
)
from gateway_client.queue import Job, QueueClient
from gateway_client.worker.dequeue import (
    CompletedAndDequeued,
    DequeueChannel,
    DequeueInterrupted,
)
from gateway_client.worker.errors import class_path
from gateway_client.worker.joblog import log_job, logger
from gateway_client.worker.lease_keeper import LeaseKeeper
from gateway_client.worker.options import WorkerOptions
from gateway_client.worker.runner import TaskCall, resolve

__all__ = ["WorkerProcess", "default_worker_id"]

_MAX_BACKOFF = 2.0


def default_worker_id() -> str:
    """``hostname:pid`` of the calling process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerProcess:
    """The job loop of one process (see the module doc). Call :meth:`run` in the main thread.

    :param options: the worker's settings.
    :param worker_id: the id recorded on the jobs this process runs.
    """

    def __init__(self, options: WorkerOptions, worker_id: str) -> None:
        self.options = options
        self.worker_id = worker_id
        self.queue = QueueClient(Client(options.socket, timeout=30.0, connect_attempts=3))
        self.stopping = False
        self._stop_r, self._stop_w = os.pipe()
        os.set_blocking(self._stop_w, False)
        self.channel = DequeueChannel(options.socket, self._stop_r)
        self.keeper = LeaseKeeper(
            self.queue,
            lease_seconds=options.lease_seconds,
            heartbeat_interval=options.effective_heartbeat_interval,
            task_timeout=options.task_timeout,
            shutdown_timeout=options.shutdown_timeout,
            worker_id=worker_id,
        )
        self.jobs_done = 0

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Stop taking jobs; usable as a signal handler (it only sets flags and writes pipes)."""
        self.stopping = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._stop_w, b"s")  # never read: the pipe stays readable from now on
        self.keeper.request_stop()

    def run(self) -> int:
        """Take and run jobs until stopped or ``max_tasks_per_child`` is reached; return 0.

        Must be called from the main thread (it installs SIGTERM and SIGINT handlers).
        """
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.keeper.start()
        pending: list[Job] = []
        try:
            while pending or self._wants_jobs(0):
                if not pending:
                    pending = self._next_jobs()
                    continue
                job = pending.pop(0)
                # Ask for the next job with this one's completion only when none is in hand and
                # this process will take one more.
                pending += self._run(job, take_next=not pending and self._wants_jobs(1))
                self.jobs_done += 1
        finally:
            self.keeper.close()
            self.channel.close()
            self.queue.close()
        return 0

    def _wants_jobs(self, more_done: int) -> bool:
        """True if the process takes another job once ``more_done`` more are done."""
        limit = self.options.max_tasks_per_child
        return not self.stopping and (limit is None or self.jobs_done + more_done < limit)

    # --- taking jobs -----------------------------------------------------------------------------

    def _dequeue_args(self) -> dict[str, Any]:
        return {
            "queues": list(self.options.queues),
            "worker_id": self.worker_id,
            "max_jobs": 1,
            "lease_seconds": float(self.options.lease_seconds),
            "wait_ms": self.options.wait_ms,
        }

    def _next_jobs(self) -> list[Job]:
        """Block until a job is handed out; [] when stopping or after a connection failure."""
        args = self._dequeue_args()
        delay = 0.05
        while not self.stopping:
            try:
                return self.channel.dequeue(args, timeout=self.options.wait_ms / 1000 + 30)
            except DequeueInterrupted:
                return []
            except (ConnectionError, ShuttingDown) as e:
                logger.warning("cannot take jobs from %s: %s", self.options.socket, e)
            except ServerError as e:
                # bad_argument and the like will not get better by retrying quickly.
                logger.error("queue.dequeue refused: %s", e)
                delay = _MAX_BACKOFF
            self._pause(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
        return []

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a stop is requested."""
        select.select([self._stop_r], [], [], seconds)

    # --- running a job ---------------------------------------------------------------------------

    def _run(self, job: Job, *, take_next: bool = False) -> list[Job]:
        """Run ``job`` and report it; return the jobs handed out with its completion, if any.

        :param take_next: report a success with ``queue.dequeue`` (``complete``), which also
            hands out the next job if one is ready (unless a stop was requested meanwhile).
        """
        started = time.monotonic()
        self.keeper.begin(job)
        call: TaskCall | None = None
        value: Any = None
        error: BaseException | None = None
        try:
            call = resolve(job, self.worker_id)
            value = call.run()
        except BaseException as e:  # the task's failure, whatever it raised, is the job's
            error = e
        if not self.keeper.end():
            # The keeper timed the job out or gave it back and is ending this process.
            threading.Event().wait()
        stored: Job | None = None
        next_jobs: list[Job] = []
        if error is None:
            token = job.lease_token or ""
            try:
                # Checked again now: a stop may have been requested while the task ran.
                take_next = take_next and not self.stopping
                combined = self._complete_and_dequeue(job, value) if take_next else None
                if combined is None:
                    stored = self._report(job, lambda: self.queue.complete(job.id, token, value))
                else:
                    next_jobs = combined.jobs
                    if isinstance(combined.completion_error, LeaseLost):
                        stored = self._after_lease_lost(job)
                    elif combined.completion_error is not None:
                        raise combined.completion_error
                    else:
                        stored = combined.completed
            except ServerError as e:  # the result could not be stored (too large, say)
                error = e
        if error is not None:
            stored = self._report_failure(job, error)
        duration = time.monotonic() - started
        if call is not None:
            try:
                call.finished(stored, error)
            except Exception:
                logger.exception("a task_finished receiver of job %s failed", job.id)
        log_job(
            job,
            state=stored.state if stored is not None else "LEASE_LOST",
            duration=duration,
            worker_id=self.worker_id,
            error=None if error is None else class_path(type(error)),
        )
        return next_jobs

    def _complete_and_dequeue(self, job: Job, value: Any) -> CompletedAndDequeued | None:
        """Report ``job`` done and take the next one in one request; None if that went wrong.

        None means the completion's fate is unknown or it was refused as a whole: the caller
        then reports it on its own (which tells a stored completion from a lost lease).
        """
        args = self._dequeue_args()
        token = job.lease_token or ""
        args["complete"] = {"id": job.id, "lease_token": token, "return_value": value}
        try:
            return self.channel.complete_and_dequeue(args, timeout=30.0)
        except (ConnectionError, TimeoutError, ProtocolError, ServerError) as e:
            logger.warning("could not report job %s with the next dequeue: %s", job.id, e)
            return None

    def _report_failure(self, job: Job, error: BaseException) -> Job | None:
        """Store a failed attempt (retried if attempts remain); None if that was not possible."""
        token = job.lease_token or ""
        try:
            return self._report(
                job,
                lambda: self.queue.fail(
                    job.id,
                    token,
                    exception_class_path=class_path(type(error)),
                    traceback="".join(traceback.format_exception(error)),
                    retry=True,
                ),
            )
        except ServerError as e:
            logger.error("could not store the failure of job %s: %s", job.id, e)
            return None

    def _report(self, job: Job, send: Callable[[], Job]) -> Job | None:
        """Send a complete/fail, retrying while the gateway is away; None if the lease is lost.

        :raises ServerError: if the gateway refused the report for another reason.
        """
        give_up_at = time.monotonic() + max(self.options.lease_seconds, 5.0)
        delay = 0.05
        while True:
            try:
                return send()
            except LeaseLost:
                return self._after_lease_lost(job)
            except (ConnectionError, ShuttingDown) as e:
                if time.monotonic() >= give_up_at:
                    logger.error("could not report job %s: %s", job.id, e)
                    return None
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    def _after_lease_lost(self, job: Job) -> Job | None:
        """Tell a lost lease from a report that was stored before the connection broke."""
        with contextlib.suppress(GatewayError):
            current = self.queue.get(job.id)
            if current.is_finished and current.worker_ids[-1:] == [self.worker_id]:
                return current
        return None
