"""Settings of the test project: the main database comes from gateway_client.django.database().

GATEWAY_TEST_DB names the SQLite file (the gateway's [databases.main] path in the tests).
GATEWAY_TEST_ENGINE, if set, replaces the ENGINE so the Django < 5.1 backend can be exercised on
any Django version.
"""

import os

from gateway_client.django import database

SECRET_KEY = "gateway-tests-only"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
ROOT_URLCONF = "testsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "gateway_client.django",
    "notes",
]

DATABASES = {"default": database(os.environ["GATEWAY_TEST_DB"])}
if os.environ.get("GATEWAY_TEST_ENGINE"):
    DATABASES["default"]["ENGINE"] = os.environ["GATEWAY_TEST_ENGINE"]
