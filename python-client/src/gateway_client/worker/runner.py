"""How a worker turns a job into a call: import the task by its path, call it, check the result.

A job's ``task`` is a dotted path. When Django is set up and the path names a ``Task`` of Django's
tasks framework (``django.tasks`` or the ``django_tasks`` backport), the call goes through
:mod:`gateway_client.django.task_execution`, which passes the ``TaskContext`` and sends Django's
``task_started``/``task_finished`` signals. Anything else callable is called with the job's args
and kwargs (a coroutine function runs in a fresh event loop). Either way the return value must
be JSON-compatible, as Django requires of task results.

A worker process resolves jobs with one :class:`TaskResolver`, which imports each task path once:
a process runs the same few tasks over and over, and the import machinery's lookup (even of a
module already imported) and the checks of what the path names would otherwise be paid per job.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from typing import Any, Protocol

from gateway_client.queue import Job

__all__ = ["TaskCall", "TaskResolver", "current_job", "import_task", "resolve"]

_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar(
    "gateway_client_current_job", default=None
)


def current_job() -> Job | None:
    """The job the worker is running in this process now (None outside a job).

    A task that is a plain function can read its job id, attempt number or queue from it;
    Django tasks get the same through ``takes_context=True``.
    """
    return _current_job.get()


class TaskCall(Protocol):
    """One job's task, ready to run."""

    #: True if :meth:`finished` uses the stored job; the worker builds it only for such calls.
    notifies_finish: bool

    def run(self) -> Any:
        """Run the task and return its JSON-compatible result; raise whatever the task raised."""

    def finished(self, job: Job | None, error: BaseException | None) -> None:
        """Called once the outcome is stored (``job`` is the stored job, None if unknown)."""


class _PlainCall:
    __slots__ = ("func", "is_coroutine", "job")
    notifies_finish = False

    def __init__(self, func: Callable[..., Any], is_coroutine: bool, job: Job) -> None:
        self.func = func
        self.is_coroutine = is_coroutine
        self.job = job

    def run(self) -> Any:
        token = _current_job.set(self.job)
        try:
            if self.is_coroutine:
                value = asyncio.run(self.func(*self.job.args, **self.job.kwargs))
            else:
                value = self.func(*self.job.args, **self.job.kwargs)
        finally:
            _current_job.reset(token)
        return json_compatible(value)

    def finished(self, job: Job | None, error: BaseException | None) -> None:
        return None


def json_compatible(value: Any) -> Any:
    """Return ``value`` as JSON would bring it back (tuples become lists).

    :raises TypeError: if ``value`` cannot be represented in JSON.
    :raises ValueError: if it holds NaN or infinity, or refers to itself.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    return json.loads(json.dumps(value, allow_nan=False))


def import_task(path: str) -> Any:
    """Import the object a dotted path names (``package.module.name`` or ``module.Class.attr``).

    :raises ImportError: if no prefix of the path is an importable module holding the rest.
    """
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise ImportError(f"{path!r} is not a dotted path to a task")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            missing = e.name or ""
            if not (module_name == missing or module_name.startswith(missing + ".")):
                raise  # the module exists but imports something that is missing
            continue
        try:
            for attribute in parts[split:]:
                target = getattr(target, attribute)
        except AttributeError as e:
            raise ImportError(f"module {module_name!r} has no attribute path {path!r}") from e
        return target
    raise ImportError(f"no module found for task {path!r}")


class TaskResolver:
    """Makes the call of each job, importing each task path once (see the module doc).

    A path that cannot be imported, or names something that cannot be called, is not
    remembered: each of its jobs fails with the same error. Not thread-safe.
    """

    def __init__(self) -> None:
        self._makers: dict[str, Callable[[Job], TaskCall]] = {}

    def resolve(self, job: Job) -> TaskCall:
        """Wrap the job's task for :meth:`TaskCall.run`.

        :raises ImportError: if the task path cannot be imported.
        :raises TypeError: if it names something that cannot be called.
        """
        make = self._makers.get(job.task)
        if make is None:
            make = self._makers[job.task] = _call_maker(job.task)
        return make(job)


def resolve(job: Job, worker_id: str) -> TaskCall:
    """Import the job's task and wrap it for :meth:`TaskCall.run` (without the resolver's cache).

    :raises ImportError: if the task path cannot be imported.
    :raises TypeError: if it names something that cannot be called.
    """
    return _call_maker(job.task)(job)


def _call_maker(path: str) -> Callable[[Job], TaskCall]:
    """Import ``path`` and return what makes a job's call of it (see :func:`resolve`)."""
    target = import_task(path)
    if _django_is_set_up():
        from gateway_client.django.task_execution import DjangoTaskCall, is_django_task

        if is_django_task(target):
            return lambda job: DjangoTaskCall(target, job, _current_job)
    if not callable(target):
        raise TypeError(f"task {path!r} is a {type(target).__name__}, not callable")
    is_coroutine = inspect.iscoroutinefunction(target)
    return lambda job: _PlainCall(target, is_coroutine, job)


def _django_is_set_up() -> bool:
    if "django" not in sys.modules:
        return False
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:  # pragma: no cover - a module named django that is not Django
        return False
    return bool(settings.configured and apps.ready)
