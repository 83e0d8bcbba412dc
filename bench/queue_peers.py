"""The job queues the queue benchmark compares, each behind the same small adapter.

An adapter knows how to reset its peer's state, which command runs its four workers, and how to
enqueue one of the benchmark's jobs (:mod:`queue_tasks`) through the peer's ordinary producer
API. Everything else (timing, freezing workers, counting finished jobs) is the benchmark's and
the same for every peer. The servers (gateway, redis-server) are started by ``bench/run`` on Unix
sockets in a temporary folder.

| peer | workers | broker / storage |
|---|---|---|
| gateway | ``python -m gateway_client.worker --concurrency 4`` (4 processes) | ``build/gateway`` |
| gateway-django | the same; jobs enqueued by ``task.enqueue()``, GatewayTaskBackend | ditto |
| RQ | ``rq worker-pool -n 4`` with ``Worker`` (a fork per job) or ``SimpleWorker`` | redis-server |
| Celery | ``celery worker -P prefork -c 4`` or ``-P threads -c 4`` | redis-server |
| Huey | ``huey_consumer -w 4 -k process`` or ``-k thread`` | ``SqliteHuey`` file |
| django-tasks | 4 ``django-admin db_worker`` processes | ``django_tasks_db`` on SQLite |
"""

from __future__ import annotations

import importlib
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
#: The gateway queue the benchmark's jobs go to.
GATEWAY_QUEUE = "bench"
#: Workers per peer (the issue's scenario).
WORKERS = 4


@dataclass(frozen=True)
class Endpoints:
    """Where the servers started by ``bench/run`` listen, and the benchmark's own files."""

    workdir: Path
    report_socket: str
    gateway_socket: str | None = None
    redis_socket: str | None = None
    pids: dict[str, int] = field(default_factory=dict)  # server name -> pid

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a worker command: the jobs import from bench/, report here."""
        python_path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
        return {
            **os.environ,
            "PYTHONPATH": python_path,
            "QUEUE_BENCH_REPORT": self.report_socket,
            **extra,
        }


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment."""
    return str(Path(sys.executable).with_name(name))


class QueuePeer(ABC):
    """One queue under test. Subclasses fill in the peer-specific parts.

    :cvar server: the server process the peer talks to (a key of ``Endpoints.pids``), or None
        when its workers and producer use a file directly.
    :cvar modules: modules that must import for the peer to run.
    """

    name = ""
    label = ""
    server: str | None = None
    modules: tuple[str, ...] = ()
    #: A SQLite file that workers write while they poll; the benchmark never freezes them while
    #: one of them holds its write lock (that would block the producer).
    sqlite_path: Path | None = None

    def __init__(self, ep: Endpoints) -> None:
        self.ep = ep

    def skip_reason(self) -> str | None:
        """Why this peer cannot run here, or None."""
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as e:
                return f"`{module}` does not import ({e})"
        if self.server == "gateway" and not _exists(self.ep.gateway_socket):
            return "build/gateway not started (no socket)"
        if self.server == "redis" and not _exists(self.ep.redis_socket):
            return "redis-server not started (no socket)"
        return None

    def prepare(self) -> None:
        """Reset the peer's state and connect the producer (before the workers start)."""
        return None  # nothing to reset by default

    @abstractmethod
    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        """The command that runs the peer's workers, and its environment."""

    @abstractmethod
    def enqueue(self, job: str, *args: Any) -> None:
        """Enqueue one job (``stamp``, ``noop`` or ``nap`` of :mod:`queue_tasks`) and return
        when the peer's producer call returns."""

    def extra_figures(self) -> dict[str, Any]:
        """Figures only this peer has (asked after the pickups)."""
        return {}

    def close(self) -> None:
        """Drop the producer's connections."""
        return None  # none by default


def _exists(path: str | None) -> bool:
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]


