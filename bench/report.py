"""Turning worker results into figures, Markdown tables, machine facts, JSON and RESULTS.md.

Conventions of every table:

- ``ops/s`` is the total of all processes' timed operations divided by the wall time from the
  common start (a barrier) to the last process's end.
- ``p50``/``p99`` are per operation type, over every call of that type in every process, in
  microseconds, measured around the single ``caches[alias].get/set/delete`` call.
- ``gw-socket x`` and ``gw-direct x`` are GatewayCache's ops/s (socket reads, direct reads) divided
  by the row's ops/s in the same scenario: above 1 the gateway is that many times faster, below 1
  it is behind.
- ``client CPU`` is CPU time of the benchmark processes per op (the Django backend, pickling,
  the client library); ``server CPU`` is CPU time of the server process (gateway, redis-server,
  memcached) per op. DatabaseCache has no server: all its work is client CPU.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import socket
import sqlite3
import subprocess
from array import array
from importlib import metadata
from pathlib import Path
from typing import Any

from cache_worker import OP_NAMES, WorkerResult

_PERCENTILES = (50, 99)
#: A row whose run shared the machine with at least this much other work (in CPUs) says so.
_BUSY_NOTE_CPUS = 0.3


def percentile(sorted_values: list[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(
    results: list[WorkerResult], server_cpu_ns: int | None, machine_busy_ns: int | None
) -> dict[str, Any]:
    """Figures of one run (one peer, one scenario) from its workers' results.

    ``other_cpus`` is how many CPUs, on average, were busy with work that was neither the
    benchmark processes nor the peer's server during the run (other programs on the machine).
    """
    per_op: dict[str, list[int]] = {name: [] for name in OP_NAMES}
    for r in results:
        latencies = array("q")
        latencies.frombytes(r.latency_ns)
        for code, latency in zip(r.codes, latencies, strict=True):
            per_op[OP_NAMES[code]].append(latency)
    ops = sum(len(r.codes) for r in results)
    wall_ns = max(r.end_ns for r in results) - min(r.start_ns for r in results)
    figures: dict[str, Any] = {
        "ops": ops,
        "wall_s": wall_ns / 1e9,
        "ops_per_s": ops / (wall_ns / 1e9) if wall_ns > 0 else 0.0,
        "client_cpu_us_per_op": sum(r.cpu_ns for r in results) / 1e3 / ops if ops else None,
        "server_cpu_us_per_op": server_cpu_ns / 1e3 / ops
        if ops and server_cpu_ns is not None
        else None,
        "hits": sum(r.hits for r in results),
        "misses": sum(r.misses for r in results),
        "wrong": sum(r.wrong for r in results),
        "errors": sum(r.errors for r in results),
        "error_samples": [s for r in results for s in r.error_samples][:5],
        "cut": any(r.cut for r in results),
        "other_cpus": None,
        "latency_us": {},
    }
    if machine_busy_ns is not None and wall_ns > 0:
        ours = sum(r.cpu_ns for r in results) + (server_cpu_ns or 0)
        figures["other_cpus"] = round(max(0, machine_busy_ns - ours) / wall_ns, 2)
    for name, values in per_op.items():
        if not values:
            continue
        values.sort()
        figures["latency_us"][name] = {
            "count": len(values),
            "mean": sum(values) / len(values) / 1e3,
            **{f"p{p}": percentile(values, p) / 1e3 for p in _PERCENTILES},
        }
    return figures


# --- machine facts ------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, cwd=cwd, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return ""


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _filesystem_of(path: Path) -> str:
    best, fstype = "", "?"
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def _memcached_version(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"version\r\n")
            return s.recv(100).decode().split()[1]
    except (OSError, IndexError):
        return None


def _redis_version(path: str | None) -> str | None:
    if not path:
        return None
    try:
        import redis

        client = redis.Redis(unix_socket_path=path)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except Exception:
        return None


def machine_facts(
    repo: Path,
    workdir: Path,
    gateway_hello: dict[str, Any] | None,
    redis_socket: str | None,
    memcached_socket: str | None,
) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"], repo)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], repo)
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "commit": commit + ("+uncommitted" if dirty else ""),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu.group(1).strip() if cpu else platform.processor(),
        "ram_gib": round(int(mem.group(1)) / 1024**2, 1) if mem else None,
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "sqlite_python": sqlite3.sqlite_version,
        "sqlite_gateway": (gateway_hello or {}).get("sqlite_version"),
        "gateway": (gateway_hello or {}).get("server_version"),
        "redis_server": _redis_version(redis_socket),
        "memcached": _memcached_version(memcached_socket),
        "workdir_fs": _filesystem_of(workdir),
        "packages": {
            name: _package_version(name)
            for name in (
                "django",
                "django-redis",
                "redis",
                "hiredis",
                "pymemcache",
                "diskcache",
                "msgpack",
                "gateway-client",
            )
        },
    }


def _os_name() -> str:
    found = re.search(r'^PRETTY_NAME="?([^"\n]+)', _read("/etc/os-release"), re.M)
    return found.group(1) if found else platform.system()


def _rss_text(rss: dict[str, float]) -> str:
    return ", ".join(f"{name} {mib} MiB" for name, mib in sorted(rss.items()))


def facts_markdown(facts: dict[str, Any]) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in facts["packages"].items() if v)
    return "\n".join(
        [
            f"- date: {facts['date']}; commit `{facts['commit']}`",
            f"- machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['ram_gib']} GiB RAM, "
            f"{facts['os']}, kernel {facts['kernel']}, temp files on {facts['workdir_fs']}",
            f"- Python {facts['python']}, SQLite {facts['sqlite_python']} in Python, "
            f"gateway {facts['gateway'] or '-'} (SQLite {facts['sqlite_gateway'] or '-'}), "
            f"redis-server {facts['redis_server'] or '-'}, memcached {facts['memcached'] or '-'}",
            f"- packages: {pkgs}",
            f"- run: {facts.get('duration_s', '?')} s; 1-minute load average before it started: "
            f"{facts.get('loadavg_start', '?')} (well above 0 means other work shared the "
            f"{facts['nproc']} CPUs and the figures are lower and noisier than on an idle box)",
            *(
                [f"- servers' peak RSS: {_rss_text(rss)}"]
                if (rss := facts.get("peak_rss_mib"))
                else []
            ),
        ]
    )


# --- tables -------------------------------------------------------------------------------------


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_us(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _fmt_size(size: int) -> str:
    return f"{size // 1000} KB" if size >= 1000 else f"{size} B"


def _notes(row: dict[str, Any]) -> str:
    notes = []
    f = row["figures"]
    if f["cut"]:
        notes.append(f"cut at time limit ({f['ops']:,} ops)")
    if f["errors"]:
        notes.append(f"{f['errors']} errors")
    if f["wrong"]:
        notes.append(f"{f['wrong']} WRONG values")
    if f.get("other_cpus") and f["other_cpus"] >= _BUSY_NOTE_CPUS:
        notes.append(f"other work: {f['other_cpus']:.1f} CPUs")
    gets = f["hits"] + f["misses"]
    if gets and row["workload"] == "get" and f["misses"]:
        notes.append(f"{100 * f['misses'] / gets:.0f}% get misses")
    return "; ".join(notes)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``vs_gateway_socket``/``vs_gateway_direct`` (gateway ops/s ÷ row ops/s)."""
    by_scenario: dict[tuple[Any, ...], dict[str, float]] = {}
    for row in rows:
        key = (row["processes"], row["size"], row["workload"])
        by_scenario.setdefault(key, {})[row["peer"]] = row["figures"]["ops_per_s"]
    for row in rows:
        rates = by_scenario[(row["processes"], row["size"], row["workload"])]
        mine = row["figures"]["ops_per_s"]
        for peer, field_name in (
            ("gateway-socket", "vs_gateway_socket"),
            ("gateway-direct", "vs_gateway_direct"),
        ):
            row[field_name] = rates[peer] / mine if peer in rates and mine else None


