"""``python -m gateway_client.worker``: the job worker without Django's ``manage.py``.

Tasks are imported by their dotted path, so the worker must run where the tasks' modules import
(set ``PYTHONPATH`` or start it in the project folder). If ``DJANGO_SETTINGS_MODULE`` is set,
Django is set up first and, without ``--socket``, the socket comes from ``TASKS`` (the
``GatewayTaskBackend`` named by ``--backend``); ``manage.py gateway_worker`` does the same.
"""

from __future__ import annotations

import argparse
import os
import sys

from gateway_client.worker.joblog import configure_logging
from gateway_client.worker.options import add_arguments, options_from_namespace
from gateway_client.worker.supervisor import Supervisor

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m gateway_client.worker``."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway_client.worker",
        description="Run jobs from the gateway's queue.",
    )
    add_arguments(parser, socket_required=False)
    parser.add_argument(
        "--backend",
        default="default",
        help="with DJANGO_SETTINGS_MODULE: the TASKS alias to take the socket and queues from",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, set Django up if configured, and run the supervisor; return the status."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    socket = None
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
        from django.core.exceptions import ImproperlyConfigured

        from gateway_client.django.worker_settings import backend_socket_and_queues

        try:
            socket, queues = backend_socket_and_queues(namespace.backend)
        except ImproperlyConfigured as e:
            parser.error(str(e))
        if not namespace.queues:
            namespace.queues = queues
    try:
        options = options_from_namespace(namespace, socket=socket)
    except ValueError as e:
        parser.error(str(e))
    configure_logging()
    # The process exits right after: a stop signal arriving meanwhile asks for what is already
    # happening.
    return Supervisor(options).run(restore_signals=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
