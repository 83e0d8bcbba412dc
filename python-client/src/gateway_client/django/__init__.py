"""Django integration for gateway: the main database settings helper, the cache backend, checks.

In ``settings.py``::

    from gateway_client.django import database

    DATABASES = {"default": database(BASE_DIR / "db" / "app.sqlite3")}
    CACHES = {
        "default": {
            "BACKEND": "gateway_client.django.GatewayCache",
            "LOCATION": str(BASE_DIR / "run" / "gateway.sock"),
        }
    }

Add ``"gateway_client.django"`` to ``INSTALLED_APPS`` to get the system checks even when
``database()`` is not used.
"""

from gateway_client.django.cache import GatewayCache
from gateway_client.django.database import database

__all__ = ["GatewayCache", "database"]
__all__ += ["GatewayTaskBackend"]


def __getattr__(name: str) -> object:
    # GatewayTaskBackend is imported on first use: it needs Django's tasks framework (Django 6,
    # or the django-tasks backport), which a project using only the cache may not have.
    if name == "GatewayTaskBackend":
        from gateway_client.django.tasks import GatewayTaskBackend

        return GatewayTaskBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
