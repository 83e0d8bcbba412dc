"""The thread that keeps a worker's leases alive and enforces its deadlines.

Each worker process runs one job at a time in its main thread, and may hold more that it was
handed out with it (prefetched, see :mod:`.process`). Its :class:`LeaseKeeper` thread meanwhile
sends ``queue.heartbeat`` for the running job and every held one every ``heartbeat_interval``
seconds (a third of the lease by default, so two heartbeats may fail before the lease ends). A
held job whose heartbeat says it was cancelled or its lease is lost is dropped: it will not be
run, and its log line says ``note=dropped``. For the running job the thread watches three things:

- the task timeout: the job is failed with :class:`~gateway_client.worker.errors.TaskTimeout`
  (retried if attempts remain) and the process ends, since a Python thread cannot be stopped
  from outside; the supervisor starts a new one;
- cancellation or a lost lease, reported by a heartbeat: the process ends without reporting
  (the job is no longer this worker's);
- the shutdown deadline after SIGTERM: the job is given back (failed with
  :class:`~gateway_client.worker.errors.WorkerShutdown` and retry, and re-queued with
  ``queue.retry_failed`` if that used up its attempts, so it runs again) and the process ends.

Held jobs are given back with ``queue.release``: by this thread as soon as a stop is requested
(other processes can run them while the running job finishes), by
:meth:`LeaseKeeper.give_back_held` when the main thread stops taking jobs (before it reports the
job that just ended, which would make the next one count as started), and by this thread before
it ends the process (before it reports the running job). A job the gateway counts as started all
the same stays held for the main thread to run, or, when the process is ending, is failed and
re-queued as above. Before it ends the process, the thread also calls the ``before_exit`` hook
(which reads the answers of the completions in flight).

The thread sleeps in ``select`` on a wake-up pipe until the next of these deadlines (and, while
the process is idle, for one heartbeat interval at a time), so it costs nothing per job.

Thread safety: ``hold``/``holds``/``give_back_held``/``begin``/``end`` are called by the main
thread and take ``_lock``, under which this thread does all its work too; :meth:`request_stop`
is called from a signal handler and only stores a float and writes to the pipe. The thread ends
the process only while a job is running (between ``begin`` and ``end``), when the main thread is
inside the task and touches nothing else.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from gateway_client.errors import (
    ConnectionError,
    GatewayError,
    InvalidState,
    LeaseLost,
    ServerError,
    ShuttingDown,
    UnknownOp,
)
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


@dataclass(slots=True)
class _Lease:
    job: Job
    token: str
    next_beat: float  # time.monotonic()
    started: float = 0.0  # time.monotonic(), once it runs
    must_run: bool = False  # held, but the gateway counts it as started: it cannot be released


class LeaseKeeper(threading.Thread):
    """Heartbeats and deadlines for the jobs the main thread runs and holds (see the module doc).

    :param queue: the client to send heartbeats and failures with (its connections are
        per thread, so this thread has its own).
    :param lease_seconds: the lease each heartbeat asks for.
    :param heartbeat_interval: seconds between heartbeats.
    :param task_timeout: seconds a job may run, or None for no limit.
    :param shutdown_timeout: seconds a running job may go on after :meth:`request_stop`.
    :param worker_id: this worker's id, for the log.
    :ivar before_exit: called by this thread right before it ends the process (or None).
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
        self._running: _Lease | None = None  # guarded by _lock
        self._held: dict[str, _Lease] = {}  # guarded by _lock: job id -> lease, in order
        self._dropped: set[str] = set()  # guarded by _lock: held job ids this thread dropped
        self._acted = False  # guarded by _lock: this thread ended the current job itself
        self._closed = False
        self._stop_requested_at: float | None = None  # set once, from the signal handler
        self._sleep_until = 0.0  # guarded by _lock: when this thread wakes next by itself
        self._main_ident = threading.main_thread().ident
        self.before_exit: Callable[[], None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # --- called by the main thread -------------------------------------------------------------

    def hold(self, jobs: Iterable[Job]) -> None:
        """Heartbeat ``jobs`` (just dequeued, with their lease tokens) until they run or go."""
        due = time.monotonic() + self.heartbeat_interval
        with self._lock:
            for job in jobs:
                self._held[job.id] = _Lease(job, job.lease_token or "", due)

    def holds(self, job: Job) -> bool:
        """True while ``job`` is held: not run yet, and not dropped or given back."""
        with self._lock:
            return job.id in self._held

    def give_back_held(self) -> None:
        """Release the held jobs (the process stops taking jobs); see :meth:`_release_held`.

        Call it before the report of the job that just ended: until then the gateway counts
        none of the held jobs as started.
        """
        with self._lock:
            self._release_held()

    def begin(self, job: Job) -> bool:
        """Start looking after ``job`` as the running one; False if it was dropped while held.

        A dropped job (cancelled, or its lease lost) must not be run. ``job`` need not have
        been held.
        """
        now = time.monotonic()
        with self._lock:
            lease = self._held.pop(job.id, None)
            if lease is None:
                if job.id in self._dropped:
                    self._dropped.discard(job.id)
                    return False
                lease = _Lease(job, job.lease_token or "", now + self.heartbeat_interval)
            lease.started = now
            self._running = lease
            self._acted = False
            # An idle keeper wakes every heartbeat interval anyway, so the first heartbeat is at
            # most one interval late (two intervals are still well inside the lease). Only an
            # earlier task deadline needs a wake-up, which saves two thread switches per job.
            wake = self.task_timeout is not None and now + self.task_timeout < self._sleep_until
        if wake:
            self._wake()
        return True

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
        """Do what is due for the running and held jobs; return seconds until the next deadline."""
        now = time.monotonic()
        next_at = now + self.heartbeat_interval
        if self._stop_requested_at is not None and self._held:
            # Other processes can run them meanwhile; the running job may take a while.
            self._release_held()
        if self._held:
            next_at = min(next_at, self._beat_held(now))
        running = self._running
        if running is not None and not self._acted:
            next_at = min(next_at, self._tick_running(running, now))
        return max(0.0, next_at - time.monotonic())

    def _tick_running(self, running: _Lease, now: float) -> float:
        """Heartbeat and deadlines of the running job; return when it needs this thread next."""
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
            outcome = self._heartbeat(running)
            if outcome is not None:
                self._end_job(running, outcome)
            deadlines[0] = running.next_beat
        return min(deadlines)

    def _beat_held(self, now: float) -> float:
        """Heartbeat the held jobs that are due, dropping those gone; return the next due time."""
        for lease in list(self._held.values()):
            if now < lease.next_beat:
                continue
            outcome = self._heartbeat(lease)
            if outcome is not None:
                self._drop(lease, "LEASE_LOST" if outcome == "lease_lost" else "CANCELLED")
        return min((lease.next_beat for lease in self._held.values()), default=math.inf)

    def _heartbeat(self, lease: _Lease) -> str | None:
        """Extend the lease; return "lease_lost" or "cancelled" if the job is no longer ours."""
        job = lease.job
        try:
            beat = self.queue.heartbeat(job.id, lease.token, self.lease_seconds)
        except LeaseLost:
            return "lease_lost"
        except (ConnectionError, ServerError) as e:
            # Try again soon; the lease is three intervals long, so one miss is harmless.
            logger.warning("heartbeat of job %s failed: %s", job.id, e)
            lease.next_beat = time.monotonic() + min(self.heartbeat_interval, 1.0)
            return None
        if beat.cancelled:
            return "cancelled"
        lease.next_beat = time.monotonic() + self.heartbeat_interval
        return None

    def _drop(self, lease: _Lease, state: str | None) -> None:
        """Forget a held job for good (:meth:`begin` refuses it); log it if ``state`` is given."""
        del self._held[lease.job.id]
        self._dropped.add(lease.job.id)
        if state is not None:
            log_job(lease.job, state=state, duration=0.0, worker_id=self.worker_id, note="dropped")

    def _release_held(self) -> None:
        """Give back every held job with ``queue.release``; caller holds ``_lock``.

        A job the gateway counts as started (the first of an answer, or any after a restart;
        also every job if the gateway cannot take jobs back) stays held, marked ``must_run``.
        While the gateway is away the releases are retried for up to a lease (this thread, and
        the main thread if it called, wait meanwhile). One whose release fails otherwise is
        dropped all the same: when its lease ends, a job that had not started goes back to the
        queue as it was.
        """
        released = 0
        # A gateway that is away (restarting, say) is waited for up to a lease: once it is back
        # it counts every job still handed out as started, so a job left to its lease would be a
        # failed attempt that never ran, while one found started now is still run (or failed
        # and re-queued). Sending a release again is safe: one already applied is lease_lost.
        give_up_at = time.monotonic() + self.lease_seconds
        for lease in list(self._held.values()):
            if lease.must_run:
                continue
            try:
                self._release(lease, give_up_at)
                released += 1
            except (InvalidState, UnknownOp):
                lease.must_run = True
                continue
            except LeaseLost:
                self._drop(lease, "LEASE_LOST")  # cancelled meanwhile, or its lease ended
                continue
            except GatewayError as e:
                logger.error(
                    "could not give back job %s (%s); it goes back to the queue when its lease "
                    "ends (as a failed attempt if the gateway restarted meanwhile)",
                    lease.job.id,
                    e,
                )
            self._drop(lease, None)
        if released:
            logger.info("gave back %d prefetched jobs", released)

    def _release(self, lease: _Lease, give_up_at: float) -> None:
        """``queue.release`` of a held job, retried while the gateway is away until ``give_up_at``.

        :raises GatewayError: as :meth:`QueueClient.release`, the gateway's absence included
            once ``give_up_at`` has passed.
        """
        delay = 0.05
        warned = False
        while True:
            try:
                self.queue.release(lease.job.id, lease.token)
                return
            except (ConnectionError, ShuttingDown) as e:
                remaining = give_up_at - time.monotonic()
                if remaining <= 0:
                    raise
                if not warned:
                    warned = True
                    logger.warning(
                        "cannot give back job %s yet (%s); trying again for up to %.0f s",
                        lease.job.id,
                        e,
                        remaining,
                    )
            time.sleep(min(delay, max(remaining, 0.0)))
            delay = min(delay * 2, 2.0)

    def _end_job(self, running: _Lease, reason: str) -> NoReturn:
        """End the job on behalf of the main thread, log its line, and end the process."""
        self._acted = True
        # First, while the running job is not reported, so the gateway counts none as started.
        self._release_held()
        for lease in list(self._held.values()):
            # Started as far as the gateway knows: give it back as a failed attempt that is
            # retried, as for a job still running at shutdown.
            self._give_back(lease, "was not started before its worker process ended")
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
        if self.before_exit is not None:
            try:
                self.before_exit()
            except Exception:
                logger.exception("could not settle the worker's last completions")
        log_job(
            job, state=state, duration=duration, worker_id=self.worker_id, error=error, note=reason
        )
        flush_logs()
        os._exit(code)

    def _fail(self, running: _Lease, cls: type[BaseException], what: str) -> str:
        if running.started:
            limit = self.task_timeout if cls is TaskTimeout else self.shutdown_timeout
            text = f"{class_path(cls)}: the task {what} after {limit:g} s\n{self._main_stack()}"
        else:
            text = f"{class_path(cls)}: the task {what}"
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

    def _give_back(self, running: _Lease, what: str = "was still running at shutdown") -> str:
        state = self._fail(running, WorkerShutdown, what)
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
