"""The worker's defaults from Django's ``TASKS`` setting: the socket and the queues."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ["backend_socket_and_queues"]


def backend_socket_and_queues(alias: str = "default") -> tuple[str | None, list[str]]:
    """The socket path and queue names of ``TASKS[alias]``.

    The socket is None when the backend names none (then ``--socket`` must be given); the
    queues are the backend's ``QUEUES`` in the order written, or ``["default"]``.

    :raises ImproperlyConfigured: if ``TASKS`` has no such alias.
    """
    tasks = getattr(settings, "TASKS", None) or {}
    if alias not in tasks:
        if alias == "default" and not tasks:
            return None, ["default"]
        raise ImproperlyConfigured(f"TASKS has no backend {alias!r}")
    params = tasks[alias]
    socket = (params.get("OPTIONS") or {}).get("socket")
    queues = list(params.get("QUEUES") or ["default"])
    return (str(socket) if socket else None), queues
