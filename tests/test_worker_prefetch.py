"""The worker's prefetch (``--prefetch``): real worker processes against the real gateway.

A worker process may be handed several jobs by one ``queue.dequeue`` and runs them one at a
time; the ones it holds meanwhile are ``RUNNING`` under its worker id. These tests prove that
every job of a backlog still runs once, that long jobs are not prefetched, that max-tasks-per-
child holds, and what becomes of held jobs when the worker is killed, stopped or a job is
cancelled (PROTOCOL.md, "Prefetch": a job whose lease ends before it started goes back ``READY``
with its attempts unchanged).

To make a process hold jobs, each test first runs one short job (so the process knows its jobs
are short), then enqueues a job that blocks until a file exists followed by short ones: the
process takes them all with the report of the first job, runs the blocking one and holds the
rest.
"""

from __future__ import annotations

import itertools
import signal
from collections import Counter
from pathlib import Path

from gateway_client.queue import (
    CANCELLED,
    READY,
    RUNNING,
    SUCCESSFUL,
    Job,
    QueueClient,
    enqueue_args,
)
from gateway_harness import GatewayProcess
from queue_harness import (
    WorkerPool,
    WorkerRun,
    get_many,
    state_counts,
    wait_finished,
    wait_state,
)
from wire import wait_until

WORKER_ID = "prefetch-test"


def start_holding(
    queue: QueueClient, workers: WorkerPool, name: str, release: Path, held: int, *args: str
) -> tuple[WorkerRun, Job, list[Job]]:
    """Start one worker process and make it run a blocking job while it holds ``held`` more.

    :return: the worker, the blocking job (running) and the held jobs (``RUNNING``, not run).
    """
    run = workers.start(queue.client.socket_path, "--queue", name, "--worker-id", WORKER_ID, *args)
    run.wait_children(1)
    first = queue.enqueue("queue_tasks.record", queue=name, args=["warm"])
    assert queue.wait(first.id, timeout=10).state == SUCCESSFUL
    # The process now waits for a job (asking for one); these three arrive together, so the
    # first alone is handed out, and the report of that one takes the rest.
    jobs = queue.enqueue_many(
        [
            enqueue_args("queue_tasks.record", queue=name, args=["lead"]),
            enqueue_args(
                "queue_tasks.block_until",
                queue=name,
                args=[str(release)],
                kwargs={"label": name},
                max_attempts=2,
                backoff=0.1,
            ),
            *[
                enqueue_args("queue_tasks.record", queue=name, args=[f"held-{i}"])
                for i in range(held)
            ],
        ]
    )
    blocking, rest = jobs[1], jobs[2:]
    wait_until(
        lambda: any(r.job_id == blocking.id for r in workers.read()),
        10,
        message=f"the blocking job did not start; log:\n{run.log_text()}",
    )
    for job in get_many(queue, [j.id for j in rest]):
        assert job.state == RUNNING and job.worker_ids == [WORKER_ID], job
    assert not {r.job_id for r in workers.read()} & {j.id for j in rest}, "a held job ran"
    return run, blocking, rest


def assert_back_unharmed(queue: QueueClient, jobs: list[Job]) -> None:
    """The jobs are READY as if never handed out."""
    for job in get_many(queue, [j.id for j in jobs]):
        assert job.state == READY, job
        assert job.attempts == 0 and job.worker_ids == [] and job.errors == [], job
        assert job.started_at is None, job


