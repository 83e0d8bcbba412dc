"""Django system checks for projects that share a SQLite database with the gateway."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from django.core import checks

__all__ = ["MIN_SQLITE_VERSION", "W001", "check_sqlite_version", "register_checks"]

#: SQLite 3.7.0 to 3.51.2 have the WAL-reset bug; 3.51.3 fixed it.
MIN_SQLITE_VERSION = (3, 51, 3)
W001 = "gateway_client.W001"

_registered = False
_register_lock = threading.Lock()


def check_sqlite_version(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn (``gateway_client.W001``) when this process's SQLite has the WAL-reset bug.

    Reads ``sqlite3.sqlite_version_info`` at call time, i.e. the library Python actually loaded,
    which ``LD_LIBRARY_PATH`` decides.
    """
    version = tuple(sqlite3.sqlite_version_info)
    if version >= MIN_SQLITE_VERSION:
        return []
    have = ".".join(str(part) for part in version)
    need = ".".join(str(part) for part in MIN_SQLITE_VERSION)
    return [
        checks.Warning(
            f"This process uses SQLite {have}, which has the WAL-reset bug (SQLite 3.7.0 to "
            f"3.51.2): a WAL database can be corrupted when one process commits while another "
            f"runs back-to-back checkpoints, which is how Django and the gateway share the main "
            f"database. Use SQLite {need} or newer in every Django process.",
            hint=(
                "run Django with LD_LIBRARY_PATH=<gateway build dir> so it loads the gateway's "
                "libsqlite3.so.0, or start it under the gateway's [exec]"
            ),
            id=W001,
        )
    ]


def register_checks() -> None:
    """Register the checks of this module with Django; calling it again does nothing.

    Tagged ``compatibility`` rather than ``database``: Django skips ``database`` checks unless
    ``check --database`` is given, and this one must show on every ``check`` and ``runserver``.
    """
    global _registered
    with _register_lock:
        if _registered:
            return
        checks.register(check_sqlite_version, checks.Tags.compatibility)
        _registered = True
