"""``GatewayTaskBackend``: Django's tasks framework on the gateway's job queue.

Works with Django 6's ``django.tasks`` and with the ``django-tasks`` backport (``django_tasks``)
on Django 4.2 to 5.2. In ``settings.py``::

    TASKS = {
        "default": {
            "BACKEND": "gateway_client.django.GatewayTaskBackend",
            "QUEUES": ["default", "emails"],         # optional; Django's default is ["default"]
            "OPTIONS": {
                "socket": str(BASE_DIR / "run" / "gateway.sock"),
                "max_attempts": 1,                   # optional: attempts per job (default 1)
                "backoff": 1.0,                      # optional: first retry delay in seconds
                "timeout": 5.0,                      # optional: seconds to wait for the gateway
                "spin_us": 150,                      # optional: see Client's spin_us (0: off)
            },
        }
    }

and run ``manage.py gateway_worker`` (add ``"gateway_client.django"`` to ``INSTALLED_APPS``).

``enqueue`` and ``aenqueue`` talk to the gateway directly (``aenqueue`` over the event loop's
own connection, not in a thread); a job is acknowledged only after the gateway committed it, so
a returned ``TaskResult`` always names a stored job. ``get_result``/``aget_result`` read the job
back: status, times, errors with tracebacks, worker ids and return value (see
:mod:`gateway_client.django.task_results` for how the gateway's states map onto Django's).

**Enqueue on commit.** A task enqueued inside a database transaction can start, and look for
the rows the transaction writes, before that transaction commits, or run although it rolled
back. Enqueue from ``transaction.on_commit`` instead::

    from functools import partial
    from django.db import transaction

    with transaction.atomic():
        order = Order.objects.create(...)
        transaction.on_commit(partial(send_receipt.enqueue, order_id=order.pk))

(``on_commit(lambda: send_receipt.enqueue(order_id=order.pk))`` is the same). The job is then
enqueued only once the order is stored, and never for a transaction that rolled back.

**Attempts.** ``max_attempts`` (default 1: Django's tasks run once) also covers worker deaths: a
worker killed mid-task loses its lease, which counts as a failed attempt, so set it to 2 or more
for jobs that must run to completion even then. A task that raises is retried the same way, with
exponential backoff from ``backoff`` seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from gateway_client.aio import AsyncClient
from gateway_client.client import DEFAULT_SPIN_US, Client, check_spin_us
from gateway_client.django.task_results import result_for_job, task_for_job
from gateway_client.django.tasks_framework import (
    BaseTaskBackend,
    InvalidTask,
    TaskResultDoesNotExist,
    normalize_json,
    task_enqueued,
)
from gateway_client.errors import JobNotFound
from gateway_client.queue import AsyncQueueClient, Job, QueueClient

__all__ = ["GatewayTaskBackend"]


class GatewayTaskBackend(BaseTaskBackend):
    """A Django task backend that stores jobs in the gateway's queue (see the module doc).

    :ivar queue: the blocking :class:`~gateway_client.queue.QueueClient` it uses.
    :ivar aqueue: the asyncio :class:`~gateway_client.queue.AsyncQueueClient` it uses.
    """

    supports_defer = True
    supports_priority = True
    supports_get_result = True
    supports_async_task = True

    def __init__(self, alias: str, params: Mapping[str, Any]) -> None:
        """Read ``OPTIONS``; no connection is opened until the first call.

        :raises ImproperlyConfigured: if ``OPTIONS["socket"]`` is missing or an option is invalid.
        """
        super().__init__(alias, params)
        socket = self.options.get("socket")
        if not socket:
            raise ImproperlyConfigured(
                f'TASKS["{alias}"]["OPTIONS"]["socket"] must name the gateway\'s socket path'
            )
        try:
            self.max_attempts = int(self.options.get("max_attempts", 1))
            backoff = self.options.get("backoff")
            self.backoff = None if backoff is None else float(backoff)
            timeout = self.options.get("timeout", 5.0)
            timeout = None if timeout is None else float(timeout)
            spin_us = check_spin_us(self.options.get("spin_us", DEFAULT_SPIN_US))
        except (TypeError, ValueError) as e:
            raise ImproperlyConfigured(f'TASKS["{alias}"]["OPTIONS"]: {e}') from e
        if self.max_attempts < 1:
            raise ImproperlyConfigured(f'TASKS["{alias}"]["OPTIONS"]["max_attempts"] must be >= 1')
        self.socket_path = str(socket)
        self.queue = QueueClient(Client(self.socket_path, timeout=timeout, spin_us=spin_us))
        self.aqueue = AsyncQueueClient(AsyncClient(self.socket_path, timeout=timeout))

    # --- Django's backend API --------------------------------------------------------------------

    def enqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Store a job for ``task`` and return its ``TaskResult`` (READY, or so once due).

        :raises InvalidTask: if the task does not fit this backend (Django's validation).
        :raises TypeError: if an argument is not JSON-compatible.
        :raises gateway_client.GatewayError: if the gateway refused or could not be reached.
        """
        self.validate_task(task)
        job = self.queue.enqueue(task.module_path, **self._enqueue_options(task, args, kwargs))
        return self._enqueued(task, job)

    async def aenqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """:meth:`enqueue` over the running event loop's connection to the gateway.

        :raises InvalidTask: if the task does not fit this backend.
        :raises TypeError: if an argument is not JSON-compatible.
        :raises gateway_client.GatewayError: if the gateway refused or could not be reached.
        """
        self.validate_task(task)
        job = await self.aqueue.enqueue(
            task.module_path, **self._enqueue_options(task, args, kwargs)
        )
        return self._enqueued(task, job)

    def get_result(self, result_id: str) -> Any:
        """Return the ``TaskResult`` of the job ``result_id`` as it is now.

        :raises TaskResultDoesNotExist: if there is no such job (or it was pruned), or its task
            no longer imports.
        :raises gateway_client.GatewayError: if the gateway could not be reached.
        """
        try:
            job = self.queue.get(result_id)
        except JobNotFound as e:
            raise TaskResultDoesNotExist(result_id) from e
        return self.result_for(job)

    async def aget_result(self, result_id: str) -> Any:
        """:meth:`get_result` over the running event loop's connection.

        :raises TaskResultDoesNotExist: if there is no such job, or its task no longer imports.
        :raises gateway_client.GatewayError: if the gateway could not be reached.
        """
        try:
            job = await self.aqueue.get(result_id)
        except JobNotFound as e:
            raise TaskResultDoesNotExist(result_id) from e
        return self.result_for(job)

    # --- extras ----------------------------------------------------------------------------------

    def result_for(self, job: Job) -> Any:
        """The ``TaskResult`` of a job map from the gateway.

        :raises TaskResultDoesNotExist: if the job's task path does not import as a task.
        """
        try:
            task = task_for_job(job, backend_alias=self.alias, task_class=self.task_class)
        except (ImportError, InvalidTask, TypeError) as e:
            raise TaskResultDoesNotExist(
                f"job {job.id} is for {job.task!r}, which is not a task here: {e}"
            ) from e
        return result_for_job(job, task, backend_alias=self.alias)

    def cancel(self, result_id: str) -> Any:
        """Cancel a job that has not finished; return its ``TaskResult`` (status FAILED).

        A running job's worker learns of it from its next heartbeat and stops the task.

        :raises TaskResultDoesNotExist: if there is no such job.
        :raises gateway_client.InvalidState: if the job already finished.
        """
        try:
            job = self.queue.cancel(result_id)
        except JobNotFound as e:
            raise TaskResultDoesNotExist(result_id) from e
        return self.result_for(job)

    def close(self) -> None:
        """Close this thread's and process's connections (they reopen on the next call)."""
        self.queue.close()
        self.aqueue.client.close()

    def _enqueue_options(
        self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The keyword arguments of ``QueueClient.enqueue`` for one call of ``task``."""
        return {
            "args": normalize_json(list(args)),
            "kwargs": normalize_json(dict(kwargs)),
            "queue": task.queue_name,
            "priority": task.priority,
            "run_after": task.run_after,
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
        }

    def _enqueued(self, task: Any, job: Job) -> Any:
        result = result_for_job(job, task, backend_alias=self.alias)
        task_enqueued.send(type(self), task_result=result)
        return result
