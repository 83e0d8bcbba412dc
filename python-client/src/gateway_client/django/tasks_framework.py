"""Which tasks framework this Django has: ``django.tasks`` (Django >= 6.0) or the backport.

Django 6 ships ``django.tasks``; for Django 4.2 to 5.2 the ``django-tasks`` package provides the
same API as ``django_tasks``. The names both spell the same way are re-exported here, so the rest
of :mod:`gateway_client.django` imports them from one place.

:raises ImproperlyConfigured: on import, when neither is installed.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_enqueued",
    "task_finished",
    "task_started",
]

normalize_json: Any
try:
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    #: The module the tasks API comes from.
    FRAMEWORK = "django.tasks"
except ImportError:
    try:
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef]
        from django_tasks.base import (  # type: ignore[no-redef]
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.exceptions import (  # type: ignore[no-redef]
            InvalidTaskError as InvalidTask,
        )
        from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef]
        from django_tasks.signals import (  # type: ignore[no-redef]
            task_enqueued,
            task_finished,
            task_started,
        )
        from django_tasks.utils import normalize_json

        FRAMEWORK = "django_tasks"
    except ImportError as e:
        raise ImproperlyConfigured(
            "gateway_client.django.GatewayTaskBackend needs Django's tasks framework: "
            "Django 6.0 or newer (django.tasks), or the django-tasks package on Django 4.2 to "
            "5.2 (pip install django-tasks, and add 'django_tasks' to INSTALLED_APPS)"
        ) from e
