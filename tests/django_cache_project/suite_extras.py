"""The django-redis style extras of GatewayCache: ttl, expire, persist, patterns, locks.

Like suite_api.py, each test runs with sync and native async methods, reading over the socket and
from the file (the extras themselves always go over the socket).
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache.backends.base import CacheKeyWarning
from gateway_client.cache_lock import CacheLock, LockError, LockNotOwnedError


def test_ttl(cache: Any) -> None:
    cache.set("k", 1, 60)
    assert 59 <= cache.ttl("k") <= 60
    assert 59_000 <= cache.pttl("k") <= 60_000
    cache.set("forever", 1, None)
    assert cache.ttl("forever") is None
    assert cache.pttl("forever") is None
    assert cache.ttl("missing") == 0
    assert cache.pttl("missing") == 0
    cache.set("soon", 1, 0.2)
    assert cache.ttl("soon") == 1, "rounded up: a live key never reports 0"
    time.sleep(0.3)
    assert cache.ttl("soon") == 0


def test_expire_and_persist(cache: Any) -> None:
    cache.set("k", 1)
    assert cache.expire("k", 100) is True
    assert 99 <= cache.ttl("k") <= 100
    assert cache.persist("k") is True
    assert cache.ttl("k") is None
    assert cache.expire("k", 0.2) is True
    time.sleep(0.3)
    assert cache.get("k") is None
    assert cache.expire("k", 10) is False
    assert cache.persist("k") is False
    cache.set("k", 1, 10)
    assert cache.expire("k", None) is True, "None: never expires"
    assert cache.ttl("k") is None
    assert cache.expire("k", 0) is True
    assert not cache.has_key("k")
    cache.set("v", 1, version=3)
    assert cache.expire("v", 50, version=3) is True
    assert 49 <= cache.ttl("v", version=3) <= 50


def test_iter_keys_and_keys(cache: Any) -> None:
    cache.set_many({f"user:{i}": i for i in range(25)})
    cache.set_many({"other:1": 1, "user": 0})
    cache.set("user:v2", 1, version=2)
    assert sorted(cache.iter_keys("user:*")) == sorted(f"user:{i}" for i in range(25))
    assert sorted(cache.iter_keys("user:*", itersize=4)) == sorted(f"user:{i}" for i in range(25))
    assert sorted(cache.keys("user:1*")) == ["user:1"] + [f"user:1{i}" for i in range(10)]
    assert sorted(cache.keys("*")) == sorted([f"user:{i}" for i in range(25)] + ["other:1", "user"])
    assert cache.keys("user:v2*") == []
    assert cache.keys("user:*", version=2) == ["user:v2"]
    assert cache.keys("nothing*") == []


def test_iter_keys_lists_long_keys_whole(cache: Any) -> None:
    long_keys = [f"long:{i}:" + "x" * 300 for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        cache.set_many({key: 1 for key in long_keys})
    cache.set("long:short", 1)
    assert sorted(cache.keys("long:*")) == sorted([*long_keys, "long:short"])
    assert sorted(cache.iter_keys("long:", itersize=1)) == sorted([*long_keys, "long:short"])


def test_iter_keys_is_lazy_and_pages(cache: Any) -> None:
    if getattr(cache, "is_async", False):
        pytest.skip("the async caller collects aiter_keys into a list")
    cache.set_many({f"p{i:03d}": i for i in range(30)})
    iterator = cache.iter_keys("p*", itersize=7)
    assert next(iterator).startswith("p")
    assert len(list(iterator)) == 29


def test_delete_pattern(cache: Any, cache_factory: Callable[..., Any]) -> None:
    neighbour = cache_factory(KEY_PREFIX=cache.key_prefix + "x")
    cache.set_many({f"session:{i}": i for i in range(10)})
    cache.set_many({"sessions": 1, "other": 2})
    cache.set("session:v2", 1, version=2)
    neighbour.set("session:1", "kept")
    assert cache.delete_pattern("session:*") == 10
    assert sorted(cache.keys("*")) == ["other", "sessions"]
    assert cache.get("session:v2", version=2) == 1
    assert neighbour.get("session:1") == "kept"
    assert cache.delete_pattern("session", version=2) == 1
    assert cache.delete_pattern("nothing*") == 0
    assert cache.delete_pattern("*") == 2
    assert cache.keys("*") == []


def test_delete_pattern_with_another_prefix(cache: Any, cache_factory: Callable[..., Any]) -> None:
    other = cache_factory(KEY_PREFIX=cache.key_prefix + "-other")
    other.set_many({"a:1": 1, "a:2": 2})
    assert cache.delete_pattern("a:*", prefix=other.key_prefix) == 2
    assert other.keys("*") == []


def test_escaped_glob_characters_are_literal(cache: Any) -> None:
    cache.set_many({"a*b:1": 1, "a*b:2": 2, "axb:1": 3, "q?:1": 4})
    assert sorted(cache.keys(r"a\*b:*")) == ["a*b:1", "a*b:2"]
    assert cache.keys(r"q\?*") == ["q?:1"]
    assert cache.delete_pattern(r"a\*b") == 2


@pytest.mark.parametrize("pattern", ["a*b", "user:?", "[ab]*", "*x", "**"])
def test_glob_patterns_are_refused(cache: Any, pattern: str) -> None:
    with pytest.raises(ValueError, match="only prefix patterns"):
        cache.keys(pattern)
    with pytest.raises(ValueError, match="only prefix patterns"):
        cache.delete_pattern(pattern)


def hashing_key_func(key: str, key_prefix: str, version: int) -> str:
    import hashlib

    return hashlib.sha1(f"{key_prefix}:{version}:{key}".encode()).hexdigest()


def test_patterns_need_a_key_function_that_appends_the_key(
    cache_factory: Callable[..., Any],
) -> None:
    hashed = cache_factory(KEY_FUNCTION=hashing_key_func)
    hashed.set("k", 1)
    assert hashed.get("k") == 1
    with pytest.raises(NotImplementedError, match="KEY_FUNCTION"):
        hashed.keys("*")
    with pytest.raises(NotImplementedError):
        hashed.delete_pattern("k*")


def test_custom_key_function_that_appends_supports_patterns(
    cache_factory: Callable[..., Any],
) -> None:
    pipes = cache_factory(KEY_FUNCTION=lambda key, prefix, version: f"{prefix}|v{version}|{key}")
    pipes.set_many({"a:1": 1, "a:2": 2, "b:1": 3})
    assert sorted(pipes.keys("a:*")) == ["a:1", "a:2"]
    assert pipes.delete_pattern("a:") == 2
    pipes.clear()
    assert pipes.keys("*") == []


def test_clear_with_a_key_function_that_hides_the_prefix_clears_everything(
    cache_factory: Callable[..., Any], raw: Any
) -> None:
    """Django's backends all clear everything; only a provable prefix narrows it."""
    raw.call("cache.set", key="unrelated-key", value=1)
    hashed = cache_factory(KEY_FUNCTION=hashing_key_func)
    hashed.set("k", 1)
    hashed.clear()
    assert hashed.get("k") is None
    assert raw.call("cache.get", key="unrelated-key") is None


