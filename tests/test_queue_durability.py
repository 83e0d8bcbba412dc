"""The queue across gateway crashes and restarts, and recurring jobs from ``[[queue.schedule]]``.

The gateway is killed with SIGKILL: whatever it acknowledged must be there after the restart,
in the state it had, and nothing that completed may run again.
"""

from __future__ import annotations

import calendar
import math
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from gateway_client import GatewayError
from gateway_client.queue import (
    CANCELLED,
    FAILED,
    READY,
    RUNNING,
    SCHEDULED,
    SUCCESSFUL,
    QueueClient,
    enqueue_args,
)
from gateway_harness import BASE_CONFIG, GatewayProcess, render_toml
from queue_harness import WorkerPool, wait_finished
from wire import wait_until

WORKER = "tests:1"


def restart(gateway: GatewayProcess, sig: int = signal.SIGKILL) -> None:
    """Stop the gateway with ``sig`` (SIGKILL: no clean shutdown at all) and start it again.

    A SIGTERM'd gateway lets requests in flight finish, waiting dequeues included (up to
    ``[server] shutdown_timeout``, 10 s), hence the long stop timeout.
    """
    if sig == signal.SIGKILL:
        gateway.kill()
    else:
        gateway.stop(sig, timeout=15)
    gateway.start()


def state_counts(queue: QueueClient, name: str) -> dict[str, int]:
    states = queue.stats()["queues"].get(name, {}).get("states", {})
    return {state: count for state, count in states.items() if count}


class Enqueuer(threading.Thread):
    """Enqueues jobs one after another until the gateway goes away; keeps the acknowledged ids."""

    def __init__(self, socket_path: str, name: str) -> None:
        super().__init__(daemon=True)
        self.queue = QueueClient(socket_path, timeout=5.0, connect_attempts=1)
        self.queue_name = name
        self.acknowledged: list[str] = []
        self.running = threading.Event()

    def run(self) -> None:
        try:
            while True:
                job = self.queue.enqueue("queue_tasks.record", queue=self.queue_name)
                self.acknowledged.append(job.id)
                self.running.set()
        except GatewayError:
            pass  # the gateway was killed


def test_kill_9_keeps_every_acknowledged_job_in_its_state(
    gateway: GatewayProcess, workers: WorkerPool
) -> None:
    queue = QueueClient(gateway.socket_path)
    # Jobs that workers completed before the crash: none of them may run again after it.
    done_before = queue.enqueue_many([enqueue_args("queue_tasks.record", queue="work")] * 200)
    run = workers.start(gateway.socket_path, "--queue", "work", "--concurrency", "2")
    wait_finished(queue, [j.id for j in done_before])
    assert run.stop() == 0

    jobs: dict[str, Any] = {}
    jobs["scheduled"] = queue.enqueue("queue_tasks.record", queue="s", run_after=time.time() + 3600)
    jobs["ready"] = queue.enqueue("queue_tasks.record", queue="r", args=[1], kwargs={"k": "v"})
    running = queue.enqueue("queue_tasks.record", queue="run", max_attempts=2)
    lease = queue.dequeue(["run"], WORKER, lease_seconds=3600)[0]
    jobs["running"] = queue.get(running.id)
    succeeded = queue.enqueue("queue_tasks.record", queue="ok")
    queue.complete(succeeded.id, queue.dequeue(["ok"], WORKER)[0].lease_token or "", [1, "two"])
    jobs["successful"] = queue.get(succeeded.id)
    failed = queue.enqueue("queue_tasks.record", queue="bad")
    queue.fail(
        failed.id,
        queue.dequeue(["bad"], WORKER)[0].lease_token or "",
        exception_class_path="builtins.ValueError",
        traceback="Traceback...\nValueError: no\n",
        retry=False,
    )
    jobs["failed"] = queue.get(failed.id)
    jobs["cancelled"] = queue.cancel(queue.enqueue("queue_tasks.record", queue="c").id)
    queue.pause("held")
    jobs["paused"] = queue.enqueue("queue_tasks.record", queue="held")

    enqueuers = [Enqueuer(gateway.socket_path, "load") for _ in range(3)]
    for enqueuer in enqueuers:
        enqueuer.start()
    for enqueuer in enqueuers:
        assert enqueuer.running.wait(5)
    time.sleep(0.2)  # enqueues in flight from three threads while the gateway dies
    gateway.kill()
    for enqueuer in enqueuers:
        enqueuer.join(10)
    gateway.start()
    queue.close()

    expected_states = {
        "scheduled": SCHEDULED,
        "ready": READY,
        "running": RUNNING,
        "successful": SUCCESSFUL,
        "failed": FAILED,
        "cancelled": CANCELLED,
        "paused": READY,
    }
    for name, before in jobs.items():
        after = queue.get(before.id)
        assert after.state == expected_states[name], name
        assert after.raw == before.raw, f"the {name} job changed across the crash"
    assert queue.stats()["queues"]["held"]["paused"] is True

    # The lease survived too: its holder can still finish the job, and only its holder.
    assert queue.complete(running.id, lease.lease_token or "", "after").state == SUCCESSFUL

    acknowledged = [i for e in enqueuers for i in e.acknowledged]
    assert len(acknowledged) > 50, "the enqueuers barely ran"
    for job_id in acknowledged:
        assert queue.get(job_id).state == READY, "an acknowledged enqueue was lost"

    run = workers.start(gateway.socket_path, "--queue", "work", "--queue", "load")
    wait_finished(queue, acknowledged, timeout=60)
    counts = workers.counts()
    assert all(counts[j.id] == 1 for j in done_before), "a completed job ran again"
    assert all(counts[i] == 1 for i in acknowledged)
    assert run.stop() == 0
    for name in ("scheduled", "paused", "failed", "cancelled", "successful"):
        assert counts[jobs[name].id] == 0, f"the {name} job ran"


