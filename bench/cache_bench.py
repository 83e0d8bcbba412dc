"""Cache benchmark: GatewayCache against Redis, memcached and DatabaseCache, through Django.

Run it with ``bench/run`` (which installs and starts the servers and the gateway); this script
only measures. For each process count, value size and workload it prefills 1,100 keys through
the peer's own backend, then has every worker process warm up and run the same fixed sequence
of operations, timing each ``caches[alias]`` call. Every peer runs the identical sequences in
the same run on the same machine, one peer at a time.

Output: Markdown tables on stdout, ``bench/results/cache-<date>-<mode>.json`` and a section of
``bench/RESULTS.md`` (both skipped with ``--no-write``, and always in ``--mode smoke``).
Exit status: 0, or 1 when ``--mode smoke`` found a skipped peer, a failure, an error or a
wrong value.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cache_peers import (
    Endpoints,
    Peer,
    all_peers,
    create_db_cache_table,
    setup_django,
    skip_reason,
)
from cache_worker import (
    BARRIER_TIMEOUT_S,
    KEY_COUNT,
    Task,
    WorkerResult,
    keys,
    values_for,
    worker_main,
)
from report import add_ratios, machine_facts, markdown, summarize, update_results_md, write_json

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

#: Keys per set_many call when prefilling (keeps a 100 KB-value frame well under 32 MiB).
_PREFILL_CHUNK = 50


@dataclass(frozen=True)
class Plan:
    """How much a mode measures."""

    sizes: tuple[int, ...]
    workloads: tuple[str, ...]
    processes: tuple[int, ...]
    ops_per_process: dict[int, dict[int, int]]  # processes -> size -> timed ops per process
    warmup: dict[int, int]  # processes -> untimed ops per process before each run
    time_limit_s: float  # a run stops early (and says so) past this many seconds
    rounds: int = 1  # runs of each scenario per peer; the fastest is reported
    time_budget_s: float = 600.0  # extra rounds are skipped while the run is behind this budget
    peers: tuple[str, ...] | None = None  # None: every available peer
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


PLANS: dict[str, Plan] = {
    "default": Plan(
        sizes=(10, 100, 1_000, 10_000, 100_000),
        workloads=("mixed", "get", "set"),
        processes=(1, 8),
        ops_per_process={
            1: {10: 10_000, 100: 10_000, 1_000: 10_000, 10_000: 5_000, 100_000: 1_000},
            8: {10: 1_500, 100: 1_500, 1_000: 1_500, 10_000: 750, 100_000: 150},
        },
        warmup={1: 500, 8: 150},
        time_limit_s=8.0,
        rounds=2,
        time_budget_s=480.0,
        description="1 process: 10,000 timed ops per run (5,000 at 10 KB, 1,000 at 100 KB) "
        "after 500 warm-up ops; 8 processes: 1,500 timed ops per process and run (12,000 in "
        "all; 750 at 10 KB, 150 at 100 KB) after 150 warm-up ops each; a run stops early past "
        "8 s",
    ),
    "quick": Plan(
        sizes=(10, 100, 1_000),
        workloads=("mixed", "get", "set"),
        processes=(1,),
        ops_per_process={1: {10: 4_000, 100: 4_000, 1_000: 4_000}},
        warmup={1: 300},
        time_limit_s=5.0,
        rounds=3,
        time_budget_s=90.0,
        description="1 process; 10 B to 1 KB values; 4,000 timed ops per run after 300 warm-up "
        "ops; 5 s limit per run",
    ),
    "smoke": Plan(
        sizes=(100,),
        workloads=("mixed",),
        processes=(1,),
        ops_per_process={1: {100: 300}},
        warmup={1: 50},
        time_limit_s=10.0,
        peers=("gateway-socket", "db-cache"),
        description="smoke: 1 process, 100 B values, 300 mixed ops, gateway socket and "
        "DatabaseCache only",
    ),
}


# --- server CPU accounting ----------------------------------------------------------------------


def process_cpu_ns(pid: int | None) -> int | None:
    """CPU time (user + system) of every live thread of ``pid`` in ns, or None if unknown."""
    if not pid:
        return None
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


_CLOCK_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def machine_busy_ns() -> int | None:
    """CPU time all CPUs spent on anything but idle and I/O wait since boot, in ns."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) * _CLOCK_TICK_NS


