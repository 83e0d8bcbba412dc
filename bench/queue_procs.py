"""The worker processes a queue peer runs: start, freeze, thaw, stop, and what they cost.

Every peer's workers are started as one command in a new session, so the command and every
process it forks (pool children, RQ's per-job work horses) share one process group: the
benchmark freezes the whole group with SIGSTOP while it enqueues, thaws it with SIGCONT to start
a drain, and stops it with SIGTERM (SIGKILL after a timeout), never leaving a process behind.

CPU and memory come from ``/proc``: CPU is the run time of every thread of every live process of
the group plus the cutime + cstime of the children they reaped (RQ's work horses), memory the
sum of VmRSS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


class WorkerGroup:
    """One peer's worker command, running in its own session and process group."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.pgid = self.process.pid
        self.log = log

    def pids(self) -> list[int]:
        """The live processes of the group."""
        return group_pids(self.pgid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def freeze(self) -> None:
        """SIGSTOP every process of the group."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT every process of the group."""
        self._signal(signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group (thawed first), SIGKILL what is left after ``timeout``; reap."""
        self.thaw()
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self.alive() or self.pids()):
            time.sleep(0.05)
        if self.pids() or self.alive():
            self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signum)


def group_pids(pgid: int) -> list[int]:
    """Every live (not zombie) process whose process group is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] is the state (after the command name), fields[2] the process group.
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int], reaped: bool = True) -> float:
    """CPU time of ``pids`` (every thread), plus their reaped children's with ``reaped``.

    A live process's own time comes from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; the
    clock-tick fields of ``stat`` would round an idle second to zero); reaped children's only
    exists in ticks (cutime + cstime, fields 16 and 17 of stat(5)).
    """
    total_ns = 0
    ticks = 0
    for pid in pids:
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total_ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        fields = _stat_fields(pid) if reaped else None
        if fields is not None:
            ticks += int(fields[13]) + int(fields[14])
    return total_ns / 1e9 + ticks / _TICK


def rss_bytes(pids: list[int]) -> int:
    """The sum of VmRSS of ``pids``."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy_seconds() -> float:
    """CPU time every CPU spent on anything but idle and I/O wait since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


class Meter:
    """CPU of the server and of a worker group over an interval, and their peak RSS.

    A background thread samples RSS every ``period`` seconds between :meth:`start` and
    :meth:`stop`; CPU is read at both ends. The whole machine's busy CPU time is read too, so a
    report can say how much other work shared the interval.
    """

    def __init__(self, server_pid: int | None, group: WorkerGroup, period: float = 0.1) -> None:
        self.server_pid = server_pid
        self.group = group
        self.period = period
        self.server_rss = 0
        self.workers_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self.started = time.monotonic()
        self.server_cpu0 = self._server_cpu()
        self.workers_cpu0 = cpu_seconds(self.group.pids())
        self.busy0 = machine_busy_seconds()
        self.own0 = _own_cpu()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float | None]:
        """Stop sampling; return the figures of the interval (CPU as a fraction of one CPU)."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        wall = time.monotonic() - self.started
        server_cpu = self._server_cpu()
        workers_cpu = cpu_seconds(self.group.pids()) - self.workers_cpu0
        busy = machine_busy_seconds() - self.busy0
        own = _own_cpu() - self.own0
        server = None
        if server_cpu is not None and self.server_cpu0 is not None:
            server = server_cpu - self.server_cpu0
        others = busy - own - workers_cpu - (server or 0)
        return {
            "wall_s": wall,
            "server_cpu_s": server,
            "workers_cpu_s": workers_cpu,
            "benchmark_cpu_s": own,
            # CPUs busy with work that was neither this peer nor the benchmark, on average.
            "other_cpus": max(0.0, others) / wall if wall > 0 else None,
            "server_peak_rss": self.server_rss or None,
            "workers_peak_rss": self.workers_rss,
        }

    def _server_cpu(self) -> float | None:
        return cpu_seconds([self.server_pid], reaped=False) if self.server_pid else None

    def _sample(self) -> None:
        while True:
            if self.server_pid:
                self.server_rss = max(self.server_rss, rss_bytes([self.server_pid]))
            self.workers_rss = max(self.workers_rss, rss_bytes(self.group.pids()))
            if self._stop.wait(self.period):
                return