def test_workers_ride_out_a_gateway_restart(gateway: GatewayProcess, workers: WorkerPool) -> None:
    run = workers.start(gateway.socket_path, "--queue", "ride", "--concurrency", "2")
    run.wait_children(2)
    time.sleep(0.2)  # both worker processes wait in queue.dequeue
    restart(gateway, signal.SIGKILL)
    queue = QueueClient(gateway.socket_path)
    jobs = queue.enqueue_many([enqueue_args("queue_tasks.record", queue="ride")] * 50)
    wait_finished(queue, [j.id for j in jobs], timeout=30)
    counts = workers.counts()
    assert all(counts[j.id] == 1 for j in jobs)
    restart(gateway, signal.SIGTERM)
    more = queue.enqueue_many([enqueue_args("queue_tasks.record", queue="ride")] * 10)
    wait_finished(queue, [j.id for j in more], timeout=30)
    assert run.stop() == 0


# --- recurring jobs -----------------------------------------------------------------------------


def schedule_config(entries: list[dict[str, str]]) -> str:
    """The test config plus ``[[queue.schedule]]`` tables (render_toml has no arrays of tables)."""
    lines = [render_toml(BASE_CONFIG)]
    for entry in entries:
        lines.append("[[queue.schedule]]")
        lines.extend(f'{key} = "{value}"' for key, value in entry.items())
        lines.append("args = []\nkwargs = {}\n")
    return "\n".join(lines)


SCHEDULES = [
    {"name": "yearly", "cron": "0 0 1 1 *", "task": "queue_tasks.tick", "queue": "cron_yearly"},
    {"name": "minutely", "cron": "* * * * *", "task": "queue_tasks.tick", "queue": "cron_minute"},
]


def recorded_slots(gateway: GatewayProcess) -> dict[str, int]:
    """The last slot (Unix ms) the gateway recorded per schedule, read from its queue database."""
    connection = sqlite3.connect(f"file:{gateway.db_path('queue')}?mode=ro", uri=True)
    try:
        return dict(connection.execute("SELECT name, last_slot FROM schedule_slots"))
    except sqlite3.OperationalError:
        return {}
    finally:
        connection.close()


def rewind_slots(gateway: GatewayProcess, slot_ms: int) -> None:
    """Pretend the gateway was down since ``slot_ms``: every schedule missed its slots since."""
    connection = sqlite3.connect(gateway.db_path("queue"))
    try:
        with connection:
            connection.execute("UPDATE schedule_slots SET last_slot = ?", (slot_ms,))
    finally:
        connection.close()


def test_schedule_enqueues_each_slot_once_across_restarts(
    gateway_factory: Callable[..., GatewayProcess], workers: WorkerPool
) -> None:
    gateway = gateway_factory(config_text=schedule_config(SCHEDULES))
    queue = QueueClient(gateway.socket_path)
    # A schedule seen for the first time starts with its next slot; it only records the last.
    wait_until(lambda: set(recorded_slots(gateway)) == {"yearly", "minutely"}, 5)
    assert state_counts(queue, "cron_yearly") == {}

    # Downtime that missed many slots (the recorded slot moved back a few years, with the
    # gateway stopped): the most recent missed slot is enqueued once at start.
    gateway.stop(signal.SIGTERM, timeout=15)
    rewind_slots(gateway, 1_500_000_000_000)
    before_start = time.time()
    gateway.start()
    after_start = time.time()
    queue.close()
    wait_until(lambda: state_counts(queue, "cron_yearly") == {READY: 1}, 5)
    wait_until(lambda: sum(state_counts(queue, "cron_minute").values()) >= 1, 5)
    this_year = time.gmtime().tm_year
    assert recorded_slots(gateway)["yearly"] == calendar.timegm((this_year, 1, 1, 0, 0, 0)) * 1000

    restart(gateway, signal.SIGTERM)
    restart(gateway, signal.SIGKILL)
    queue.close()
    assert state_counts(queue, "cron_yearly") == {READY: 1}, "a restart re-enqueued the slot"
    # Every minute boundary crossed since that start is a new slot, enqueued once. (The start
    # itself may straddle a boundary, hence the two bounds.)
    now_minute = math.floor(time.time() / 60)
    slots = sum(state_counts(queue, "cron_minute").values())
    low = now_minute - math.floor(after_start / 60) + 1
    high = now_minute - math.floor(before_start / 60) + 1
    assert low <= slots <= high, (slots, low, high)

    workers.start(gateway.socket_path, "--queue", "cron_yearly")
    (record,) = workers.wait_records(1)
    job = queue.wait(record.job_id, timeout=10)
    assert (job.state, job.task, job.queue) == (SUCCESSFUL, "queue_tasks.tick", "cron_yearly")
    assert (job.args, job.kwargs, job.return_value) == ([], {}, "tick")
    restart(gateway, signal.SIGKILL)
    queue.close()
    assert state_counts(queue, "cron_yearly") == {SUCCESSFUL: 1}, "a run slot is not run again"


def test_bad_schedules_are_refused(gateway_factory: Callable[..., GatewayProcess]) -> None:
    bad = {"name": "bad", "cron": "61 * * * *", "task": "queue_tasks.tick", "queue": "default"}
    gateway = gateway_factory(config_text=schedule_config([bad]), start=False)
    with pytest.raises(AssertionError, match="cron"):
        gateway.start(timeout=5)