def peak_rss_bytes(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- workers ------------------------------------------------------------------------------------


class WorkerPool:
    """``count`` spawned worker processes plus a start barrier shared with this process."""

    def __init__(self, count: int, ep: Endpoints, peers: list[Peer]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.barrier = ctx.Barrier(count + 1)
        self.conns = []
        self.procs = []
        for i in range(count):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(i, child_end, self.barrier, ep, peers),
                name=f"bench-worker-{i}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.conns.append(parent_end)
            self.procs.append(proc)
        for conn in self.conns:
            if not conn.poll(120) or conn.recv() != "ready":
                raise RuntimeError("a benchmark worker did not start")

    def run(
        self, task: Task, server_pid: int | None
    ) -> tuple[list[WorkerResult], int | None, int | None]:
        """Run ``task`` on every worker at once.

        :returns: the workers' results, the server's CPU ns and the whole machine's busy CPU ns
            during the timed part (None where unknown).
        """
        for conn in self.conns:
            conn.send(task)
        cpu_before = busy_before = None
        try:
            self.barrier.wait(BARRIER_TIMEOUT_S)
            cpu_before, busy_before = process_cpu_ns(server_pid), machine_busy_ns()
        except threading.BrokenBarrierError:
            pass
        results = []
        for conn in self.conns:
            if not conn.poll(task.time_limit_s + BARRIER_TIMEOUT_S):
                raise RuntimeError(f"a worker did not finish {task}")
            results.append(conn.recv())
        cpu_after, busy_after = process_cpu_ns(server_pid), machine_busy_ns()
        if self.barrier.broken:
            self.barrier.reset()
        server_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after else None
        busy = busy_after - busy_before if busy_before is not None and busy_after else None
        return results, server_cpu, busy

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


# --- the run ------------------------------------------------------------------------------------


def prefill(alias: str, size: int) -> None:
    """Store all KEY_COUNT keys with the run's values through the peer's own backend."""
    from django.core.cache import caches

    cache = caches[alias]
    values = values_for(size)
    all_keys = keys()
    for start in range(0, KEY_COUNT, _PREFILL_CHUNK):
        chunk = all_keys[start : start + _PREFILL_CHUNK]
        failed = cache.set_many({k: values[n % len(values)] for n, k in enumerate(chunk)})
        if failed:
            raise RuntimeError(f"{alias}: prefill failed for {len(failed)} keys")


def choose_peers(
    plan: Plan, ep: Endpoints, wanted: list[str] | None
) -> tuple[list[Peer], dict[str, str]]:
    """The peers that will run, and a reason for each one skipped."""
    peers = all_peers(ep)
    known = {p.name for p in peers}
    selection = wanted or (list(plan.peers) if plan.peers else None)
    if selection:
        unknown = set(selection) - known
        if unknown:
            sys.exit(f"cache_bench: unknown peer(s) {sorted(unknown)}; known: {sorted(known)}")
        peers = [p for p in peers if p.name in selection]
    runnable, skipped = [], {}
    for peer in peers:
        reason = skip_reason(peer, ep)
        if reason:
            skipped[peer.name] = reason
        else:
            runnable.append(peer)
    return runnable, skipped


def behind_schedule(plan: Plan, state: dict[str, Any], scenario: int, scenarios: int) -> bool:
    """True if the run has used more of its time budget than its share for ``scenario``."""
    elapsed = time.monotonic() - state["started"]
    return elapsed > plan.time_budget_s * scenario / scenarios


def run_all(
    plan: Plan, ep: Endpoints, peers: list[Peer], rounds: int, short_rounds: list[int]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Measure every scenario of ``plan`` for every peer; returns rows and failure messages.

    Each scenario runs ``rounds`` times over all peers, starting each round at the next peer so
    that no peer always runs first; a row keeps the round with the highest ops/s (the one least
    disturbed by other work on the machine) and lists every round's ops/s. When the run is
    behind its time budget, a scenario gets one round only; ``short_rounds[0]`` counts those.
    """
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    scenarios = len(plan.processes) * len(plan.sizes) * len(plan.workloads)
    progress_state = {
        "done": 0,
        "total": scenarios * len(peers) * rounds,
        "started": time.monotonic(),
    }
    scenario = 0
    for procs in plan.processes:
        pool = WorkerPool(procs, ep, peers)
        try:
            for si, size in enumerate(plan.sizes):
                for wi, workload in enumerate(plan.workloads):
                    scenario += 1
                    runs: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
                    for rnd in range(rounds):
                        if rnd and behind_schedule(plan, progress_state, scenario, scenarios):
                            # Extra rounds only while the run keeps to its time budget.
                            progress_state["total"] -= (rounds - rnd) * len(peers)
                            short_rounds[0] += 1
                            break
                        shift = rnd % len(peers)
                        for peer in peers[shift:] + peers[:shift]:
                            task = Task(
                                peer.name,
                                size,
                                workload,
                                plan.ops_per_process[procs][size],
                                plan.warmup[procs],
                                seed=100 * si + wi + 1,
                                time_limit_s=plan.time_limit_s,
                            )
                            figures = run_one(pool, task, procs, peer, ep, failures, progress_state)
                            if figures is not None:
                                runs[peer.name].append(figures)
                    for peer in peers:
                        if runs[peer.name]:
                            rows.append(best_row(procs, size, workload, peer, runs[peer.name]))
        finally:
            pool.close()
    return rows, failures


def run_one(
    pool: WorkerPool,
    task: Task,
    procs: int,
    peer: Peer,
    ep: Endpoints,
    failures: list[str],
    state: dict[str, Any],
) -> dict[str, Any] | None:
    """Prefill, run ``task`` on every worker and summarize; None (and a failure noted) if broken."""
    state["done"] += 1
    prefix = f"[{state['done']}/{state['total']}] {procs} proc, {task.size} B, {task.workload}"
    prefill(peer.name, task.size)
    results, server_cpu, machine_busy = pool.run(task, ep.pids.get(peer.server or ""))
    broken = [r.failure for r in results if r.failure]
    if broken:
        failures.append(f"{procs} proc, {task.size} B, {task.workload}, {peer.name}: {broken[0]}")
        log(f"{prefix}, {peer.name}: FAILED\n{broken[0]}")
        return None
    figures = summarize(results, server_cpu, machine_busy)
    elapsed = time.monotonic() - state["started"]
    log(f"{prefix}, {peer.name}: {progress(figures)} [{elapsed:.0f} s]")
    return figures


def best_row(
    procs: int, size: int, workload: str, peer: Peer, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The table row of a peer in a scenario: its fastest round, with every round's errors."""
    best = dict(max(runs, key=lambda f: f["ops_per_s"]))
    best["rounds_ops_per_s"] = [round(f["ops_per_s"]) for f in runs]
    best["rounds_other_cpus"] = [f["other_cpus"] for f in runs]
    best["errors"] = sum(f["errors"] for f in runs)
    best["wrong"] = sum(f["wrong"] for f in runs)
    best["error_samples"] = [s for f in runs for s in f["error_samples"]][:5]
    return {
        "processes": procs,
        "size": size,
        "workload": workload,
        "peer": peer.name,
        "label": peer.label,
        "figures": best,
    }


def progress(figures: dict[str, Any]) -> str:
    text = f"{figures['ops_per_s']:,.0f} ops/s"
    if figures["other_cpus"] is not None:
        text += f", other work {figures['other_cpus']:.2f} CPUs"
    if figures["cut"]:
        text += " (cut at the time limit)"
    if figures["errors"] or figures["wrong"]:
        text += f" {figures['errors']} ERRORS, {figures['wrong']} WRONG {figures['error_samples']}"
    return text


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gateway_facts(ep: Endpoints) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The gateway's hello and stats (None when it is not running)."""
    if not ep.gateway_socket or not os.path.exists(ep.gateway_socket):
        return None, None
    from gateway_client import Client

    try:
        with Client(ep.gateway_socket, connect_attempts=2) as client:
            hello = client.hello()
            stats = client.stats()
            if "cache.stats" in hello.get("features", []):
                stats["cache"] = client.call("cache.stats")
            return hello, stats
    except Exception as e:
        log(f"cache_bench: could not ask the gateway for hello/stats: {e}")
        return None, None


def narrow_plan(plan: Plan, args: argparse.Namespace) -> tuple[Plan, bool]:
    """``plan`` cut down to the ``--sizes``, ``--workloads`` and ``--processes`` asked for.

    :returns: the plan and whether anything was cut.
    :raises SystemExit: (exit 2) if a value asked for is not in the mode's plan.
    """
    changes: dict[str, tuple[Any, ...]] = {}
    for name, raw, convert in (
        ("sizes", args.sizes, int),
        ("workloads", args.workloads, str),
        ("processes", args.processes, int),
    ):
        if not raw:
            continue
        try:
            wanted = tuple(convert(v.strip()) for v in raw.split(",") if v.strip())
        except ValueError:
            sys.exit(f"cache_bench: --{name} {raw!r}: give comma-separated numbers")
        have = getattr(plan, name)
        unknown = [v for v in wanted if v not in have]
        if unknown or not wanted:
            sys.exit(
                f"cache_bench: --{name} {raw!r}: the {args.mode} mode has "
                f"{', '.join(map(str, have))}; choose among those"
            )
        changes[name] = wanted
    return (dataclasses.replace(plan, **changes), True) if changes else (plan, False)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(PLANS), default="default")
    ap.add_argument("--peers", help="comma-separated peer names (default: all available)")
    ap.add_argument("--workdir", type=Path, required=True, help="temp folder for SQLite files")
    ap.add_argument("--gateway-socket")
    ap.add_argument("--redis-socket")
    ap.add_argument("--memcached-socket")
    ap.add_argument(
        "--pid",
        action="append",
        default=[],
        metavar="SERVER=PID",
        help="a server's pid, for CPU accounting (gateway, redis, memcached)",
    )
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default: the mode's)")
    ap.add_argument(
        "--time-budget", type=float, help="seconds; extra rounds are skipped when behind it"
    )
    ap.add_argument("--no-write", action="store_true", help="print only; no JSON, no RESULTS.md")
    ap.add_argument("--sizes", help="comma-separated value sizes in bytes (a subset of the mode's)")
    ap.add_argument("--workloads", help="comma-separated workloads: mixed, get, set")
    ap.add_argument("--processes", help="comma-separated process counts (a subset of the mode's)")
    ap.add_argument("--results-dir", type=Path, default=BENCH / "results")
    ap.add_argument("--results-md", type=Path, default=BENCH / "RESULTS.md")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # SIGTERM (from bench/run's cleanup) unwinds like Ctrl-C, so the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = PLANS[args.mode]
    if args.time_budget is not None:
        plan = dataclasses.replace(plan, time_budget_s=args.time_budget)
    plan, narrowed = narrow_plan(plan, args)
    if narrowed:
        args.no_write = True  # a partial run must not replace a whole run's section
    pids = {k: int(v) for k, v in (p.split("=", 1) for p in args.pid)}
    ep = Endpoints(
        args.workdir.resolve(), args.gateway_socket, args.redis_socket, args.memcached_socket, pids
    )
    wanted = args.peers.split(",") if args.peers else None
    peers, skipped = choose_peers(plan, ep, wanted)
    for name, reason in skipped.items():
        log(f"cache_bench: skipping {name}: {reason}")
    setup_django(ep, peers)
    if any(p.name == "db-cache" for p in peers):
        create_db_cache_table()
    hello, _ = gateway_facts(ep)
    facts = machine_facts(REPO, ep.workdir, hello, ep.redis_socket, ep.memcached_socket)
    facts["loadavg_start"] = round(os.getloadavg()[0], 2)

    started = time.monotonic()
    rounds = args.rounds or plan.rounds
    short_rounds = [0]
    rows, failures = run_all(plan, ep, peers, rounds, short_rounds) if peers else ([], [])
    facts["duration_s"] = round(time.monotonic() - started, 1)
    add_ratios(rows)
    _, gateway_stats = gateway_facts(ep)
    facts["peak_rss_mib"] = {
        name: round(rss / 2**20, 1)
        for name, pid in pids.items()
        if (rss := peak_rss_bytes(pid)) is not None
    }
    plan_facts = {**asdict(plan), "rounds": rounds, "one_round_scenarios": short_rounds[0]}
    text = markdown(rows, facts, plan_facts, skipped, args.mode)
    if failures:
        text += "\nFailed runs:\n\n" + "\n".join(f"- {f.splitlines()[0]}" for f in failures) + "\n"
    print(text)

    if args.mode != "smoke" and not args.no_write:
        stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
        json_path = args.results_dir / f"cache-{stamp}-{args.mode}.json"
        write_json(
            json_path,
            {
                "mode": args.mode,
                "plan": plan_facts,
                "machine": facts,
                "skipped": skipped,
                "failures": failures,
                "gateway_stats": gateway_stats,
                "results": rows,
            },
        )
        update_results_md(args.results_md, f"cache-{args.mode}", text)
        log(
            f"cache_bench: wrote {json_path.relative_to(REPO)} and "
            f"{args.results_md.relative_to(REPO)}"
        )

    if args.mode == "smoke":
        return smoke_verdict(rows, skipped, failures)
    return 0


def smoke_verdict(rows: list[dict[str, Any]], skipped: dict[str, str], failures: list[str]) -> int:
    problems = [f"skipped {k}: {v}" for k, v in skipped.items()] + failures
    for row in rows:
        f = row["figures"]
        if f["errors"] or f["wrong"]:
            problems.append(
                f"{row['peer']}: {f['errors']} errors, {f['wrong']} wrong values "
                f"{f['error_samples']}"
            )
    if not rows:
        problems.append("nothing ran")
    for problem in problems:
        log(f"cache_bench: smoke: {problem}")
    log("cache_bench: smoke: " + ("FAILED" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
