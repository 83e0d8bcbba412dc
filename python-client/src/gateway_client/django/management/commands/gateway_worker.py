"""``manage.py gateway_worker``: run jobs from the gateway's queue in this Django project.

Takes the options of ``python -m gateway_client.worker`` (see ``--help``). Without ``--socket``
the socket is ``TASKS[--backend]["OPTIONS"]["socket"]``, and without ``--queue`` the worker
takes jobs from that backend's ``QUEUES`` in the order they are written.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from gateway_client.django.worker_settings import backend_socket_and_queues
from gateway_client.worker.joblog import configure_logging
from gateway_client.worker.options import add_arguments, options_from_namespace
from gateway_client.worker.supervisor import Supervisor


class Command(BaseCommand):
    """Run the gateway job worker (supervisor and ``--concurrency`` worker processes)."""

    help = "Run jobs from the gateway's queue (the worker for GatewayTaskBackend)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Add the worker's options and ``--backend``."""
        add_arguments(parser, socket_required=False)
        parser.add_argument(
            "--backend",
            default="default",
            help="the TASKS alias whose socket and queues to use (default: default)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker until SIGTERM or SIGINT.

        :raises CommandError: if no socket is known or an option is out of range.
        """
        try:
            socket, queues = backend_socket_and_queues(options["backend"])
        except ImproperlyConfigured as e:
            raise CommandError(str(e)) from e
        if not options.get("queues"):
            options["queues"] = queues
        try:
            worker_options = options_from_namespace(options, socket=socket)
        except ValueError as e:
            raise CommandError(str(e)) from e
        configure_logging()
        Supervisor(worker_options).run()