def test_clear_without_key_prefix_clears_everything(
    cache_factory: Callable[..., Any], raw: Any
) -> None:
    raw.call("cache.set", key="unrelated-key", value=1)
    bare = cache_factory(KEY_PREFIX="")
    bare.set("k", 1)
    bare.clear()
    assert bare.get("k") is None
    assert raw.call("cache.get", key="unrelated-key") is None


# --- locks ----------------------------------------------------------------------------------------


def test_lock_context_manager(cache: Any) -> None:
    lock = cache.lock("resource", timeout=5)
    assert isinstance(lock, CacheLock)
    with lock as held:
        assert held is lock
        assert lock.token is not None
        assert cache.has_key("resource")
        assert lock.locked()
        assert cache.lock("resource", timeout=5).acquire(blocking=False) is False
    assert not cache.has_key("resource")
    assert lock.token is None
    assert cache.lock("resource", timeout=5).acquire(blocking=False) is True


def test_lock_is_exclusive_between_threads(cache: Any) -> None:
    inside = 0
    most_inside = 0
    entries = 0
    guard = threading.Lock()

    def worker() -> None:
        nonlocal inside, most_inside, entries
        for _ in range(10):
            with cache.lock("counter-lock", timeout=5, sleep=0.01):
                with guard:
                    inside += 1
                    most_inside = max(most_inside, inside)
                    entries += 1
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert entries == 60
    assert most_inside == 1


