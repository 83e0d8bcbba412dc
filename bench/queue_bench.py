"""Queue benchmark: pickup and enqueue latency, drain throughput, idle CPU of the gateway.

Run from the repository root (after ``scripts/setup``)::

    LD_LIBRARY_PATH=build .venv/bin/python bench/queue_bench.py            # full run
    LD_LIBRARY_PATH=build .venv/bin/python bench/queue_bench.py --quick    # a smaller one

It starts ``build/gateway`` on a temporary folder and real workers (``python -m
gateway_client.worker``, importing the tasks below from this file), measures, prints a Markdown
table and stops everything it started. Only a Unix socket is used.

- pickup latency: one job at a time on an idle queue with four workers blocked in
  ``queue.dequeue``; from just before ``queue.enqueue`` is sent to the first line of the task in
  the worker (``time.monotonic`` is one clock for all processes on Linux). The gateway's own
  ready-to-dequeued latency (``queue.stats``) is shown beside it.
- enqueue latency: sequential ``queue.enqueue`` round trips on one connection, each answered
  after its transaction committed.
- drain throughput: no-op jobs enqueued into a paused queue, then the queue is resumed with four
  workers waiting; jobs per second until all are SUCCESSFUL.
- idle CPU: the gateway's utime + stime from ``/proc/<pid>/stat`` over 5 s with the four
  workers waiting for jobs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
QUEUE = "bench"


# --- the tasks the workers run (imported as queue_bench.<name>) ---------------------------------


def stamp() -> float:
    """Return when the task started (``time.monotonic``)."""
    return time.monotonic()


def noop() -> None:
    """Do nothing."""


# --- processes ------------------------------------------------------------------------------------


def start_gateway(folder: Path) -> subprocess.Popen[bytes]:
    config = folder / "gateway.toml"
    config.write_text(
        '[server]\nsocket = "gateway.sock"\n'
        '[databases.main]\npath = "db/app.sqlite3"\n'
        '[databases.cache]\npath = "db/cache.sqlite3"\n'
        '[databases.queue]\npath = "db/queue.sqlite3"\n'
    )
    (folder / "db").mkdir()
    binary = Path(os.environ.get("GATEWAY_BIN") or REPO / "build" / "gateway")
    with open(folder / "gateway.log", "wb") as log:
        process = subprocess.Popen(
            [str(binary), "--config", str(config)], stdout=log, stderr=log, cwd=folder
        )
    from gateway_client import Client

    deadline = time.monotonic() + 10
    while True:
        try:
            Client(str(folder / "gateway.sock"), connect_attempts=1).ping()
            return process
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.01)


def start_workers(folder: Path, socket_path: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    with open(folder / "worker.log", "wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway_client.worker",
                *("--socket", socket_path, "--queue", QUEUE),
                *("--concurrency", str(concurrency), "--dequeue-wait", "30"),
            ],
            stdout=log,
            stderr=log,
            env=env,
        )


def worker_children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- measurements -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def pickup_latency(queue: Any, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        sent = time.monotonic()
        job = queue.enqueue("queue_bench.stamp", queue=QUEUE)
        done = queue.wait(job.id, timeout=10)
        assert done.state == "SUCCESSFUL", done
        latencies.append(done.return_value - sent)
    return latencies


def enqueue_latency(queue: Any, count: int) -> list[float]:
    queue.pause("enqueue_only")
    latencies = []
    for _ in range(count):
        sent = time.perf_counter()
        queue.enqueue("queue_bench.noop", queue="enqueue_only")
        latencies.append(time.perf_counter() - sent)
    return latencies


def drain(queue: Any, count: int) -> float:
    from gateway_client.queue import enqueue_args

    queue.pause(QUEUE)
    for start in range(0, count, 1000):
        queue.enqueue_many(
            [enqueue_args("queue_bench.noop", queue=QUEUE)] * min(1000, count - start)
        )
    started = time.monotonic()
    queue.resume(QUEUE)
    while queue.stats()["queues"][QUEUE]["states"].get("SUCCESSFUL", 0) < count:
        time.sleep(0.02)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs (for a smoke run)")
    args = parser.parse_args()
    pickups, enqueues, drained = (200, 2000, 5000) if args.quick else (1000, 10000, 20000)

    sys.path.insert(0, str(REPO / "python-client" / "src"))
    from gateway_client.queue import QueueClient

    folder = Path(tempfile.mkdtemp(prefix="gw-qbench-", dir="/tmp"))
    gateway = workers = None
    try:
        gateway = start_gateway(folder)
        socket_path = str(folder / "gateway.sock")
        queue = QueueClient(socket_path, timeout=30)
        workers = start_workers(folder, socket_path, 4)
        while len(worker_children(workers.pid)) < 4:
            time.sleep(0.05)
        pickup_latency(queue, 20)  # warm-up: imports, connections
        time.sleep(1)  # workers back in queue.dequeue
        before, started = cpu_seconds(gateway.pid), time.monotonic()
        time.sleep(5)
        idle_cpu = (cpu_seconds(gateway.pid) - before) / (time.monotonic() - started)
        pickup = pickup_latency(queue, pickups)
        server_pickup = queue.stats()["queues"][QUEUE]["pickup_latency"]
        enqueue = enqueue_latency(queue, enqueues)
        drain_seconds = drain(queue, drained)
    finally:
        if workers is not None:
            workers.send_signal(signal.SIGTERM)
            try:
                workers.wait(40)
            except subprocess.TimeoutExpired:
                workers.kill()
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                gateway.kill()
        shutil.rmtree(folder, ignore_errors=True)

    ms = 1000.0
    rows = [
        ("pickup latency, idle queue, p50", f"{statistics.median(pickup) * ms:.3f} ms", "< 2 ms"),
        ("pickup latency, idle queue, p99", f"{percentile(pickup, 99) * ms:.3f} ms", ""),
        (
            "gateway's ready-to-dequeued latency p50 / p99",
            f"{server_pickup['p50'] * ms:.3f} / {server_pickup['p99'] * ms:.3f} ms",
            "",
        ),
        ("enqueue latency p50", f"{statistics.median(enqueue) * ms:.3f} ms", ""),
        ("enqueue latency p99", f"{percentile(enqueue, 99) * ms:.3f} ms", "< 1 ms"),
        (
            f"drain {drained:,} no-op jobs, 4 workers",
            f"{drain_seconds:.2f} s ({drained / drain_seconds:,.0f} jobs/s)",
            "",
        ),
        ("gateway CPU, idle, 4 workers waiting (5 s)", f"{idle_cpu * 100:.3f} %", "~0"),
    ]
    print(f"\n### Queue ({pickups} pickups, {enqueues} enqueues, {drained} drained)\n")
    print("| measure | result | goal |")
    print("|---|---:|---|")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
