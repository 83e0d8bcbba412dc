"""The job queue ops (``gateway/PROTOCOL.md``, "Queue operations") as typed methods.

:class:`QueueClient` wraps a :class:`~gateway_client.Client` (blocking, any thread or process);
:class:`AsyncQueueClient` wraps an :class:`~gateway_client.aio.AsyncClient` for the ops an
asyncio application needs (enqueue, get, wait, cancel). Both return :class:`Job` values::

    from gateway_client.queue import QueueClient

    queue = QueueClient("/srv/mysite/run/gateway.sock")
    job = queue.enqueue("myapp.tasks.send_mail", args=[42], max_attempts=3)
    job = queue.wait(job.id, timeout=10)   # long-polls until the job finished
    job.state                              # "SUCCESSFUL"

Enqueue is not retried on a lost connection (the job may have been stored), as for every
write of :class:`~gateway_client.Client`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway_client.aio import AsyncClient
from gateway_client.client import Client
from gateway_client.errors import ProtocolError

__all__ = [
    "CANCELLED",
    "FAILED",
    "FINISHED_STATES",
    "READY",
    "RUNNING",
    "SCHEDULED",
    "SUCCESSFUL",
    "AsyncQueueClient",
    "Heartbeat",
    "Job",
    "JobError",
    "QueueClient",
    "enqueue_args",
]

SCHEDULED = "SCHEDULED"
READY = "READY"
RUNNING = "RUNNING"
SUCCESSFUL = "SUCCESSFUL"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
#: States a job never leaves on its own (``queue.wait`` returns once a job is in one).
FINISHED_STATES = frozenset({SUCCESSFUL, FAILED, CANCELLED})

# Seconds a blocking op (dequeue with wait_ms, queue.wait) may take beyond its own wait before
# the client gives up on the reply.
_REPLY_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class JobError:
    """One failed attempt of a job, as the server recorded it."""

    attempt: int
    at: float | None
    exception_class_path: str
    traceback: str
    worker_id: str | None

    @classmethod
    def from_map(cls, value: Mapping[str, Any]) -> JobError:
        """Build from one entry of a job's ``errors`` array."""
        return cls(
            attempt=int(value.get("attempt") or 0),
            at=value.get("at"),
            exception_class_path=str(value.get("exception_class_path") or ""),
            traceback=str(value.get("traceback") or ""),
            worker_id=value.get("worker_id"),
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the server returned it (``queue.get``, ``queue.enqueue``, ``queue.dequeue``...).

    Times are Unix seconds (floats) or None when not known yet. ``lease_token`` and
    ``lease_expires_at`` are set only on jobs handed out by ``queue.dequeue``.
    """

    id: str
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    state: str
    run_after: float | None
    attempts: int
    max_attempts: int
    enqueued_at: float | None
    started_at: float | None
    finished_at: float | None
    last_attempted_at: float | None
    worker_ids: list[str]
    errors: list[JobError]
    return_value: Any
    unique_key: str | None
    lease_token: str | None = None
    lease_expires_at: float | None = None
    #: The map exactly as the server sent it, including fields this client does not know.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_finished(self) -> bool:
        """True when the job is SUCCESSFUL, FAILED or CANCELLED."""
        return self.state in FINISHED_STATES

    @classmethod
    def from_map(cls, value: Any) -> Job:
        """Build from a job map of the protocol.

        :raises ProtocolError: if ``value`` is not a map with a str ``id``, ``task`` and ``state``.
        """
        if not isinstance(value, Mapping):
            raise ProtocolError(f"expected a job map, got {type(value).__name__}")
        for key in ("id", "task", "state"):
            if not isinstance(value.get(key), str):
                raise ProtocolError(f"job map without a str {key!r}: {value!r:.200}")
        return cls(
            id=value["id"],
            queue=value.get("queue") or "default",
            task=value["task"],
            args=list(value.get("args") or []),
            kwargs=dict(value.get("kwargs") or {}),
            priority=int(value.get("priority") or 0),
            state=value["state"],
            run_after=value.get("run_after"),
            attempts=int(value.get("attempts") or 0),
            max_attempts=int(value.get("max_attempts") or 1),
            enqueued_at=value.get("enqueued_at"),
            started_at=value.get("started_at"),
            finished_at=value.get("finished_at"),
            last_attempted_at=value.get("last_attempted_at"),
            worker_ids=[str(w) for w in value.get("worker_ids") or []],
            errors=[JobError.from_map(e) for e in value.get("errors") or []],
            return_value=value.get("return_value"),
            unique_key=value.get("unique_key"),
            lease_token=value.get("lease_token"),
            lease_expires_at=value.get("lease_expires_at"),
            raw=dict(value),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The answer to ``queue.heartbeat``: whether the job was cancelled, and the new deadline."""

    cancelled: bool
    lease_expires_at: float | None


def _timestamp(value: float | dt.datetime) -> float:
    # A naive datetime is local time, as datetime.timestamp() and Django (USE_TZ=False) take it.
    return value.timestamp() if isinstance(value, dt.datetime) else float(value)


def enqueue_args(
    task: str,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    queue: str | None = None,
    priority: int | None = None,
    run_after: float | dt.datetime | None = None,
    max_attempts: int | None = None,
    backoff: float | None = None,
    unique_key: str | None = None,
) -> dict[str, Any]:
    """Build the args map of ``queue.enqueue`` (one element of ``queue.enqueue_many``'s ``jobs``).

    Arguments left as None are not sent, so the server's defaults apply.

    :param task: the dotted path the worker imports and calls.
    :param run_after: Unix seconds or a datetime; the job is not handed out before it.
    :raises ValueError: if ``task`` is empty.
    """
    if not task:
        raise ValueError("a job needs a task path")
    request: dict[str, Any] = {"task": task, "args": list(args), "kwargs": dict(kwargs or {})}
    optional = {
        "queue": queue,
        "priority": priority,
        "run_after": None if run_after is None else _timestamp(run_after),
        "max_attempts": max_attempts,
        "backoff": None if backoff is None else float(backoff),
        "unique_key": unique_key,
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    return request


def _jobs(value: Any) -> list[Job]:
    if not isinstance(value, list):
        raise ProtocolError(f"expected an array of jobs, got {type(value).__name__}")
    return [Job.from_map(item) for item in value]


def _count(value: Any, op: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{op} answered {value!r:.100}, not a count")
    return value


def _blocking_timeout(default: float | None, wait_seconds: float) -> float | None:
    return None if default is None else default + wait_seconds + _REPLY_MARGIN


class QueueClient:
    """The queue ops over a blocking :class:`~gateway_client.Client`.

    Safe to share between threads and forked processes, like the client it wraps.

    :param client: a :class:`~gateway_client.Client`, or the gateway's socket path to make one.
    :param client_options: keyword arguments for the :class:`~gateway_client.Client` made from a
        path (ignored when a client is given).
    """

    def __init__(self, client: Client | str | os.PathLike[str], **client_options: Any) -> None:
        self.client = client if isinstance(client, Client) else Client(client, **client_options)

    def __repr__(self) -> str:
        return f"<QueueClient socket_path={self.client.socket_path!r}>"

    def close(self) -> None:
        """Close the wrapped client's connections (it stays usable)."""
        self.client.close()

    # --- producers -------------------------------------------------------------------------------

    def enqueue(self, task: str, **options: Any) -> Job:
        """Enqueue one job; return it once its transaction has committed (acknowledged).

        Takes the keyword arguments of :func:`enqueue_args`. With ``unique_key``, a job with that
        key that is still scheduled, ready or running is returned instead of a new one.

        :raises BadArgument: if the server refused an argument (the message names it).
        :raises StorageError: if the queue database failed; nothing was stored.
        :raises ConnectionError: if the gateway could not be reached (the job may or may not
            have been stored when the connection broke after sending).
        """
        return Job.from_map(self.client.request("queue.enqueue", enqueue_args(task, **options)))

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue several jobs in one transaction; return them in order.

        :param jobs: args maps, for example built with :func:`enqueue_args`.
        :raises BadArgument: if any job is invalid (then none is stored).
        :raises StorageError: if the queue database failed; nothing was stored.
        :raises ConnectionError: if the gateway could not be reached.
        """
        return _jobs(self.client.request("queue.enqueue_many", {"jobs": [dict(j) for j in jobs]}))

    def get(self, job_id: str) -> Job:
        """Return the job's current state.

        :raises JobNotFound: if no job has this id (it may have been pruned).
        :raises ConnectionError: if the gateway could not be reached.
        """
        return Job.from_map(self.client.request("queue.get", {"id": job_id}))

    def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Block until the job is finished or ``timeout`` seconds passed; return it as it is.

        The server answers as soon as the job finishes (no polling on either side).

        :param timeout: seconds, at most 600.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        timeout_ms = max(0, round(timeout * 1000))
        result = self.client.request(
            "queue.wait",
            {"id": job_id, "timeout_ms": timeout_ms},
            timeout=_blocking_timeout(self.client.timeout, timeout_ms / 1000),
        )
        return Job.from_map(result)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished; a running job's worker learns it by heartbeat.

        :raises InvalidState: if the job already finished.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        return Job.from_map(self.client.request("queue.cancel", {"id": job_id}))

    # --- workers ---------------------------------------------------------------------------------

    def dequeue(
        self,
        queues: Sequence[str],
        worker_id: str,
        *,
        max_jobs: int = 1,
        lease_seconds: float = 60.0,
        wait_ms: int = 0,
    ) -> list[Job]:
        """Take up to ``max_jobs`` ready jobs, waiting up to ``wait_ms`` for one to be ready.

        Each job comes with a ``lease_token``; keep it alive with :meth:`heartbeat` and end it
        with :meth:`complete` or :meth:`fail` before ``lease_expires_at``.

        :param queues: queue names in order of preference.
        :raises BadArgument: if an argument is out of range.
        :raises ConnectionError: if the gateway could not be reached; jobs handed out on a
            connection that broke before the reply came are re-run when their lease expires.
        """
        result = self.client.request(
            "queue.dequeue",
            {
                "queues": list(queues),
                "worker_id": worker_id,
                "max_jobs": max_jobs,
                "lease_seconds": float(lease_seconds),
                "wait_ms": wait_ms,
            },
            timeout=_blocking_timeout(self.client.timeout, wait_ms / 1000),
        )
        return _jobs(result)

    def heartbeat(self, job_id: str, lease_token: str, lease_seconds: float = 60.0) -> Heartbeat:
        """Extend the lease by ``lease_seconds`` from now; report whether the job was cancelled.

        :raises LeaseLost: if the lease expired or is not this token's any more.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        result = self.client.request(
            "queue.heartbeat",
            {"id": job_id, "lease_token": lease_token, "lease_seconds": float(lease_seconds)},
        )
        if not isinstance(result, Mapping):
            raise ProtocolError(f"queue.heartbeat answered {result!r:.100}, not a map")
        return Heartbeat(bool(result.get("cancelled")), result.get("lease_expires_at"))

    def complete(self, job_id: str, lease_token: str, return_value: Any = None) -> Job:
        """Mark the job SUCCESSFUL with ``return_value``; return the job.

        :raises LeaseLost: if the lease expired, was cancelled, or is another attempt's.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        args: dict[str, Any] = {"id": job_id, "lease_token": lease_token}
        if return_value is not None:
            args["return_value"] = return_value
        return Job.from_map(self.client.request("queue.complete", args))

    def release(self, job_id: str, lease_token: str) -> Job:
        """Give back a prefetched job that has not started; return it, READY again.

        The job is as if it had never been handed out (no attempt is used). See "Prefetch" in
        ``gateway/PROTOCOL.md``.

        :raises InvalidState: if the gateway counts the job as started (the first job of a
            dequeue's answer always is; after a gateway restart every handed-out job is).
        :raises LeaseLost: if the lease expired, was cancelled, or is another attempt's.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        args = {"id": job_id, "lease_token": lease_token}
        return Job.from_map(self.client.request("queue.release", args))

    def fail(
        self,
        job_id: str,
        lease_token: str,
        *,
        exception_class_path: str | None = None,
        traceback: str | None = None,
        retry: bool = True,
    ) -> Job:
        """Record a failed attempt; return the job, SCHEDULED for a retry or FAILED.

        :param retry: False fails the job now whatever attempts remain.
        :raises LeaseLost: if the lease expired, was cancelled, or is another attempt's.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        args: dict[str, Any] = {"id": job_id, "lease_token": lease_token, "retry": retry}
        if exception_class_path is not None:
            args["exception_class_path"] = exception_class_path
        if traceback is not None:
            args["traceback"] = traceback
        return Job.from_map(self.client.request("queue.fail", args))

    # --- operators -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return ``queue.stats``: per queue, paused flag, counts per state, ages, latencies.

        :raises ConnectionError: if the gateway could not be reached.
        """
        result = self.client.request("queue.stats")
        if not isinstance(result, Mapping):
            raise ProtocolError(f"queue.stats answered {type(result).__name__}, not a map")
        return dict(result)

    def pause(self, queue: str) -> None:
        """Stop handing out jobs of ``queue`` (it still accepts them); persists across restarts.

        :raises ConnectionError: if the gateway could not be reached.
        """
        self.client.request("queue.pause", {"queue": queue})

    def resume(self, queue: str) -> None:
        """Hand out jobs of ``queue`` again.

        :raises ConnectionError: if the gateway could not be reached.
        """
        self.client.request("queue.resume", {"queue": queue})

    def retry_failed(self, queue: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Make FAILED jobs READY again (attempts start over); return how many.

        :param queue: only this queue's failed jobs.
        :param ids: only these jobs.
        :raises ConnectionError: if the gateway could not be reached.
        """
        args: dict[str, Any] = {}
        if queue is not None:
            args["queue"] = queue
        if ids is not None:
            args["ids"] = list(ids)
        return _count(self.client.request("queue.retry_failed", args), "queue.retry_failed")

    def prune(self, older_than: float, states: Sequence[str] | None = None) -> int:
        """Delete finished jobs whose ``finished_at`` is more than ``older_than`` seconds ago.

        :param states: which finished states (default SUCCESSFUL, FAILED and CANCELLED).
        :raises ConnectionError: if the gateway could not be reached.
        """
        args: dict[str, Any] = {"older_than": float(older_than)}
        if states is not None:
            args["states"] = list(states)
        return _count(self.client.request("queue.prune", args), "queue.prune")


class AsyncQueueClient:
    """The producer side of the queue over an :class:`~gateway_client.aio.AsyncClient`.

    :param client: an :class:`~gateway_client.aio.AsyncClient`, or the socket path to make one.
    :param client_options: keyword arguments for the client made from a path.
    """

    def __init__(self, client: AsyncClient | str | os.PathLike[str], **client_options: Any) -> None:
        self.client = (
            client if isinstance(client, AsyncClient) else AsyncClient(client, **client_options)
        )

    def __repr__(self) -> str:
        return f"<AsyncQueueClient socket_path={self.client.socket_path!r}>"

    async def enqueue(self, task: str, **options: Any) -> Job:
        """Enqueue one job (see :meth:`QueueClient.enqueue`).

        :raises BadArgument: if the server refused an argument.
        :raises StorageError: if the queue database failed; nothing was stored.
        :raises ConnectionError: if the gateway could not be reached.
        """
        result = await self.client.request("queue.enqueue", enqueue_args(task, **options))
        return Job.from_map(result)

    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Enqueue several jobs in one transaction (see :meth:`QueueClient.enqueue_many`).

        :raises BadArgument: if any job is invalid (then none is stored).
        :raises ConnectionError: if the gateway could not be reached.
        """
        result = await self.client.request("queue.enqueue_many", {"jobs": [dict(j) for j in jobs]})
        return _jobs(result)

    async def get(self, job_id: str) -> Job:
        """Return the job's current state.

        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        return Job.from_map(await self.client.request("queue.get", {"id": job_id}))

    async def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Wait until the job is finished or ``timeout`` seconds passed; return it as it is.

        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        timeout_ms = max(0, round(timeout * 1000))
        result = await self.client.request(
            "queue.wait",
            {"id": job_id, "timeout_ms": timeout_ms},
            timeout=_blocking_timeout(self.client.timeout, timeout_ms / 1000),
        )
        return Job.from_map(result)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished.

        :raises InvalidState: if the job already finished.
        :raises JobNotFound: if no job has this id.
        :raises ConnectionError: if the gateway could not be reached.
        """
        return Job.from_map(await self.client.request("queue.cancel", {"id": job_id}))
