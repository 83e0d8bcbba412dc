"""The queue benchmark's Markdown: machine facts, goals, figures per peer and ratios to gateway.

Ratio columns (``gw x``) say how many times better gateway is than the row's peer: the peer's
latency divided by gateway's for latencies, gateway's jobs/s divided by the peer's for drains.
Above 1 gateway is ahead, below 1 it is behind.
"""

from __future__ import annotations

from typing import Any

from queue_peers import WORKERS
from queue_tasks import NAP_SECONDS

#: A row whose drain shared the machine with at least this much other work (in CPUs) says so.
_BUSY_NOTE_CPUS = 0.3
# The most 10 ms jobs a second that any peer's workers can run.
NAP_CEILING = WORKERS / NAP_SECONDS
_MIB = 2**20


def _get(row: dict[str, Any] | None, *path: str) -> Any:
    value: Any = row
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _pct(cpu_s: float | None, wall_s: float | None) -> str:
    if cpu_s is None or not wall_s:
        return ""
    share = 100 * cpu_s / wall_s
    return f"{share:.1f}" if share >= 1 else f"{share:.2f}"


def _us_per_job(cpu_s: float | None, jobs: int | None) -> str:
    return "" if cpu_s is None or not jobs else f"{cpu_s / jobs * 1e6:,.0f}"


def _mib(value: int | None) -> str:
    return "" if not value else f"{value / _MIB:.0f}"


def _notes(row: dict[str, Any]) -> str:
    notes = []
    for phase, what in (("noop", "no-op"), ("nap", "10 ms")):
        d = row.get(phase) or {}
        if d.get("cut"):
            notes.append(f"{what} drain cut at the time limit ({d['done']:,} of {d['jobs']:,})")
        other = _get(d, "resources", "other_cpus")
        if other is not None and other >= _BUSY_NOTE_CPUS:
            notes.append(f"other work during {what} drain: {other:.1f} CPUs")
    return "; ".join(notes)


