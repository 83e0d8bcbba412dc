"""How the worker runs a job whose task is a Django ``Task`` (``@task``-decorated function).

The worker imports the job's path, which names the ``Task`` object the decorator made; this
module calls its function the way Django's own ImmediateBackend does: ``Task.call`` (which runs
a coroutine function to completion), a ``TaskContext`` first when ``takes_context`` is set, the
return value normalised to JSON, and the ``task_started``/``task_finished`` signals around it,
sent by the task's backend class with a ``TaskResult`` built from the job. Database connections
past their ``CONN_MAX_AGE`` (or broken) are closed before and after each task, as Django does
around each request.
"""

from __future__ import annotations

import contextvars
from typing import Any

from django.db import close_old_connections

from gateway_client.django.task_results import result_for_job, task_for_job
from gateway_client.django.tasks_framework import (
    Task,
    TaskContext,
    normalize_json,
    task_finished,
    task_started,
)
from gateway_client.queue import Job

__all__ = ["DjangoTaskCall", "django_task_call", "is_django_task"]


def is_django_task(target: Any) -> bool:
    """True if ``target`` (what a job's task path names) is a Django ``Task``."""
    return isinstance(target, Task)


def django_task_call(
    target: Any, job: Job, worker_id: str, current_job: contextvars.ContextVar[Job | None]
) -> DjangoTaskCall | None:
    """A call of ``target`` for ``job`` if ``target`` is a Django ``Task``, else None."""
    if not isinstance(target, Task):
        return None
    return DjangoTaskCall(target, job, current_job)


class DjangoTaskCall:
    """One job of a Django ``Task``, for :func:`gateway_client.worker.runner.resolve`."""

    #: :meth:`finished` sends ``task_finished`` with a result built from the stored job.
    notifies_finish = True

    def __init__(
        self, target: Any, job: Job, current_job: contextvars.ContextVar[Job | None]
    ) -> None:
        self.job = job
        self.backend_alias: str = target.backend
        self.task = task_for_job(job, backend_alias=self.backend_alias)
        self.sender = type(self.task.get_backend())
        self._current_job = current_job

    def run(self) -> Any:
        """Send ``task_started``, call the task, return its JSON-normalised value.

        :raises BaseException: whatever the task raised, or TypeError/ValueError when its
            return value is not JSON-compatible.
        """
        close_old_connections()
        token = self._current_job.set(self.job)
        try:
            result = result_for_job(self.job, self.task, backend_alias=self.backend_alias)
            task_started.send(sender=self.sender, task_result=result)
            if self.task.takes_context:
                context = TaskContext(task_result=result)
                value = self.task.call(context, *self.job.args, **self.job.kwargs)
            else:
                value = self.task.call(*self.job.args, **self.job.kwargs)
            return normalize_json(value)
        finally:
            self._current_job.reset(token)
            close_old_connections()

    def finished(self, job: Job | None, error: BaseException | None) -> None:
        """Send ``task_finished`` with the stored outcome (nothing if it is unknown)."""
        if job is None:
            return
        result = result_for_job(job, self.task, backend_alias=self.backend_alias)
        if error is None:
            task_finished.send(sender=self.sender, task_result=result)
            return
        # Django's receivers log sys.exc_info() with a FAILED result, so send from an except.
        try:
            raise error
        except BaseException:
            task_finished.send(sender=self.sender, task_result=result)