def test_lock_blocking_timeout(cache: Any) -> None:
    holder = cache.lock("busy", timeout=10)
    assert holder.acquire()
    waiter = cache.lock("busy", timeout=10, blocking_timeout=0.2)
    started = time.monotonic()
    assert waiter.acquire() is False
    assert 0.15 <= time.monotonic() - started < 2
    with (
        pytest.raises(LockError, match="could not acquire"),
        cache.lock("busy", timeout=10, blocking_timeout=0.05),
    ):
        pass
    assert cache.lock("busy").acquire(blocking=False) is False
    holder.release()
    assert waiter.acquire(blocking_timeout=1) is True
    waiter.release()


def test_blocked_acquire_gets_the_lock_when_released(cache: Any) -> None:
    holder = cache.lock("handoff", timeout=10)
    assert holder.acquire()
    threading.Timer(0.2, holder.release).start()
    started = time.monotonic()
    with cache.lock("handoff", timeout=10, blocking_timeout=5):
        waited = time.monotonic() - started
    assert 0.15 <= waited < 2


def test_lock_expires_and_release_then_fails(cache: Any) -> None:
    first = cache.lock("expiring", timeout=0.2)
    assert first.acquire()
    time.sleep(0.3)
    second = cache.lock("expiring", timeout=5)
    assert second.acquire(blocking=False)
    with pytest.raises(LockNotOwnedError):
        first.release()
    assert cache.has_key("expiring"), "the new holder's lock was not released"
    second.release()
    with pytest.raises(LockNotOwnedError):
        second.release()


def test_lock_reacquire_renews(cache: Any) -> None:
    lock = cache.lock("renew", timeout=0.3)
    assert lock.acquire()
    time.sleep(0.2)
    assert lock.reacquire() is True
    time.sleep(0.2)
    assert cache.lock("renew").acquire(blocking=False) is False, "renewed, so still held"
    lock.release()


def test_lock_without_timeout_does_not_expire(cache: Any) -> None:
    lock = cache.lock("forever-lock")
    assert lock.acquire()
    assert cache.ttl("forever-lock") > 300 * 24 * 3600
    lock.release()


def test_lock_uses_the_key_prefix_and_version(cache: Any) -> None:
    lock = cache.lock("scoped", version=4, timeout=5)
    assert lock.key == cache.make_key("scoped", version=4)
    with lock:
        assert cache.has_key("scoped", version=4)


def test_async_lock_context_manager(cache: Any) -> None:
    target = getattr(cache, "_cache", cache)

    async def scenario() -> None:
        lock = target.lock("alock", timeout=5)
        async with lock:
            assert await target.ahas_key("alock")
            other = target.lock("alock", timeout=5, blocking_timeout=0.1)
            assert await other.aacquire() is False
            assert await lock.areacquire() is True
            assert await lock.alocked()
        assert not await target.ahas_key("alock")
        with pytest.raises(LockNotOwnedError):
            await lock.arelease()

        # Two tasks on one loop take turns.
        order: list[str] = []

        async def task(name: str) -> None:
            async with target.lock("alock", timeout=5, sleep=0.01):
                order.append(f"{name}-in")
                await asyncio.sleep(0.05)
                order.append(f"{name}-out")

        await asyncio.gather(task("a"), task("b"))
        assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])
        await target.transport.async_client.aclose()

    asyncio.run(scenario())
