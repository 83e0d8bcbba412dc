"""The worker's log: one logfmt line per job, and the logger setup of both entry points.

A job line looks like::

    job=3f2a... task=myapp.tasks.send_mail queue=default state=SUCCESSFUL attempt=1
    duration=0.012 worker=web-1:4242

(on one line), plus ``error=<exception class path>`` when the attempt failed and ``note=...``
when the worker itself ended it (``timeout``, ``cancelled``, ``lease_lost``, ``shutdown``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any

from gateway_client.queue import Job

__all__ = ["LOGGER_NAME", "configure_logging", "log_job", "logfmt"]

LOGGER_NAME = "gateway_client.worker"
logger = logging.getLogger(LOGGER_NAME)

_NEEDS_QUOTES = re.compile(r'[ "=\n\t]')


def logfmt(**fields: Any) -> str:
    """Render ``key=value`` pairs, quoting values that hold spaces, quotes or ``=``."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={_logfmt_value(text)}")
    return " ".join(parts)


def _logfmt_value(text: str) -> str:
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def log_job(
    job: Job,
    *,
    state: str,
    duration: float,
    worker_id: str,
    error: str | None = None,
    note: str | None = None,
) -> None:
    """Write the one line of a finished attempt (WARNING when it did not succeed)."""
    level = logging.INFO if state == "SUCCESSFUL" else logging.WARNING
    if not logger.isEnabledFor(level):
        return  # nobody would read the line: do not build it
    # logfmt(), written out: this runs once per job.
    line = (
        f"job={_logfmt_value(job.id)} task={_logfmt_value(job.task)} "
        f"queue={_logfmt_value(job.queue)} state={_logfmt_value(state)} attempt={job.attempts} "
        f"duration={duration:.3f} worker={_logfmt_value(worker_id)}"
    )
    if error is not None:
        line += f" error={_logfmt_value(error)}"
    if note is not None:
        line += f" note={_logfmt_value(note)}"
    handler = _own_handler
    if handler is not None and _only_reaches(handler, level) and handler.write_line(level, line):
        return
    # Every job line comes from here, so the record names this function itself instead of
    # having logger.log() walk the stack to find the caller.
    record = logger.makeRecord(
        logger.name, level, __file__, _LOG_JOB_LINE, line, (), None, "log_job"
    )
    logger.handle(record)


_LOG_JOB_LINE = log_job.__code__.co_firstlineno


def _only_reaches(handler: _LineHandler, level: int) -> bool:
    """True if a record of ``level`` from the worker's logger would go to ``handler`` alone,
    unfiltered (the configuration :func:`configure_logging` made, unchanged)."""
    handlers = logger.handlers
    return (
        len(handlers) == 1
        and handlers[0] is handler
        and not logger.propagate
        and not logger.filters
        and not handler.filters
        and level >= handler.level
    )


class _LineFormatter(logging.Formatter):
    """``asctime levelname [pid] message``, each second's date and time formatted only once.

    Called under its handler's lock, like any formatter.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(message)s")
        self._second: int | None = None
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self.timestamp(record.created, int(record.msecs))

    def timestamp(self, created: float, msecs: int) -> str:
        """``asctime`` of a record made at Unix time ``created`` (``msecs``: its milliseconds)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
        return self.default_msec_format % (self._second_text, msecs)


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (stderr, :class:`_LineFormatter`).

    A worker writes a line per job, and a ``LogRecord`` on its way through ``logging`` costs
    about as much CPU as running a short job does. So while this handler is the only one a job
    line would reach, :func:`log_job` has it write the line itself (:meth:`write_line`): the
    same text a record would give, without making one.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.line_formatter = _LineFormatter()
        self.setFormatter(self.line_formatter)

    def write_line(self, level: int, message: str) -> bool:
        """Write ``message`` as a record of ``level`` made now would be; False if that failed
        (the caller then logs it as a record, which reports the error the usual way)."""
        now_ns = time.time_ns()
        tail = f" {logging.getLevelName(level)} [{os.getpid()}] {message}{self.terminator}"
        try:
            with self.lock:  # type: ignore[union-attr]  # as Handler.handle() takes it
                # Under the lock: the formatter's cache of the second's text is shared with
                # the lease keeper's lines.
                stamp = self.line_formatter.timestamp(now_ns / 1e9, now_ns // 1_000_000 % 1000)
                self.stream.write(stamp + tail)
                self.stream.flush()
        except Exception:
            return False
        return True


_own_handler: _LineHandler | None = None  # the handler configure_logging installed, if any


def configure_logging(level: int = logging.INFO) -> None:
    """Send the worker's log lines to stderr unless the application configured logging.

    Under Django, a project whose ``LOGGING`` has handlers for ``gateway_client`` keeps them.
    """
    global _own_handler
    logger.setLevel(level)
    if logger.handlers or logging.getLogger("gateway_client").handlers:
        return
    _own_handler = _LineHandler()
    logger.addHandler(_own_handler)
    logger.propagate = False


def flush_logs() -> None:
    """Flush the worker's handlers (before a process ends with ``os._exit``)."""
    for handler in logger.handlers:
        handler.flush()
    sys.stderr.flush()
