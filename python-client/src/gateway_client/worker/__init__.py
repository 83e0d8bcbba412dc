"""The job worker: ``python -m gateway_client.worker`` or ``manage.py gateway_worker``.

A supervisor process starts ``--concurrency`` worker processes. Each one blocks in
``queue.dequeue`` (no polling), takes a few short jobs at once when several are waiting
(``--prefetch``), runs one job at a time by importing its task path and calling it, heartbeats
the jobs it runs and holds, and stores each outcome with ``queue.complete`` or ``queue.fail``.
See :mod:`.supervisor`, :mod:`.process`, :mod:`.completions` and :mod:`.lease_keeper` for the
lifecycle, and ``docs/tasks.md`` for running it.

A task written as a plain function can see the job it runs for with :func:`current_job`.
"""

from gateway_client.worker.errors import TaskTimeout, WorkerShutdown
from gateway_client.worker.options import WorkerOptions
from gateway_client.worker.runner import current_job

__all__ = ["TaskTimeout", "WorkerOptions", "WorkerShutdown", "current_job"]
