"""Turning the gateway's job maps into Django ``TaskResult`` objects.

Django's ``TaskResultStatus`` has four states; the gateway's six map onto them as follows:

=============  =============  ===============================================================
gateway        Django         why
=============  =============  ===============================================================
SCHEDULED      READY          waiting for ``run_after`` or a retry's backoff ("ready to be
                              executed again", in Django's words)
READY          READY
RUNNING        RUNNING
SUCCESSFUL     SUCCESSFUL
FAILED         FAILED
CANCELLED      FAILED         Django has no cancelled state; FAILED means "unable to start"
=============  =============  ===============================================================

Times become aware UTC datetimes (naive local time when ``USE_TZ`` is False, as
``django.utils.timezone.now()`` gives), errors become ``TaskError`` objects with the exception
class path and traceback of each failed attempt (an expired lease, which the gateway records as
``gateway.LeaseExpired``, becomes :class:`gateway_client.worker.errors.LeaseExpired` so that
``TaskError.exception_class`` imports), and the stored return value is the result's
``return_value``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone

from gateway_client.django.tasks_framework import (
    InvalidTask,
    Task,
    TaskError,
    TaskResult,
    TaskResultStatus,
)
from gateway_client.queue import CANCELLED, FAILED, READY, RUNNING, SCHEDULED, SUCCESSFUL, Job
from gateway_client.worker.errors import importable_class_path
from gateway_client.worker.runner import import_task

__all__ = ["STATUS_BY_STATE", "as_datetime", "result_for_job", "task_for_job"]

STATUS_BY_STATE: dict[str, Any] = {
    SCHEDULED: TaskResultStatus.READY,
    READY: TaskResultStatus.READY,
    RUNNING: TaskResultStatus.RUNNING,
    SUCCESSFUL: TaskResultStatus.SUCCESSFUL,
    FAILED: TaskResultStatus.FAILED,
    CANCELLED: TaskResultStatus.FAILED,
}


def as_datetime(timestamp: float | None) -> dt.datetime | None:
    """A Unix time as Django would have made it with ``timezone.now()``."""
    if timestamp is None:
        return None
    value = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    return value if settings.USE_TZ else timezone.make_naive(value)


def task_for_job(job: Job, *, backend_alias: str, task_class: type | None = None) -> Any:
    """The ``Task`` a job runs, with the job's queue, priority and ``run_after``.

    A path that names a plain function (a job enqueued with :class:`~gateway_client.queue.
    QueueClient`) is wrapped in ``task_class`` for ``backend_alias``.

    :raises ImportError: if the job's task path does not import.
    :raises InvalidTask: if a plain function cannot be a task of that backend.
    """
    target = import_task(job.task)
    run_after = as_datetime(job.run_after) if job.state == SCHEDULED else None
    if not isinstance(target, Task):
        return (task_class or Task)(
            func=target,
            backend=backend_alias,
            queue_name=job.queue,
            priority=job.priority,
            run_after=run_after,
        )
    try:
        return target.using(priority=job.priority, queue_name=job.queue, run_after=run_after)
    except InvalidTask:
        # Enqueued outside Django with values its backend would refuse; show the task as it is.
        return target


def result_for_job(job: Job, task: Any, *, backend_alias: str) -> Any:
    """Build the ``TaskResult`` of ``job`` (see the module doc for the mapping)."""
    result = TaskResult(
        task=task,
        id=job.id,
        status=STATUS_BY_STATE.get(job.state, TaskResultStatus.READY),
        enqueued_at=as_datetime(job.enqueued_at),
        started_at=as_datetime(job.started_at),
        finished_at=as_datetime(job.finished_at),
        last_attempted_at=as_datetime(job.last_attempted_at),
        args=list(job.args),
        kwargs=dict(job.kwargs),
        backend=backend_alias,
        errors=[
            TaskError(
                exception_class_path=importable_class_path(e.exception_class_path),
                traceback=e.traceback,
            )
            for e in job.errors
        ],
        worker_ids=list(job.worker_ids),
    )
    # The dataclass is frozen; Django's own backends set the return value the same way.
    object.__setattr__(result, "_return_value", job.return_value)
    return result
