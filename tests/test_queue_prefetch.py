"""Prefetch on the wire: ``queue.dequeue`` with ``max_jobs`` above 1, and ``queue.release``.

Black-box tests against the real gateway (PROTOCOL.md, "Prefetch"): a job handed out after the
first of an answer starts only once the jobs before it were reported; one whose lease ends before
that goes back ``READY`` as if never handed out; ``queue.release`` gives one back at once; reports
may be pipelined on one connection; and after a kill -9 every job still handed out counts as
started.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from gateway_client import BadArgument, InvalidState, LeaseLost
from gateway_client.frames import FrameDecoder, encode_frame, unpack_payload
from gateway_client.queue import FAILED, READY, RUNNING, SUCCESSFUL, Job, QueueClient
from gateway_harness import GatewayProcess

WORKER = "tests:prefetch"


def release(queue: QueueClient, job: Job, token: str | None = None) -> Job:
    body = queue.client.call(
        "queue.release", id=job.id, lease_token=job.lease_token if token is None else token
    )
    return Job.from_map(body)


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_release_gives_back_only_jobs_that_have_not_started(queue: QueueClient) -> None:
    queued = [queue.enqueue("queue_tasks.record", queue="rel") for _ in range(3)]
    held = queue.dequeue(["rel"], WORKER, max_jobs=3)
    assert [j.id for j in held] == [j.id for j in queued]
    with pytest.raises(InvalidState, match="has started"):
        release(queue, held[0])  # the first of an answer starts when handed out
    with pytest.raises(LeaseLost):
        release(queue, held[2], token="0" * 32)
    back = release(queue, held[2])
    assert back.id == held[2].id and back.state == READY
    assert back.attempts == 0 and back.worker_ids == [] and back.started_at is None
    assert back.last_attempted_at is None and back.errors == []
    with pytest.raises(LeaseLost):
        release(queue, held[2])  # its lease went with it
    queue.complete(held[0].id, held[0].lease_token or "")
    with pytest.raises(InvalidState):
        release(queue, held[1])  # started once the job before it was reported
    queue.complete(held[1].id, held[1].lease_token or "")
    [again] = queue.dequeue(["rel"], WORKER, max_jobs=3)
    assert again.id == held[2].id and again.attempts == 1 and again.worker_ids == [WORKER]


def test_release_checks_its_arguments(queue: QueueClient) -> None:
    with pytest.raises(BadArgument):
        queue.client.call("queue.release", id="x")
    with pytest.raises(BadArgument):
        queue.client.call("queue.release", id=1, lease_token="t")


def test_unstarted_jobs_whose_lease_ends_go_back_without_an_attempt(queue: QueueClient) -> None:
    queued = [queue.enqueue("queue_tasks.record", queue="died") for _ in range(4)]
    held = queue.dequeue(["died"], WORKER, max_jobs=4, lease_seconds=0.5)
    assert len(held) == 4 and all(j.attempts == 1 for j in held)
    queue.fail(held[0].id, held[0].lease_token or "", retry=False)  # reported: job 2 started
    # The worker dies while running job 2: no more heartbeats or reports.
    wait_until(lambda: queue.get(held[1].id).state == FAILED, "job 2's lease expired")
    failed = queue.get(held[1].id)
    assert [e.exception_class_path for e in failed.errors] == ["gateway.LeaseExpired"]
    wait_until(
        lambda: all(queue.get(j.id).state == READY for j in held[2:]), "jobs 3 and 4 came back"
    )
    for job in held[2:]:
        stored = queue.get(job.id)
        assert stored.attempts == 0 and stored.worker_ids == [] and stored.errors == []
        assert stored.started_at is None
        with pytest.raises(LeaseLost):
            queue.complete(job.id, job.lease_token or "")
    again = queue.dequeue(["died"], "tests:other", max_jobs=4)
    assert [j.id for j in again] == [queued[2].id, queued[3].id]  # they kept their place
    assert [j.worker_ids for j in again] == [["tests:other"], ["tests:other"]]


def test_heartbeats_keep_held_jobs(queue: QueueClient) -> None:
    for _ in range(2):
        queue.enqueue("queue_tasks.record", queue="beat")
    held = queue.dequeue(["beat"], WORKER, max_jobs=2, lease_seconds=0.6)
    for _ in range(4):
        time.sleep(0.3)
        for job in held:
            queue.heartbeat(job.id, job.lease_token or "", lease_seconds=0.6)
    for job in held:
        done = queue.complete(job.id, job.lease_token or "", "ok")
        assert done.state == SUCCESSFUL and done.attempts == 1


def test_pipelined_reports_on_one_connection(gateway: GatewayProcess, queue: QueueClient) -> None:
    queued = [queue.enqueue("queue_tasks.record", queue="pipe") for _ in range(6)]
    held = queue.dequeue(["pipe"], WORKER, max_jobs=3)
    # Three completions and a combined dequeue in one write, answers read afterwards.
    frames = b"".join(
        encode_frame([i + 1, "queue.complete", {"id": j.id, "lease_token": j.lease_token}])
        for i, j in enumerate(held[:2])
    )
    last = held[2]
    frames += encode_frame(
        [
            3,
            "queue.dequeue",
            {
                "queues": ["pipe"],
                "worker_id": WORKER,
                "max_jobs": 3,
                "complete": {"id": last.id, "lease_token": last.lease_token},
            },
        ]
    )
    answers: dict[int, Any] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(gateway.socket_path)
        sock.sendall(frames)
        decoder = FrameDecoder(1 << 24)
        while len(answers) < 3:
            data = sock.recv(65536)
            assert data, "the gateway closed the connection"
            for payload in decoder.feed(data):
                request_id, status, body = unpack_payload(payload)
                assert status == 0, body
                answers[request_id] = body
    assert answers[1]["state"] == SUCCESSFUL and answers[2]["state"] == SUCCESSFUL
    assert answers[3]["completion_error"] is None
    assert [j["id"] for j in answers[3]["jobs"]] == [j.id for j in queued[3:]]
    assert all(queue.get(j.id).state == SUCCESSFUL for j in held)


def test_after_kill_9_every_handed_out_job_counts_as_started(gateway: GatewayProcess) -> None:
    queue = QueueClient(gateway.socket_path)
    for _ in range(3):
        queue.enqueue("queue_tasks.record", queue="crash", max_attempts=2, backoff=0.01)
    held = queue.dequeue(["crash"], WORKER, max_jobs=3, lease_seconds=1.0)
    gateway.kill()
    gateway.start()
    queue.close()
    assert all(queue.get(j.id).state == RUNNING for j in held)  # the claims survived
    with pytest.raises(InvalidState):
        release(queue, held[2])  # which ones started is not known after a restart
    # Its holder can still finish any of them under its lease.
    assert queue.complete(held[1].id, held[1].lease_token or "").state == SUCCESSFUL
    wait_until(lambda: queue.get(held[2].id).errors, "job 3's lease expired")
    assert queue.get(held[2].id).attempts == 1  # the expiry was a failed attempt
    queue.close()
