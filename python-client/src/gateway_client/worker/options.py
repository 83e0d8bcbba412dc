"""The worker's settings and their command-line options, shared by both entry points.

``python -m gateway_client.worker`` and ``manage.py gateway_worker`` take the same options; this
module adds them to an ``argparse`` parser (Django's commands use one too) and turns the parsed
namespace into a :class:`WorkerOptions`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["WorkerOptions", "add_arguments", "options_from_namespace"]

# Long enough that an idle worker costs the gateway nothing worth measuring, short enough that a
# stop request is never held up for long by a gateway that lets a waiting dequeue run out.
DEFAULT_WAIT_MS = 10_000
# Jobs one dequeue may hand a process at most; it asks for fewer when its jobs take long.
DEFAULT_PREFETCH = 64
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs. Times are in seconds.

    :ivar socket: the gateway's socket path.
    :ivar queues: queue names in order of preference.
    :ivar concurrency: worker processes, each running one job at a time.
    :ivar lease_seconds: the lease taken on each job and renewed by each heartbeat.
    :ivar heartbeat_interval: seconds between heartbeats (default: a third of the lease).
    :ivar task_timeout: seconds a job may run before it is failed and its process replaced.
    :ivar shutdown_timeout: seconds running jobs may go on after SIGTERM before they are
        given back.
    :ivar max_tasks_per_child: jobs a process runs before it is replaced (None: no limit).
    :ivar worker_id: the id recorded on jobs; default ``hostname:pid`` of each process.
    :ivar wait_ms: how long one ``queue.dequeue`` waits for a job before it is sent again
        (``--dequeue-wait``, in seconds on the command line).
    :ivar prefetch: jobs one dequeue may hand a process at most (1: no prefetch). A process asks
        for as many as it would run in about 10 ms at its jobs' recent mean run time, up to this.
    """

    socket: str
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 1
    lease_seconds: float = 60.0
    heartbeat_interval: float | None = None
    task_timeout: float | None = None
    shutdown_timeout: float = 30.0
    max_tasks_per_child: int | None = None
    worker_id: str | None = None
    wait_ms: int = DEFAULT_WAIT_MS
    prefetch: int = DEFAULT_PREFETCH

    def __post_init__(self) -> None:
        if not self.socket:
            raise ValueError("the worker needs the gateway's socket path")
        if not self.queues or not all(self.queues):
            raise ValueError("the worker needs at least one queue name")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.lease_seconds <= 0:
            raise ValueError("--lease-seconds must be positive")
        if self.heartbeat_interval is not None and not (
            0 < self.heartbeat_interval < self.lease_seconds
        ):
            raise ValueError("--heartbeat-interval must be positive and shorter than the lease")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ValueError("--task-timeout must be positive")
        if self.shutdown_timeout < 0:
            raise ValueError("--shutdown-timeout must not be negative")
        if self.max_tasks_per_child is not None and self.max_tasks_per_child < 1:
            raise ValueError("--max-tasks-per-child must be at least 1")
        if not 0 <= self.wait_ms <= 600_000:
            raise ValueError("wait_ms must be 0 to 600000")
        if not 1 <= self.prefetch <= 100:
            raise ValueError("--prefetch must be 1 to 100")

    @property
    def effective_heartbeat_interval(self) -> float:
        """The heartbeat interval: as given, else a third of the lease."""
        return self.heartbeat_interval or self.lease_seconds / 3


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser, *, socket_required: bool = True) -> None:
    """Add the worker's options to ``parser``."""
    parser.add_argument(
        "--socket",
        default=os.environ.get("GATEWAY_SOCKET") or None,
        required=socket_required and not os.environ.get("GATEWAY_SOCKET"),
        help="the gateway's socket path (default: $GATEWAY_SOCKET)",
    )
    parser.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        metavar="NAME",
        help="a queue to take jobs from; repeat it, most preferred first (default: default)",
    )
    parser.add_argument(
        "--concurrency", "-c", type=int, default=1, help="worker processes (default 1)"
    )
    parser.add_argument(
        "--lease-seconds",
        type=_positive_float,
        default=60.0,
        help="lease taken on each job, renewed by heartbeats (default 60)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=None,
        help="seconds between heartbeats (default: a third of the lease)",
    )
    parser.add_argument(
        "--task-timeout",
        type=_positive_float,
        default=None,
        help="seconds a job may run; then it fails with TaskTimeout and its process is replaced",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds running jobs may go on after SIGTERM before they are given back (default 30)",
    )
    parser.add_argument(
        "--max-tasks-per-child",
        type=int,
        default=None,
        help="jobs a process runs before it is replaced (default: no limit)",
    )
    parser.add_argument(
        "--dequeue-wait",
        type=_positive_float,
        default=DEFAULT_WAIT_MS / 1000,
        help="seconds one queue.dequeue waits for a job before it is sent again (default "
        f"{DEFAULT_WAIT_MS / 1000:g}; the wait ends at once when a job is ready)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        help="jobs one dequeue may hand a process at most; it takes only as many as it would run "
        f"in about 10 ms (default {DEFAULT_PREFETCH}; 1 takes one job at a time)",
    )
    parser.add_argument(
        "--worker-id",
        default=None,
        help="id recorded on jobs (default hostname:pid; with --concurrency > 1 each process "
        "gets ID-1, ID-2, ...)",
    )


def _value(values: Mapping[str, Any], key: str, convert: Callable[[Any], T], default: T) -> T:
    value = values.get(key)
    return default if value is None else convert(value)


def options_from_namespace(
    namespace: argparse.Namespace | Mapping[str, Any], *, socket: str | None = None
) -> WorkerOptions:
    """Build :class:`WorkerOptions` from parsed options (a namespace or Django's options dict).

    :param socket: used when the options name no socket.
    :raises ValueError: if an option is out of range or no socket is known.
    """
    values = vars(namespace) if isinstance(namespace, argparse.Namespace) else namespace
    return WorkerOptions(
        socket=str(values.get("socket") or socket or ""),
        queues=tuple(str(q) for q in values.get("queues") or ["default"]),
        concurrency=_value(values, "concurrency", int, 1),
        lease_seconds=_value(values, "lease_seconds", float, 60.0),
        heartbeat_interval=_value(values, "heartbeat_interval", float, None),
        task_timeout=_value(values, "task_timeout", float, None),
        shutdown_timeout=_value(values, "shutdown_timeout", float, 30.0),
        max_tasks_per_child=_value(values, "max_tasks_per_child", int, None),
        worker_id=_value(values, "worker_id", str, None),
        wait_ms=round(_value(values, "dequeue_wait", float, DEFAULT_WAIT_MS / 1000) * 1000),
        prefetch=_value(values, "prefetch", int, DEFAULT_PREFETCH),
    )
