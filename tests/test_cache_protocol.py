"""The cache ops on the wire, checked against gateway/PROTOCOL.md ("Cache operations").

These talk to the real gateway with gateway_client.Client (its typed errors are part of what is
checked). Where the server and PROTOCOL.md disagree, the test states what PROTOCOL.md says and is
marked ``xfail(strict=True)`` with the disagreement as its reason, so it turns into a failure to
look at once either side changes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import gateway_client
import pytest
from gateway_client import Client
from gateway_harness import GatewayProcess


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[Client]:
    with Client(gateway.socket_path) as c:
        yield c


def all_keys(client: Client, prefix: str | None = None, limit: int | None = None) -> list[bytes]:
    """Page through cache.keys until ``next`` is nil."""
    keys: list[bytes] = []
    after: Any = None
    while True:
        args: dict[str, Any] = {}
        if prefix is not None:
            args["prefix"] = prefix
        if limit is not None:
            args["limit"] = limit
        if after is not None:
            args["after"] = after
        page = client.request("cache.keys", args)
        assert set(page) == {"keys", "next"}
        keys += page["keys"]
        after = page["next"]
        if after is None:
            return keys


CACHE_OPS = [
    "cache.add",
    "cache.clear",
    "cache.clear_all",
    "cache.delete",
    "cache.delete_many",
    "cache.delete_prefix",
    "cache.expire",
    "cache.get",
    "cache.get_many",
    "cache.has_key",
    "cache.incr",
    "cache.keys",
    "cache.lock",
    "cache.persist",
    "cache.set",
    "cache.set_many",
    "cache.stats",
    "cache.touch",
    "cache.ttl",
    "cache.unlock",
]


def test_hello_lists_the_cache_ops(client: Client) -> None:
    features = client.hello()["features"]
    assert set(CACHE_OPS) <= set(features)
    assert features == sorted(features)


def test_values_keep_their_msgpack_type(client: Client) -> None:
    for key, value in [("bin", b"\x00\xffbytes"), ("str", "text é"), ("int", -(2**63))]:
        assert client.call("cache.set", key=key, value=value) is True
        got = client.call("cache.get", key=key)
        assert got == value and type(got) is type(value)
    assert client.call("cache.get", key="missing") is None
    assert client.call("cache.get", key=b"str") == "text é", "a str key is its UTF-8 bytes"


@pytest.mark.parametrize("value", [None, 1.5, True, [1], {"a": 1}], ids=repr)
def test_other_value_types_are_bad_arguments(client: Client, value: Any) -> None:
    with pytest.raises(gateway_client.BadArgument):
        client.call("cache.set", key="k", value=value)


@pytest.mark.parametrize("key", [b"", "", 1, None])
def test_bad_keys(client: Client, key: Any) -> None:
    with pytest.raises(gateway_client.BadArgument):
        client.call("cache.get", key=key)


def test_key_length_limits(client: Client) -> None:
    longest = b"k" * 65536
    assert client.call("cache.set", key=longest, value=1) is True
    assert client.call("cache.get", key=longest) == 1
    with pytest.raises(gateway_client.BadArgument):
        client.call("cache.set", key=longest + b"k", value=1)


def test_timeout_rules(client: Client) -> None:
    client.call("cache.set", key="forever", value=1)
    client.call("cache.set", key="nil", value=1, timeout=None)
    assert client.call("cache.ttl", key="forever") is None
    assert client.call("cache.ttl", key="nil") is None
    for timeout in (0, -1, -0.5):
        client.call("cache.set", key="gone", value=1)
        assert client.call("cache.set", key="gone", value=2, timeout=timeout) is True
        assert client.call("cache.get", key="gone") is None
    client.call("cache.set", key="month", value=1, timeout=31 * 86400)
    assert 31 * 86400 - 2 <= client.call("cache.ttl", key="month") <= 31 * 86400
    client.call("cache.set", key="brief", value=1, timeout=0.2)
    assert 0 < client.call("cache.ttl", key="brief") <= 0.2
    time.sleep(0.25)
    assert client.call("cache.get", key="brief") is None
    assert client.call("cache.has_key", key="brief") is False
    assert client.call("cache.ttl", key="brief") is False
    assert client.call("cache.get_many", keys=["brief", "month"]) == {b"month": 1}
    assert b"brief" not in all_keys(client)


def test_add_with_an_expired_timeout_stores_nothing(client: Client) -> None:
    client.call("cache.add", key="new", value=1, timeout=0)
    assert client.call("cache.get", key="new") is None
    client.call("cache.set", key="old", value=1)
    assert client.call("cache.add", key="old", value=2, timeout=0) is False
    assert client.call("cache.get", key="old") == 1


def test_add_with_an_expired_timeout_stores_nothing_and_says_true(client: Client) -> None:
    # Django's backends answer True here; the entry is never visible.
    assert client.call("cache.add", key="new", value=1, timeout=0) is True
    assert client.call("cache.get", key="new") is None
    client.call("cache.set", key="live", value=1)
    assert client.call("cache.add", key="live", value=2, timeout=0) is False
    assert client.call("cache.get", key="live") == 1


def test_ttl_is_a_float(client: Client) -> None:
    client.call("cache.set", key="k", value=1, timeout=10.5)
    assert isinstance(client.call("cache.ttl", key="k"), float)


def test_ttl_is_a_float_for_whole_seconds(client: Client) -> None:
    kinds = set()
    for _ in range(50):  # the time left is whole when set and ttl fall in the same millisecond
        client.call("cache.set", key="k", value=1, timeout=100)
        kinds.add(type(client.call("cache.ttl", key="k")))
    assert kinds == {float}


def test_add_touch_delete(client: Client) -> None:
    assert client.call("cache.add", key="a", value=1, timeout=60) is True
    assert client.call("cache.add", key="a", value=2) is False
    assert client.call("cache.get", key="a") == 1
    assert client.call("cache.touch", key="a") is True
    assert client.call("cache.ttl", key="a") is None, "touch without timeout: never expires"
    assert client.call("cache.touch", key="a", timeout=30) is True
    assert 29 <= client.call("cache.ttl", key="a") <= 30
    assert client.call("cache.touch", key="missing", timeout=30) is False
    assert client.call("cache.touch", key="a", timeout=0) is True
    assert client.call("cache.get", key="a") is None
    client.call("cache.set", key="d", value=1)
    assert client.call("cache.delete", key="d") is True
    assert client.call("cache.delete", key="d") is False


def test_many(client: Client) -> None:
    assert client.call("cache.set_many", items={"a": 1, b"b": b"x", "c": "s"}, timeout=60) == []
    assert client.call("cache.get_many", keys=["a", "b", "c", "zz", "a"]) == {
        b"a": 1,
        b"b": b"x",
        b"c": "s",
    }
    assert client.call("cache.set_many", items={}) == []
    assert client.call("cache.get_many", keys=[]) == {}
    assert client.call("cache.delete_many", keys=["a", "a", "zz", "b"]) == 2
    assert client.call("cache.set_many", items={"c": 1}, timeout=0) == []
    assert client.call("cache.get", key="c") is None


def test_incr(client: Client) -> None:
    client.call("cache.set", key="n", value=10, timeout=100)
    assert client.call("cache.incr", key="n", delta=5) == 15
    assert client.call("cache.incr", key="n", delta=-20) == -5
    assert 99 <= client.call("cache.ttl", key="n") <= 100, "the timeout is unchanged"
    with pytest.raises(gateway_client.KeyNotFound) as missing:
        client.call("cache.incr", key="missing", delta=1)
    assert missing.value.status == 16
    client.call("cache.set", key="b", value=b"1")
    with pytest.raises(gateway_client.NotInteger) as not_integer:
        client.call("cache.incr", key="b", delta=1)
    assert not_integer.value.status == 17
    client.call("cache.set", key="max", value=2**63 - 1)
    with pytest.raises(gateway_client.OutOfRange) as out_of_range:
        client.call("cache.incr", key="max", delta=1)
    assert out_of_range.value.status == 18
    assert client.call("cache.get", key="max") == 2**63 - 1
    with pytest.raises(gateway_client.BadArgument):
        client.call("cache.incr", key="n", delta=1.5)


@pytest.mark.gateway_config({"databases": {"cache": {"max_value_size": "1KiB"}}})
def test_value_too_large(client: Client) -> None:
    assert client.call("cache.set", key="fits", value=b"x" * 1000) is True
    with pytest.raises(gateway_client.ValueTooLarge) as info:
        client.call("cache.set", key="big", value=b"x" * 2000)
    assert info.value.status == 19
    assert "2000" in info.value.message and "1024" in info.value.message
    with pytest.raises(gateway_client.ValueTooLarge):
        client.call("cache.set_many", items={"ok": 1, "big": "y" * 2000})
    assert client.call("cache.get_many", keys=["ok", "big"]) == {}, "set_many is all or nothing"


def test_expire_and_persist(client: Client) -> None:
    client.call("cache.set", key="k", value=1)
    assert client.call("cache.expire", key="k", timeout=30) is True
    assert 29 <= client.call("cache.ttl", key="k") <= 30
    assert client.call("cache.persist", key="k") is True
    assert client.call("cache.ttl", key="k") is None
    assert client.call("cache.expire", key="k", timeout=-1) is True
    assert client.call("cache.get", key="k") is None
    assert client.call("cache.expire", key="k", timeout=30) is False
    assert client.call("cache.persist", key="k") is False


def test_clear_and_delete_prefix(client: Client) -> None:
    long_key = "p:" + "x" * 300
    client.call("cache.set_many", items={"p:1": 1, "p:2": 2, long_key: 3, "q:1": 4, "p": 5})
    assert client.call("cache.clear", prefix="p:") == 3, "long keys match their prefix too"
    assert client.call("cache.get_many", keys=["p:1", long_key, "q:1", "p"]) == {
        b"q:1": 4,
        b"p": 5,
    }
    assert client.call("cache.delete_prefix", prefix=b"q") == 1
    for op in ("cache.clear", "cache.delete_prefix"):
        with pytest.raises(gateway_client.BadArgument):
            client.call(op, prefix="")
    assert client.call("cache.clear_all") == 1


def test_keys_pages_through_everything_once(client: Client) -> None:
    keys = [f"p:{i:03d}".encode() for i in range(40)]
    keys += [b"p:" + bytes([65 + i]) * 300 for i in range(4)] + [b"p:" + b"0" * 260]
    client.call("cache.set_many", items={k: 1 for k in keys})
    client.call("cache.set", key="other", value=1)
    client.call("cache.set", key="p:expired", value=1, timeout=0.05)
    time.sleep(0.1)
    for limit in (1, 3, 7, 1000):
        listed = all_keys(client, "p:", limit)
        assert len(listed) == len(set(listed)) == len(keys)
        assert set(listed) == set(keys)
    assert len(all_keys(client)) == len(keys) + 1
    with pytest.raises(gateway_client.BadArgument):
        client.call("cache.keys", limit=0)
    with pytest.raises(gateway_client.BadArgument):
        client.call("cache.keys", limit=10001)


def test_keys_lists_long_keys_first_then_the_rest_in_byte_order(client: Client) -> None:
    short = [b"p:0", b"p:1", b"p:z"]
    long = [b"p:" + b"L" * 300, b"p:" + b"M" * 300]
    client.call("cache.set_many", items={k: 1 for k in short + long})
    listed = all_keys(client, "p:")
    assert sorted(listed[:2]) == sorted(long)  # in the order of their hashed form
    assert listed[2:] == short


def test_locks(client: Client) -> None:
    assert client.call("cache.lock", key="L", token="t1", timeout=5) is True
    assert client.call("cache.lock", key="L", token="t2", timeout=5) is False
    assert client.call("cache.lock", key="L", token="t1", timeout=50) is True, "renewed"
    assert 49 <= client.call("cache.ttl", key="L") <= 50
    assert client.call("cache.unlock", key="L", token="t2") is False
    assert client.call("cache.has_key", key="L") is True
    assert client.call("cache.unlock", key="L", token=b"t1") is True
    assert client.call("cache.unlock", key="L", token="t1") is False
    client.call("cache.set", key="data", value=1)
    assert client.call("cache.lock", key="data", token="t", timeout=5) is False
    assert client.call("cache.unlock", key="data", token="t") is False
    assert client.call("cache.get", key="data") == 1
    assert client.call("cache.lock", key="brief", token="a", timeout=0.05) is True
    time.sleep(0.1)
    assert client.call("cache.lock", key="brief", token="b", timeout=5) is True, "expired lock"
    for bad in ({"timeout": 0}, {"timeout": -1}, {}):
        with pytest.raises(gateway_client.BadArgument):
            client.call("cache.lock", key="x", token="t", **bad)


def test_cull(client: Client) -> None:
    for i in range(12):
        client.call("cache.set", key=f"c{i:02d}", value=i, cull=[10, 3])
    # After the 11th write: 11 > 10, the oldest 11 // 3 = 3 go; then 8 + 1 more = 9 entries.
    assert sorted(all_keys(client)) == [f"c{i:02d}".encode() for i in range(3, 12)]
    client.call("cache.clear_all")
    for i in range(12):
        client.call("cache.add", key=f"z{i:02d}", value=i, cull=[10, 0])
    assert all_keys(client) == [b"z11"], "cull_frequency 0 empties the cache when over"


def test_stats(client: Client) -> None:
    before = client.call("cache.stats")
    assert set(before) >= {
        "hits",
        "misses",
        "entries",
        "bytes",
        "evictions",
        "expirations",
        "max_size",
        "max_entries",
        "file_bytes",
    }
    client.call("cache.set", key="s", value=b"x" * 100)
    client.call("cache.get", key="s")
    client.call("cache.get", key="nope")
    after = client.call("cache.stats")
    assert after["hits"] == before["hits"] + 1
    assert after["misses"] == before["misses"] + 1
    assert after["entries"] == before["entries"] + 1
    assert after["bytes"] >= before["bytes"] + 100
    assert after["max_size"] == 512 * 1024 * 1024  # the harness config
    assert after["file_bytes"] > 0


def test_pipelined_writes_then_read(client: Client) -> None:
    requests = [("cache.set", {"key": f"k{i}", "value": i}) for i in range(200)]
    assert client.call_many(requests) == [True] * 200
    assert client.call("cache.get_many", keys=[f"k{i}" for i in range(200)]) == {
        f"k{i}".encode(): i for i in range(200)
    }


def test_pipelined_writes_past_the_inflight_limit_are_all_answered_in_order(client: Client) -> None:
    # 20,000 writes on one connection: more than the 4,096 requests the server reads ahead, so
    # reading pauses and resumes as replies drain; each loop turn's writes commit together.
    n = 20_000
    assert client.call_many([("cache.set", {"key": "p", "value": i}) for i in range(n)]) == [
        True
    ] * n
    assert client.call("cache.get", key="p") == n - 1  # applied in the order they were sent
    incrs = client.call_many([("cache.incr", {"key": "p", "delta": 1}) for _ in range(5000)])
    assert incrs == list(range(n, n + 5000))


# --- the file, as PROTOCOL.md "Reading the cache file directly" describes it ----------------------


def test_cache_file_layout(client: Client, gateway: GatewayProcess) -> None:
    long_key = b"L" * 300
    client.call("cache.set", key="short", value=b"bytes", timeout=60)
    client.call("cache.set", key="text", value="str")
    client.call("cache.set", key="int", value=7)
    client.call("cache.set", key=long_key, value=1)
    path = client.stats()["databases"]["cache"]["path"]
    assert path == str(gateway.db_path("cache"))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        columns = [row[1] for row in db.execute("PRAGMA table_info(cache_entries)")]
        assert columns == [
            "id",
            "key",
            "long_key",
            "expires_at",
            "accessed_at",
            "size",
            "value",
        ]

        def row(key: bytes, long: bytes | None) -> tuple[Any, ...]:
            return db.execute(
                "SELECT value, typeof(value), expires_at FROM cache_entries "
                "WHERE key = ? AND long_key IS ?",
                (key, long),
            ).fetchone()

        value, kind, expires_at = row(b"short", None)
        assert (value, kind) == (b"bytes", "blob")
        assert abs(expires_at - (time.time() + 60) * 1000) < 5000, "Unix milliseconds"
        assert row(b"text", None)[:2] == ("str", "text")
        assert row(b"int", None)[:2] == (7, "integer")
        assert row(b"int", None)[2] is None
        hashed = b"\x00" + hashlib.sha256(long_key).digest()
        assert row(hashed, long_key)[0] == 1
        assert row(long_key, None) is None
