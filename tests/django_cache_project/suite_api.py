"""Django's cache API on GatewayCache, checked the way Django's own cache tests check a backend.

Every test runs four times: sync methods and native ``a*`` methods, each reading over the socket
and directly from the cache file. The behaviours are those Django's ``BaseCacheTests`` expect of
its built-in backends (written afresh here, not copied).
"""

from __future__ import annotations

import pickle
import time
import warnings
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import CacheKeyWarning
from gateway_client import ValueTooLarge
from gateway_client.cache_values import INT64_MAX

# Short timeouts keep the suite fast; the server stores expiry in milliseconds.
SHORT = 0.2
PAST_SHORT = 0.3


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError("this object refuses to be pickled")


def stored_key(cache: Any, key: str, version: int | None = None) -> str:
    return cache.make_key(key, version=version)


# --- get, set, add, delete -----------------------------------------------------------------------


def test_simple_set_and_get(cache: Any) -> None:
    assert cache.set("key", "value") is None
    assert cache.get("key") == "value"


def test_none_is_a_value_not_a_miss(cache: Any) -> None:
    cache.set("null", None)
    assert cache.get("null", "default") is None
    assert cache.has_key("null")
    assert "null" in cache
    assert cache.get_many(["null"]) == {"null": None}
    assert cache.add("null", "other") is False


def test_non_existent_key_returns_default(cache: Any) -> None:
    assert cache.get("does_not_exist") is None
    assert cache.get("does_not_exist", "bang!") == "bang!"


def test_add_only_stores_when_missing(cache: Any) -> None:
    assert cache.add("addkey1", "value") is True
    assert cache.add("addkey1", "newvalue") is False
    assert cache.get("addkey1") == "value"


def test_add_after_expiry_stores(cache: Any) -> None:
    cache.set("k", "old", SHORT)
    time.sleep(PAST_SHORT)
    assert cache.add("k", "new") is True
    assert cache.get("k") == "new"


def test_delete_reports_whether_there_was_an_entry(cache: Any) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs"})
    assert cache.delete("key1") is True
    assert cache.get("key1") is None
    assert cache.get("key2") == "eggs"
    assert cache.delete("key1") is False
    assert cache.delete("never_set") is False


def test_key_prefixes_separate_caches(cache: Any, cache_factory: Callable[..., Any]) -> None:
    other = cache_factory(KEY_PREFIX=cache.key_prefix + "other")
    cache.set("somekey", "value")
    assert not other.has_key("somekey")
    assert other.get("somekey") is None
    other.set("somekey", "other value")
    assert cache.get("somekey") == "value"


def test_has_key_and_in(cache: Any) -> None:
    cache.set("hello1", "goodbye1")
    assert cache.has_key("hello1")
    assert "hello1" in cache
    assert not cache.has_key("goodbye1")
    assert "goodbye1" not in cache
    cache.set("expiring", "x", SHORT)
    time.sleep(PAST_SHORT)
    assert not cache.has_key("expiring")


def test_data_types_round_trip(cache: Any) -> None:
    value = {
        "string": "this is a string",
        "int": 42,
        "bool": True,
        "list": [1, 2, 3, 4],
        "tuple": (1, 2, 3, 4),
        "dict": {"A": 1, "B": 2},
        "function": len,
        "class": Decimal,
        "decimal": Decimal("1.10"),
        "bytes": b"\x00\xff",
        "set": {1, 2},
    }
    cache.set("data", value)
    assert cache.get("data") == value


@pytest.mark.parametrize(
    "value",
    [0, 1, -1, INT64_MAX, -(2**63), 2**63, -(2**63) - 1, 10**40, True, False, 1.5, "", b"", "é"],
    ids=repr,
)
def test_scalars_round_trip_with_their_type(cache: Any, value: Any) -> None:
    cache.set("v", value)
    got = cache.get("v")
    assert got == value
    assert type(got) is type(value)


def test_unicode_keys_and_values(cache: Any) -> None:
    stuff = {
        "ascii": "ascii_value",
        "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
        "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
        "ascii2": {"x": 1},
    }
    for key, value in stuff.items():
        cache.delete(key)
        cache.set(key, value)
        assert cache.get(key) == value
    cache.delete_many(stuff.keys())
    assert cache.get_many(stuff.keys()) == {}
    cache.set_many(stuff)
    assert cache.get_many(stuff.keys()) == stuff
    for key, value in stuff.items():
        cache.delete(key)
        assert cache.add(key, value) is True
        assert cache.get(key) == value


