"""A SQLite database backend for Django 4.2 and 5.0 that honours the gateway's OPTIONS.

Django 5.1 added ``OPTIONS["transaction_mode"]`` and ``OPTIONS["init_command"]`` to its SQLite
backend; this backend adds them to older versions (and defers to Django where it has them).
:func:`gateway_client.django.database` selects it automatically.
"""
