"""The Django app ``gateway_client.django``: add it to INSTALLED_APPS for its system checks."""

from __future__ import annotations

from django.apps import AppConfig

from gateway_client.django.checks import register_checks


class GatewayClientConfig(AppConfig):
    """App config registering gateway_client's system checks (see :mod:`.checks`)."""

    name = "gateway_client.django"
    label = "gateway_client"
    verbose_name = "gateway client"

    def ready(self) -> None:
        """Register the system checks."""
        register_checks()