def test_prefetch_drains_a_backlog_running_every_job_once(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    count = 3000
    ids = [
        job.id
        for start in range(0, count, 500)
        for job in queue.enqueue_many(
            [
                enqueue_args("queue_tasks.record", queue="drain", args=[f"n{i}"])
                for i in range(start, start + 500)
            ]
        )
    ]
    run = workers.start(
        gateway.socket_path, "--queue", "drain", "--concurrency", "2", "--prefetch", "16"
    )
    wait_until(
        lambda: state_counts(queue, "drain").get(SUCCESSFUL) == count,
        60,
        interval=0.1,
        message=f"not all jobs finished: {state_counts(queue, 'drain')}",
    )
    assert state_counts(queue, "drain") == {SUCCESSFUL: count}
    runs = workers.counts()
    assert set(runs) == set(ids) and max(runs.values()) == 1, "every job ran, once"
    jobs = get_many(queue, ids)
    assert all(j.attempts == 1 and j.errors == [] and len(j.worker_ids) == 1 for j in jobs)
    assert [j.return_value for j in jobs] == [f"n{i}" for i in range(count)]
    # Jobs handed out by one dequeue share its started_at (milliseconds): batches of up to 16.
    batches = Counter((j.started_at, j.worker_ids[0]) for j in jobs)
    assert 8 <= max(batches.values()) <= 16, batches.most_common(3)
    assert len({j.worker_ids[0] for j in jobs}) == 2, "both processes took jobs"
    wait_until(lambda: len(run.job_lines()) == count, 10, message="one log line per job")
    assert run.stop() == 0


def test_jobs_of_10_ms_or_more_are_not_prefetched(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    workers.start(gateway.socket_path, "--queue", "slow", "--concurrency", "2")
    jobs = queue.enqueue_many(
        [enqueue_args("queue_tasks.sleep_for", queue="slow", args=[0.015]) for _ in range(24)]
    )
    done = wait_finished(queue, [j.id for j in jobs], timeout=30)
    assert all(j.state == SUCCESSFUL and j.attempts == 1 for j in done)
    # Every job was handed out on its own (a batch would share a started_at), and so both
    # processes shared the work instead of one holding jobs while the other was idle.
    batches = Counter((j.started_at, j.worker_ids[0]) for j in done)
    assert max(batches.values()) == 1, batches.most_common(3)
    per_process = Counter(j.worker_ids[0] for j in done)
    assert len(per_process) == 2 and min(per_process.values()) >= 6, per_process


def test_max_tasks_per_child_counts_prefetched_jobs(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool
) -> None:
    jobs = queue.enqueue_many([enqueue_args("queue_tasks.record", queue="mtpc")] * 23)
    workers.start(gateway.socket_path, "--queue", "mtpc", "--max-tasks-per-child", "5")
    done = wait_finished(queue, [j.id for j in jobs], timeout=30)
    assert all(j.state == SUCCESSFUL and j.attempts == 1 and j.errors == [] for j in done)
    records = workers.read()
    assert Counter(r.job_id for r in records) == Counter({j.id: 1 for j in jobs})
    # One process after the other, each running its 5 jobs (prefetched or not) and no more.
    runs = [(pid, len(list(group))) for pid, group in itertools.groupby(r.pid for r in records)]
    assert [n for _, n in runs] == [5, 5, 5, 5, 3], runs
    assert len({pid for pid, _ in runs}) == 5


def test_kill_9_of_a_worker_holding_jobs(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run, blocking, held = start_holding(
        queue, workers, "killed", release, 3, "--lease-seconds", "1"
    )
    run.kill()  # SIGKILL to the supervisor and its process
    # The running job's lease ends as a failed attempt; the held ones go back untouched.
    retried = wait_state(queue, blocking.id, {"SCHEDULED", READY}, timeout=10)
    assert [e.exception_class_path for e in retried.errors] == ["gateway.LeaseExpired"]
    wait_until(lambda: all(queue.get(j.id).state == READY for j in held), 10)
    assert_back_unharmed(queue, held)

    release.touch()
    workers.start(gateway.socket_path, "--queue", "killed")
    done = wait_finished(queue, [blocking.id, *(j.id for j in held)], timeout=15)
    assert done[0].state == SUCCESSFUL and done[0].attempts == 2
    for job in done[1:]:
        assert job.state == SUCCESSFUL and job.attempts == 1 and job.errors == [], job
        assert job.worker_ids != [WORKER_ID], "run elsewhere"
    counts = workers.counts()
    assert [counts[j.id] for j in held] == [1, 1, 1], "each held job ran once"
    labels = [r.label.split()[1] for r in workers.read() if r.job_id == blocking.id]
    assert labels == ["start", "start", "done"], "the running job ran again, to its end once"


def test_sigterm_gives_held_jobs_back_at_once(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run, blocking, held = start_holding(queue, workers, "term", release, 3)
    run.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    # Given back while the running job goes on: other workers can take them meanwhile.
    wait_until(lambda: all(queue.get(j.id).state == READY for j in held), 5)
    assert_back_unharmed(queue, held)
    assert queue.get(blocking.id).state == RUNNING
    release.touch()
    assert run.stop(timeout=10) == 0
    finished = queue.get(blocking.id)
    assert finished.state == SUCCESSFUL and finished.attempts == 1
    assert_back_unharmed(queue, held)
    assert not {r.job_id for r in workers.read()} & {j.id for j in held}, "a held job ran"
    assert "gave back 3 prefetched jobs" in run.log_text()


def test_a_held_job_cancelled_before_it_starts_never_runs(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    run, blocking, held = start_holding(
        queue, workers, "cancel", release, 3, "--lease-seconds", "0.6"
    )
    (pid,) = {r.pid for r in workers.read() if r.job_id == blocking.id}
    cancelled = held[1]
    assert queue.cancel(cancelled.id).state == CANCELLED
    # Its next heartbeat (every 0.2 s) tells the worker, which drops it.
    wait_until(
        lambda: any(f"job={cancelled.id}" in line for line in run.job_lines()),
        5,
        message=run.log_text(),
    )
    (line,) = [line for line in run.job_lines() if f"job={cancelled.id}" in line]
    assert "state=CANCELLED" in line and "note=dropped" in line, line
    release.touch()
    others = [blocking, held[0], held[2]]
    done = wait_finished(queue, [j.id for j in others], timeout=10)
    assert all(j.state == SUCCESSFUL and j.worker_ids == [WORKER_ID] for j in done)
    assert cancelled.id not in workers.counts(), "the cancelled job ran"
    assert queue.get(cancelled.id).state == CANCELLED
    assert run.children() == [pid], "the process went on"
    assert run.stop() == 0


def test_sigterm_while_the_gateway_restarts_runs_held_jobs_instead_of_failing_them(
    gateway: GatewayProcess, queue: QueueClient, workers: WorkerPool, tmp_path: Path
) -> None:
    # A deploy often stops the gateway and its workers together. The worker cannot give its
    # held jobs back while the gateway is away; once a new one runs, every job still handed out
    # counts as started, so a job left to its lease would fail (attempts used up) unrun.
    release = tmp_path / "release"
    run, blocking, held = start_holding(
        queue, workers, "restart", release, 3, "--lease-seconds", "4"
    )
    gateway.stop()
    run.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    wait_until(lambda: "give back" in run.log_text(), 5, message=run.log_text())
    gateway.start()
    queue.close()
    release.touch()
    done = wait_finished(queue, [blocking.id, *(j.id for j in held)], timeout=20)
    for job in done:
        assert job.state == SUCCESSFUL and job.errors == [], (job, run.log_text())
    counts = workers.counts()
    assert [counts[j.id] for j in held] == [1, 1, 1], "each held job ran once"
    assert run.stop(timeout=10) == 0
