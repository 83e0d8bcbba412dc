"""Stress: 8 processes x 20,000 mixed GatewayCache operations, every read checked.

Each worker process owns a disjoint set of keys and is the only one that writes them (90% get of
any key, 9% set of an own key, 1% delete of an own key). A value names the key it was written for
and a sequence number that only grows in its writer, so a reader can tell:

- for an own key: the read must return exactly the last acknowledged write, or a miss when the
  last acknowledged write was a delete (or there was none);
- for another worker's key: the value must be one written for *that* key, and its sequence
  number must never go backwards for one reader (the server answers from the latest committed
  state, and so does a direct read);
- after the run: every value read from another worker's key was actually written by it.

Half the workers read over the socket and half directly from the cache file. Run this file as a
script (``worker`` argument) to get one worker; the test starts them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway_client import Client
from gateway_harness import GatewayProcess, build_dir

WORKERS = 8
OPERATIONS = 20_000
KEYS_PER_WORKER = 64
SEED = 20_000


class ReadChecker:
    """Tracks one worker's acknowledged writes and the values it saw; reports violations."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.expected: dict[int, Any] = {}  # own key -> last acknowledged value (None: deleted)
        self.last_seq: dict[int, int] = {}  # other key -> highest sequence number seen
        self.seen: set[tuple[int, int]] = set()  # (key, seq) read from other workers' keys
        self.violations: list[str] = []

    @staticmethod
    def owner_of(key: int) -> int:
        return key // KEYS_PER_WORKER

    def wrote(self, key: int, value: Any) -> None:
        self.expected[key] = value

    def deleted(self, key: int) -> None:
        self.expected[key] = None

    def read(self, key: int, value: Any) -> None:
        if self.owner_of(key) == self.owner:
            want = self.expected.get(key)
            if value != want:
                self._violation(f"own key {key}: read {value!r}, last acknowledged {want!r}")
            return
        if value is None:
            return
        written_for, seq = decode(value)
        if written_for != key:
            self._violation(f"key {key}: read a value written for key {written_for}")
            return
        if seq < self.last_seq.get(key, -1):
            self._violation(f"key {key}: seq went back from {self.last_seq[key]} to {seq}")
        self.last_seq[key] = max(seq, self.last_seq.get(key, -1))
        self.seen.add((key, seq))

    def _violation(self, message: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(message)
        else:
            self.violations[-1] = f"... and more (last: {message})"


def encode(key: int, seq: int) -> Any:
    """Even keys hold native integers (atomic-incr path), odd keys pickled tuples of any size."""
    if key % 2 == 0:
        return seq * 1_000_000 + key
    return ("v", key, seq, "x" * (seq % 7 * 300))


def decode(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value % 1_000_000, value // 1_000_000
    return value[1], value[2]


def run_worker(owner: int, socket_path: str, read: str) -> dict[str, Any]:
    import django
    from django.conf import settings

    settings.configure(USE_TZ=True)
    django.setup()
    from gateway_client.django import GatewayCache

    cache = GatewayCache(
        socket_path, {"KEY_PREFIX": "stress", "TIMEOUT": None, "OPTIONS": {"READ": read}}
    )
    rng = random.Random(SEED + owner)
    checker = ReadChecker(owner)
    own = [owner * KEYS_PER_WORKER + i for i in range(KEYS_PER_WORKER)]
    everyone = WORKERS * KEYS_PER_WORKER
    written: list[tuple[int, int]] = []
    errors: list[str] = []
    counts = {"get": 0, "set": 0, "delete": 0}
    seq = 0
    started = time.monotonic()
    for _ in range(OPERATIONS):
        roll = rng.random()
        try:
            if roll < 0.90:
                key = rng.randrange(everyone)
                checker.read(key, cache.get(f"k{key}"))
                counts["get"] += 1
            elif roll < 0.99:
                key = rng.choice(own)
                seq += 1
                value = encode(key, seq)
                written.append((key, seq))
                cache.set(f"k{key}", value)
                checker.wrote(key, value)
                counts["set"] += 1
            else:
                key = rng.choice(own)
                cache.delete(f"k{key}")
                checker.deleted(key)
                counts["delete"] += 1
        except Exception as e:  # counted and reported; the run goes on
            if len(errors) < 20:
                errors.append(f"{type(e).__name__}: {e}")
            else:
                errors[-1] = f"... (last: {type(e).__name__}: {e})"
    return {
        "owner": owner,
        "read": read,
        "seconds": time.monotonic() - started,
        "counts": counts,
        "errors": errors,
        "violations": checker.violations,
        "written": written,
        "seen": sorted(checker.seen),
    }


# --- the tests -----------------------------------------------------------------------------------


def test_checker_catches_stale_and_foreign_reads() -> None:
    """The checks the stress test relies on do fire."""
    checker = ReadChecker(owner=0)
    checker.wrote(0, encode(0, 1))
    checker.read(0, encode(0, 1))
    checker.wrote(0, encode(0, 2))
    checker.read(0, encode(0, 1))  # stale own read
    checker.deleted(1)
    checker.read(1, encode(1, 3))  # read after an acknowledged delete
    other = KEYS_PER_WORKER + 5
    checker.read(other, encode(other, 9))
    checker.read(other, encode(other, 4))  # went backwards
    checker.read(other, encode(other + 1, 10))  # a value of another key
    checker.read(other, None)  # a miss is always possible for other keys
    assert len(checker.violations) == 4, checker.violations
    assert checker.seen == {(other, 9), (other, 4)}


def test_eight_processes_of_mixed_operations(gateway: GatewayProcess) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["LD_LIBRARY_PATH"] = str(build_dir())
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    script = Path(__file__).resolve()
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                "worker",
                str(owner),
                gateway.socket_path,
                "direct" if owner % 2 == 0 else "socket",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for owner in range(WORKERS)
    ]
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, f"worker failed:\n{stderr[-5000:]}"
        reports.append(json.loads(stdout))
    elapsed = time.monotonic() - started

    written = {tuple(item) for report in reports for item in report["written"]}
    total = {"get": 0, "set": 0, "delete": 0}
    for report in reports:
        for op, count in report["counts"].items():
            total[op] += count
    print(
        f"{WORKERS} x {OPERATIONS} operations in {elapsed:.1f} s "
        f"({sum(total.values()) / elapsed:.0f} ops/s overall): {total}; per worker "
        + ", ".join(f"{r['read']} {r['seconds']:.1f}s" for r in reports)
    )
    assert sum(total.values()) == WORKERS * OPERATIONS
    for report in reports:
        assert report["errors"] == [], f"worker {report['owner']}: {report['errors']}"
        assert report["violations"] == [], f"worker {report['owner']}: {report['violations']}"
        never_written = [tuple(s) for s in report["seen"] if tuple(s) not in written]
        assert never_written == [], f"worker {report['owner']} read values never written"
    assert sum(len(r["seen"]) for r in reports) > 1000, "workers saw each other's writes"
    with Client(gateway.socket_path) as client:
        errors_by_code = client.stats()["errors_by_code"]
    assert errors_by_code == {}, errors_by_code


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "worker":
    # ``python tests/test_cache_stress.py worker OWNER SOCKET READ``: one worker, report on stdout.
    print(json.dumps(run_worker(int(sys.argv[2]), sys.argv[3], sys.argv[4])))
