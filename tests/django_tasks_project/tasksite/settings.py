"""Settings of the tasks test project.

GATEWAY_TEST_SOCKET is the gateway's socket, GATEWAY_TEST_DB its main database, and
QUEUE_TEST_DIR the folder where tasks and signal receivers write their records. On Django < 6
the django_tasks backport provides the tasks framework.
"""

import os

import django
from gateway_client.django import database

SECRET_KEY = "gateway-tests-only"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    *([] if django.VERSION >= (6, 0) else ["django_tasks"]),
    "gateway_client.django",
    "jobs",
]

DATABASES = {"default": database(os.environ["GATEWAY_TEST_DB"])}

TASKS = {
    "default": {
        "BACKEND": "gateway_client.django.GatewayTaskBackend",
        "QUEUES": ["default", "prio"],
        "OPTIONS": {"socket": os.environ["GATEWAY_TEST_SOCKET"], "backoff": 0.1},
    }
}