class GatewayPeer(QueuePeer):
    name = "gateway"
    label = "gateway (4 worker processes)"
    server = "gateway"
    modules = ("gateway_client.queue",)

    def prepare(self) -> None:
        from gateway_client.queue import QueueClient

        self.queue = QueueClient(self.ep.gateway_socket, timeout=30)  # type: ignore[arg-type]

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "gateway_client.worker", "--socket", self.ep.gateway_socket]
        argv += ["--queue", GATEWAY_QUEUE, "--concurrency", str(WORKERS), "--dequeue-wait", "30"]
        return argv, self.ep.env()  # type: ignore[list-item]

    def enqueue(self, job: str, *args: Any) -> None:
        self.queue.enqueue(f"queue_tasks.{job}", args=args, queue=GATEWAY_QUEUE)

    def extra_figures(self) -> dict[str, Any]:
        # The gateway's own view: from a job being ready to it being handed to a worker.
        stats = self.queue.stats()["queues"][GATEWAY_QUEUE]
        return {"server_pickup_latency_s": stats.get("pickup_latency")}

    def close(self) -> None:
        self.queue.close()


class GatewayDjangoPeer(QueuePeer):
    """The gateway as a Django project uses it: ``task.enqueue()`` on ``GatewayTaskBackend``."""

    name = "gateway-django"
    label = "gateway through django.tasks (GatewayTaskBackend), 4 worker processes"
    server = "gateway"
    modules = ("django.tasks", "gateway_client.django")

    def prepare(self) -> None:
        module = _setup_django(self.ep)
        self.tasks = {
            job: getattr(module, job).using(backend="gateway") for job in ("stamp", "noop", "nap")
        }

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        # With DJANGO_SETTINGS_MODULE the worker takes the socket and queues from TASKS.
        argv = [sys.executable, "-m", "gateway_client.worker", "--backend", "gateway"]
        argv += ["--concurrency", str(WORKERS), "--dequeue-wait", "30"]
        return argv, self.ep.env(**_django_env(self.ep))

    def enqueue(self, job: str, *args: Any) -> None:
        self.tasks[job].enqueue(*args)


class RqPeer(QueuePeer):
    server = "redis"
    modules = ("rq",)
    worker_class = "rq.worker.Worker"

    def prepare(self) -> None:
        import redis
        from rq import Queue

        self.redis = redis.Redis(unix_socket_path=self.ep.redis_socket)
        self.redis.flushdb()
        self.queue = Queue("bench", connection=self.redis)

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        argv = [_bin("rq"), "worker-pool", "-n", str(WORKERS), "-w", self.worker_class]
        argv += ["-u", f"unix://{self.ep.redis_socket}", "-q", "bench"]
        return argv, self.ep.env()

    def enqueue(self, job: str, *args: Any) -> None:
        self.queue.enqueue(f"queue_tasks.{job}", *args)

    def close(self) -> None:
        self.redis.close()


class RqForkPeer(RqPeer):
    name = "rq"
    label = "RQ, Worker (a fork per job), 4 processes"


class RqSimplePeer(RqPeer):
    name = "rq-simple"
    label = "RQ, SimpleWorker, 4 processes"
    worker_class = "rq.worker.SimpleWorker"


class CeleryPeer(QueuePeer):
    server = "redis"
    modules = ("celery", "redis")
    pool = "prefork"

    def prepare(self) -> None:
        import redis

        with redis.Redis(unix_socket_path=self.ep.redis_socket) as r:
            r.flushdb()
        os.environ["QUEUE_BENCH_REDIS"] = self.ep.redis_socket  # type: ignore[assignment]
        # A fresh app (and connection pool) for each Celery peer.
        self.app = importlib.reload(importlib.import_module("queue_celery_app"))

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "celery", "-A", "queue_celery_app", "worker"]
        argv += ["-P", self.pool, "-c", str(WORKERS), "-l", "WARNING"]
        # No gossip, mingle or heartbeats: they talk to other workers, and there are none.
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return argv, self.ep.env(QUEUE_BENCH_REDIS=self.ep.redis_socket or "")

    def enqueue(self, job: str, *args: Any) -> None:
        getattr(self.app, job).delay(*args)

    def close(self) -> None:
        self.app.app.close()