def test_binary_strings(cache: Any) -> None:
    value = b"value_to_be_compressed"
    compressed = zlib.compress(value)
    cache.set("binary1", compressed)
    assert zlib.decompress(cache.get("binary1")) == value
    assert cache.add("binary1-add", compressed) is True
    assert zlib.decompress(cache.get("binary1-add")) == value
    cache.set_many({"binary1-set_many": compressed})
    assert zlib.decompress(cache.get("binary1-set_many")) == value


def test_close_keeps_the_cache_usable(cache: Any) -> None:
    assert hasattr(cache, "close")
    cache.set("k", 1)
    cache.close()
    assert cache.get("k") == 1


def test_settings_backend_path_and_default_alias() -> None:
    from gateway_client.django import GatewayCache

    cache = caches["default"]
    assert isinstance(cache, GatewayCache)
    cache.set("from-settings", [1, 2])
    assert cache.get("from-settings") == [1, 2]
    cache.clear()
    assert cache.get("from-settings") is None


# --- many -----------------------------------------------------------------------------------------


def test_get_many(cache: Any) -> None:
    cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
    assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
    assert cache.get_many([]) == {}
    assert cache.get_many(["a", "a"]) == {"a": "a"}


def test_get_many_maps_back_to_the_callers_keys(cache: Any) -> None:
    cache.set(1, "one")
    assert cache.get_many([1, "1", "2"]) == {1: "one", "1": "one"}


def test_set_many(cache: Any) -> None:
    assert cache.set_many({"key1": "spam", "key2": "eggs"}) == []
    assert cache.get("key1") == "spam"
    assert cache.get("key2") == "eggs"
    assert cache.set_many({}) == []


def test_set_many_expiration(cache: Any) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs"}, SHORT)
    time.sleep(PAST_SHORT)
    assert cache.get("key1") is None
    assert cache.get("key2") is None


def test_set_many_returns_values_over_the_size_limit(cache: Any) -> None:
    too_big = b"x" * (16 * 1024 * 1024 + 1)
    assert cache.set_many({"small": 1, "big": too_big, "small2": "s"}) == ["big"]
    assert cache.get_many(["small", "big", "small2"]) == {"small": 1, "small2": "s"}
    with pytest.raises(ValueTooLarge):
        cache.set("big", too_big)


def test_delete_many(cache: Any) -> None:
    cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
    assert cache.delete_many(["key1", "key2"]) is None
    assert cache.get("key1") is None
    assert cache.get("key2") is None
    assert cache.get("key3") == "ham"
    cache.delete_many([])
    cache.delete_many(iter(["key3"]))
    assert cache.get("key3") is None


def test_clear_removes_this_prefix_only(cache: Any, cache_factory: Callable[..., Any]) -> None:
    neighbour = cache_factory(KEY_PREFIX=cache.key_prefix + "-neighbour")
    cache.set_many({"key1": "spam", "key2": "eggs"})
    cache.set("key3", "v", version=7)
    neighbour.set("key1", "kept")
    assert cache.clear() is None
    assert cache.get_many(["key1", "key2"]) == {}
    assert cache.get("key3", version=7) is None
    assert neighbour.get("key1") == "kept"


# --- incr and decr --------------------------------------------------------------------------------


def test_incr(cache: Any) -> None:
    cache.set("answer", 41)
    assert cache.incr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.incr("answer", 10) == 52
    assert cache.get("answer") == 52
    assert cache.incr("answer", -10) == 42
    with pytest.raises(ValueError, match="not found"):
        cache.incr("does_not_exist")
    with pytest.raises(ValueError):
        cache.incr("does_not_exist", -1)
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.incr("null")


def test_decr(cache: Any) -> None:
    cache.set("answer", 43)
    assert cache.decr("answer") == 42
    assert cache.get("answer") == 42
    assert cache.decr("answer", 10) == 32
    assert cache.decr("answer", -10) == 42
    with pytest.raises(ValueError):
        cache.decr("does_not_exist")
    cache.set("null", None)
    with pytest.raises(TypeError):
        cache.decr("null")


def test_incr_keeps_the_timeout(cache: Any) -> None:
    cache.set("n", 1, SHORT)
    assert cache.incr("n") == 2
    time.sleep(PAST_SHORT)
    with pytest.raises(ValueError):
        cache.incr("n")


