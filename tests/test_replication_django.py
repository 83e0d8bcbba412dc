"""Four real Django processes write through the ORM while the gateway replicates; restores taken
at random moments equal the primary as of their synced transaction, row by row.

The writers run tests/django_project (settings from gateway_client.django.database()) and are
paused between transactions through a line protocol on their stdin (replication_harness
.DjangoWriter); cache and queue traffic comes from a thread over the socket and pauses the same
way. At each moment the test pauses everything, syncs, reads every table of the three primaries
and the replica's last_txid per database, and syncs again: equal txids prove that nothing
committed in between, so the content read is exactly the state at those txids.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import GatewayProcess
from replication_harness import (
    DATABASES,
    DjangoWriter,
    SocketTraffic,
    assert_healthy,
    diff,
    dump,
    generations,
    integrity,
    migrate,
    replica_overrides,
    require_new_sqlite,
    restore,
    status,
    sync,
    txids,
)

pytest.importorskip("django")

SEED = int(os.environ.get("REPLICATION_SEED", "20261121"))
WRITERS = 4
MOMENTS = 4


def consistent_point(
    gw: GatewayProcess,
) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """With all writers paused: (txids, content per database, status) of one synced state."""
    for _ in range(10):
        sync(gw)
        first = status(gw)
        content = {db: dump(gw.db_path(db)) for db in DATABASES}
        sync(gw)
        second = status(gw)
        if txids(first) == txids(second):
            assert_healthy(second)
            return txids(second), content, second
    raise AssertionError(
        f"the databases kept changing with every client paused: {second!r}"
    )


def test_django_writers_restores_equal_the_primary_at_random_moments(
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    require_new_sqlite()
    rng = random.Random(SEED)
    gw = gateway_factory(replica_overrides(sync_interval="200ms"))
    main = gw.db_path("main")
    migrate(main)

    writers = [DjangoWriter(main, i, SEED + i) for i in range(WRITERS)]
    traffic = SocketTraffic(gw.socket_path, SEED)
    points: list[tuple[dict[str, int], dict[str, Any]]] = []
    try:
        for w in writers:
            w.wait_started()
        traffic.start()
        for _ in range(MOMENTS):
            time.sleep(rng.uniform(0.3, 1.5))  # a random moment under load
            for w in writers:
                w.pause_send()
            counts = [w.pause_wait() for w in writers]
            traffic.pause()
            ids, content, _ = consistent_point(gw)
            points.append((ids, content))
            assert sum(counts) > 0
            traffic.resume()
            for w in writers:
                w.resume()
        transactions = sum(w.stop() for w in writers)
        rounds = traffic.stop()
    finally:
        for w in writers:
            w.kill()
    final_ids, final_content, _ = consistent_point(gw)
    assert gw.stop() == 0
    for db in DATABASES:
        assert integrity(gw.db_path(db)) == "ok"
        assert dump(gw.db_path(db)) == final_content[db], f"{db} changed at shutdown"

    assert transactions > 50 and rounds > 50, (transactions, rounds)
    lock_timeouts = sum(w.lock_timeouts for w in writers)
    gens = len(generations(gw, "main"))
    print(
        f"\n{WRITERS} Django writers: {transactions} transactions, {lock_timeouts} given up on "
        f"'database is locked'; {rounds} cache/queue rounds; {gens} generation(s) of main; "
        f"txids at the moments: {[p[0] for p in points]}"
    )
    assert len({p[0]["main"] for p in points}) == MOMENTS, (
        "the moments were not distinct"
    )
    out = gw.folder / "restores"
    for k, (ids, content) in enumerate(points):
        for db in DATABASES:
            path = out / f"{k}-{db}.sqlite3"
            r = restore(gw, db, path, txid=ids[db])
            assert r["txid"] == ids[db]
            assert integrity(path) == "ok"
            restored = dump(path)
            assert restored == content[db], (
                f"moment {k} (seed {SEED}), {db} at txid {ids[db]}:\n{diff(content[db], restored)}"
            )
    # The latest state equals the primary as the gateway left it.
    for db in DATABASES:
        path: Path = out / f"latest-{db}.sqlite3"
        r = restore(gw, db, path)
        assert r["txid"] >= final_ids[db]
        assert integrity(path) == "ok"
        restored = dump(path)
        assert restored == final_content[db], (
            f"latest {db}:\n{diff(final_content[db], restored)}"
        )
