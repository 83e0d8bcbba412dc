"""The Huey peer's app: the benchmark's jobs as Huey tasks on ``SqliteHuey``.

Started by the benchmark as ``huey_consumer queue_huey_app.huey ...``; the SQLite file comes from
``QUEUE_BENCH_HUEY_DB``. ``SqliteHuey``'s defaults are kept: WAL journal, 5 s busy timeout, and
the consumer polls the table (0.1 s after a job, backing off by 1.15x up to 10 s when idle).
"""

from __future__ import annotations

import os

import queue_tasks
from huey import SqliteHuey

huey = SqliteHuey("queue_bench", filename=os.environ.get("QUEUE_BENCH_HUEY_DB", "huey.sqlite3"))


@huey.task()
def stamp(token: str) -> None:
    queue_tasks.stamp(token)


@huey.task()
def noop() -> None:
    queue_tasks.noop()


@huey.task()
def nap() -> None:
    queue_tasks.nap()