def test_incr_stores_integers_natively(cache: Any, raw: Any) -> None:
    cache.set("n", 5)
    cache.set("flag", True)
    assert raw.call("cache.get", key=stored_key(cache, "n")) == 5
    assert isinstance(raw.call("cache.get", key=stored_key(cache, "flag")), bytes)
    raw.call("cache.incr", key=stored_key(cache, "n"), delta=3)  # another client, atomically
    assert cache.get("n") == 8


@pytest.mark.parametrize(
    ("start", "delta", "expected"),
    [
        (1.5, 1, 2.5),  # floats add like in locmem
        (True, 1, 2),  # bool is pickled, incremented in Python, stored back as an int
        (Decimal("1.5"), 2, Decimal("3.5")),
        (INT64_MAX, 1, INT64_MAX + 1),  # beyond int64: computed in Python, then pickled
        (2**64, -(2**64) + 5, 5),  # back into range: stored natively again
        (10, 0.5, 10.5),  # a non-int delta
    ],
    ids=["float", "bool", "decimal", "overflow", "back-in-range", "float-delta"],
)
def test_incr_of_values_the_server_cannot_add(
    cache: Any, start: Any, delta: Any, expected: Any
) -> None:
    cache.set("v", start, 60)
    assert cache.incr("v", delta) == expected
    got = cache.get("v")
    assert got == expected and type(got) is type(expected)
    assert 55 <= cache.ttl("v") <= 60, "the fallback keeps the remaining timeout"


def test_incr_of_a_string_raises_type_error_like_locmem(cache: Any) -> None:
    cache.set("s", "text")
    with pytest.raises(TypeError):
        cache.incr("s")
    assert cache.get("s") == "text"


# --- timeouts -------------------------------------------------------------------------------------


def test_expiration(cache: Any) -> None:
    cache.set("expire1", "very quickly", SHORT)
    cache.set("expire2", "very quickly", SHORT)
    cache.set("expire3", "very quickly", SHORT)
    time.sleep(PAST_SHORT)
    assert cache.get("expire1") is None
    assert cache.add("expire2", "newvalue") is True
    assert cache.get("expire2") == "newvalue"
    assert not cache.has_key("expire3")


def test_touch(cache: Any) -> None:
    cache.set("expire1", "very quickly", timeout=SHORT)
    assert cache.touch("expire1", timeout=60) is True
    time.sleep(PAST_SHORT)
    assert cache.has_key("expire1")
    assert cache.touch("expire1", timeout=SHORT) is True
    time.sleep(PAST_SHORT)
    assert not cache.has_key("expire1")

    cache.set("expire2", "v", timeout=SHORT)
    assert cache.touch("expire2") is True  # DEFAULT_TIMEOUT: the cache's 300 s
    assert 295 <= cache.ttl("expire2") <= 300
    assert cache.touch("expire2", None) is True
    assert cache.ttl("expire2") is None
    assert cache.touch("nonexistent") is False


def test_touch_with_zero_or_negative_timeout_expires(cache: Any) -> None:
    cache.set("k", 1)
    assert cache.touch("k", 0) is True
    assert cache.get("k") is None
    cache.set("k", 1)
    assert cache.touch("k", -5) is True
    assert not cache.has_key("k")


def test_long_timeout_over_30_days(cache: Any) -> None:
    """Memcached reads timeouts over 30 days as Unix times; here they are just durations."""
    thirty_days_and_one = 60 * 60 * 24 * 30 + 1
    cache.set("key1", "eggs", thirty_days_and_one)
    assert cache.get("key1") == "eggs"
    assert cache.add("key2", "ham", thirty_days_and_one) is True
    assert cache.get("key2") == "ham"
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, thirty_days_and_one)
    assert cache.get("key3") == "sausage"
    assert cache.get("key4") == "lobster bisque"
    thirty_one_days = 31 * 24 * 3600
    cache.set("key5", "31 days", thirty_one_days)
    assert thirty_one_days - 5 <= cache.ttl("key5") <= thirty_one_days


def test_forever_timeout(cache: Any) -> None:
    cache.set("key1", "eggs", None)
    assert cache.get("key1") == "eggs"
    assert cache.ttl("key1") is None
    assert cache.add("key2", "ham", None) is True
    assert cache.get("key2") == "ham"
    assert cache.add("key1", "new eggs", None) is False
    assert cache.get("key1") == "eggs"
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, None)
    assert cache.get("key3") == "sausage"
    assert cache.ttl("key4") is None
    cache.set("key5", "belgian fries", timeout=SHORT)
    assert cache.touch("key5", timeout=None) is True
    time.sleep(PAST_SHORT)
    assert cache.get("key5") == "belgian fries"


