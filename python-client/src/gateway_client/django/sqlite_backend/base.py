"""``DatabaseWrapper`` for :mod:`gateway_client.django.sqlite_backend`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite3_base

__all__ = ["DatabaseWrapper"]

_TRANSACTION_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    """Django's SQLite wrapper plus ``transaction_mode`` and ``init_command`` on Django < 5.1.

    On Django >= 5.1 the parent class consumes both options itself and this class adds nothing.
    """

    def get_connection_params(self) -> dict[str, Any]:
        """Take ``transaction_mode`` and ``init_command`` out of the parameters for sqlite3.connect.

        :raises ImproperlyConfigured: if ``transaction_mode`` is not DEFERRED, IMMEDIATE or
            EXCLUSIVE.
        """
        params = super().get_connection_params()
        # Whatever the parent left in params would reach sqlite3.connect() and fail there.
        mode = params.pop("transaction_mode", None)
        if mode is not None and str(mode).upper() not in _TRANSACTION_MODES:
            raise ImproperlyConfigured(
                f"settings.DATABASES[{self.alias!r}]['OPTIONS']['transaction_mode'] is "
                f"{mode!r}; use one of DEFERRED, IMMEDIATE, EXCLUSIVE or None"
            )
        self.gateway_transaction_mode = str(mode).upper() if mode is not None else None
        init_command = params.pop("init_command", "")
        self.gateway_init_commands = [
            command.strip() for command in init_command.split(";") if command.strip()
        ]
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Open the connection and run the ``init_command`` statements on it, in order."""
        connection = super().get_new_connection(conn_params)
        for command in getattr(self, "gateway_init_commands", ()):
            connection.execute(command)
        return connection

    def _start_transaction_under_autocommit(self) -> None:
        """Begin ``atomic()`` blocks with ``BEGIN <transaction_mode>`` (database(): IMMEDIATE)."""
        mode = getattr(self, "gateway_transaction_mode", None)
        if mode is None:
            super()._start_transaction_under_autocommit()
        else:
            self.cursor().execute(f"BEGIN {mode}")
