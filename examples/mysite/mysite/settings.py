"""Settings of the example site.

The gateway owns the databases: it creates and replicates the main database (Django's ORM
database), serves the cache and the job queue over its socket, and, when it starts the site
through ``[exec]``, tells the site where all of that is with two environment variables:

- ``GATEWAY_SOCKET``: the gateway's Unix socket (cache and tasks);
- ``GATEWAY_DB_MAIN``: the main database file.

Without them (``manage.py`` run by hand) the paths of ``examples/mysite.toml`` are used.
"""

import os
from pathlib import Path

from gateway_client.django import database

BASE_DIR = Path(__file__).resolve().parent.parent
# examples/: the folder of examples/mysite.toml, which its relative paths resolve against.
EXAMPLES_DIR = BASE_DIR.parent

GATEWAY_SOCKET = os.environ.get("GATEWAY_SOCKET") or str(EXAMPLES_DIR / "run" / "mysite.sock")
GATEWAY_DB_MAIN = os.environ.get("GATEWAY_DB_MAIN") or str(
    EXAMPLES_DIR / "db" / "mysite" / "app.sqlite3"
)

# Example values only: a real site takes its secret from the environment and never has a default.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "example-only-not-secret-d1f7c0a4e2b9"
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "gateway_client.django",  # manage.py gateway_worker and the SQLite version check
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The main database: WAL, BEGIN IMMEDIATE, busy timeout, and no checkpoints from Django (the
# gateway checkpoints after it has copied the WAL to the replica).
DATABASES = {"default": database(GATEWAY_DB_MAIN)}

CACHES = {
    "default": {
        "BACKEND": "gateway_client.django.GatewayCache",
        "LOCATION": GATEWAY_SOCKET,
        # clear() then removes only this site's keys.
        "KEY_PREFIX": "mysite",
    }
}

TASKS = {
    "default": {
        "BACKEND": "gateway_client.django.GatewayTaskBackend",
        "QUEUES": ["default"],
        "OPTIONS": {
            "socket": GATEWAY_SOCKET,
            # A second attempt if the worker running a job dies; the example's task is idempotent.
            "max_attempts": 2,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Served by Django itself (see urls.py) so the example needs no web server in front.
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
