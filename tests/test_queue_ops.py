"""The queue ops of PROTOCOL.md ("Queue operations") against the real gateway, via QueueClient.

No worker processes here: the test itself plays producer and worker, so every lease token,
state and time can be checked exactly. Waiting uses the protocol's own blocking ops
(``queue.dequeue`` with ``wait_ms``, ``queue.wait``), not sleeps.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from gateway_client import BadArgument, InvalidState, JobNotFound, LeaseLost
from gateway_client.queue import (
    CANCELLED,
    FAILED,
    READY,
    RUNNING,
    SCHEDULED,
    SUCCESSFUL,
    Job,
    QueueClient,
    enqueue_args,
)
from gateway_harness import GatewayProcess
from wire import RawConnection

WORKER = "tests:1"


def take_one(queue: QueueClient, name: str = "default", **kwargs: Any) -> Job:
    kwargs.setdefault("wait_ms", 2000)
    jobs = queue.dequeue([name], WORKER, **kwargs)
    assert len(jobs) == 1, jobs
    return jobs[0]


def state_counts(queue: QueueClient, name: str) -> dict[str, int]:
    """The non-zero job counts per state of queue ``name``."""
    states = queue.stats()["queues"].get(name, {}).get("states", {})
    return {state: count for state, count in states.items() if count}


def dequeue_in_thread(queue: QueueClient, name: str, got: list[list[Job]]) -> threading.Thread:
    """Start a thread blocked in a 10 s dequeue of ``name`` that appends what it gets."""
    thread = threading.Thread(
        target=lambda: got.append(queue.dequeue([name], WORKER, wait_ms=10_000))
    )
    thread.start()
    time.sleep(0.2)  # let the dequeue reach the server and block there
    return thread


# --- enqueue and get ------------------------------------------------------------------------------


def test_enqueue_returns_the_stored_job(queue: QueueClient) -> None:
    before = time.time()
    job = queue.enqueue(
        "queue_tasks.add", args=[1, 2], kwargs={"x": {"y": [1, "z", None]}}, priority=7
    )
    after = time.time()
    assert re.fullmatch(r"[0-9a-f]{32}", job.id), job.id
    assert job.state == READY
    assert (job.queue, job.task, job.priority) == ("default", "queue_tasks.add", 7)
    assert job.args == [1, 2] and job.kwargs == {"x": {"y": [1, "z", None]}}
    assert (job.attempts, job.max_attempts) == (0, 1)
    assert job.enqueued_at is not None and before - 0.01 <= job.enqueued_at <= after + 0.01
    assert job.started_at is None and job.finished_at is None and job.last_attempted_at is None
    assert job.worker_ids == [] and job.errors == [] and job.return_value is None
    assert job.unique_key is None and job.run_after is None
    assert queue.get(job.id).raw == job.raw


def test_enqueue_many_keeps_order_and_is_one_transaction(queue: QueueClient) -> None:
    jobs = queue.enqueue_many(
        [enqueue_args(f"queue_tasks.t{i}", queue="many", args=[i]) for i in range(5)]
    )
    assert [j.task for j in jobs] == [f"queue_tasks.t{i}" for i in range(5)]
    assert len({j.id for j in jobs}) == 5
    with pytest.raises(BadArgument):
        queue.enqueue_many(
            [enqueue_args("queue_tasks.ok", queue="many"), {"task": "x.y", "priority": 101}]
        )
    assert state_counts(queue, "many") == {READY: 5}, "a refused batch stored nothing"


@pytest.mark.parametrize(
    "args",
    [
        {"task": "queue_tasks.x", "priority": 101},
        {"task": "queue_tasks.x", "priority": -101},
        {"task": "queue_tasks.x", "max_attempts": 0},
        {"task": "queue_tasks.x", "queue": ""},
        {"task": "queue_tasks.x", "queue": "q" * 201},
        {"task": "queue_tasks.x", "args": {"not": "an array"}},
        {"task": 5},
        {},
    ],
)
def test_bad_enqueue_arguments(queue: QueueClient, args: dict[str, Any]) -> None:
    with pytest.raises(BadArgument):
        queue.client.request("queue.enqueue", args)


def test_unknown_ids(queue: QueueClient) -> None:
    for call in (queue.get, queue.cancel, lambda i: queue.wait(i, timeout=0.1)):
        with pytest.raises(JobNotFound):
            call("0" * 32)
    with pytest.raises(JobNotFound):
        queue.complete("0" * 32, "token")


# --- dequeue ------------------------------------------------------------------------------------


def test_dequeue_by_priority_then_enqueue_order(queue: QueueClient) -> None:
    priorities = [0, 5, -3, 5, 0, 100, -100]
    jobs = queue.enqueue_many(
        [enqueue_args("queue_tasks.record", queue="prio", priority=p) for p in priorities]
    )
    before = time.time()
    taken = queue.dequeue(["prio"], WORKER, max_jobs=100, lease_seconds=30)
    expected = sorted(jobs, key=lambda j: -j.priority)  # sorted() is stable: FIFO per priority
    assert [j.id for j in taken] == [j.id for j in expected]
    for job in taken:
        assert job.state == RUNNING and job.attempts == 1 and job.worker_ids == [WORKER]
        assert job.lease_token and job.lease_expires_at is not None
        assert before + 29 < job.lease_expires_at < time.time() + 31
        assert job.started_at is not None and job.last_attempted_at == job.started_at
    assert len({j.lease_token for j in taken}) == len(taken)


def test_dequeue_prefers_queues_in_order(queue: QueueClient) -> None:
    low = queue.enqueue("queue_tasks.record", queue="second", priority=100)
    high = queue.enqueue("queue_tasks.record", queue="first", priority=-100)
    taken = queue.dequeue(["first", "second"], WORKER, max_jobs=2)
    assert [j.id for j in taken] == [high.id, low.id]
    assert queue.dequeue(["first", "second"], WORKER) == []


def test_dequeue_blocks_until_a_job_is_enqueued(queue: QueueClient) -> None:
    started = time.monotonic()
    assert queue.dequeue(["idle"], WORKER, wait_ms=300) == []
    assert time.monotonic() - started >= 0.29, "an empty dequeue waits out wait_ms"

    got: list[list[Job]] = []
    waiter = dequeue_in_thread(queue, "wake", got)
    enqueued = queue.enqueue("queue_tasks.record", queue="wake")
    sent = time.monotonic()
    waiter.join(10)
    latency = time.monotonic() - sent
    assert got and [j.id for j in got[0]] == [enqueued.id]
    assert latency < 0.5, f"the blocked dequeue took {latency:.3f} s to see the job"


def test_a_closed_connection_takes_no_job(queue: QueueClient, gateway: GatewayProcess) -> None:
    # A worker killed (or stopped) while blocked in queue.dequeue: its connection closes. The
    # next job must go to a live worker, not to the dead connection (where it would sit RUNNING
    # until the lease ran out, an attempt lost without the task ever running).
    with RawConnection(gateway.socket_path) as dead:
        dead.send(1, "queue.dequeue", {"queues": ["gone"], "worker_id": "dead", "wait_ms": 30_000})
        time.sleep(0.2)  # the dequeue is waiting in the server
    time.sleep(0.2)  # the server has seen the connection close
    job = queue.enqueue("queue_tasks.record", queue="gone")
    taken = queue.dequeue(["gone"], WORKER, wait_ms=1000)
    assert [j.id for j in taken] == [job.id], queue.get(job.id)


def test_run_after_holds_a_job_until_due(queue: QueueClient) -> None:
    due = time.time() + 0.5
    job = queue.enqueue("queue_tasks.record", queue="later", run_after=due)
    assert job.state == SCHEDULED and job.run_after == pytest.approx(due)
    assert queue.dequeue(["later"], WORKER) == []
    taken = take_one(queue, "later", wait_ms=5000)
    assert time.time() >= due - 0.005, "handed out before run_after"
    assert time.time() < due + 0.5, "a scheduled job becomes ready without polling delays"
    assert taken.id == job.id
    past = queue.enqueue("queue_tasks.record", queue="later", run_after=time.time() - 60)
    assert past.state == READY


# --- leases -------------------------------------------------------------------------------------


def test_complete_and_fail_need_the_current_lease(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="lease", max_attempts=2, backoff=0.05)
    first = take_one(queue, "lease", lease_seconds=0.3)
    # The lease expires: a failed attempt (gateway.LeaseExpired), then a retry.
    second = take_one(queue, "lease", lease_seconds=30, wait_ms=5000)
    assert second.id == job.id and second.attempts == 2
    assert second.lease_token != first.lease_token
    assert [e.exception_class_path for e in second.errors] == ["gateway.LeaseExpired"]
    assert second.errors[0].attempt == 1 and second.errors[0].worker_id == WORKER
    with pytest.raises(LeaseLost):
        queue.complete(job.id, first.lease_token or "", "late")
    with pytest.raises(LeaseLost):
        queue.fail(job.id, first.lease_token or "")
    with pytest.raises(LeaseLost):
        queue.heartbeat(job.id, first.lease_token or "")
    done = queue.complete(job.id, second.lease_token or "", {"ok": [1, 2.5, "x", None, True]})
    assert done.state == SUCCESSFUL and done.return_value == {"ok": [1, 2.5, "x", None, True]}
    assert done.finished_at is not None and done.worker_ids == [WORKER, WORKER]
    with pytest.raises(LeaseLost):
        queue.complete(job.id, second.lease_token or "", "twice")
    assert queue.get(job.id).return_value == {"ok": [1, 2.5, "x", None, True]}


def test_an_expired_last_attempt_fails_the_job(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="expire")
    take_one(queue, "expire", lease_seconds=0.2)
    finished = queue.wait(job.id, timeout=5)
    assert finished.state == FAILED
    assert [e.exception_class_path for e in finished.errors] == ["gateway.LeaseExpired"]


def test_heartbeat_extends_the_lease(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="beat")
    taken = take_one(queue, "beat", lease_seconds=0.8)
    token = taken.lease_token or ""
    for _ in range(10):  # 2 s in all, more than twice the lease
        time.sleep(0.2)
        beat = queue.heartbeat(job.id, token, lease_seconds=0.8)
        assert not beat.cancelled
        assert beat.lease_expires_at == pytest.approx(time.time() + 0.8, abs=0.2)
    assert queue.get(job.id).state == RUNNING
    assert queue.complete(job.id, token).state == SUCCESSFUL


# --- failures and retries -----------------------------------------------------------------------


def test_failed_attempts_back_off_exponentially(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="retry", max_attempts=3, backoff=0.1)
    for attempt, delay in ((1, 0.1), (2, 0.2)):
        taken = take_one(queue, "retry", wait_ms=5000)
        assert taken.attempts == attempt
        failed_at = time.time()
        after = queue.fail(
            job.id,
            taken.lease_token or "",
            exception_class_path="builtins.ValueError",
            traceback=f"Traceback ...\nValueError: attempt {attempt}\n",
        )
        assert after.state == SCHEDULED and after.run_after is not None
        # Jitter draws the delay from the upper half of backoff * 2^(attempts-1).
        assert failed_at + delay / 2 - 0.02 <= after.run_after <= failed_at + delay + 0.05
    last = take_one(queue, "retry", wait_ms=5000)
    final = queue.fail(job.id, last.lease_token or "", exception_class_path="builtins.KeyError")
    assert final.state == FAILED and final.finished_at is not None
    assert [(e.attempt, e.exception_class_path) for e in final.errors] == [
        (1, "builtins.ValueError"),
        (2, "builtins.ValueError"),
        (3, "builtins.KeyError"),
    ]
    assert final.errors[0].traceback.endswith("ValueError: attempt 1\n")
    assert all(e.worker_id == WORKER and e.at is not None for e in final.errors)


def test_fail_without_retry_is_final(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="noretry", max_attempts=5)
    taken = take_one(queue, "noretry")
    assert queue.fail(job.id, taken.lease_token or "", retry=False).state == FAILED


def test_retry_failed_requeues_by_queue_or_id(queue: QueueClient) -> None:
    failed = {}
    for name in ("rf1", "rf2"):
        job = queue.enqueue("queue_tasks.record", queue=name)
        queue.fail(job.id, take_one(queue, name).lease_token or "", retry=False)
        failed[name] = job.id
    assert queue.retry_failed(queue="rf1") == 1
    again = queue.get(failed["rf1"])
    assert again.state == READY and again.attempts == 0
    assert queue.get(failed["rf2"]).state == FAILED
    assert queue.retry_failed(ids=[failed["rf2"]]) == 1
    assert queue.retry_failed() == 0
    assert take_one(queue, "rf2").attempts == 1


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_ready_and_running_jobs(queue: QueueClient) -> None:
    ready = queue.enqueue("queue_tasks.record", queue="cancel")
    cancelled = queue.cancel(ready.id)
    assert cancelled.state == CANCELLED and cancelled.finished_at is not None
    with pytest.raises(InvalidState):
        queue.cancel(ready.id)
    assert queue.dequeue(["cancel"], WORKER) == []

    running = queue.enqueue("queue_tasks.record", queue="cancel")
    token = take_one(queue, "cancel").lease_token or ""
    assert queue.cancel(running.id).state == CANCELLED
    try:
        beat = queue.heartbeat(running.id, token)
    except LeaseLost:  # PROTOCOL.md allows either answer to the holder of a cancelled job
        pass
    else:
        assert beat.cancelled
    with pytest.raises(LeaseLost):
        queue.complete(running.id, token, "too late")
    assert queue.get(running.id).state == CANCELLED

    done = queue.enqueue("queue_tasks.record", queue="cancel")
    queue.complete(done.id, take_one(queue, "cancel").lease_token or "")
    with pytest.raises(InvalidState):
        queue.cancel(done.id)


# --- unique keys --------------------------------------------------------------------------------


def test_unique_key_returns_the_live_job(queue: QueueClient) -> None:
    first = queue.enqueue("queue_tasks.record", queue="uniq", unique_key="report:42")
    assert first.unique_key == "report:42"
    assert queue.enqueue("queue_tasks.other", queue="uniq", unique_key="report:42").id == first.id
    scheduled = queue.enqueue(
        "queue_tasks.record", queue="uniq", unique_key="later", run_after=time.time() + 3600
    )
    assert queue.enqueue("queue_tasks.record", queue="uniq", unique_key="later").id == (
        scheduled.id
    )
    token = take_one(queue, "uniq").lease_token or ""
    assert queue.enqueue("queue_tasks.record", queue="uniq", unique_key="report:42").id == first.id
    queue.complete(first.id, token)
    fresh = queue.enqueue("queue_tasks.record", queue="uniq", unique_key="report:42")
    assert fresh.id != first.id and fresh.state == READY
    batch = queue.enqueue_many(
        [enqueue_args("queue_tasks.record", queue="uniq", unique_key="report:42")] * 2
    )
    assert {j.id for j in batch} == {fresh.id}


# --- pause, wait, prune, stats ------------------------------------------------------------------


def test_pause_and_resume(queue: QueueClient, gateway: GatewayProcess) -> None:
    queue.pause("held")
    job = queue.enqueue("queue_tasks.record", queue="held")
    assert job.state == READY, "a paused queue still accepts jobs"
    assert queue.dequeue(["held"], WORKER, wait_ms=200) == []
    assert queue.stats()["queues"]["held"]["paused"] is True

    gateway.stop()
    gateway.start()
    queue.close()
    assert queue.stats()["queues"]["held"]["paused"] is True, "pause persists across restarts"
    assert queue.dequeue(["held"], WORKER, wait_ms=100) == []

    got: list[list[Job]] = []
    waiter = dequeue_in_thread(queue, "held", got)
    resumed = time.monotonic()
    queue.resume("held")
    waiter.join(10)
    assert got and [j.id for j in got[0]] == [job.id]
    assert time.monotonic() - resumed < 0.5, "resume wakes a blocked dequeue"
    assert queue.stats()["queues"]["held"]["paused"] is False


def test_wait_returns_when_the_job_finishes(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="waits")
    started = time.monotonic()
    assert queue.wait(job.id, timeout=0.3).state == READY
    assert time.monotonic() - started >= 0.29

    token = take_one(queue, "waits").lease_token or ""
    finisher = threading.Timer(0.2, lambda: queue.complete(job.id, token, 7))
    finisher.start()
    started = time.monotonic()
    finished = queue.wait(job.id, timeout=10)
    finisher.join()
    assert finished.state == SUCCESSFUL and finished.return_value == 7
    assert time.monotonic() - started < 1.0, "queue.wait answers when the job finishes"
    assert queue.wait(job.id, timeout=5).state == SUCCESSFUL, "a finished job answers at once"


def test_prune_deletes_old_finished_jobs(queue: QueueClient) -> None:
    done = queue.enqueue("queue_tasks.record", queue="prune")
    queue.complete(done.id, take_one(queue, "prune").lease_token or "")
    failed = queue.enqueue("queue_tasks.record", queue="prune")
    queue.fail(failed.id, take_one(queue, "prune").lease_token or "", retry=False)
    cancelled = queue.cancel(queue.enqueue("queue_tasks.record", queue="prune").id)
    live = queue.enqueue("queue_tasks.record", queue="prune")
    assert queue.prune(older_than=3600) == 0
    time.sleep(0.05)
    assert queue.prune(older_than=0.01, states=[SUCCESSFUL]) == 1
    with pytest.raises(JobNotFound):
        queue.get(done.id)
    assert queue.prune(older_than=0.01) == 2
    for gone in (failed, cancelled):
        with pytest.raises(JobNotFound):
            queue.get(gone.id)
    assert queue.get(live.id).state == READY


def test_stats_counts_states_and_pickups(queue: QueueClient) -> None:
    queue.enqueue_many([enqueue_args("queue_tasks.record", queue="st")] * 3)
    queue.enqueue("queue_tasks.record", queue="st", run_after=time.time() + 3600)
    queue.complete(*(lambda j: (j.id, j.lease_token or ""))(take_one(queue, "st")))
    assert state_counts(queue, "st") == {READY: 2, SCHEDULED: 1, SUCCESSFUL: 1}
    stats = queue.stats()["queues"]["st"]
    assert stats["paused"] is False
    assert stats["oldest_ready_age"] is not None and stats["oldest_ready_age"] >= 0
    latency = stats["pickup_latency"]
    assert latency["count"] == 1
    assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"] < 5
