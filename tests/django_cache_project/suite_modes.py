"""GatewayCache settings and modes: direct reads, IGNORE_EXCEPTIONS, options, native async,
and atomic incr under concurrency."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import shutil
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gateway_client
import pytest
from django.core.cache.backends.base import BaseCache, CacheKeyWarning
from django.core.exceptions import ImproperlyConfigured
from gateway_client.client import DEFAULT_SPIN_US
from gateway_client.django import GatewayCache
from gateway_client.django.cache import DEFAULT_READ
from gateway_harness import GatewayProcess

LOGGER = "gateway_client.django.cache"
ASYNC_METHODS = [
    "aadd",
    "aget",
    "aset",
    "atouch",
    "adelete",
    "aget_many",
    "aget_or_set",
    "ahas_key",
    "aincr",
    "adecr",
    "aset_many",
    "adelete_many",
    "aclear",
    "aincr_version",
    "adecr_version",
    "aclose",
]


def hits_and_misses(raw: Any) -> tuple[int, int]:
    stats = raw.call("cache.stats")
    return stats["hits"], stats["misses"]


@pytest.fixture
def own_gateway() -> Iterator[GatewayProcess]:
    """A gateway of this test's own, which the test may stop."""
    folder = Path(tempfile.mkdtemp(prefix="gw-own-", dir="/tmp"))
    process = GatewayProcess(folder).start()
    try:
        yield process
    finally:
        process.kill()
        shutil.rmtree(folder, ignore_errors=True)


# --- direct reads ---------------------------------------------------------------------------------


def test_direct_is_the_default_and_learns_the_path_from_stats(
    make_cache: Callable[..., Any], raw: Any
) -> None:
    assert DEFAULT_READ == "direct"
    cache = make_cache()
    cache.set("k", "v")
    assert cache.get("k") == "v"
    reader = cache.transport.reader()
    assert reader is not None
    assert reader.path == raw.stats()["databases"]["cache"]["path"]
    before = hits_and_misses(raw)
    for _ in range(20):
        assert cache.get("k") == "v"
        assert cache.get("missing") is None
        assert cache.has_key("k")
        assert cache.get_many(["k", "missing"]) == {"k": "v"}
    assert hits_and_misses(raw) == before, "direct reads never reached the server"


def test_socket_reads_reach_the_server(make_cache: Callable[..., Any], raw: Any) -> None:
    cache = make_cache(OPTIONS={"READ": "socket"})
    cache.set("k", "v")
    hits, misses = hits_and_misses(raw)
    assert cache.get("k") == "v"
    assert cache.get("missing") is None
    assert hits_and_misses(raw) == (hits + 1, misses + 1)
    assert cache.transport.reader() is None


def test_direct_reads_see_every_acknowledged_write(make_cache: Callable[..., Any]) -> None:
    cache = make_cache(OPTIONS={"READ": "direct"})
    for i in range(300):
        cache.set("k", i)
        assert cache.get("k") == i
        assert cache.incr("k") == i + 1
        assert cache.get("k") == i + 1
    cache.delete("k")
    assert cache.get("k") is None
    cache.set_many({"a": 1, "b": 2})
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    cache.delete_many(["a"])
    assert cache.get_many(["a", "b"]) == {"b": 2}


def test_direct_reads_apply_expiry_like_the_server(
    make_cache: Callable[..., Any], raw: Any
) -> None:
    direct = make_cache(OPTIONS={"READ": "direct"})
    socket = make_cache(KEY_PREFIX=direct.key_prefix, OPTIONS={"READ": "socket"})
    direct.set("e", "soon", 0.25)
    direct.set("never", "always", None)
    direct.set("later", "later", 60)
    assert direct.get("e") == "soon" and socket.get("e") == "soon"
    time.sleep(0.3)
    path = direct.transport.reader().path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as file:
        row = file.execute(
            "SELECT expires_at FROM cache_entries WHERE key = ?",
            (direct.make_key("e").encode(),),
        ).fetchone()
    if row is not None:  # not swept yet: the row is there, and still must not be returned
        assert row[0] <= time.time() * 1000
    for cache in (direct, socket):
        assert cache.get("e") is None
        assert not cache.has_key("e")
        assert cache.get_many(["e", "never", "later"]) == {"never": "always", "later": "later"}


