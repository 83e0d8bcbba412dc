"""PNG plots of the newest benchmark results, from the JSON that the benchmarks write.

    .venv/bin/python bench/plots.py                 # every kind found in bench/results/
    .venv/bin/python bench/plots.py --only cache    # cache, queue or replication

For each kind (cache, queue, replication) and mode (default, quick) the newest
``bench/results/<kind>-<date>-<mode>.json`` is drawn into ``bench/plots/<kind>-<mode>-*.png``;
a kind without results is skipped, and so is a figure whose numbers are missing from an older
or partial JSON. ``bench/run`` calls this after each benchmark. Peers are drawn in the same order
and colours in every figure; lower is better for latencies and restore times, higher for
throughput.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PLOTS = BENCH / "plots"
_NAME = re.compile(r"^(cache|queue|replication)-(\d{4}-\d\d-\d\dT\d{6})-(\w+)\.json$")
_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
#: The replication peers keep their colour in every panel, whichever of them a panel shows.
_PEER_COLORS = {"no replication": _COLORS[0], "gateway": _COLORS[1], "Litestream": _COLORS[2]}


def newest(kind: str) -> dict[str, Path]:
    """The newest results file of ``kind`` per mode."""
    found: dict[str, tuple[str, Path]] = {}
    for path in RESULTS.glob(f"{kind}-*.json"):
        m = _NAME.match(path.name)
        if m and (m.group(3) not in found or m.group(2) > found[m.group(3)][0]):
            found[m.group(3)] = (m.group(2), path)
    return {mode: path for mode, (_, path) in sorted(found.items())}


def _get(value: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _size(n: int) -> str:
    return f"{n // 1000} KB" if n >= 1000 else f"{n} B"


def _subtitle(doc: dict[str, Any], source: Path) -> str:
    m = doc.get("machine") or {}
    load = m.get("loadavg_start")
    load = " ".join(map(str, load)) if isinstance(load, list) else load
    parts = [
        str(m.get("date", "")),
        f"commit {m['commit']}" if m.get("commit") else "",
        f"{m['nproc']} CPUs" if m.get("nproc") else "",
        f"load {load}" if load is not None else "",
        source.name,
    ]
    return "; ".join(p for p in parts if p)


def _save(fig: Any, name: str) -> Path:
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _bars(ax: Any, groups: list[str], series: dict[str, list[float | None]], unit: str) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series (a peer)."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [v if v is not None else 0.0 for v in values]
        color = _PEER_COLORS.get(label, _COLORS[i % len(_COLORS)])
        bars = ax.bar(xs, ys, width, label=label, color=color)
        for bar, v in zip(bars, values, strict=True):
            if v is not None:
                text = f"{v:,.0f}" if v >= 10 else f"{v:.2g}"
                ax.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(unit)
    ax.grid(axis="y", alpha=0.3)


# --- cache ----------------------------------------------------------------------------------------


def plot_cache(doc: dict[str, Any], source: Path, mode: str) -> list[Path]:
    rows = [r for r in doc.get("results") or [] if isinstance(r, dict) and "figures" in r]
    if not rows:
        return []
    peers = list(dict.fromkeys(r.get("label") or r.get("peer") for r in rows))
    color = {p: _COLORS[i % len(_COLORS)] for i, p in enumerate(peers)}
    procs = sorted({r["processes"] for r in rows})
    workloads = [w for w in ("mixed", "get", "set") if any(r["workload"] == w for r in rows)]
    written = []

    fig, axes = plt.subplots(
        len(procs), len(workloads), figsize=(5 * len(workloads), 3.6 * len(procs)), squeeze=False
    )
    for i, n in enumerate(procs):
        for j, w in enumerate(workloads):
            ax = axes[i][j]
            for p in peers:
                pts = sorted(
                    (r["size"], _number(_get(r, "figures", "ops_per_s")))
                    for r in rows
                    if r["processes"] == n
                    and r["workload"] == w
                    and (r.get("label") or r["peer"]) == p
                )
                pts = [(x, y) for x, y in pts if y]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=p, color=color[p])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{w}, {n} process{'es' if n > 1 else ''}", fontsize=10)
            ax.set_xlabel("value size (bytes)")
            ax.set_ylabel("ops/s (higher is better)")
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Cache throughput through Django's caches[] ({mode})\n{_subtitle(doc, source)}")
    fig.tight_layout()
    written.append(_save(fig, f"cache-{mode}-throughput.png"))

    ops = [o for o in ("get", "set") if any(_get(r, "figures", "latency_us", o) for r in rows)]
    fig, axes = plt.subplots(
        len(procs), len(ops), figsize=(5.5 * len(ops), 3.6 * len(procs)), squeeze=False
    )
    for i, n in enumerate(procs):
        for j, op in enumerate(ops):
            ax = axes[i][j]
            for p in peers:
                chosen = [
                    r
                    for r in rows
                    if r["processes"] == n
                    and r["workload"] == op
                    and (r.get("label") or r["peer"]) == p
                ]
                for pct, style in (("p50", "-"), ("p99", "--")):
                    pts = sorted(
                        (r["size"], _number(_get(r, "figures", "latency_us", op, pct)))
                        for r in chosen
                    )
                    pts = [(x, y) for x, y in pts if y]
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True),
                            style,
                            marker="o" if pct == "p50" else None,
                            color=color[p],
                            label=f"{p} {pct}",
                        )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{op} only, {n} process{'es' if n > 1 else ''}", fontsize=10)
            ax.set_xlabel("value size (bytes)")
            ax.set_ylabel(f"{op} latency, µs (lower is better)")
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle(f"Cache latency, p50 (solid) and p99 (dashed) ({mode})\n{_subtitle(doc, source)}")
    fig.tight_layout()
    written.append(_save(fig, f"cache-{mode}-latency.png"))
    return written


# --- replication ----------------------------------------------------------------------------------

_PEERS = {"none": "no replication", "gateway": "gateway", "litestream": "Litestream"}


def plot_replication(doc: dict[str, Any], source: Path, mode: str) -> list[Path]:
    panels = []
    tps = [t for t in doc.get("throughput") or [] if isinstance(t, dict) and t.get("peers")]
    restores = [r for r in doc.get("restore") or [] if isinstance(r, dict)]
    lag = doc.get("lag") or {}
    idle = doc.get("idle") or {}
    peers = [p for p in _PEERS if any(p in t["peers"] for t in tps)] or list(_PEERS)

    def throughput(ax: Any) -> None:
        groups = [t["workload"] for t in tps]
        series = {
            _PEERS[p]: [_number(_get(t, "peers", p, "best", "commits_per_s")) for t in tps]
            for p in peers
        }
        _bars(ax, [f"{g} (4 processes)" for g in groups], series, "commits/s (higher is better)")
        ax.set_yscale("log")
        ax.set_title("write throughput, best round", fontsize=10)

    def commit_latency(ax: Any) -> None:
        groups, series = [], {_PEERS[p]: [] for p in peers}
        for t in tps:
            for pct in ("p50", "p99"):
                groups.append(f"{t['workload']} {pct}")
                for p in peers:
                    v = _number(_get(t, "peers", p, "best", pct))
                    series[_PEERS[p]].append(v * 1000 if v is not None else None)
        _bars(ax, groups, series, "ms (lower is better)")
        ax.set_yscale("log")
        ax.set_title("commit latency of the writers", fontsize=10)

    def lag_panel(ax: Any) -> None:
        names = [p for p in ("gateway", "litestream") if isinstance(lag.get(p), dict)]
        keys = [
            ("natural_p50", "lag p50"),
            ("natural_p99", "lag p99"),
            ("sync_p50", "sync asked p50"),
            ("sync_p99", "sync asked p99"),
        ]
        series = {}
        for p in names:
            values = [_number(lag[p].get(k)) for k, _ in keys]
            series[_PEERS[p]] = [v * 1000 if v is not None else None for v in values]
        _bars(ax, [label for _, label in keys], series, "ms (lower is better)")
        interval = _get(lag, names[0], "sync_interval") if names else ""
        ax.set_title(f"commit -> in the replica (sync interval {interval})", fontsize=10)

    def restore_panel(ax: Any) -> None:
        groups, series = [], {}
        for r in restores:
            size = f"{r['size'] / 2**20:,.0f} MiB"
            for key, what in (("from_segments_s", "as written"), ("from_snapshot_s", "snapshot")):
                groups.append(f"{size}\n{what}")
                for p in ("gateway", "litestream"):
                    if isinstance(r.get(p), dict):
                        series.setdefault(_PEERS[p], []).append(_number(r[p].get(key)))
        series = {k: v for k, v in series.items() if len(v) == len(groups)}
        _bars(ax, groups, series, "seconds (lower is better)")
        ax.set_title("restore time (Litestream without integrity check)", fontsize=10)

    def requests_panel(ax: Any) -> None:
        groups, series = [], {}
        for t in tps:
            if t.get("store") != "s3":
                continue
            groups.append(f"writing, {t['workload']}")
            for p in ("gateway", "litestream"):
                if p in t["peers"]:
                    v = _number(_get(t, "peers", p, "requests_per_hour"))
                    series.setdefault(_PEERS[p], []).append(v)
        steady = doc.get("steady") or {}
        if any(isinstance(steady.get(p), dict) for p in ("gateway", "litestream")):
            groups.append("1 commit / 20 ms")
            for p in ("gateway", "litestream"):
                v = _number(_get(steady, p, "requests_per_hour"))
                series.setdefault(_PEERS[p], []).append(v)
        if isinstance(idle.get("s3"), dict) or isinstance(idle.get("s3_litestream"), dict):
            groups.append("idle")
            series.setdefault(_PEERS["gateway"], []).append(
                _number(_get(idle, "s3", "requests_per_hour"))
            )
            series.setdefault(_PEERS["litestream"], []).append(
                _number(_get(idle, "s3_litestream", "requests_per_hour"))
            )
        series = {k: v for k, v in series.items() if len(v) == len(groups)}
        _bars(ax, groups, series, "S3 requests per hour (lower is cheaper)")
        ax.set_yscale("log")
        ax.set_title("store requests per hour, counted at the store", fontsize=10)

    if tps:
        panels += [throughput, commit_latency]
    if any(isinstance(lag.get(p), dict) for p in ("gateway", "litestream")):
        panels.append(lag_panel)
    if restores:
        panels.append(restore_panel)
    if any(t.get("store") == "s3" for t in tps) or idle.get("s3") or doc.get("steady"):
        panels.append(requests_panel)
    if not panels:
        return []
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        panel(ax)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"Replication ({mode})\n{_subtitle(doc, source)}")
    fig.tight_layout()
    return [_save(fig, f"replication-{mode}.png")]


# --- queue ----------------------------------------------------------------------------------------


def _leaves(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a nested dict, by its dotted path."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}{k}."))
    elif (n := _number(value)) is not None:
        out[prefix.rstrip(".")] = n
    return out


def plot_queue(doc: dict[str, Any], source: Path, mode: str) -> list[Path]:
    """Throughput-like (``per_s``) and latency-like (``p50``/``p99``) figures per peer, whatever
    the rows' exact layout: every peer row's numbers are found by their dotted path."""
    rows = [r for r in doc.get("results") or [] if isinstance(r, dict) and r.get("peer")]
    if not rows:
        return []
    leaves = {(r.get("label") or r["peer"]): _leaves(r) for r in rows}
    keys = list(dict.fromkeys(k for values in leaves.values() for k in values))
    rates = [k for k in keys if "per_s" in k and "cpu" not in k]
    latencies = [k for k in keys if re.search(r"(^|[._])p(50|99)($|[._])", k) and "cpu" not in k]
    written = []
    for kind, chosen, unit in (
        ("throughput", rates, "per second (higher is better)"),
        ("latency", latencies, "as measured; ms unless the name says (lower is better)"),
    ):
        chosen = chosen[:12]
        if not chosen:
            continue
        cols = 2 if len(chosen) > 1 else 1
        nrows = (len(chosen) + cols - 1) // cols
        height = 1.4 + 0.5 * len(leaves)  # room for every peer's (wrapped) name
        fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, height * nrows), squeeze=False)
        for ax, key in zip(axes.flat, chosen, strict=False):
            peers = [p for p in leaves if key in leaves[p]]
            ax.barh(
                [textwrap.fill(p, 28) for p in peers],
                [leaves[p][key] for p in peers],
                color=[_COLORS[list(leaves).index(p) % len(_COLORS)] for p in peers],
            )
            for y, p in enumerate(peers):
                v = leaves[p][key]
                ax.annotate(
                    f" {v:,.0f}" if v >= 10 else f" {v:.3g}", (v, y), va="center", fontsize=7
                )
            ax.set_title(key, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(axis="x", alpha=0.3)
            ax.set_xlabel(unit, fontsize=7)
        for ax in list(axes.flat)[len(chosen) :]:
            ax.set_visible(False)
        fig.suptitle(f"Queue {kind} ({mode})\n{_subtitle(doc, source)}")
        fig.tight_layout()
        written.append(_save(fig, f"queue-{mode}-{kind}.png"))
    return written


PLOTTERS = {"cache": plot_cache, "queue": plot_queue, "replication": plot_replication}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(PLOTTERS), action="append")
    args = parser.parse_args()
    status = 0
    for kind in args.only or sorted(PLOTTERS):
        for mode, path in newest(kind).items():
            try:
                doc = json.loads(path.read_text())
                written = PLOTTERS[kind](doc, path, mode)
            except Exception as e:  # one odd file must not stop the other plots
                print(f"plots: {path.name}: {type(e).__name__}: {e}", file=sys.stderr)
                status = 1
                continue
            for w in written:
                print(f"plots: wrote {w.relative_to(BENCH.parent)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