class CeleryPreforkPeer(CeleryPeer):
    name = "celery-prefork"
    label = "Celery, prefork pool, concurrency 4"


class CeleryThreadsPeer(CeleryPeer):
    name = "celery-threads"
    label = "Celery, threads pool, concurrency 4"
    pool = "threads"


class HueyPeer(QueuePeer):
    modules = ("huey",)
    worker_type = "process"

    @property
    def sqlite_path(self) -> Path:  # type: ignore[override]
        return self.ep.workdir / f"{self.name}.sqlite3"

    def prepare(self) -> None:
        _remove_sqlite(self.sqlite_path)
        os.environ["QUEUE_BENCH_HUEY_DB"] = str(self.sqlite_path)
        self.app = importlib.reload(importlib.import_module("queue_huey_app"))

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        argv = [_bin("huey_consumer"), "queue_huey_app.huey", "-w", str(WORKERS)]
        argv += ["-k", self.worker_type, "-q"]
        return argv, self.ep.env(QUEUE_BENCH_HUEY_DB=str(self.sqlite_path))

    def enqueue(self, job: str, *args: Any) -> None:
        getattr(self.app, job)(*args)

    def close(self) -> None:
        self.app.huey.storage.close()


class HueyProcessPeer(HueyPeer):
    name = "huey-process"
    label = "Huey, SqliteHuey, 4 worker processes"


class HueyThreadPeer(HueyPeer):
    name = "huey-thread"
    label = "Huey, SqliteHuey, 4 worker threads"
    worker_type = "thread"


class DjangoTasksPeer(QueuePeer):
    name = "django-tasks"
    label = "django-tasks-db DatabaseBackend on SQLite, 4 db_worker processes"
    modules = ("django.tasks", "django_tasks_db")

    @property
    def sqlite_path(self) -> Path:  # type: ignore[override]
        return self.ep.workdir / "django-tasks.sqlite3"

    def prepare(self) -> None:
        from django.core.management import call_command

        _remove_sqlite(self.sqlite_path)
        self.tasks = _setup_django(self.ep)
        call_command("migrate", verbosity=0)

    def worker_command(self) -> tuple[list[str], dict[str, str]]:
        # db_worker runs one job at a time; the usual way to get four is four processes.
        one = f"{_bin('django-admin')} db_worker --no-reload --queue-name default"
        script = f"for i in {' '.join(['1'] * WORKERS)}; do {one} & done; wait"
        return ["/bin/sh", "-c", script], self.ep.env(**_django_env(self.ep))

    def enqueue(self, job: str, *args: Any) -> None:
        getattr(self.tasks, job).enqueue(*args)

    def close(self) -> None:
        from django.db import connections

        connections.close_all()


def _django_env(ep: Endpoints) -> dict[str, str]:
    """What :mod:`queue_django_settings` reads, for this process and the workers."""
    return {
        "DJANGO_SETTINGS_MODULE": "queue_django_settings",
        "QUEUE_BENCH_DJANGO_DB": str(ep.workdir / "django-tasks.sqlite3"),
        "QUEUE_BENCH_GATEWAY": ep.gateway_socket or "",
    }


def _setup_django(ep: Endpoints) -> Any:
    """Set Django up in this process (once) and return :mod:`queue_django_tasks`."""
    import django

    os.environ.update(_django_env(ep))
    django.setup()
    return importlib.import_module("queue_django_tasks")


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


PEERS: tuple[type[QueuePeer], ...] = (
    GatewayPeer,
    GatewayDjangoPeer,
    RqForkPeer,
    RqSimplePeer,
    CeleryPreforkPeer,
    CeleryThreadsPeer,
    HueyProcessPeer,
    HueyThreadPeer,
    DjangoTasksPeer,
)


def all_peers(ep: Endpoints) -> list[QueuePeer]:
    """Every peer, in table order (gateway first)."""
    return [cls(ep) for cls in PEERS]