def scenario_table(rows: list[dict[str, Any]]) -> str:
    """One Markdown table for one (processes, workload): a row per size and peer."""
    ops_shown = [op for op in OP_NAMES if any(op in r["figures"]["latency_us"] for r in rows)]
    header = ["size", "peer", "ops/s"]
    for op in ops_shown:
        header += [f"{op} p50 µs", f"{op} p99 µs"]
    header += ["gw-socket x", "gw-direct x", "client CPU µs/op", "server CPU µs/op", "notes"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|"
        + "|".join("---" if i < 2 or i == len(header) - 1 else "---:" for i in range(len(header)))
        + "|",
    ]
    for row in rows:
        f = row["figures"]
        cells = [_fmt_size(row["size"]), row["label"], _fmt_rate(f["ops_per_s"])]
        for op in ops_shown:
            lat = f["latency_us"].get(op)
            cells += [_fmt_us(lat and lat["p50"]), _fmt_us(lat and lat["p99"])]
        cells += [
            _fmt_ratio(row.get("vs_gateway_socket")),
            _fmt_ratio(row.get("vs_gateway_direct")),
            _fmt_us(f["client_cpu_us_per_op"]),
            _fmt_us(f["server_cpu_us_per_op"]),
            _notes(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


_WORKLOAD_TITLES = {
    "mixed": "90% get / 9% set / 1% delete",
    "get": "get only",
    "set": "set only",
}


def _goal_ratio(row: dict[str, Any] | None, field_name: str) -> str:
    return _fmt_ratio(row.get(field_name)) if row else ""


def goals_table(rows: list[dict[str, Any]]) -> str:
    """GatewayCache against django-redis per scenario (goals: reads >= 5x, writes >= 1x)."""
    index = {(r["processes"], r["size"], r["workload"], r["peer"]): r for r in rows}
    scenarios = sorted({(r["processes"], r["size"]) for r in rows})
    lines = [
        "| processes | size | get: socket x | get: direct x | set: socket x | "
        "mixed: socket x | mixed: direct x |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for procs, size in scenarios:
        redis = {w: index.get((procs, size, w, "django-redis")) for w in _WORKLOAD_TITLES}
        if not any(redis.values()):
            continue
        cells = [
            str(procs),
            _fmt_size(size),
            _goal_ratio(redis["get"], "vs_gateway_socket"),
            _goal_ratio(redis["get"], "vs_gateway_direct"),
            _goal_ratio(redis["set"], "vs_gateway_socket"),
            _goal_ratio(redis["mixed"], "vs_gateway_socket"),
            _goal_ratio(redis["mixed"], "vs_gateway_direct"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def markdown(
    rows: list[dict[str, Any]],
    facts: dict[str, Any],
    plan: dict[str, Any],
    skipped: dict[str, str],
    mode: str,
) -> str:
    """The whole report of one run."""
    out = [
        f"### Cache through Django's `caches[...]` ({mode} run)",
        "",
        facts_markdown(facts),
        f"- plan: {plan['description']}; "
        + (
            f"best of {plan['rounds']} rounds per peer and scenario"
            if plan["rounds"] > 1
            else "one round per peer and scenario"
        )
        + (
            f" ({plan['one_round_scenarios']} scenarios got one round only, to keep to the "
            f"{plan['time_budget_s']:.0f} s time budget)"
            if plan.get("one_round_scenarios")
            else ""
        ),
        "",
    ]
    if skipped:
        out += ["Skipped peers:", ""]
        out += [f"- **{name}**: {reason}" for name, reason in skipped.items()]
        out.append("")
    goals = goals_table(rows)
    if goals and any(r["peer"].startswith("gateway") for r in rows):
        out += [
            "GatewayCache ops/s ÷ django-redis ops/s (goals of the benchmark issue: "
            "get >= 5, set >= 1):",
            "",
            goals,
            "",
        ]
    for procs in sorted({r["processes"] for r in rows}):
        for workload, title in _WORKLOAD_TITLES.items():
            chosen = [r for r in rows if r["processes"] == procs and r["workload"] == workload]
            if not chosen:
                continue
            out += [
                f"#### {procs} process{'es' if procs > 1 else ''}, {title}",
                "",
                scenario_table(chosen),
                "",
            ]
    out.append(
        "`gw-socket x` / `gw-direct x`: GatewayCache's ops/s divided by the row's "
        "(above 1: gateway faster). Latencies per call in µs; CPU per op in µs."
    )
    return "\n".join(out) + "\n"


# --- files --------------------------------------------------------------------------------------


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")


RESULTS_HEADER = """# Benchmark results

Written by `bench/run`; each section between its BEGIN/END markers is replaced by the next run of
the same kind. Raw figures are in `bench/results/*.json`.
"""


def update_results_md(path: Path, section_id: str, body: str) -> None:
    """Replace (or append) the section between the ``section_id`` markers in ``path``."""
    begin, end = f"<!-- BEGIN {section_id} -->", f"<!-- END {section_id} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
