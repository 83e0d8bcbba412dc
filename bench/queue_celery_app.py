"""The Celery peer's app: the benchmark's jobs as Celery tasks on a Redis broker.

Started by the benchmark as ``celery -A queue_celery_app worker ...``; the broker's Unix socket
comes from ``QUEUE_BENCH_REDIS``. No result backend is configured (the jobs report to the
benchmark themselves, see :mod:`queue_tasks`), which is Celery's cheapest set-up and a common one
for fire-and-forget jobs. Everything else is Celery's default (prefetch multiplier 4, early ack).
"""

from __future__ import annotations

import os

import queue_tasks
from celery import Celery

app = Celery("queue_bench", broker=f"redis+socket://{os.environ.get('QUEUE_BENCH_REDIS', '')}")
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.stamp")
def stamp(token: str) -> None:
    queue_tasks.stamp(token)


@app.task(name="bench.noop")
def noop() -> None:
    queue_tasks.noop()


@app.task(name="bench.nap")
def nap() -> None:
    queue_tasks.nap()
