"""Django integration for gateway: the settings helper for the main database, and checks.

In ``settings.py``::

    from gateway_client.django import database

    DATABASES = {"default": database(BASE_DIR / "db" / "app.sqlite3")}

Add ``"gateway_client.django"`` to ``INSTALLED_APPS`` to get the system checks even when
``database()`` is not used.
"""

from gateway_client.django.database import database

__all__ = ["database"]