@pytest.mark.parametrize("timeout", [0, -1, -0.5, -3600])
def test_zero_and_negative_timeouts_store_nothing(cache: Any, timeout: float) -> None:
    cache.set("key1", "eggs", timeout)
    assert cache.get("key1") is None
    assert cache.add("key2", "ham", timeout) is True, "Django: add reports it would have stored"
    assert cache.get("key2") is None
    cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, timeout)
    assert cache.get("key3") is None
    assert cache.get("key4") is None
    cache.set("key5", "belgian fries", timeout=5)
    assert cache.touch("key5", timeout=timeout) is True
    assert cache.get("key5") is None


def test_zero_timeout_set_removes_an_existing_key_and_add_reports_false(cache: Any) -> None:
    cache.set("k", "old")
    assert cache.add("k", "new", 0) is False
    assert cache.get("k") == "old"
    cache.set("k", "new", 0)
    assert cache.get("k") is None


def test_float_timeout(cache: Any) -> None:
    cache.set("key1", "spam", 100.2)
    assert cache.get("key1") == "spam"
    assert 100 <= cache.ttl("key1") <= 101
    cache.set("key2", "spam", SHORT)
    time.sleep(PAST_SHORT)
    assert cache.get("key2") is None


def test_default_timeout_setting(cache_factory: Callable[..., Any]) -> None:
    sixty = cache_factory(TIMEOUT=60)
    sixty.set("k", 1)
    assert 59 <= sixty.ttl("k") <= 60
    never = cache_factory(TIMEOUT=None)
    never.set("k", 1)
    never.set_many({"m": 2})
    assert never.add("a", 3) is True
    assert [never.ttl(k) for k in ("k", "m", "a")] == [None, None, None]
    century = 60 * 60 * 24 * 365 * 100
    far = cache_factory(TIMEOUT=century)
    far.set("k", "far")
    assert far.get("k") == "far"
    assert century - 5 <= far.ttl("k") <= century
    zero = cache_factory(TIMEOUT=0)
    zero.set("k", 1)
    assert zero.get("k") is None


# --- versions and key functions -------------------------------------------------------------------


def test_versioning_get_set(cache: Any, cache_factory: Callable[..., Any]) -> None:
    v2 = cache_factory(KEY_PREFIX=cache.key_prefix, VERSION=2)
    cache.set("answer1", 42)
    assert cache.get("answer1") == 42
    assert cache.get("answer1", version=1) == 42
    assert cache.get("answer1", version=2) is None
    assert v2.get("answer1") is None
    assert v2.get("answer1", version=1) == 42

    cache.set("answer2", 42, version=2)
    assert cache.get("answer2") is None
    assert cache.get("answer2", version=2) == 42
    assert v2.get("answer2") == 42

    v2.set("answer3", 42)
    assert cache.get("answer3") is None
    assert cache.get("answer3", version=2) == 42

    v2.set("answer4", 42, version=1)
    assert cache.get("answer4") == 42
    assert v2.get("answer4") is None


def test_versioning_add_has_key_delete(cache: Any) -> None:
    assert cache.add("answer1", 42, version=2) is True
    assert cache.add("answer1", 37, version=2) is False
    assert cache.add("answer1", 37, version=1) is True
    assert cache.get("answer1", version=1) == 37
    assert cache.get("answer1", version=2) == 42
    assert cache.has_key("answer1", version=1) and cache.has_key("answer1", version=2)
    assert not cache.has_key("answer1", version=3)
    assert cache.delete("answer1", version=2) is True
    assert cache.get("answer1", version=1) == 37
    assert cache.get("answer1", version=2) is None


def test_versioning_many(cache: Any) -> None:
    cache.set_many({"ford1": 37, "arthur1": 42})
    cache.set_many({"ford1": 38, "arthur1": 43}, version=2)
    assert cache.get_many(["ford1", "arthur1"]) == {"ford1": 37, "arthur1": 42}
    assert cache.get_many(["ford1", "arthur1"], version=2) == {"ford1": 38, "arthur1": 43}
    cache.delete_many(["ford1", "arthur1"], version=2)
    assert cache.get_many(["ford1", "arthur1"], version=2) == {}
    assert cache.get_many(["ford1", "arthur1"], version=1) == {"ford1": 37, "arthur1": 42}


def test_versioning_incr_decr(cache: Any) -> None:
    cache.set("answer", 1, version=2)
    assert cache.incr("answer", version=2) == 2
    assert cache.decr("answer", 5, version=2) == -3
    with pytest.raises(ValueError):
        cache.incr("answer")


