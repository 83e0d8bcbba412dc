"""The cache backends the benchmark compares, as Django ``CACHES`` entries, and Django set-up.

Every peer is measured through Django's ``caches[...]`` API, so the figures include what a Django
view pays: key making, pickling and the backend's own client code. The servers (gateway, Redis,
memcached) are started by ``bench/run`` on Unix sockets in a temporary folder; this module only
builds the settings that point at them and says which peers can run.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Django's DatabaseCache table name in the benchmark's SQLite file.
DB_CACHE_TABLE = "bench_cache"

#: Django's DatabaseCache culls on every write once it holds more than MAX_ENTRIES rows (default
#: 300, below the 1,100 prefilled keys). The benchmark raises it so that no peer evicts: the
#: figures compare speed, not eviction policies.
DB_CACHE_MAX_ENTRIES = 1_000_000

#: diskcache's DjangoCache evicts beyond 1 GiB by default; like the gateway's budget in
#: ``bench/run`` (4 GiB), this keeps every prefilled key.
DISKCACHE_SIZE_LIMIT = 4 * 2**30


@dataclass(frozen=True)
class Endpoints:
    """Where the servers started by ``bench/run`` listen; None for a server not started."""

    workdir: Path
    gateway_socket: str | None = None
    redis_socket: str | None = None
    memcached_socket: str | None = None
    pids: dict[str, int] = field(default_factory=dict)  # server name -> pid, for CPU accounting

    @property
    def db_cache_path(self) -> Path:
        """The SQLite file behind Django's DatabaseCache."""
        return self.workdir / "django-db-cache.sqlite3"


@dataclass(frozen=True)
class Peer:
    """One backend under test.

    :param name: short id used on the command line and in the JSON (``gateway-socket``).
    :param label: what the tables print.
    :param server: the server process it talks to (a key of ``Endpoints.pids``), None if in-process.
    :param cache: the Django ``CACHES`` entry.
    :param modules: modules that must import for the peer to run.
    :param is_gateway: a GatewayCache variant (the peers' ratios are computed against these).
    """

    name: str
    label: str
    server: str | None
    cache: dict[str, Any]
    modules: tuple[str, ...] = ()
    is_gateway: bool = False


def all_peers(ep: Endpoints) -> list[Peer]:
    """Every peer the benchmark knows, in table order (gateway first)."""
    gateway_location = ep.gateway_socket or ""
    redis_url = f"unix://{ep.redis_socket}?db=0" if ep.redis_socket else ""
    return [
        Peer(
            "gateway-socket",
            "GatewayCache (socket)",
            "gateway",
            {
                "BACKEND": "gateway_client.django.GatewayCache",
                "LOCATION": gateway_location,
                "OPTIONS": {"READ": "socket"},
            },
            ("gateway_client.django",),
            is_gateway=True,
        ),
        Peer(
            "gateway-direct",
            "GatewayCache (direct reads)",
            "gateway",
            {
                "BACKEND": "gateway_client.django.GatewayCache",
                "LOCATION": gateway_location,
                "OPTIONS": {"READ": "direct"},
            },
            ("gateway_client.django",),
            is_gateway=True,
        ),
        Peer(
            "django-redis",
            "django-redis (Redis)",
            "redis",
            {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url},
            ("django_redis", "redis"),
        ),
        Peer(
            "django-rediscache",
            "Django RedisCache (Redis)",
            "redis",
            {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
            ("redis",),
        ),
        Peer(
            "pymemcache",
            "PyMemcacheCache (memcached)",
            "memcached",
            {
                "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                "LOCATION": f"unix:{ep.memcached_socket}" if ep.memcached_socket else "",
            },
            ("pymemcache",),
        ),
        Peer(
            "diskcache",
            "diskcache DjangoCache (SQLite + files)",
            None,
            {
                "BACKEND": "diskcache.DjangoCache",
                "LOCATION": str(ep.workdir / "diskcache"),
                # Its defaults: 8 shards, each a SQLite file; values of 32 KB and more in files
                # of their own. The size limit is raised so that it does not evict either.
                "OPTIONS": {"size_limit": DISKCACHE_SIZE_LIMIT},
            },
            ("diskcache",),
        ),
        Peer(
            "db-cache",
            "DatabaseCache (SQLite)",
            None,
            {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": DB_CACHE_TABLE,
                "OPTIONS": {"MAX_ENTRIES": DB_CACHE_MAX_ENTRIES},
            },
        ),
    ]


def django_settings(ep: Endpoints, peers: list[Peer]) -> dict[str, Any]:
    """Keyword arguments for ``settings.configure()``: one cache alias per peer."""
    from gateway_client.django import database

    return {
        "CACHES": {p.name: p.cache for p in peers}
        or {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
        # The same tuning as a gateway-owned database (WAL, synchronous=NORMAL, IMMEDIATE
        # transactions, busy timeout, mmap), except that nobody else checkpoints this file, so
        # SQLite's own automatic checkpoint is turned back on (database() turns it off because
        # the gateway checkpoints its main database).
        "DATABASES": {
            "default": database(
                ep.db_cache_path, init_command="PRAGMA wal_autocheckpoint=1000", CONN_MAX_AGE=None
            )
        },
        "INSTALLED_APPS": [],
        "USE_TZ": True,
    }


def setup_django(ep: Endpoints, peers: list[Peer]) -> None:
    """Configure and set up Django in this process (once per process)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(**django_settings(ep, peers))
        django.setup()


def create_db_cache_table() -> None:
    """``manage.py createcachetable`` for the DatabaseCache peer."""
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)


def skip_reason(peer: Peer, ep: Endpoints) -> str | None:
    """Why ``peer`` cannot run here, or None if it can."""
    for module in peer.modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            return f"`{module}` does not import ({e})"
    if peer.server == "gateway":
        return _gateway_skip_reason(ep)
    if peer.server == "redis" and not _socket_exists(ep.redis_socket):
        return "redis-server not started (no socket)"
    if peer.server == "memcached" and not _socket_exists(ep.memcached_socket):
        return "memcached not started (no socket)"
    return None


def _socket_exists(path: str | None) -> bool:
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]


def _gateway_skip_reason(ep: Endpoints) -> str | None:
    if not _socket_exists(ep.gateway_socket):
        return "build/gateway not started (no socket)"
    try:
        module = importlib.import_module("gateway_client.django")
        module.GatewayCache  # noqa: B018 - the attribute's existence is the check
    except (ImportError, AttributeError) as e:
        return f"gateway_client.django.GatewayCache is not available yet ({e})"
    from gateway_client import Client

    with Client(ep.gateway_socket, connect_attempts=2) as client:  # type: ignore[arg-type]
        features = client.hello().get("features", [])
    if "cache.get" not in features:
        return "the running build/gateway does not serve cache.get yet (hello features)"
    return None
