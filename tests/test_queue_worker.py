"""The worker (``python -m gateway_client.worker``) as real processes against the real gateway.

Tasks live in ``tests/queue_tasks.py`` and write one record per call (see there); the tests read
the records to prove which jobs ran, how often, in which process and in what order. Processes
are killed with SIGKILL where the acceptance criteria say so.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from gateway_client import LeaseLost
from gateway_client.queue import (
    CANCELLED,
    FAILED,
    READY,
    SUCCESSFUL,
    Job,
    QueueClient,
    enqueue_args,
)
from gateway_harness import GatewayProcess
from queue_harness import WorkerPool, get_many, state_counts, wait_finished
from wire import wait_until

TIMEOUT_CLASS = "gateway_client.worker.errors.TaskTimeout"
SHUTDOWN_CLASS = "gateway_client.worker.errors.WorkerShutdown"


# --- exactly once at volume ---------------------------------------------------------------------

JOBS = 10_000


def test_four_workers_complete_every_job_exactly_once(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    run = workers.start(gateway.socket_path, "--queue", "bulk", "--concurrency", "4")
    pids = run.wait_children(4)
    started = time.monotonic()
    ids: list[str] = []
    for start in range(0, JOBS, 500):
        batch = [
            enqueue_args("queue_tasks.record", queue="bulk", args=[f"n{i}"])
            for i in range(start, min(start + 500, JOBS))
        ]
        ids.extend(job.id for job in queue.enqueue_many(batch))
    assert len(set(ids)) == JOBS
    wait_until(
        lambda: state_counts(queue, "bulk").get(SUCCESSFUL) == JOBS,
        120,
        interval=0.1,
        message=f"not all {JOBS} jobs finished: {state_counts(queue, 'bulk')}",
    )
    elapsed = time.monotonic() - started
    print(f"\n{JOBS} jobs through 4 worker processes in {elapsed:.2f} s ({JOBS / elapsed:.0f}/s)")

    assert state_counts(queue, "bulk") == {SUCCESSFUL: JOBS}
    records = workers.read()
    runs = Counter(r.job_id for r in records)
    assert set(runs) == set(ids), "every job ran, and only these"
    assert max(runs.values()) == 1, [i for i, n in runs.items() if n > 1][:10]
    assert {r.pid for r in records} == set(pids), "all four processes took jobs"
    jobs = get_many(queue, ids)
    assert all(j.state == SUCCESSFUL and j.attempts == 1 for j in jobs)
    assert [j.return_value for j in jobs] == [f"n{i}" for i in range(JOBS)]
    wait_until(lambda: len(run.job_lines()) == JOBS, 10, message="one log line per job")
    assert run.stop() == 0


# --- killed workers -----------------------------------------------------------------------------


def block(queue: QueueClient, release: Path, name: str, **options: object) -> Job:
    """Enqueue a ``block_until`` job that runs until ``release`` exists."""
    return queue.enqueue(
        "queue_tasks.block_until",
        queue=name,
        args=[str(release)],
        kwargs={"label": name},
        **options,  # type: ignore[arg-type]
    )


def test_kill_9_of_a_worker_reruns_its_job_once(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run = workers.start(gateway.socket_path, "--queue", "kill", "--lease-seconds", "1")
    (first_pid,) = run.wait_children(1)
    job = block(queue, release, "kill", max_attempts=3, backoff=0.1)
    first = workers.wait_records(1)[0]
    assert (first.job_id, first.attempt, first.pid) == (job.id, 1, first_pid)
    dead_token = first.label.split()[2]

    os.kill(first_pid, signal.SIGKILL)
    # The supervisor replaces the process; the job comes back once the 1 s lease ran out.
    second = workers.wait_records(2, timeout=15)[1]
    assert (second.job_id, second.attempt) == (job.id, 2)
    assert second.pid != first_pid and second.pid in run.children()
    assert second.label.split()[2] != dead_token
    with pytest.raises(LeaseLost):
        queue.complete(job.id, dead_token, "from the dead worker")
    release.touch()
    done = queue.wait(job.id, timeout=10)
    assert done.state == SUCCESSFUL and done.return_value == "released"
    assert [e.exception_class_path for e in done.errors] == ["gateway.LeaseExpired"]
    assert done.attempts == 2 and len(done.worker_ids) == 2
    with pytest.raises(LeaseLost):
        queue.complete(job.id, dead_token, "from the dead worker")
    assert queue.get(job.id).return_value == "released"
    labels = [r.label.split()[1] for r in workers.read() if r.job_id == job.id]
    assert labels == ["start", "start", "done"], "started twice, completed once"


def test_task_timeout_fails_the_job_and_replaces_the_process(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    run = workers.start(gateway.socket_path, "--queue", "slow", "--task-timeout", "0.5")
    (first_pid,) = run.wait_children(1)
    job = queue.enqueue("queue_tasks.sleep_for", queue="slow", args=[60])
    started = time.monotonic()
    failed = queue.wait(job.id, timeout=15)
    assert failed.state == FAILED
    assert 0.45 < time.monotonic() - started < 5
    (error,) = failed.errors
    assert error.exception_class_path == TIMEOUT_CLASS
    assert "sleep_for" in error.traceback, "the traceback shows where the task was stopped"
    assert wait_until(lambda: run.children() and run.children()[0] != first_pid, 10)
    after = queue.enqueue("queue_tasks.record", queue="slow", args=["next"])
    assert queue.wait(after.id, timeout=10).return_value == "next"
    assert any("note=timeout" in line and job.id in line for line in run.job_lines())


def test_cancelling_a_running_job_stops_it(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    run = workers.start(gateway.socket_path, "--queue", "cancel", "--lease-seconds", "0.6")
    (first_pid,) = run.wait_children(1)
    job = block(queue, tmp_path / "never", "cancel")
    workers.wait_records(1)
    assert queue.cancel(job.id).state == CANCELLED
    # The next heartbeat (every 0.2 s) tells the worker, which ends the task's process.
    wait_until(lambda: run.children() and run.children()[0] != first_pid, 10)
    assert any("state=CANCELLED" in line and job.id in line for line in run.job_lines())
    assert queue.get(job.id).state == CANCELLED
    after = queue.enqueue("queue_tasks.record", queue="cancel", args=["next"])
    assert queue.wait(after.id, timeout=10).state == SUCCESSFUL


# --- graceful shutdown --------------------------------------------------------------------------


def test_sigterm_lets_running_jobs_finish(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run = workers.start(
        gateway.socket_path,
        *("--queue", "term", "--concurrency", "2", "--shutdown-timeout", "20"),
        *("--dequeue-wait", "1"),
    )
    run.wait_children(2)
    job = block(queue, release, "term")
    workers.wait_records(1)
    run.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    # The idle process stops at once; the busy one goes on with its job.
    wait_until(lambda: len(run.children()) == 1, 5)
    later = queue.enqueue("queue_tasks.record", queue="term", args=["after SIGTERM"])
    release.touch()
    assert run.stop(timeout=10) == 0
    assert queue.get(job.id).state == SUCCESSFUL
    assert queue.get(later.id).state == READY, "no job is taken after SIGTERM"


def test_sigterm_gives_back_jobs_still_running_at_the_deadline(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run = workers.start(gateway.socket_path, "--queue", "back", "--shutdown-timeout", "0.5")
    run.wait_children(1)
    job = block(queue, release, "back")  # max_attempts 1: giving it back must still re-run it
    workers.wait_records(1)
    stopped = time.monotonic()
    assert run.stop(timeout=10) == 0
    assert time.monotonic() - stopped < 5
    given_back = queue.get(job.id)
    assert given_back.state == READY, given_back
    assert [e.exception_class_path for e in given_back.errors] == [SHUTDOWN_CLASS]
    assert any("note=shutdown" in line for line in run.job_lines())

    release.touch()
    workers.start(gateway.socket_path, "--queue", "back")
    done = queue.wait(job.id, timeout=15)
    assert done.state == SUCCESSFUL
    labels = [r.label.split()[1] for r in workers.read() if r.job_id == job.id]
    assert labels == ["start", "start", "done"]


def test_sigterm_of_an_idle_worker_leaves_jobs_for_others(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    run = workers.start(
        gateway.socket_path, "--queue", "idle", "--concurrency", "2", "--dequeue-wait", "30"
    )
    run.wait_children(2)
    time.sleep(0.2)  # both processes are now blocked in queue.dequeue
    stopped = time.monotonic()
    assert run.stop(timeout=40) == 0
    # The worker half-closes its dequeue connection and reads on until the reply or the end of
    # the stream; the gateway drops a waiting dequeue when its client's stream ends.
    assert time.monotonic() - stopped < 3, "SIGTERM is held up by the 30 s long-poll"
    job = queue.enqueue("queue_tasks.record", queue="idle")
    assert queue.dequeue(["idle"], "tests:1", wait_ms=1000)[0].id == job.id, (
        "the stopped worker's dequeue must not have taken the job"
    )


def test_sigterm_repeated_while_stopping_still_exits_cleanly(
    gateway: GatewayProcess, workers: WorkerPool
) -> None:
    # Deploy tools signal again when a process takes a moment to go. Every SIGTERM after the
    # first one means the same and must not end the stop as a death by signal.
    run = workers.start(gateway.socket_path, "--queue", "again", "--concurrency", "2")
    run.wait_children(2)
    time.sleep(0.3)  # the worker processes have installed their own handlers
    assert run.proc is not None
    deadline = time.monotonic() + 10
    while run.proc.poll() is None and time.monotonic() < deadline:
        run.proc.send_signal(signal.SIGTERM)
        time.sleep(0.02)
    assert run.proc.wait(5) == 0, run.log_text()


def test_workers_stop_when_their_supervisor_is_killed(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run = workers.start(
        gateway.socket_path, "--queue", "orphan", "--concurrency", "2", "--dequeue-wait", "30"
    )
    children = run.wait_children(2)
    job = block(queue, release, "orphan")
    busy = workers.wait_records(1)[0].pid
    (idle,) = set(children) - {busy}
    os.kill(run.pid, signal.SIGKILL)
    run.proc.wait(5)  # type: ignore[union-attr]
    # The idle orphan stops at once; the busy one finishes its job first, then stops too.
    wait_until(lambda: not alive(idle), 5)
    later = queue.enqueue("queue_tasks.record", queue="orphan")
    release.touch()
    assert queue.wait(job.id, timeout=10).state == SUCCESSFUL
    wait_until(lambda: not alive(busy), 10)
    assert queue.get(later.id).state == READY, "an orphaned worker took a job"


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_max_tasks_per_child_replaces_processes(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    jobs = queue.enqueue_many([enqueue_args("queue_tasks.record", queue="mtpc")] * 7)
    workers.start(gateway.socket_path, "--queue", "mtpc", "--max-tasks-per-child", "3")
    wait_finished(queue, [j.id for j in jobs])
    pids = [r.pid for r in workers.read()]
    assert len(pids) == 7
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]


# --- scheduling ---------------------------------------------------------------------------------


def test_priorities_preference_and_log_lines(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    specs = [
        ("low", "a", 0),
        ("high", "b", -50),
        ("low", "c", 90),
        ("high", "d", 10),
        ("high", "e", 10),
        ("low", "f", -1),
        ("high", "g", 100),
    ]
    jobs = queue.enqueue_many(
        [
            enqueue_args("queue_tasks.record", queue=q, args=[label], priority=p)
            for q, label, p in specs
        ]
    )
    run = workers.start(gateway.socket_path, "--queue", "high", "--queue", "low")
    wait_finished(queue, [j.id for j in jobs])
    assert [r.label for r in workers.read()] == ["g", "d", "e", "b", "c", "a", "f"]
    # A worker logs a job's line right after the gateway stored its outcome.
    lines = wait_until(lambda: len(lines := run.job_lines()) == len(jobs) and lines, 5)
    for job in jobs:
        (line,) = [line for line in lines if f"job={job.id}" in line]
        for field in (
            "task=queue_tasks.record",
            f"queue={job.queue}",
            "state=SUCCESSFUL",
            "attempt=1",
            "duration=",
            "worker=",
        ):
            assert field in line, line


def test_run_after_and_retries_through_the_worker(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    workers.start(gateway.socket_path, "--queue", "sched")
    due = time.time() + 0.5
    deferred = queue.enqueue("queue_tasks.record", queue="sched", args=["later"], run_after=due)
    flaky = queue.enqueue(
        "queue_tasks.fail_first", queue="sched", args=[2], max_attempts=3, backoff=0.1
    )
    done = wait_finished(queue, [deferred.id, flaky.id])
    records = workers.read()
    (ran,) = [r for r in records if r.job_id == deferred.id]
    assert ran.at >= due - 0.005
    assert done[1].state == SUCCESSFUL and done[1].return_value == "finally"
    assert [e.exception_class_path for e in done[1].errors] == ["builtins.ValueError"] * 2
    assert "attempt 1 fails on purpose" in done[1].errors[0].traceback
    attempts = [r for r in records if r.job_id == flaky.id]
    assert [r.attempt for r in attempts] == [1, 2, 3]
    # Backoff 0.1 s doubles per attempt; jitter keeps the upper half of each delay.
    assert attempts[1].at - attempts[0].at >= 0.05
    assert attempts[2].at - attempts[1].at >= 0.1


def test_plain_tasks_results_and_failures(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    workers.start(gateway.socket_path, "--queue", "plain", "--concurrency", "2")
    jobs = queue.enqueue_many(
        [
            enqueue_args("queue_tasks.add", queue="plain", args=[2, 3]),
            enqueue_args("queue_tasks.async_add", queue="plain", kwargs={"a": 4, "b": 5}),
            enqueue_args("queue_tasks.not_json", queue="plain"),
            enqueue_args("queue_tasks.boom", queue="plain"),
            enqueue_args("queue_tasks.missing", queue="plain"),
            enqueue_args("no_such_module.task", queue="plain"),
        ]
    )
    add, async_add, not_json, boom, missing, no_module = wait_finished(queue, [j.id for j in jobs])
    assert (add.state, add.return_value) == (SUCCESSFUL, 5)
    assert (async_add.state, async_add.return_value) == (SUCCESSFUL, 9)
    assert not_json.state == FAILED
    assert not_json.errors[0].exception_class_path == "builtins.TypeError"
    assert boom.errors[0].exception_class_path == "builtins.ValueError"
    assert "ValueError: boom" in boom.errors[0].traceback
    assert "in boom" in boom.errors[0].traceback
    for job in (missing, no_module):
        assert job.state == FAILED
        assert job.errors[0].exception_class_path in (
            "builtins.ImportError",
            "builtins.ModuleNotFoundError",
        )


@pytest.mark.gateway_config({"server": {"max_frame_size": "64KiB"}})
def test_a_result_too_large_to_store_fails_the_job(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    workers.start(gateway.socket_path, "--queue", "big")
    job = queue.enqueue("queue_tasks.big", queue="big", args=[100_000])
    failed = queue.wait(job.id, timeout=10)
    assert failed.state == FAILED
    assert failed.errors[0].exception_class_path == "gateway_client.errors.FrameTooLarge"
    small = queue.enqueue("queue_tasks.big", queue="big", args=[10])
    assert queue.wait(small.id, timeout=10).return_value == "x" * 10, "the worker goes on"
