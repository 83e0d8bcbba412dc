"""The tasks of the test project, written as a Django project would."""

import os
from pathlib import Path
from typing import Any

try:
    from django.tasks import task
except ImportError:  # Django < 6: the backport
    from django_tasks import task

from django.db import connection


@task()
def add(a: int, b: int) -> int:
    with connection.cursor() as cursor:  # the worker's process has a working database
        cursor.execute("SELECT 1")
    return a + b


@task(takes_context=True)
def whoami(context: Any, tag: str) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "tag": tag}


@task()
def explode(key: str) -> None:
    raise KeyError(key)


@task()
async def async_mul(a: int, b: int) -> int:
    return a * b


@task()
def ordered(label: str) -> str:
    with open(Path(os.environ["QUEUE_TEST_DIR"]) / "order.txt", "a") as f:
        f.write(label + "\n")
    return label
