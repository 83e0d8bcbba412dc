"""The worker's parent process: starts ``--concurrency`` worker processes and keeps them running.

A worker process that ends on purpose (``--max-tasks-per-child`` reached, a job timed out,
cancelled or given back) is replaced at once; one that crashed soon after it started is replaced
after a growing delay, so a broken deployment does not spin. SIGTERM or SIGINT is passed on to
every worker process, which stops taking jobs; those still running one get
``--shutdown-timeout`` seconds to finish before they give it back, and the supervisor kills any
process still there a few seconds after that (its job then comes back when its lease expires).

The supervisor waits in ``multiprocessing.connection.wait`` on its children's sentinels and a
self-pipe written by its signal handlers, so it uses no CPU while all is well. If the supervisor
itself is killed, its worker processes notice (a pipe only it writes reaches end of file) and
stop as on SIGTERM. Children are
forked, so a Django project set up by ``manage.py`` is set up in them too.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from gateway_client.worker.joblog import logger
from gateway_client.worker.lease_keeper import PLANNED_EXITS
from gateway_client.worker.options import WorkerOptions
from gateway_client.worker.process import WorkerProcess, default_worker_id

__all__ = ["Supervisor"]

# Seconds after the shutdown timeout before processes that did not exit are killed.
_KILL_GRACE = 5.0
# A process that crashed within this many seconds of starting is restarted after a delay.
_QUICK_CRASH = 1.0
_MAX_RESTART_DELAY = 10.0


def _child_main(options: WorkerOptions, slot: int, alive_r: int, alive_w: int) -> None:
    # Signals are handled by WorkerProcess.run; until then the parent's handler must not run.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.close(alive_w)
    threading.Thread(
        target=_stop_when_orphaned, args=(alive_r,), name="gateway-parent-watch", daemon=True
    ).start()
    if options.worker_id is None:
        worker_id = default_worker_id()
    elif options.concurrency > 1:
        worker_id = f"{options.worker_id}-{slot + 1}"
    else:
        worker_id = options.worker_id
    code = WorkerProcess(options, worker_id).run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stop_when_orphaned(alive_r: int) -> None:
    """Stop this worker process gracefully once the supervisor is gone (even by SIGKILL).

    Only the supervisor holds the pipe's write end, so the read returns (end of file) exactly
    when it has exited; without this, orphaned workers would go on taking jobs unsupervised.
    """
    with contextlib.suppress(OSError):
        while os.read(alive_r, 64):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Runs and replaces the worker processes (see the module doc).

    :param options: the worker's settings; ``concurrency`` is the number of processes.
    """

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self._context = multiprocessing.get_context("fork")
        self._children: dict[int, BaseProcess] = {}  # slot -> process
        self._started: dict[int, float] = {}  # slot -> monotonic start time
        self._restart_at: dict[int, float] = {}  # slot -> when to start it again
        self._restart_delay: dict[int, float] = {}
        self._stopping = False
        self._kill_at: float | None = None
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        # Its write end stays open in this process only; children see EOF when it exits.
        self._alive_r, self._alive_w = os.pipe()

    def run(self, *, restore_signals: bool = True) -> int:
        """Run until SIGTERM or SIGINT and every process has ended; return the exit status (0).

        Must be called from the main thread. With ``restore_signals`` false, SIGTERM and SIGINT
        are ignored from the end of the run on, for a process that exits next: a repeated
        SIGTERM (a deploy tool signalling again) must not turn a clean stop into a death by
        signal. (Restoring them, or leaving a Python handler, is not enough: the interpreter
        resets Python handlers to the default action while it shuts down.)
        """
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        logger.info(
            "worker starting: socket=%s queues=%s concurrency=%d",
            self.options.socket,
            ",".join(self.options.queues),
            self.options.concurrency,
        )
        try:
            for slot in range(self.options.concurrency):
                self._spawn(slot)
            while self._children or (self._restart_at and not self._stopping):
                self._wait_once()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if restore_signals else signal.SIG_IGN)
            self._kill_all()
        logger.info("worker stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._signal_w, bytes([signum]))

    def _spawn(self, slot: int) -> None:
        _close_django_connections()
        process = self._context.Process(
            target=_child_main,
            args=(self.options, slot, self._alive_r, self._alive_w),
            name=f"gateway-worker-{slot + 1}",
        )
        process.start()
        self._children[slot] = process
        self._started[slot] = time.monotonic()
        self._restart_at.pop(slot, None)

    def _wait_once(self) -> None:
        now = time.monotonic()
        deadlines = [] if self._stopping else list(self._restart_at.values())
        if self._kill_at is not None:
            deadlines.append(self._kill_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        sentinels = {process.sentinel: slot for slot, process in self._children.items()}
        ready = multiprocessing.connection.wait([self._signal_r, *sentinels], timeout)
        if self._signal_r in ready:
            self._drain_signals()
        for handle in ready:
            if handle in sentinels:
                self._reap(sentinels[handle])
        now = time.monotonic()
        if not self._stopping:
            for slot, at in list(self._restart_at.items()):
                if at <= now:
                    self._spawn(slot)
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_all()

    def _drain_signals(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._signal_r, 64):
                pass
        if self._stopping:
            return
        self._stopping = True
        self._restart_at.clear()
        self._kill_at = time.monotonic() + self.options.shutdown_timeout + _KILL_GRACE
        logger.info(
            "stopping: no new jobs; running jobs get %gs to finish", self.options.shutdown_timeout
        )
        for process in self._children.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _reap(self, slot: int) -> None:
        process = self._children.pop(slot)
        process.join()
        code = process.exitcode
        lived = time.monotonic() - self._started.pop(slot, 0.0)
        if code not in PLANNED_EXITS:
            logger.error("worker process %s exited with %s after %.1fs", process.pid, code, lived)
        if self._stopping:
            return
        delay = 0.0
        if code not in PLANNED_EXITS and lived < _QUICK_CRASH:
            delay = min(self._restart_delay.get(slot, 0.05) * 2, _MAX_RESTART_DELAY)
        self._restart_delay[slot] = delay
        self._restart_at[slot] = time.monotonic() + delay

    def _kill_all(self) -> None:
        for process in self._children.values():
            if process.pid is not None and process.exitcode is None:
                logger.warning("killing worker process %s that did not stop", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        for process in self._children.values():
            process.join()
        self._children.clear()
        self._kill_at = None


def _close_django_connections() -> None:
    """Forked children must not share the parent's database connections."""
    if "django" not in sys.modules:
        return
    try:
        from django.conf import settings
        from django.db import connections
    except ImportError:  # pragma: no cover
        return
    if settings.configured:
        connections.close_all()
