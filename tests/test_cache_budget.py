"""The cache file stays inside its size budget however much is written to it."""

from __future__ import annotations

import os
import time

import pytest
from gateway_harness import GatewayProcess
from wire import RawConnection

MiB = 1 << 20


@pytest.mark.gateway_config({"databases": {"cache": {"max_size": "64MiB"}}})
def test_writing_1gib_of_distinct_values_keeps_the_file_under_the_budget(
    gateway: GatewayProcess,
) -> None:
    value = os.urandom(100 * 1024)  # incompressible is irrelevant to SQLite, but honest
    batch = 32  # ~3.2 MiB per set_many
    total = 1 << 30
    written = 0
    peak_file = 0
    cache_file = gateway.db_path("cache")
    started = time.monotonic()
    with RawConnection(gateway.socket_path, timeout=60) as conn:
        n = 0
        while written < total:
            items = {f"k{n + i}": value for i in range(batch)}
            n += batch
            reply = conn.call("cache.set_many", {"items": items}, timeout=60)
            assert reply[1] == 0, reply
            written += batch * len(value)
            peak_file = max(peak_file, os.path.getsize(cache_file))
        stats = conn.call("cache.stats")[2]
        # The newest entries are there, the oldest were evicted.
        assert conn.call("cache.get", {"key": f"k{n - 1}"})[2] == value
        assert conn.call("cache.get", {"key": "k0"})[2] is None
    elapsed = time.monotonic() - started
    final_file = os.path.getsize(cache_file)
    print(
        f"wrote {written / MiB:.0f} MiB in {elapsed:.1f}s; cache file peak {peak_file / MiB:.1f} "
        f"MiB, final {final_file / MiB:.1f} MiB; evictions {stats['evictions']}"
    )
    assert stats["evictions"] > 9000
    assert peak_file <= 1.1 * 64 * MiB, f"cache file reached {peak_file / MiB:.1f} MiB"
    assert stats["file_bytes"] <= 1.1 * 64 * MiB
