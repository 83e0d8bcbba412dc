"""``queue.dequeue`` with ``complete``: a finished job reported together with the next dequeue.

Black-box tests against the real gateway: the reply's shape, one transaction for the completion
and the claim (both survive a kill -9 once answered), a refused completion that leaves its job
alone while the dequeue goes on, a dequeue that never waits, and the worker's use of it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from gateway_client import BadArgument
from gateway_client.queue import READY, RUNNING, SUCCESSFUL, Job, QueueClient
from gateway_client.worker.dequeue import DequeueChannel
from gateway_client.worker.options import WorkerOptions
from gateway_client.worker.process import WorkerProcess
from gateway_harness import GatewayProcess
from queue_harness import WorkerPool, wait_finished

WORKER = "tests:complete"


def complete_and_dequeue(
    queue: QueueClient, job: Job, name: str, value: Any = None, **args: Any
) -> dict[str, Any]:
    """The raw answer of a dequeue of queue ``name`` that completes ``job``."""
    request = {"queues": [name], "worker_id": WORKER, **args}
    request["complete"] = {"id": job.id, "lease_token": job.lease_token or ""}
    if value is not None:
        request["complete"]["return_value"] = value
    body = queue.client.call("queue.dequeue", **request)
    assert isinstance(body, dict) and set(body) == {"jobs", "completed", "completion_error"}
    return body


def test_the_completion_is_stored_and_the_next_job_handed_out(queue: QueueClient) -> None:
    first, second = (queue.enqueue("queue_tasks.record", queue="cd") for _ in range(2))
    running = queue.dequeue(["cd"], WORKER)[0]
    assert running.id == first.id
    body = complete_and_dequeue(queue, running, "cd", {"answer": [42]})
    assert body["completion_error"] is None
    completed = Job.from_map(body["completed"])
    assert completed.id == first.id and completed.state == SUCCESSFUL
    assert completed.return_value == {"answer": [42]}
    assert "lease_token" not in body["completed"]  # as queue.complete answers
    [handed] = [Job.from_map(j) for j in body["jobs"]]
    assert handed.id == second.id and handed.state == RUNNING and handed.lease_token
    assert queue.get(first.id).raw == completed.raw
    assert queue.get(second.id).state == RUNNING


def test_it_never_waits(queue: QueueClient) -> None:
    queue.enqueue("queue_tasks.record", queue="nowait")
    running = queue.dequeue(["nowait"], WORKER)[0]
    started = time.monotonic()
    body = complete_and_dequeue(queue, running, "nowait", wait_ms=10_000)
    assert time.monotonic() - started < 2
    assert body["jobs"] == [] and body["completion_error"] is None
    assert queue.get(running.id).state == SUCCESSFUL


def test_a_lost_lease_is_refused_and_the_dequeue_goes_on(queue: QueueClient) -> None:
    job = queue.enqueue("queue_tasks.record", queue="lost", max_attempts=2, backoff=30)
    other = queue.enqueue("queue_tasks.record", queue="lost")
    expired = queue.dequeue(["lost"], WORKER, lease_seconds=0.2)[0]
    assert expired.id == job.id
    deadline = time.monotonic() + 5
    while not queue.get(job.id).errors:
        assert time.monotonic() < deadline, "the lease did not expire"
        time.sleep(0.05)
    body = complete_and_dequeue(queue, expired, "lost", "late")
    assert body["completed"] is None
    assert body["completion_error"]["code"] == "lease_lost"
    assert body["completion_error"]["status"] == 33
    assert [j["id"] for j in body["jobs"]] == [other.id]
    after = queue.get(job.id)  # the expired attempt stands: the job will run again
    assert after.return_value is None and after.finished_at is None
    assert [e.exception_class_path for e in after.errors] == ["gateway.LeaseExpired"]


def test_a_completion_twice_or_of_an_unknown_job_is_refused(queue: QueueClient) -> None:
    queue.enqueue("queue_tasks.record", queue="twice")
    running = queue.dequeue(["twice"], WORKER)[0]
    assert complete_and_dequeue(queue, running, "twice", 1)["completion_error"] is None
    again = complete_and_dequeue(queue, running, "twice", 2)
    assert again["completion_error"]["code"] == "lease_lost"
    assert queue.get(running.id).return_value == 1
    unknown = Job.from_map({**running.raw, "id": "0" * 32})
    missing = complete_and_dequeue(queue, unknown, "twice")
    assert missing["completion_error"]["code"] == "job_not_found"


@pytest.mark.parametrize(
    "complete",
    [{}, {"id": "x"}, {"id": 1, "lease_token": "t"}, {"id": "x", "lease_token": None}],
)
def test_a_malformed_complete_is_refused_and_nothing_done(
    queue: QueueClient, complete: dict[str, Any]
) -> None:
    queue.enqueue("queue_tasks.record", queue="malformed")
    with pytest.raises(BadArgument):
        queue.client.call(
            "queue.dequeue", queues=["malformed"], worker_id=WORKER, complete=complete
        )
    assert queue.stats()["queues"]["malformed"]["states"].get(READY) == 1


def test_an_answered_completion_and_claim_survive_kill_9(gateway: GatewayProcess) -> None:
    queue = QueueClient(gateway.socket_path)
    first, second = (queue.enqueue("queue_tasks.record", queue="crash") for _ in range(2))
    running = queue.dequeue(["crash"], WORKER, lease_seconds=3600)[0]
    body = complete_and_dequeue(queue, running, "crash", "kept", lease_seconds=3600)
    [handed] = [Job.from_map(j) for j in body["jobs"]]
    gateway.kill()
    gateway.start()
    queue.close()
    assert queue.get(first.id).state == SUCCESSFUL
    assert queue.get(first.id).return_value == "kept"
    assert queue.get(second.id).state == RUNNING
    # The claim's lease survived with it: its holder can finish the job.
    assert queue.complete(second.id, handed.lease_token or "", "done").state == SUCCESSFUL
    queue.close()


def test_the_channel_reports_and_takes_in_one_call(
    queue: QueueClient, gateway: GatewayProcess
) -> None:
    queue.enqueue("queue_tasks.record", queue="channel")
    nxt = queue.enqueue("queue_tasks.record", queue="channel")
    stop_r, stop_w = os.pipe()
    channel = DequeueChannel(gateway.socket_path, stop_r)
    try:
        args: dict[str, Any] = {"queues": ["channel"], "worker_id": WORKER}
        running = channel.dequeue(args, timeout=5)[0]
        os.write(stop_w, b"s")  # a stop request does not cut the combined call short
        done = channel.complete_and_dequeue(
            {**args, "complete": {"id": running.id, "lease_token": running.lease_token}}, 5
        )
        assert done.completion_error is None and done.completed is not None
        assert done.completed.state == SUCCESSFUL
        assert [j.id for j in done.jobs] == [nxt.id]
        late = channel.complete_and_dequeue(
            {**args, "complete": {"id": running.id, "lease_token": running.lease_token}}, 5
        )
        assert type(late.completion_error).__name__ == "LeaseLost" and late.completed is None
    finally:
        channel.close()
        os.close(stop_r)
        os.close(stop_w)


def test_workers_run_every_job_once_and_finish_with_an_empty_queue(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    # Completions ride on dequeues while jobs are waiting; the last ones find the queue empty,
    # and the workers go back to a waiting dequeue that a later enqueue answers.
    jobs = queue.enqueue_many(
        [{"task": "queue_tasks.record", "queue": "drain", "args": [i]} for i in range(300)]
    )
    run = workers.start(gateway.socket_path, "--queue", "drain", "--concurrency", "3")
    done = wait_finished(queue, [j.id for j in jobs], timeout=60)
    assert all(j.state == SUCCESSFUL for j in done)
    late = queue.enqueue("queue_tasks.record", queue="drain", args=["late"])
    assert wait_finished(queue, [late.id], timeout=10)[0].state == SUCCESSFUL
    assert run.stop() == 0
    counts = workers.counts()
    assert all(counts[j.id] == 1 for j in [*jobs, late]), "a job ran twice or not at all"


def test_the_worker_reports_with_the_next_dequeue_and_handles_a_lost_lease(
    queue: QueueClient, gateway: GatewayProcess
) -> None:
    # One WorkerProcess in this process, driven job by job (its keeper thread is not started).
    options = WorkerOptions(socket=gateway.socket_path, queues=("inproc",), lease_seconds=30)
    process = WorkerProcess(options, "tests:inproc")
    try:
        late = queue.enqueue("builtins.abs", queue="inproc", args=[-3], max_attempts=2, backoff=30)
        nxt = queue.enqueue("builtins.abs", queue="inproc", args=[-4])
        lease_request = {"queues": ["inproc"], "worker_id": "tests:inproc", "lease_seconds": 0.2}
        [held] = process.channel.dequeue(lease_request, timeout=5)
        assert held.id == late.id
        deadline = time.monotonic() + 5
        while not queue.get(late.id).errors:
            assert time.monotonic() < deadline, "the lease did not expire"
            time.sleep(0.05)
        # Its lease is gone: the completion is refused, the job is left to run again, and the
        # next job still comes with the answer.
        [handed] = process._run(held, take_next=True)
        assert handed.id == nxt.id
        assert queue.get(late.id).finished_at is None
        assert queue.get(late.id).return_value is None
        assert process._run(handed, take_next=True) == []
        finished = queue.get(nxt.id)
        assert finished.state == SUCCESSFUL and finished.return_value == 4
    finally:
        process.keeper.close()
        process.channel.close()
        process.queue.close()