def test_incr_version(cache: Any, cache_factory: Callable[..., Any]) -> None:
    v2 = cache_factory(KEY_PREFIX=cache.key_prefix, VERSION=2)
    cache.set("answer", 42, version=2)
    assert cache.incr_version("answer", version=2) == 3
    assert cache.get("answer", version=2) is None
    assert cache.get("answer", version=3) == 42

    v2.set("answer2", 42)
    assert v2.incr_version("answer2") == 3
    assert v2.get("answer2") is None
    assert v2.get("answer2", version=3) == 42
    assert v2.incr_version("answer2", version=3, delta=10) == 13
    assert v2.get("answer2", version=13) == 42

    with pytest.raises(ValueError):
        cache.incr_version("does_not_exist")
    cache.set("null", None)
    assert cache.incr_version("null") == 2
    assert cache.get("null", "default", version=2) is None


def test_decr_version(cache: Any) -> None:
    cache.set("answer", 42, version=2)
    assert cache.decr_version("answer", version=2) == 1
    assert cache.get("answer") == 42
    assert cache.get("answer", version=2) is None
    assert cache.decr_version("answer", delta=2, version=1) == -1
    assert cache.get("answer", version=-1) == 42
    with pytest.raises(ValueError):
        cache.decr_version("does_not_exist", version=2)


def custom_key_func(key: str, key_prefix: str, version: int) -> str:
    """A custom KEY_FUNCTION (also reached by its dotted path)."""
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def test_custom_key_function(cache: Any, cache_factory: Callable[..., Any]) -> None:
    by_callable = cache_factory(KEY_PREFIX=cache.key_prefix, KEY_FUNCTION=custom_key_func)
    by_path = cache_factory(KEY_PREFIX=cache.key_prefix, KEY_FUNCTION=f"{__name__}.custom_key_func")
    cache.set("answer1", 42)
    assert cache.get("answer1") == 42
    assert by_callable.get("answer1") is None
    assert by_path.get("answer1") is None
    by_callable.set("answer2", 42)
    assert cache.get("answer2") is None
    assert by_callable.get("answer2") == 42
    assert by_path.get("answer2") == 42
    assert by_callable.make_key("answer2") == f"CUSTOM-{cache.key_prefix}-1-answer2"
    by_callable.clear()
    assert by_path.get("answer2") is None
    assert cache.get("answer1") == 42, "clear() of the custom cache kept the default one's keys"


# --- values that cannot be stored -----------------------------------------------------------------


