"""One worker process: take jobs, run them one at a time, store the outcomes, repeat.

The main thread blocks in ``queue.dequeue`` (on a :class:`DequeueChannel` that SIGTERM can cut
short), runs the jobs it gets in the order given, and reports each as soon as it ends; a
:class:`LeaseKeeper` thread heartbeats the running job and the held ones meanwhile and enforces
the deadlines.

**Prefetch.** One dequeue may hand out several jobs ("Prefetch" in ``gateway/PROTOCOL.md``).
With the report of the last job it holds, a process asks for as many as it would run in about
10 ms at the recent mean run time of its jobs (a moving average; one job until a run time is
known), at most ``--prefetch`` and no more than it has left before ``--max-tasks-per-child``.
Short jobs thus come in batches, while jobs of 10 ms or more come one at a time, so no job waits
behind another in a busy process while a process is idle. A process that has to wait for jobs
asks for one: it cannot tell whether the jobs to come are like those it ran before, and idle
processes then share a burst of jobs instead of the first one taking a batch.

**Reports.** A job that succeeded while more jobs of its answer are held is reported with
``queue.complete`` sent on the channel without waiting for the answer (see
:mod:`.completions`), and the next job starts at once. The last one is reported together with
the request for the next jobs (``queue.dequeue`` with ``complete``: one round trip per answer
while jobs are waiting). A failure is reported on its own and waits for its answer. Either way a
report is sent before the next job starts. Answers that come back are handled between jobs, and
all of them before the process waits for jobs or exits. Only when a combined request goes wrong
(the gateway is away, or refused it) or the channel breaks with completions unanswered is a job
reported again on its own, which tells a stored completion from a lost lease.

**Stopping.** SIGTERM or SIGINT makes the process stop taking jobs and exit once the running one
is done (or given back by the keeper at the shutdown deadline). The jobs it holds are given back
with ``queue.release`` before the running one is reported, so the gateway counts none of them as
started; one it counts as started all the same (the first of an answer, or any after a gateway
restart) is run like any other. No job it holds is left ``RUNNING`` when the process exits.

Reports that fail because the gateway is away (restarting) are retried with backoff for up to
the lease's length; after that the lease has expired and the job runs again elsewhere anyway.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

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
from gateway_client.queue import SUCCESSFUL, Job, QueueClient
from gateway_client.worker.completions import Attempt, CompletionPipeline
from gateway_client.worker.dequeue import DequeueChannel, DequeueInterrupted
from gateway_client.worker.errors import class_path
from gateway_client.worker.joblog import log_job, logger
from gateway_client.worker.lease_keeper import LeaseKeeper
from gateway_client.worker.options import WorkerOptions
from gateway_client.worker.runner import TaskResolver

__all__ = ["WorkerProcess", "default_worker_id"]

_MAX_BACKOFF = 2.0
# A process takes as many jobs at once as it would run in this many seconds.
PREFETCH_WINDOW = 0.010
# Weight of the latest run time in the moving average that PREFETCH_WINDOW is divided by: a
# few long jobs in a row are enough to stop prefetching.
_RUN_TIME_WEIGHT = 0.25
T = TypeVar("T")


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
        self.completions = CompletionPipeline(
            self.channel,
            stored=lambda attempt, answer: self._conclude(
                attempt, SUCCESSFUL, lambda: Job.from_map(answer.body()), None
            ),
            report=self._complete,
        )
        self.keeper = LeaseKeeper(
            self.queue,
            lease_seconds=options.lease_seconds,
            heartbeat_interval=options.effective_heartbeat_interval,
            task_timeout=options.task_timeout,
            shutdown_timeout=options.shutdown_timeout,
            worker_id=worker_id,
        )
        # The keeper ends the process only while a task runs, when the channel is not in use.
        self.keeper.before_exit = functools.partial(self.completions.settle, 5.0)
        self.tasks = TaskResolver()
        self.jobs_done = 0
        self._held: deque[Job] = deque()  # handed out to this process, not run yet, in order
        self._mean_run_time: float | None = None
        self._dequeue_base = {
            "queues": list(options.queues),
            "worker_id": worker_id,
            "lease_seconds": float(options.lease_seconds),
        }

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
        try:
            while self._held or self._wants_jobs(0):
                if self._held:
                    self.completions.collect()
                    job = self._held.popleft()
                    self._take(self._run(job, take_next=self._wants_jobs(1)))
                else:
                    self.completions.settle()  # every answer is read before a long wait
                    self._take(self._next_jobs())
            self.completions.settle()
        except BaseException:
            # An unexpected error ends the process: give the held jobs back now rather than
            # leave them to their leases (which would count them as failed attempts after a
            # gateway restart).
            with contextlib.suppress(Exception):
                self.keeper.give_back_held()
            raise
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

    def _max_jobs(self) -> int:
        """How many jobs to ask for now, on top of those done and held (see the module doc)."""
        mean = self._mean_run_time
        wanted = 1 if mean is None else min(self.options.prefetch, int(PREFETCH_WINDOW / mean))
        limit = self.options.max_tasks_per_child
        if limit is not None:
            wanted = min(wanted, limit - self.jobs_done - len(self._held))
        return max(1, wanted)

    def _note_run_time(self, seconds: float) -> None:
        mean = self._mean_run_time
        seconds = max(seconds, 1e-6)
        self._mean_run_time = (
            seconds if mean is None else mean + _RUN_TIME_WEIGHT * (seconds - mean)
        )

    def _dequeue_args(self, max_jobs: int = 1) -> dict[str, Any]:
        return {**self._dequeue_base, "max_jobs": max_jobs, "wait_ms": self.options.wait_ms}

    def _next_jobs(self) -> list[Job]:
        """Block until a job is handed out; [] when stopping or after a connection failure."""
        args = self._dequeue_args(1)  # see Prefetch in the module doc
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

    def _take(self, jobs: list[Job]) -> None:
        """Hold ``jobs`` (heartbeated by the keeper) until they run; give them back if stopping."""
        if not jobs:
            return
        self._held.extend(jobs)
        self.keeper.hold(jobs)
        if self.stopping:
            self._give_back_held()

    def _give_back_held(self) -> None:
        """Release the held jobs; keep those the gateway counts as started, to run them."""
        self.keeper.give_back_held()
        self._held = deque(job for job in self._held if self.keeper.holds(job))

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a stop is requested."""
        select.select([self._stop_r], [], [], seconds)

    # --- running a job ---------------------------------------------------------------------------

    def _run(self, job: Job, *, take_next: bool = False) -> list[Job]:
        """Run ``job`` and report it; return the jobs handed out with its completion, if any.

        A job the keeper dropped while it was held is not run.

        :param take_next: report a success with ``queue.dequeue`` (``complete``), which also
            hands out the next jobs if some are ready, when no held job is left (and no stop
            was requested meanwhile).
        """
        if not self.keeper.begin(job):
            return []
        call = None
        value: Any = None
        error: BaseException | None = None
        started = time.monotonic()
        try:
            call = self.tasks.resolve(job)
            # Timed from here: the first job of a task also imports its module.
            started = time.monotonic()
            value = call.run()
        except BaseException as e:  # the task's failure, whatever it raised, is the job's
            error = e
        duration = time.monotonic() - started
        if not self.keeper.end():
            # The keeper timed the job out or gave it back and is ending this process.
            threading.Event().wait()
        self.jobs_done += 1
        self._note_run_time(duration)
        if self.stopping and self._held:
            self._give_back_held()  # before this job's report, which would start the next
        attempt = Attempt(job, call, duration)
        if error is not None:
            self._fail(attempt, error)
        elif self._held:
            self.completions.send(attempt, value)
        elif take_next and not self.stopping:
            return self._complete_and_dequeue(attempt, value)
        else:
            self._complete(attempt, value)
        return []

    def _complete_and_dequeue(self, attempt: Attempt, value: Any) -> list[Job]:
        """Report a success and take the next jobs in one request; return them."""
        job = attempt.job
        args = self._dequeue_args(self._max_jobs())
        args["complete"] = {
            "id": job.id,
            "lease_token": job.lease_token or "",
            "return_value": value,
        }
        try:
            combined = self.channel.complete_and_dequeue(args, timeout=30.0)
        except (ConnectionError, TimeoutError, ProtocolError, ServerError) as e:
            # The completion's fate is unknown or it was refused as a whole: report it on its
            # own, which tells a stored completion from a lost lease.
            logger.warning("could not report job %s with the next dequeue: %s", job.id, e)
            self._complete(attempt, value)
            return []
        error = combined.completion_error
        if error is None:
            completed = combined.completed_map or {}
            self._conclude(attempt, str(completed.get("state")), lambda: combined.completed, None)
        elif isinstance(error, LeaseLost):
            self._finish(attempt, self._after_lease_lost(job), None)
        else:
            self._fail(attempt, error)
        return combined.jobs

    def _complete(self, attempt: Attempt, value: Any) -> None:
        """Report a success on its own and finish the attempt; fail the job if it is refused."""
        job = attempt.job
        token = job.lease_token or ""
        try:
            stored = self._report(job, lambda: self.queue.complete(job.id, token, value))
        except ServerError as e:  # the result could not be stored (too large, say)
            self._fail(attempt, e)
            return
        self._finish(attempt, stored, None)

    def _fail(self, attempt: Attempt, error: BaseException) -> None:
        """Store a failed attempt (retried if attempts remain) and finish the attempt."""
        job = attempt.job
        token = job.lease_token or ""
        stored: Job | None
        try:
            stored = self._report(
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
            stored = None
        self._finish(attempt, stored, error)

    def _finish(self, attempt: Attempt, stored: Job | None, error: BaseException | None) -> None:
        """Conclude an attempt with what its report returned (None: the lease was lost)."""
        state = "LEASE_LOST" if stored is None else stored.state
        self._conclude(attempt, state, lambda: stored, error)

    def _conclude(
        self,
        attempt: Attempt,
        state: str,
        stored_job: Callable[[], Job | None],
        error: BaseException | None,
    ) -> None:
        """Tell the task's call the outcome, and write the job's log line.

        :param state: the state the report left the job in, or LEASE_LOST.
        :param stored_job: returns the stored job; called only for a call that uses it.
        """
        call = attempt.call
        if call is not None and call.notifies_finish:
            try:
                call.finished(stored_job(), error)
            except Exception:
                logger.exception("a task_finished receiver of job %s failed", attempt.job.id)
        log_job(
            attempt.job,
            state=state,
            duration=attempt.duration,
            worker_id=self.worker_id,
            error=None if error is None else class_path(type(error)),
        )

    def _report(self, job: Job, send: Callable[[], Job]) -> Job | None:
        """Send a complete/fail, retrying while the gateway is away; None if the lease is lost.

        :raises ServerError: if the gateway refused the report for another reason.
        """
        try:
            return self._retrying(send)
        except LeaseLost:
            return self._after_lease_lost(job)
        except (ConnectionError, ShuttingDown) as e:
            logger.error("could not report job %s: %s", job.id, e)
            return None

    def _retrying(self, send: Callable[[], T]) -> T:
        """``send()``, retried with backoff while the gateway is away, for up to the lease.

        :raises ConnectionError: or :class:`ShuttingDown` if the gateway stayed away so long.
        :raises ServerError: if the gateway refused the request.
        """
        give_up_at = time.monotonic() + max(self.options.lease_seconds, 5.0)
        delay = 0.05
        while True:
            try:
                return send()
            except (ConnectionError, ShuttingDown):
                if time.monotonic() >= give_up_at:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    def _after_lease_lost(self, job: Job) -> Job | None:
        """Tell a lost lease from a report that was stored before the connection broke."""
        with contextlib.suppress(GatewayError):
            current = self.queue.get(job.id)
            if current.is_finished and current.worker_ids[-1:] == [self.worker_id]:
                return current
        return None
