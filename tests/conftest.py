"""Fixtures for the black-box tests: start the real gateway on a temporary folder.

Use the ``gateway`` fixture for a running gateway with the default test config; change the config
with ``@pytest.mark.gateway_config({...})`` (merged into ``gateway_harness.BASE_CONFIG``; a value
of None deletes a key). ``gateway_factory`` starts more gateways (or ones that must not start).
Every process started is killed at teardown, whatever the test did.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_client.queue import QueueClient
from gateway_harness import GatewayProcess, kill_all, merge_config
from queue_harness import WorkerPool

# The GatewayCache suite has its own conftest and settings; tests/test_cache_django.py runs it in
# a separate process per Django version, so this run must not collect (or configure) it.
collect_ignore = ["django_cache_project"]

# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path can be longer with long test names.
_MAX_SOCKET_DIR = 80


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gateway_config(overrides): config overrides for the gateway fixture"
    )


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for a gateway's config, socket and databases, short enough for a socket path."""
    if len(str(tmp_path)) <= _MAX_SOCKET_DIR:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="gw-", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def gateway_factory(gateway_dir: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """``make(overrides=None, *, start=True, folder=gateway_dir, **kwargs)`` -> GatewayProcess."""
    made: list[GatewayProcess] = []

    def make(
        overrides: dict[str, Any] | None = None,
        *,
        start: bool = True,
        folder: Path | None = None,
        **kwargs: Any,
    ) -> GatewayProcess:
        process = GatewayProcess(folder or gateway_dir, overrides, **kwargs)
        made.append(process)
        if start:
            process.start()
        return process

    try:
        yield make
    finally:
        for process in made:
            process.kill()


@pytest.fixture
def gateway(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., GatewayProcess]
) -> GatewayProcess:
    """A running gateway with the test config plus the ``gateway_config`` marker's overrides."""
    overrides: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("gateway_config"))):
        overrides = merge_config(overrides, marker.args[0] if marker.args else marker.kwargs)
    return gateway_factory(overrides)


@pytest.fixture
def queue(gateway: GatewayProcess) -> Iterator[QueueClient]:
    """A queue client on the ``gateway`` fixture's socket."""
    client = QueueClient(gateway.socket_path)
    yield client
    client.close()


@pytest.fixture
def workers(gateway_dir: Path) -> Iterator[WorkerPool]:
    """Worker processes (``WorkerPool``), all stopped at the end of the test."""
    with WorkerPool(gateway_dir) as pool:
        yield pool


@pytest.fixture(autouse=True)
def _kill_leftover_gateways() -> Iterator[None]:
    yield
    kill_all()
