"""``database()``: the ``DATABASES`` entry for a Django project on a gateway-owned database.

The gateway creates the main database in WAL mode, replicates it and is the only process that
checkpoints it. Django's connections must therefore:

- use WAL and never checkpoint themselves (``wal_autocheckpoint=0``): a checkpoint by another
  process would move frames out of the WAL before the gateway copied them, forcing a new
  replica generation;
- start every transaction with ``BEGIN IMMEDIATE``, so two writers queue on the busy timeout
  instead of failing with "database is locked" when a read transaction tries to upgrade;
- carry the same tuning as the gateway's own connections.

Django >= 5.1 does all of this with the stock SQLite backend (``transaction_mode`` and
``init_command``); Django 4.2 and 5.0 get the small backend :mod:`.sqlite_backend`, which reads
the same OPTIONS.
"""

from __future__ import annotations

import os
import re
import sqlite3
from typing import Any

import django
from django.core.exceptions import ImproperlyConfigured

from gateway_client.django.checks import register_checks

__all__ = ["LEGACY_ENGINE", "STOCK_ENGINE", "database", "parse_size"]

STOCK_ENGINE = "django.db.backends.sqlite3"
LEGACY_ENGINE = "gateway_client.django.sqlite_backend"

_SYNCHRONOUS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | str, name: str) -> int:
    """Return a byte count from an int or a string such as ``"128MiB"`` (KiB, MiB: 1024-based).

    :raises ImproperlyConfigured: if ``value`` is negative or not a size.
    """
    if isinstance(value, bool):
        raise ImproperlyConfigured(f"database(): {name} must be a size, not a bool")
    if isinstance(value, int):
        if value < 0:
            raise ImproperlyConfigured(f"database(): {name} must not be negative, got {value}")
        return value
    match = _SIZE_RE.match(str(value))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ImproperlyConfigured(
            f"database(): {name}={value!r} is not a size; use bytes or e.g. '64MiB'"
        )
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _synchronous_level(value: int | str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value in _SYNCHRONOUS.values():
        return next(name for name, level in _SYNCHRONOUS.items() if level == value)
    if isinstance(value, str) and value.upper() in _SYNCHRONOUS:
        return value.upper()
    raise ImproperlyConfigured(
        f"database(): synchronous={value!r}; use one of OFF, NORMAL, FULL, EXTRA"
    )


def _cache_size_pragma(value: int | str) -> int:
    """SQLite's cache_size value: an int is taken as SQLite's own (pages, or -KiB when negative)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return -(parse_size(value, "cache_size") // 1024)


def _pragmas(
    *,
    busy_timeout_ms: int,
    synchronous: str,
    mmap_size: int,
    journal_size_limit: int,
    cache_size: int,
) -> list[str]:
    return [
        # First, so that the journal_mode change below also waits for a busy database.
        f"PRAGMA busy_timeout={busy_timeout_ms}",
        # The gateway creates the database in WAL mode; this keeps Django working (and the file
        # in WAL mode) when it runs without the gateway, e.g. in tests.
        "PRAGMA journal_mode=WAL",
        # NORMAL is durable across application crashes in WAL mode; FULL also survives power loss.
        f"PRAGMA synchronous={synchronous}",
        # Only the gateway checkpoints: it must copy WAL frames to the replica first.
        "PRAGMA wal_autocheckpoint=0",
        # Reads through the OS page cache instead of copying pages into the process.
        f"PRAGMA mmap_size={mmap_size}",
        # Bounds the WAL file left on disk after it is reset.
        f"PRAGMA journal_size_limit={journal_size_limit}",
        f"PRAGMA cache_size={cache_size}",
        # Sorts and temporary indexes stay in memory rather than in temp files.
        "PRAGMA temp_store=MEMORY",
        # Django enables this too; repeated so the guarantee does not depend on Django's version.
        "PRAGMA foreign_keys=ON",
    ]


def database(
    path: str | os.PathLike[str],
    *,
    timeout: float = 5.0,
    synchronous: int | str = "NORMAL",
    mmap_size: int | str = "128MiB",
    journal_size_limit: int | str = "64MiB",
    cache_size: int | str = "32MiB",
    **options: Any,
) -> dict[str, Any]:
    """Return a ``DATABASES`` entry for the gateway-owned SQLite database at ``path``.

    :param path: the file named by the gateway's ``[databases.main] path``.
    :param timeout: seconds a connection waits for a lock (the busy timeout).
    :param synchronous: ``OFF``, ``NORMAL``, ``FULL`` or ``EXTRA`` (or 0 to 3).
    :param mmap_size: bytes of the file to memory-map (int, or a string such as ``"128MiB"``).
    :param journal_size_limit: bytes the WAL is truncated to when reset.
    :param cache_size: page cache size: a size string (``"32MiB"``), or an int taken as SQLite's
        own ``cache_size`` value (pages, or KiB when negative).
    :param options: other settings: UPPERCASE keys (``TEST``, ``CONN_MAX_AGE``, ...) go into the
        entry itself, lowercase keys into ``OPTIONS`` (an ``init_command`` given here runs after
        the gateway's PRAGMAs; ``transaction_mode`` replaces ``IMMEDIATE``). An ``OPTIONS`` map
        is merged the same way.
    :raises ImproperlyConfigured: if an option has a value that is not allowed.

    Calling it also registers the ``gateway_client.W001`` system check (old SQLite).
    """
    if timeout < 0:
        raise ImproperlyConfigured(f"database(): timeout must not be negative, got {timeout}")
    extra_options: dict[str, Any] = dict(options.pop("OPTIONS", None) or {})
    top_level: dict[str, Any] = {}
    for key, value in options.items():
        (top_level if key.isupper() else extra_options)[key] = value
    for reserved in ("ENGINE", "NAME"):
        if reserved in top_level:
            raise ImproperlyConfigured(f"database(): {reserved} is set by database() itself")

    pragmas = _pragmas(
        busy_timeout_ms=int(timeout * 1000),
        synchronous=_synchronous_level(synchronous),
        mmap_size=parse_size(mmap_size, "mmap_size"),
        journal_size_limit=parse_size(journal_size_limit, "journal_size_limit"),
        cache_size=_cache_size_pragma(cache_size),
    )
    user_init = extra_options.pop("init_command", "")
    if user_init:
        pragmas.append(str(user_init))
    db_options: dict[str, Any] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": timeout,
        "init_command": ";".join(pragmas),
    }
    db_options.update(extra_options)

    register_checks()
    _no_checkpoint_on_close(str(os.fspath(path)))
    return {
        **top_level,
        "ENGINE": STOCK_ENGINE if _stock_backend_suffices() else LEGACY_ENGINE,
        "NAME": str(os.fspath(path)),
        "OPTIONS": db_options,
    }


# Paths of the databases database() configured; their connections never checkpoint on close.
_GATEWAY_PATHS: set[str] = set()


def _no_checkpoint_on_close(path: str) -> None:
    """Make every Django connection to ``path`` skip SQLite's checkpoint-on-close.

    When a process closes what SQLite believes is the last connection to a WAL database, SQLite
    checkpoints it and deletes the WAL. The gateway is the only checkpointer (it ships WAL frames
    to the replica first); a checkpoint it did not run forces a new replica generation. Python
    3.12+ exposes ``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``; older Pythons rely on the gateway holding
    the database open, which prevents the close-time checkpoint anyway.
    """
    if not _GATEWAY_PATHS:
        from django.db.backends.signals import connection_created

        connection_created.connect(_on_connection_created, dispatch_uid="gateway_client_no_ckpt")
    _GATEWAY_PATHS.add(path)


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if (
        connection.vendor != "sqlite"
        or str(connection.settings_dict.get("NAME")) not in _GATEWAY_PATHS
    ):
        return
    option = getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE", None)
    raw = connection.connection
    if option is not None and hasattr(raw, "setconfig"):
        raw.setconfig(option, True)


def _stock_backend_suffices() -> bool:
    """Django 5.1 added ``transaction_mode`` and ``init_command`` to the SQLite backend."""
    return tuple(django.VERSION[:2]) >= (5, 1)
