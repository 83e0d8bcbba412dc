"""Django settings of the peers that go through Django's tasks API.

``default`` is django-tasks' ``django_tasks_db.DatabaseBackend`` on SQLite (the django-tasks
peer), ``gateway`` is ``GatewayTaskBackend`` (the gateway-django peer). Used by the benchmark
process (to enqueue) and by the workers through ``DJANGO_SETTINGS_MODULE``. The SQLite file comes
from ``QUEUE_BENCH_DJANGO_DB``, the gateway's socket from ``QUEUE_BENCH_GATEWAY``.
Django 6 ships ``django.tasks`` without a database backend; ``django-tasks-db`` provides it (it
was part of the ``django-tasks`` backport until 0.12).
"""

from __future__ import annotations

import os

from gateway_client.django import database

SECRET_KEY = "queue-bench"
USE_TZ = True
# Django sets the process's TZ from this when it is set up: keep the benchmark's clock in UTC.
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks_db"]
# The tuning the Django-on-SQLite guides recommend and the cache benchmark's DatabaseCache gets:
# WAL, synchronous=NORMAL, IMMEDIATE transactions, busy timeout, mmap. Nobody else checkpoints
# this file, so SQLite's automatic checkpoint stays on.
DATABASES = {
    "default": database(
        os.environ.get("QUEUE_BENCH_DJANGO_DB", "django-tasks.sqlite3"),
        init_command="PRAGMA wal_autocheckpoint=1000",
    )
}
TASKS = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]},
    # The gateway through Django's tasks API, for the gateway-django peer.
    "gateway": {
        "BACKEND": "gateway_client.django.GatewayTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": {"socket": os.environ.get("QUEUE_BENCH_GATEWAY", "")},
    },
}
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