def test_direct_reads_of_long_keys(make_cache: Callable[..., Any]) -> None:
    cache = make_cache(OPTIONS={"READ": "direct"})
    base = "L" * 260
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        cache.set(base + "1", "one")
        cache.set(base + "2", "two")
        cache.set("short", "s")
        assert cache.get(base + "1") == "one"
        assert cache.get(base + "2") == "two"
        assert cache.get(base + "3") is None
        assert cache.has_key(base + "2")
        assert cache.get_many([base + "1", base + "2", "short", base]) == {
            base + "1": "one",
            base + "2": "two",
            "short": "s",
        }
    assert cache.transport.reader() is not None


def test_direct_reads_fall_back_to_the_socket_when_the_file_is_missing(
    make_cache: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache = make_cache(OPTIONS={"READ": "direct", "CACHE_PATH": "/nonexistent/cache.sqlite3"})
    cache.set("k", "v")
    for _ in range(5):
        assert cache.get("k") == "v"
        assert cache.has_key("k")
        assert cache.get_many(["k"]) == {"k": "v"}
        assert cache.get("missing") is None
    warnings = [r for r in caplog.records if "direct reads unavailable" in r.getMessage()]
    assert len(warnings) == 1, "the fallback is logged once, not per read"
    assert "/nonexistent/cache.sqlite3" in warnings[0].getMessage()


@pytest.mark.parametrize("kind", ["wrong-schema", "not-sqlite", "no-table", "directory"])
def test_direct_reads_fall_back_when_the_file_is_not_a_cache_file(
    make_cache: Callable[..., Any], tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "cache.sqlite3"
    if kind == "wrong-schema":
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version = 99")
            db.execute("CREATE TABLE cache_entries (key BLOB)")
    elif kind == "not-sqlite":
        path.write_bytes(b"this is not a database" * 100)
    elif kind == "no-table":
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version = 2")
            db.execute("CREATE TABLE other (x)")
    else:
        path.mkdir()
    cache = make_cache(OPTIONS={"READ": "direct", "CACHE_PATH": str(path)})
    cache.set("k", 5)
    assert cache.get("k") == 5
    assert cache.get_many(["k", "x"]) == {"k": 5}
    assert cache.has_key("k")


def test_direct_reads_work_while_the_gateway_is_down(own_gateway: GatewayProcess) -> None:
    cache = GatewayCache(
        own_gateway.socket_path, {"KEY_PREFIX": "down", "OPTIONS": {"READ": "direct"}}
    )
    cache.set("k", "kept")
    assert cache.get("k") == "kept"
    own_gateway.stop()
    assert cache.get("k") == "kept"
    assert cache.get_many(["k", "x"]) == {"k": "kept"}
    with pytest.raises(gateway_client.ConnectionError):
        cache.set("k", "new")


# --- IGNORE_EXCEPTIONS ---------------------------------------------------------------------------


def test_without_ignore_exceptions_a_missing_gateway_raises(tmp_path: Path) -> None:
    cache = GatewayCache(str(tmp_path / "no.sock"), {"OPTIONS": {"CONNECT_ATTEMPTS": 1}})
    with pytest.raises(gateway_client.ConnectionError) as info:
        cache.get("k")
    assert isinstance(info.value, ConnectionError), "also the builtin ConnectionError"
    with pytest.raises(gateway_client.ConnectionError):
        cache.set("k", 1)
    with pytest.raises(gateway_client.ConnectionError):
        asyncio.run(cache.aget("k"))


def _exercise_everything(cache: Any) -> dict[str, Any]:
    return {
        "get": cache.get("k", "default"),
        "get_many": cache.get_many(["a", "b"]),
        "has_key": cache.has_key("k"),
        "set": cache.set("k", 1),
        "add": cache.add("k", 1),
        "add0": cache.add("k", 1, 0),
        "touch": cache.touch("k"),
        "delete": cache.delete("k"),
        "set_many": cache.set_many({"a": 1, "b": 2}),
        "delete_many": cache.delete_many(["a"]),
        "get_or_set": cache.get_or_set("k", "fallback"),
        "clear": cache.clear(),
        "ttl": cache.ttl("k"),
        "expire": cache.expire("k", 10),
        "persist": cache.persist("k"),
        "keys": cache.keys("*"),
        "delete_pattern": cache.delete_pattern("*"),
    }


EXPECTED_WHEN_DOWN = {
    "get": "default",
    "get_many": {},
    "has_key": False,
    "set": None,
    "add": False,
    "add0": False,
    "touch": False,
    "delete": False,
    "set_many": ["a", "b"],
    "delete_many": None,
    "get_or_set": "fallback",
    "clear": None,
    "ttl": 0,
    "expire": False,
    "persist": False,
    "keys": [],
    "delete_pattern": 0,
}


@pytest.mark.parametrize("read", ["socket", "direct"])
def test_ignore_exceptions_with_no_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, read: str
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache = GatewayCache(
        str(tmp_path / "no.sock"),
        {"KEY_PREFIX": "p", "OPTIONS": {"IGNORE_EXCEPTIONS": True, "READ": read}},
    )
    started = time.monotonic()
    assert _exercise_everything(cache) == EXPECTED_WHEN_DOWN
    with pytest.raises(ValueError):
        cache.incr("k")
    with pytest.raises(ValueError):
        cache.incr_version("k")
    assert time.monotonic() - started < 2, "a down gateway is reported quickly"
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("cache.set failed, dropped" in m for m in messages)
    assert any("cache.get failed, treated as a miss" in m for m in messages)
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == LOGGER)


def test_ignore_exceptions_async_with_no_gateway(tmp_path: Path) -> None:
    cache = GatewayCache(str(tmp_path / "no.sock"), {"OPTIONS": {"IGNORE_EXCEPTIONS": True}})

    async def scenario() -> None:
        assert await cache.aget("k", "d") == "d"
        assert await cache.aget_many(["k"]) == {}
        assert await cache.ahas_key("k") is False
        assert await cache.aset("k", 1) is None
        assert await cache.aadd("k", 1) is False
        assert await cache.adelete("k") is False
        assert await cache.aset_many({"x": 1}) == ["x"]
        assert await cache.aget_or_set("k", lambda: 7) == 7
        assert await cache.attl("k") == 0
        assert await cache.akeys("*") == []
        with pytest.raises(ValueError):
            await cache.aincr("k")

    asyncio.run(scenario())


def test_ignore_exceptions_when_the_gateway_stops(own_gateway: GatewayProcess) -> None:
    cache = GatewayCache(
        own_gateway.socket_path,
        {"KEY_PREFIX": "stop", "OPTIONS": {"IGNORE_EXCEPTIONS": True, "READ": "socket"}},
    )
    cache.set("k", "v")
    assert cache.get("k") == "v"
    own_gateway.stop()
    assert cache.get("k") is None
    assert cache.set("k", "w") is None
    assert cache.add("k2", 1) is False


def test_ignore_exceptions_still_raises_for_bad_requests(make_cache: Callable[..., Any]) -> None:
    cache = make_cache(OPTIONS={"IGNORE_EXCEPTIONS": True})
    with pytest.raises(gateway_client.ValueTooLarge):
        cache.set("big", b"x" * (16 * 1024 * 1024 + 1))
    with pytest.raises(gateway_client.BadArgument), warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        cache.set("k" * 70_000, 1)  # keys are at most 64 KiB


# --- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "params", "message"),
    [
        ("/x.sock", {"OPTIONS": {"READ": "sometimes"}}, "READ"),
        ("/x.sock", {"OPTIONS": {"NO_SUCH_OPTION": 1}}, "NO_SUCH_OPTION"),
        ("", {}, "LOCATION"),
        (["/a.sock", "/b.sock"], {}, "LOCATION"),
        ("/x.sock", {"OPTIONS": {"MAX_ENTRIES": -1}}, "MAX_ENTRIES"),
        ("/x.sock", {"OPTIONS": {"SPIN_US": -1}}, "SPIN_US"),
        ("/x.sock", {"OPTIONS": {"SPIN_US": 1.5}}, "SPIN_US"),
        ("/x.sock", {"OPTIONS": {"SPIN_US": True}}, "SPIN_US"),
    ],
)
def test_bad_settings_are_improperly_configured(
    location: Any, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        GatewayCache(location, params)


def test_client_options_are_passed_on(tmp_path: Path) -> None:
    cache = GatewayCache(
        str(tmp_path / "x.sock"),
        {
            "OPTIONS": {
                "TIMEOUT": 2.5,
                "CONNECT_TIMEOUT": 0.5,
                "CONNECT_ATTEMPTS": 3,
                "BACKOFF": 0.01,
                "MAX_BACKOFF": 0.2,
            }
        },
    )
    for client in (cache.transport.client, cache.transport.async_client):
        assert (client.timeout, client.connect_timeout, client.connect_attempts) == (2.5, 0.5, 3)
        assert (client.backoff, client.max_backoff) == (0.01, 0.2)


def test_spin_option_reaches_the_synchronous_client_only(tmp_path: Path) -> None:
    default = GatewayCache(str(tmp_path / "x.sock"), {})
    assert default.transport.client.spin_us == DEFAULT_SPIN_US > 0
    off = GatewayCache(str(tmp_path / "x.sock"), {"OPTIONS": {"SPIN_US": 0}})
    assert off.transport.client.spin_us == 0
    assert off.transport is not default.transport
    assert not hasattr(off.transport.async_client, "spin_us")


def test_backend_objects_with_the_same_settings_share_connections(socket_path: str) -> None:
    first = GatewayCache(socket_path, {"KEY_PREFIX": "a"})
    second = GatewayCache(socket_path, {"KEY_PREFIX": "b"})
    other = GatewayCache(socket_path, {"OPTIONS": {"READ": "socket"}})
    assert first.transport is second.transport
    assert other.transport is not first.transport


def test_call_timeout_option(socket_path: str) -> None:
    cache = GatewayCache(
        socket_path, {"KEY_PREFIX": "call-timeout", "OPTIONS": {"TIMEOUT": 0.000001}}
    )
    with pytest.raises(gateway_client.TimeoutError):
        for _ in range(50):
            cache.get_many([f"k{i}" for i in range(1000)])


# --- native async ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_async_methods_are_native(name: str) -> None:
    method = getattr(GatewayCache, name)
    assert method is not getattr(BaseCache, name)
    assert asyncio.iscoroutinefunction(method)


def test_async_methods_do_not_touch_the_blocking_client(
    make_cache: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = make_cache(OPTIONS={"READ": "socket"})

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an async method used the blocking client")

    monkeypatch.setattr(cache.transport.client, "request", forbidden)
    monkeypatch.setattr(cache.transport.client, "call_many", forbidden)

    async def scenario() -> None:
        await cache.aset("k", 1)
        assert await cache.aget("k") == 1
        assert await cache.aincr("k") == 2
        await cache.aset("f", 1.5)
        assert await cache.aincr("f") == 2.5
        assert await cache.aadd("k", 3) is False
        assert await cache.aset_many({"a": 1}) == []
        assert await cache.aget_many(["a", "k"]) == {"a": 1, "k": 2}
        assert await cache.aincr_version("a") == 2
        await cache.adelete_many(["k"])
        await cache.aclear()
        assert await cache.ahas_key("a", version=2) is False
        await cache.aclose()
        await cache.transport.async_client.aclose()

    asyncio.run(scenario())


def test_many_concurrent_async_calls_share_one_connection(
    make_cache: Callable[..., Any], raw: Any
) -> None:
    cache = make_cache(OPTIONS={"READ": "socket"})
    cache.set("n", 0)

    async def scenario() -> None:
        await cache.aget("warm-up")  # opens this loop's connection
        opened = raw.stats()["connections_total"]
        results = await asyncio.gather(*(cache.aincr("n") for _ in range(300)))
        assert sorted(results) == list(range(1, 301))
        values = await asyncio.gather(*(cache.aset(f"k{i}", i) for i in range(100)))
        assert values == [None] * 100
        got = await asyncio.gather(*(cache.aget(f"k{i}") for i in range(100)))
        assert got == list(range(100))
        assert raw.stats()["connections_total"] == opened, "no connection was opened meanwhile"
        await cache.transport.async_client.aclose()

    asyncio.run(scenario())
    assert cache.get("n") == 300


def test_event_loops_in_threads_each_get_a_connection(make_cache: Callable[..., Any]) -> None:
    cache = make_cache(OPTIONS={"READ": "socket"})
    cache.set("n", 0)
    errors: list[BaseException] = []

    def run() -> None:
        async def work() -> None:
            for _ in range(100):
                await cache.aincr("n")
            await cache.transport.async_client.aclose()

        try:
            asyncio.run(work())
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert cache.get("n") == 400


# --- atomic incr ----------------------------------------------------------------------------------


def test_incr_is_atomic_across_threads(make_cache: Callable[..., Any]) -> None:
    cache = make_cache()
    cache.set("counter", 0)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(400):
                if (i + n) % 4 == 0:
                    cache.decr("counter", 2)
                else:
                    cache.incr("counter", 3)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert cache.get("counter") == 8 * (300 * 3 - 100 * 2)


def _incr_in_child(location: str, prefix: str, count: int) -> None:
    cache = GatewayCache(location, {"KEY_PREFIX": prefix})
    for _ in range(count):
        cache.incr("counter")


def test_incr_is_atomic_across_processes(make_cache: Callable[..., Any]) -> None:
    cache = make_cache()
    cache.set("counter", 0)
    assert cache.get("counter") == 0  # the parent's connection exists before fork
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(
            target=_incr_in_child, args=(cache.transport.location, cache.key_prefix, 500)
        )
        for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert cache.get("counter") == 2000
