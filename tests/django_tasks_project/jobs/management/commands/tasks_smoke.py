"""Enqueue the test tasks through Django's API, wait for them, and print a JSON report.

A worker (``manage.py gateway_worker``) must be running on the queues default and prio.
"""

import asyncio
import datetime as dt
import json
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs.tasks import add, async_mul, explode, ordered, whoami

try:
    from django.tasks import default_task_backend
except ImportError:
    from django_tasks import default_task_backend


def describe(result: Any) -> dict[str, Any]:
    try:
        value = result.return_value
    except ValueError as e:
        value = f"<{e}>"
    times = ("enqueued_at", "started_at", "finished_at", "last_attempted_at")
    return {
        "id": result.id,
        "status": str(result.status),
        "return_value": value,
        "errors": [{"class": e.exception_class_path, "tb": e.traceback} for e in result.errors],
        "worker_ids": result.worker_ids,
        "attempts": result.attempts,
        "task": result.task.module_path,
        "queue": result.task.queue_name,
        "priority": result.task.priority,
        "backend": result.backend,
        "is_finished": result.is_finished,
        **{name: getattr(result, name) and getattr(result, name).isoformat() for name in times},
        "aware": all(
            getattr(result, n) is None or timezone.is_aware(getattr(result, n)) for n in times
        ),
    }


class Command(BaseCommand):
    def handle(self, *args: Any, **options: Any) -> None:
        backend = default_task_backend
        report: dict[str, Any] = {"backend_class": type(backend).__name__}
        report["supports"] = {
            name: getattr(backend, name)
            for name in (
                "supports_defer",
                "supports_priority",
                "supports_get_result",
                "supports_async_task",
            )
        }

        run_after = timezone.now() + dt.timedelta(seconds=1)
        results = {
            "add": add.enqueue(2, 3),
            "whoami": whoami.enqueue(tag="ctx"),
            "explode": explode.enqueue("missing-key"),
            "async_mul": async_mul.enqueue(6, 7),
            "deferred": add.using(run_after=run_after).enqueue(1, 1),
        }
        report["deferred_enqueued"] = describe(results["deferred"])
        report["deferred_enqueued"]["state_now"] = backend.get_result(results["deferred"].id).status

        async def async_part() -> tuple[Any, Any]:
            result = await add.aenqueue(10, 20)
            await backend.aqueue.wait(result.id, timeout=20)
            return result, await add.aget_result(result.id)

        aenqueued, afetched = asyncio.run(async_part())
        report["aenqueue"] = {"enqueued": describe(aenqueued), "fetched": describe(afetched)}

        # Priorities: hold the queue while enqueueing, then let one worker take them.
        backend.queue.pause("prio")
        for label, priority in [("p-5", -5), ("p10a", 10), ("p0", 0), ("p10b", 10), ("p50", 50)]:
            ordered.using(queue_name="prio", priority=priority).enqueue(label)
        backend.queue.resume("prio")
        last = ordered.using(queue_name="prio", priority=-100).enqueue("last")
        results["ordered_last"] = last

        for name, result in results.items():
            backend.queue.wait(result.id, timeout=30)
            fetched = result.task.get_result(result.id)
            report[name] = describe(fetched)
        report["deferred_run_after"] = run_after.isoformat()
        refreshed = results["add"]
        refreshed.refresh()
        report["refreshed_status"] = str(refreshed.status)
        try:
            backend.get_result("0" * 32)
        except Exception as e:
            report["missing"] = type(e).__name__
        self.stdout.write(json.dumps(report, default=str))