def figures_table(rows: list[dict[str, Any]]) -> str:
    """Latencies and throughput per peer, with ratios to gateway."""
    gw = next((r for r in rows if r["peer"] == "gateway"), None)
    header = [
        "peer",
        "pickup p50 ms",
        "gw x",
        "pickup p99 ms",
        "pickup after idle ms",
        "enqueue p50 ms",
        "gw x",
        "enqueue p99 ms",
        "no-op drain jobs/s",
        "gw x",
        "10 ms drain jobs/s",
        "gw x",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for row in rows:
        pick = _get(row, "pickup", "p50_ms")
        enq = _get(row, "noop", "enqueue", "p50_ms")
        noop = _get(row, "noop", "jobs_per_s")
        nap = _get(row, "nap", "jobs_per_s")
        cells = [
            row["label"],
            _ms(pick),
            _ratio(_div(pick, _get(gw, "pickup", "p50_ms"))),
            _ms(_get(row, "pickup", "p99_ms")),
            _ms(row.get("pickup_after_idle_ms")),
            _ms(enq),
            _ratio(_div(enq, _get(gw, "noop", "enqueue", "p50_ms"))),
            _ms(_get(row, "noop", "enqueue", "p99_ms")),
            _rate(noop),
            _ratio(_div(_get(gw, "noop", "jobs_per_s"), noop)),
            _rate(nap),
            _ratio(_div(_get(gw, "nap", "jobs_per_s"), nap)),
            _notes(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def resources_table(rows: list[dict[str, Any]]) -> str:
    """CPU while idle and under load, and peak memory, of the server and of the workers."""
    header = [
        "peer",
        "server",
        "idle: server CPU %",
        "idle: workers CPU %",
        "no-op drain: server CPU %",
        "server µs/job",
        "workers µs/job",
        "10 ms drain: server CPU %",
        "workers CPU %",
        "server peak RSS MiB",
        "workers peak RSS MiB",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in rows:
        idle = row.get("idle") or {}
        noop = _get(row, "noop", "resources") or {}
        nap = _get(row, "nap", "resources") or {}
        done = _get(row, "noop", "done")
        server_rss = max(noop.get("server_peak_rss") or 0, nap.get("server_peak_rss") or 0)
        workers_rss = max(noop.get("workers_peak_rss") or 0, nap.get("workers_peak_rss") or 0)
        cells = [
            row["label"],
            row.get("server") or "none (SQLite file)",
            _pct(idle.get("server_cpu_s"), idle.get("wall_s")),
            _pct(idle.get("workers_cpu_s"), idle.get("wall_s")),
            _pct(noop.get("server_cpu_s"), noop.get("wall_s")),
            _us_per_job(noop.get("server_cpu_s"), done),
            _us_per_job(noop.get("workers_cpu_s"), done),
            _pct(nap.get("server_cpu_s"), nap.get("wall_s")),
            _pct(nap.get("workers_cpu_s"), nap.get("wall_s")),
            _mib(server_rss),
            _mib(workers_rss),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals_table(rows: list[dict[str, Any]]) -> str:
    """The issue's goals: pickup p50 < 2 ms, drain >= 2x the best peer."""
    gw = next((r for r in rows if r["peer"] == "gateway"), None)
    others = [r for r in rows if r["peer"] != "gateway"]
    if gw is None:
        return ""
    pick = _get(gw, "pickup", "p50_ms")
    lines = ["| goal | gateway | best peer | ratio | met |", "|---|---:|---|---:|---|"]
    met = "yes" if pick is not None and pick < 2 else "no"
    lines.append(f"| pickup p50 < 2 ms | {_ms(pick)} ms | | | {met} |")
    for phase, what in (("noop", "no-op"), ("nap", "10 ms")):
        mine = _get(gw, phase, "jobs_per_s")
        rated = [r for r in others if _get(r, phase, "jobs_per_s")]
        if not rated or mine is None:
            continue
        best = max(rated, key=lambda r: _get(r, phase, "jobs_per_s"))
        ratio = mine / _get(best, phase, "jobs_per_s")
        peer = f"{best['label']}: {_rate(_get(best, phase, 'jobs_per_s'))} jobs/s"
        if phase == "nap":
            # 4 workers that each sleep 10 ms per job run at most 400 jobs/s whatever the queue,
            # so 2x the best peer cannot apply: the goal is to come close to that ceiling.
            met = "yes" if mine >= 0.9 * NAP_CEILING else "no"
            lines.append(
                f"| {what} drain within 10% of its ceiling of {NAP_CEILING:.0f} jobs/s (2x a "
                f"peer is impossible here) | {_rate(mine)} jobs/s | {peer} | {_ratio(ratio)} "
                f"| {met} |"
            )
            continue
        lines.append(
            f"| {what} drain >= 2x the best peer | {_rate(mine)} jobs/s | {peer} | "
            f"{_ratio(ratio)} | {'yes' if ratio >= 2 else 'no'} |"
        )
    return "\n".join(lines)


def _server_pickup_line(rows: list[dict[str, Any]]) -> list[str]:
    gw = next((r for r in rows if r["peer"] == "gateway"), None)
    seen = _get(gw, "server_pickup_latency_s")
    if not seen or seen.get("p50") is None:
        return []
    return [
        "The gateway's own ready-to-dequeued latency (`queue.stats` after the pickups, over "
        "the warm-up jobs too, the first of which waited for the workers to start): "
        f"p50 {_ms(seen['p50'] * 1000)} ms, p99 {_ms(seen['p99'] * 1000)} ms.",
        "",
    ]


def facts_lines(facts: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    pkgs = ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v)
    return [
        f"- date: {facts['date']}; commit `{facts['commit']}`",
        f"- machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['ram_gib']} GiB RAM, "
        f"{facts['os']}, kernel {facts['kernel']}, temp files on {facts['workdir_fs']}",
        f"- Python {facts['python']}, SQLite {facts['sqlite_python']} in Python, gateway "
        f"{facts['gateway'] or '-'} (SQLite {facts['sqlite_gateway'] or '-'}), redis-server "
        f"{facts['redis_server'] or '-'}",
        f"- packages: {pkgs}",
        f"- run: {facts.get('duration_s', '?')} s; load average (1, 5, 15 min) before: "
        f"{' '.join(facts.get('loadavg_start', []))}, after: "
        f"{' '.join(facts.get('loadavg_end', []))} (above 0 means other work shared the "
        f"{facts['nproc']} CPUs)",
        f"- plan: {plan['description']}",
    ]


def markdown(
    rows: list[dict[str, Any]],
    facts: dict[str, Any],
    plan: dict[str, Any],
    skipped: dict[str, str],
    failures: dict[str, str],
    mode: str,
) -> str:
    """The whole report of one run."""
    out = [f"### Queue: 4 workers per peer ({mode} run)", "", *facts_lines(facts, plan), ""]
    for title, problems in (("Skipped peers", skipped), ("Failed peers", failures)):
        if problems:
            out += [f"{title}:", ""] + [f"- **{k}**: {v}" for k, v in problems.items()] + [""]
    goals = goals_table(rows)
    if goals:
        out += ["Goals of the benchmark issue:", "", goals, ""]
    if rows:
        out += [
            "#### Latency and throughput",
            "",
            figures_table(rows),
            "",
            "`gw x`: how many times better gateway is (the peer's latency ÷ gateway's; "
            "gateway's jobs/s ÷ the peer's); above 1 gateway is ahead. Pickup: enqueue call to "
            "the job's first line, on an idle queue. 10 ms drain: at most 400 jobs/s with 4 "
            "workers.",
            "",
            *_server_pickup_line(rows),
            "#### CPU and memory",
            "",
            resources_table(rows),
            "",
            "CPU % is of one CPU, averaged over the window; µs/job is CPU time per drained "
            "no-op job. Workers are every process of the peer's worker command (with RQ's "
            "per-job forks). Peak RSS is sampled every 0.1 s during the drains; redis-server "
            "serves RQ and Celery one after the other (flushed in between).",
        ]
    return "\n".join(out) + "\n"
