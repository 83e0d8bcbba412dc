"""The benchmark's jobs as ``django.tasks`` tasks, for the django-tasks peer."""

from __future__ import annotations

import queue_tasks
from django.tasks import task


@task
def stamp(token: str) -> None:
    queue_tasks.stamp(token)


@task
def noop() -> None:
    queue_tasks.noop()


@task
def nap() -> None:
    queue_tasks.nap()
