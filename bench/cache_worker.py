"""One benchmark worker process: runs timed operation sequences against one Django cache alias.

Workers are started with the ``spawn`` method, so each has its own interpreter, its own Django
set-up and its own connections to every server (nothing is inherited from the parent). The
parent sends a :class:`Task` through a pipe; the worker warms up, waits on a barrier shared with
the other workers and the parent (so all of them start timing together), runs the timed
sequence with ``time.perf_counter_ns()`` around every single call, and sends back a
:class:`WorkerResult`. ``perf_counter_ns`` is CLOCK_MONOTONIC on Linux, the same clock in every
process, so the parent can compute wall time from the workers' start and end stamps.
"""

from __future__ import annotations

import gc
import random
import signal
import threading
import time
import traceback
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from cache_peers import Endpoints, Peer, setup_django

#: Keys every run works on (prefilled by the parent before each run).
KEY_COUNT = 1_100

GET, SET, DELETE = 0, 1, 2
OP_NAMES = ("get", "set", "delete")

#: Operation mix per workload: cumulative probability thresholds for get, then set, else delete.
WORKLOADS: dict[str, tuple[float, float]] = {
    "mixed": (0.90, 0.99),  # 90% get, 9% set, 1% delete
    "get": (1.0, 1.0),
    "set": (0.0, 1.0),
}

#: How often (in ops) the timed loop looks at the clock for the run's time limit.
_DEADLINE_CHECK_EVERY = 256
#: Seconds a worker waits at the start barrier before it gives up on the others.
BARRIER_TIMEOUT_S = 120.0


@dataclass
class Task:
    """What one worker runs: ``ops`` timed operations after ``warmup`` untimed ones."""

    peer: str
    size: int
    workload: str
    ops: int
    warmup: int
    seed: int
    time_limit_s: float


@dataclass
class WorkerResult:
    """What one worker measured. ``latency_ns[i]`` is the time of op ``codes[i]``."""

    worker: int
    start_ns: int = 0
    end_ns: int = 0
    cpu_ns: int = 0  # this process's CPU time (user + system) during the timed loop
    codes: bytes = b""
    latency_ns: bytes = b""  # array('q') bytes
    hits: int = 0
    misses: int = 0
    wrong: int = 0  # a get that returned something other than one of the values set
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    cut: bool = False  # stopped early at the run's time limit
    failure: str | None = None  # the worker could not run the task at all


#: Distinct values per size. A set writes the next one, so an overwrite changes the stored bytes
#: as it does on a real site (a backend cannot skip writing an unchanged value).
VALUE_VARIANTS = 4


def values_for(size: int) -> tuple[bytes, ...]:
    """``VALUE_VARIANTS`` different runs of ``size`` incompressible bytes, the same in every
    process. Variant ``i`` starts with byte ``i``, so a get's result is checked with one compare."""
    variants = []
    for i in range(VALUE_VARIANTS):
        body = random.Random(size * VALUE_VARIANTS + i).randbytes(size)
        variants.append(bytes([i]) + body[1:] if size else body)
    return tuple(variants)


def keys() -> list[str]:
    return [f"bench:{i}" for i in range(KEY_COUNT)]


def op_sequence(workload: str, count: int, seed: int) -> tuple[bytes, list[str]]:
    """``count`` op codes and keys for ``workload``, the same for the same ``seed``."""
    get_below, set_below = WORKLOADS[workload]
    rng = random.Random(seed)
    all_keys = keys()
    codes = bytearray(count)
    chosen: list[str] = []
    for i in range(count):
        r = rng.random()
        codes[i] = GET if r < get_below else SET if r < set_below else DELETE
        chosen.append(all_keys[rng.randrange(KEY_COUNT)])
    return bytes(codes), chosen


def run_ops(
    cache: Any,
    codes: bytes,
    chosen: list[str],
    values: tuple[bytes, ...],
    result: WorkerResult,
    time_limit_s: float,
) -> int:
    """Run the sequence, timing each call; returns how many ops ran (fewer if cut)."""
    get, set_, delete = cache.get, cache.set, cache.delete
    latency = array("q", bytes(8 * len(codes)))
    clock = time.perf_counter_ns
    deadline = clock() + int(time_limit_s * 1e9)
    hits = misses = wrong = errors = 0
    done = 0
    for i, code in enumerate(codes):
        key = chosen[i]
        if i % _DEADLINE_CHECK_EVERY == 0 and i and clock() > deadline:
            result.cut = True
            break
        try:
            if code == GET:
                t0 = clock()
                got = get(key)
                latency[i] = clock() - t0
                if got is None:
                    misses += 1
                elif got and got[0] < VALUE_VARIANTS and got == values[got[0]]:
                    hits += 1
                else:
                    wrong += 1
            elif code == SET:
                value = values[i % VALUE_VARIANTS]
                t0 = clock()
                set_(key, value)
                latency[i] = clock() - t0
            else:
                t0 = clock()
                delete(key)
                latency[i] = clock() - t0
        except Exception as e:  # a backend error is a finding, not a reason to stop
            latency[i] = clock() - t0
            errors += 1
            if len(result.error_samples) < 3:
                result.error_samples.append(f"{OP_NAMES[code]}: {type(e).__name__}: {e}")
        done = i + 1
    result.hits, result.misses, result.wrong, result.errors = hits, misses, wrong, errors
    result.codes = codes[:done]
    result.latency_ns = latency[:done].tobytes()
    return done


def run_task(worker: int, task: Task, barrier: threading.Barrier) -> WorkerResult:
    """Warm up, wait for everyone at ``barrier``, run the timed ops; never raises."""
    from django.core.cache import caches

    result = WorkerResult(worker)
    try:
        cache = caches[task.peer]
        values = values_for(task.size)
        seed = task.seed * 1000 + worker
        warm_codes, warm_keys = op_sequence(task.workload, task.warmup, seed + 500)
        run_ops(cache, warm_codes, warm_keys, values, WorkerResult(worker), 60.0)
        codes, chosen = op_sequence(task.workload, task.ops, seed)
        gc.collect()
    except Exception:
        barrier.abort()
        result.failure = traceback.format_exc(limit=8)
        return result
    try:
        barrier.wait(BARRIER_TIMEOUT_S)
    except threading.BrokenBarrierError:
        result.failure = "another worker failed before the start barrier"
        return result
    cpu0 = time.process_time_ns()
    result.start_ns = time.perf_counter_ns()
    run_ops(cache, codes, chosen, values, result, task.time_limit_s)
    result.end_ns = time.perf_counter_ns()
    result.cpu_ns = time.process_time_ns() - cpu0
    return result


def worker_main(
    worker: int, conn: Connection, barrier: threading.Barrier, ep: Endpoints, peers: list[Peer]
) -> None:
    """Process entry point: serve tasks from ``conn`` until it sends None or closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    setup_django(ep, peers)
    from django.core.cache import caches
    from django.db import connections

    conn.send("ready")
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:
                break
            if task is None:
                break
            conn.send(run_task(worker, task, barrier))
    finally:
        for cache in caches.all(initialized_only=True):
            cache.close()
        connections.close_all()
