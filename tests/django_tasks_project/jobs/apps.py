"""The test app: its ready() records Django's task signals into QUEUE_TEST_DIR/signals.txt."""

import os
from pathlib import Path
from typing import Any

from django.apps import AppConfig


def _write(event: str, task_result: Any) -> None:
    folder = os.environ.get("QUEUE_TEST_DIR")
    if not folder:
        return
    line = f"{event} {task_result.id} {task_result.status} {os.getpid()}\n"
    fd = os.open(Path(folder) / "signals.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def on_started(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _write("started", task_result)


def on_finished(sender: Any, task_result: Any, **kwargs: Any) -> None:
    _write("finished", task_result)


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from gateway_client.django.tasks_framework import task_finished, task_started

        task_started.connect(on_started, dispatch_uid="jobs-started")
        task_finished.connect(on_finished, dispatch_uid="jobs-finished")
