"""Fixtures of the GatewayCache suite: real Django, a real gateway, sync and async callers.

``GATEWAY_TEST_SOCKET`` names the socket of a running gateway (tests/test_cache_django.py starts
one per Django version and sets it). Without it, as when a developer runs
``.venv/bin/python -m pytest tests/django_cache_project``, a gateway is started here with the
black-box harness and stopped at the end.

Every cache a test makes gets a KEY_PREFIX of its own, so tests do not see each other's keys.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))  # gateway_harness, wire

_started: list[Any] = []


def pytest_configure(config: pytest.Config) -> None:
    socket_path = os.environ.get("GATEWAY_TEST_SOCKET")
    if not socket_path:
        from gateway_harness import GatewayProcess

        folder = Path(tempfile.mkdtemp(prefix="gw-cache-", dir="/tmp"))
        process = GatewayProcess(folder).start()
        _started.append((process, folder))
        socket_path = process.socket_path
        os.environ["GATEWAY_TEST_SOCKET"] = socket_path
    settings.configure(
        USE_TZ=True,
        INSTALLED_APPS=["gateway_client.django"],
        CACHES={
            "default": {
                "BACKEND": "gateway_client.django.GatewayCache",
                "LOCATION": socket_path,
                "KEY_PREFIX": "settings-default",
            }
        },
    )
    django.setup()


def pytest_unconfigure(config: pytest.Config) -> None:
    for process, folder in _started:
        process.kill()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def socket_path() -> str:
    """The socket of the gateway under test."""
    return os.environ["GATEWAY_TEST_SOCKET"]


@pytest.fixture
def make_cache(socket_path: str) -> Iterator[Callable[..., Any]]:
    """``make_cache(location=None, **params)``: a GatewayCache with a fresh KEY_PREFIX.

    Pass ``KEY_PREFIX=""`` for none. Caches with a prefix are cleared at teardown.
    """
    from gateway_client.django import GatewayCache

    made: list[Any] = []
    prefix = f"t{uuid.uuid4().hex[:12]}"

    def make(location: str | None = None, **params: Any) -> Any:
        params.setdefault("KEY_PREFIX", prefix)
        cache = GatewayCache(location or socket_path, params)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        if cache.key_prefix and cache.transport.location == socket_path:
            cache.clear()


class AsyncCaller:
    """Calls a cache's native ``a*`` methods from sync test code, on one event loop.

    ``caller.get(k)`` runs ``cache.aget(k)`` to completion; an async generator method
    (``aiter_keys``) is collected into a list. Names without an ``a*`` twin reach the cache
    itself, and so do attribute assignments (``caller.key_func = f``).
    """

    def __init__(self, cache: Any, loop: asyncio.AbstractEventLoop) -> None:
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_loop", loop)

    def __getattr__(self, name: str) -> Any:
        cache, loop = self._cache, self._loop
        twin = getattr(cache, "a" + name, None)
        if inspect.isasyncgenfunction(twin):

            def collect(*args: Any, **kwargs: Any) -> list[Any]:
                async def run() -> list[Any]:
                    return [item async for item in twin(*args, **kwargs)]

                return loop.run_until_complete(run())

            return collect
        if inspect.iscoroutinefunction(twin):
            return lambda *args, **kwargs: loop.run_until_complete(twin(*args, **kwargs))
        return getattr(cache, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cache, name, value)

    def __contains__(self, key: Any) -> bool:
        return self.has_key(key)

    @property
    def is_async(self) -> bool:
        return True


@pytest.fixture
def event_loop_for_test() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(
    params=[
        pytest.param(("sync", "socket"), id="sync-socket"),
        pytest.param(("sync", "direct"), id="sync-direct"),
        pytest.param(("async", "socket"), id="async-socket"),
        pytest.param(("async", "direct"), id="async-direct"),
    ]
)
def api_mode(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(caller, read mode) of the parametrized ``cache`` fixture."""
    return request.param


@pytest.fixture
def wrap(
    api_mode: tuple[str, str], event_loop_for_test: asyncio.AbstractEventLoop
) -> Iterator[Callable[[Any], Any]]:
    """Wrap a cache for the test's caller: itself (sync) or an :class:`AsyncCaller`."""
    wrapped: list[Any] = []

    def wrap_cache(cache: Any) -> Any:
        if api_mode[0] == "sync":
            return cache
        wrapped.append(cache)
        return AsyncCaller(cache, event_loop_for_test)

    yield wrap_cache
    for cache in wrapped:
        event_loop_for_test.run_until_complete(cache.transport.async_client.aclose())


@pytest.fixture
def cache_factory(
    api_mode: tuple[str, str], make_cache: Callable[..., Any], wrap: Callable[[Any], Any]
) -> Callable[..., Any]:
    """``cache_factory(**params)``: a cache in the test's (caller, read mode)."""

    def make(location: str | None = None, **params: Any) -> Any:
        options = dict(params.pop("OPTIONS", {}))
        options.setdefault("READ", api_mode[1])
        return wrap(make_cache(location, OPTIONS=options, **params))

    return make


@pytest.fixture
def cache(cache_factory: Callable[..., Any]) -> Any:
    """A GatewayCache with its own KEY_PREFIX, called sync or async, reading direct or not."""
    return cache_factory()


@pytest.fixture
def raw(socket_path: str) -> Iterator[Any]:
    """A plain gateway_client.Client on the gateway, to look at what was stored."""
    from gateway_client import Client

    with Client(socket_path) as client:
        yield client
