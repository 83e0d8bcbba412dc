"""The exception classes a worker records on a job for failures that are not the task's own.

The worker never raises these inside a task; it stores their class path in the job's errors
(``exception_class_path``) so that Django's ``TaskError.exception_class`` and people reading the
job can tell a timeout or a shutdown apart from an exception the task raised.
"""

from __future__ import annotations

import builtins

__all__ = ["LeaseExpired", "TaskTimeout", "WorkerShutdown", "class_path", "importable_class_path"]


class TaskTimeout(builtins.TimeoutError):
    """The task ran longer than the worker's ``--task-timeout``; its process was replaced."""


class WorkerShutdown(Exception):
    """The worker stopped (SIGTERM) before the task finished and gave the job back to re-run."""


class LeaseExpired(Exception):
    """The job's lease ran out: its worker died, hung, or lost the gateway for too long.

    The gateway records these attempts as ``gateway.LeaseExpired``, which names no Python
    class; :func:`importable_class_path` maps it here.
    """


#: Error class paths the gateway itself writes, and the Python classes that stand for them.
_SERVER_CLASS_PATHS = {"gateway.LeaseExpired": f"{__name__}.LeaseExpired"}


def importable_class_path(path: str) -> str:
    """``path``, or the importable class that stands for a class path the gateway writes."""
    return _SERVER_CLASS_PATHS.get(path, path)


def class_path(cls: type[BaseException]) -> str:
    """The dotted path Django's ``TaskError.exception_class_path`` uses for ``cls``."""
    return f"{cls.__module__}.{cls.__qualname__}"