def test_unpicklable_values_raise_pickle_error(cache: Any) -> None:
    with pytest.raises(pickle.PickleError):
        cache.add("unpicklable", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.set("unpicklable", Unpicklable())
    with pytest.raises(pickle.PickleError):
        cache.set_many({"fine": 1, "unpicklable": Unpicklable()})
    assert cache.get_many(["fine", "unpicklable"]) == {}, "nothing was stored"


def test_values_are_pickled_with_the_highest_protocol(cache: Any, raw: Any) -> None:
    cache.set("k", {"a": 1})
    stored = raw.call("cache.get", key=stored_key(cache, "k"))
    assert stored[0] == 0x80 and stored[1] == pickle.HIGHEST_PROTOCOL


# --- get_or_set -----------------------------------------------------------------------------------


def test_get_or_set(cache: Any) -> None:
    assert cache.get("projector") is None
    assert cache.get_or_set("projector", 42) == 42
    assert cache.get("projector") == 42
    assert cache.get_or_set("null", None) is None
    assert cache.get("null", "default") is None, "get_or_set stored None"


def test_get_or_set_callable(cache: Any) -> None:
    calls: list[int] = []

    def my_callable() -> str:
        calls.append(1)
        return "value"

    assert cache.get_or_set("mykey", my_callable) == "value"
    assert cache.get_or_set("mykey", my_callable) == "value"
    assert calls == [1], "the callable runs only on a miss"
    assert cache.get_or_set("mykey", my_callable()) == "value"
    assert cache.get_or_set("null", lambda: None) is None
    assert cache.get("null", "default") is None


def test_get_or_set_version(cache: Any) -> None:
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    with pytest.raises(TypeError):
        cache.get_or_set("brian")  # default is required
    assert cache.get("brian", version=1) is None
    assert cache.get_or_set("brian", 42, version=1) == 42
    assert cache.get_or_set("brian", 1979, version=2) == 1979
    assert cache.get("brian", version=3) is None


def test_get_or_set_with_zero_timeout_returns_default(cache: Any) -> None:
    assert cache.get_or_set("k", "d", 0) == "d"
    assert cache.get("k") is None


def test_get_or_set_racing(cache: Any) -> None:
    """Another process added first: the default is returned, not an error."""
    target = getattr(cache, "_cache", cache)
    with (
        mock.patch.object(target, "add", return_value=False),
        mock.patch.object(target, "aadd", return_value=False),
    ):
        assert cache.get_or_set("key", "default") == "default"


# --- keys -----------------------------------------------------------------------------------------


def test_long_keys_are_stored_and_kept_apart(cache: Any) -> None:
    base = "x" * 300
    keys = [base + "a", base + "b", "é" * 200, "k" * 60_000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        for n, key in enumerate(keys):
            cache.set(key, n)
        assert [cache.get(key) for key in keys] == [0, 1, 2, 3]
        assert cache.get_many(keys) == {key: n for n, key in enumerate(keys)}
        assert cache.incr(keys[0]) == 1
        assert cache.delete(keys[1]) is True
        assert cache.get(keys[1]) is None and cache.get(keys[0]) == 1


def _key_as_is(key: str, *args: Any) -> str:
    return key


def _check_invalid_key_warnings(cache: Any, key: str, expected: str) -> None:
    cache.key_func = _key_as_is  # so the key reaches validate_key unchanged, as in Django's test
    operations: list[tuple[str, list[Any]]] = [
        ("add", [key, 1]),
        ("get", [key]),
        ("set", [key, 1]),
        ("incr", [key]),
        ("decr", [key]),
        ("touch", [key]),
        ("delete", [key]),
        ("get_many", [[key, "b"]]),
        ("set_many", [{key: 1, "b": 2}]),
        ("delete_many", [[key, "b"]]),
    ]
    for name, args in operations:
        with pytest.warns(CacheKeyWarning) as record:
            getattr(cache, name)(*args)
        assert str(record[0].message) == expected, name


def test_invalid_key_characters_warn(cache: Any) -> None:
    key = f"{cache.key_prefix}:key with spaces and 清"
    expected = (
        f"Cache key contains characters that will cause errors if used with memcached: {key!r}"
    )
    _check_invalid_key_warnings(cache, key, expected)


def test_invalid_key_length_warns(cache: Any) -> None:
    key = cache.key_prefix + ("a" * 250) + "清"
    expected = f"Cache key will cause errors if used with memcached: {key!r} (longer than 250)"
    _check_invalid_key_warnings(cache, key, expected)


def test_key_with_version_over_the_length_warns(cache: Any) -> None:
    key = "a" * (250 - len(cache.make_key("")) + 1)
    with pytest.warns(CacheKeyWarning, match="longer than 250"):
        cache.set(key, "value")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        assert cache.get(key) == "value"


# --- culling (MAX_ENTRIES / CULL_FREQUENCY) -------------------------------------------------------


def _surviving(cache: Any, count: int) -> int:
    for i in range(1, count):
        cache.set(f"cull{i}", "value", 1000)
    return sum(cache.has_key(f"cull{i}") for i in range(1, count))


def test_cull(cache_factory: Callable[..., Any], raw: Any) -> None:
    """Django's cull test counts what survives 49 sets into a cache of 30 entries.

    The server culls the whole cache, as Django's database cache does, so this needs a gateway
    that holds nothing else: it runs with an empty cache and restores nothing afterwards.
    """
    raw.call("cache.clear_all")
    culled = cache_factory(OPTIONS={"MAX_ENTRIES": 30})
    assert _surviving(culled, 50) == 29


def test_zero_cull(cache_factory: Callable[..., Any], raw: Any) -> None:
    """CULL_FREQUENCY 0 empties the cache when it is over MAX_ENTRIES (18 survive, as with
    Django's database cache, which culls when it counts more than MAX_ENTRIES entries)."""
    raw.call("cache.clear_all")
    culled = cache_factory(OPTIONS={"MAX_ENTRIES": 30, "CULL_FREQUENCY": 0})
    assert _surviving(culled, 50) == 18


def test_no_cull_unless_configured(cache: Any, raw: Any) -> None:
    raw.call("cache.clear_all")
    cache.set_many({f"k{i}": i for i in range(350)})  # more than Django's default MAX_ENTRIES
    for i in range(350, 400):
        cache.set(f"k{i}", i)
    assert len(cache.get_many([f"k{i}" for i in range(400)])) == 400
