"""The worker's log: one logfmt line per job, and the logger setup of both entry points.

A job line looks like::

    job=3f2a... task=myapp.tasks.send_mail queue=default state=SUCCESSFUL attempt=1
    duration=0.012 worker=web-1:4242

(on one line), plus ``error=<exception class path>`` when the attempt failed and ``note=...``
when the worker itself ended it (``timeout``, ``cancelled``, ``lease_lost``, ``shutdown``).
"""

from __future__ import annotations

import logging
import re
import sys
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
        if not text or _NEEDS_QUOTES.search(text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


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
    logger.log(
        level,
        logfmt(
            job=job.id,
            task=job.task,
            queue=job.queue,
            state=state,
            attempt=job.attempts,
            duration=duration,
            worker=worker_id,
            error=error,
            note=note,
        ),
    )


def configure_logging(level: int = logging.INFO) -> None:
    """Send the worker's log lines to stderr unless the application configured logging.

    Under Django, a project whose ``LOGGING`` has handlers for ``gateway_client`` keeps them.
    """
    logger.setLevel(level)
    if logger.handlers or logging.getLogger("gateway_client").handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def flush_logs() -> None:
    """Flush the worker's handlers (before a process ends with ``os._exit``)."""
    for handler in logger.handlers:
        handler.flush()
    sys.stderr.flush()
