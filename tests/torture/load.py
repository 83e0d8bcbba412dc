"""The torture's load processes: ``python -m tests.torture.load KIND --dir D --slot N --cycle C``.

Three kinds, each journaling every attempt and outcome (:mod:`.journal`) to
``D/journal/KIND-N.log``, one process per slot per cycle (each cycle's process appends to the
slot's journal):

- ``writer``: writes the main database directly, as a Django process configured by
  ``gateway_client.django.database()`` does: busy_timeout 5000, WAL, ``wal_autocheckpoint=0``,
  ``BEGIN IMMEDIATE`` transactions. Each transaction inserts rows, sometimes updates or deletes
  one of the slot's rows, and counts itself in ``torture_writers``. Lines: ``B txn ops`` before
  the commit, then ``C txn`` (committed), ``R txn error`` (rolled back: nothing applied) or
  ``U txn error`` (the COMMIT itself failed: outcome unknown; the process stops there).
- ``django``: the same kind of transactions through Django's ORM (tests/django_project's Note
  model), ``transaction.atomic()`` on the settings of ``gateway_client.django.database()``; same
  lines, without the transaction count.
- ``cache``: ``cache.set``/``set_many``/``delete``/``incr``/``get`` through the socket on the
  slot's own keys. Lines: ``I id op ...`` before sending, then ``A id result`` (acknowledged),
  ``E id code`` (refused: nothing applied) or ``X id error`` (the connection failed after the
  request may have been sent: outcome unknown).
- ``enqueue``: ``queue.enqueue``/``enqueue_many`` of jobs of :data:`.values.TASK`. Lines as for
  the cache; an ``A`` line lists the acknowledged job ids.

SIGTERM makes a process finish the operation in progress (journaling its outcome) and exit;
SIGKILL is what the driver uses to crash one. After a failed operation a process pings until the
gateway answers before trying another, so a gateway that is down does not fill the journal with
outcomes that are unknown only because the request never left.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from gateway_client import Client, GatewayError
from gateway_client.errors import ServerError
from gateway_client.queue import QueueClient, enqueue_args

from .journal import Journal
from .values import KEYS_PER_SLOT, QUEUE, TASK, cache_key, counter_key, digest

MIN_SQLITE = (3, 51, 3)
# Error codes after which the server guarantees that nothing of the request was applied.
NOT_APPLIED = {"storage_error", "shutting_down", "bad_argument", "value_too_large",
               "key_not_found", "not_integer", "out_of_range", "too_many_connections"}

MAX_LIVE_ROWS = 1500

_stopping = False


def _say(text: str) -> None:
    """A line with a timestamp on stderr (the process's log in the torture folder)."""
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
    sys.stderr.write(f"{stamp} [{os.getpid()}] {text}\n")
    sys.stderr.flush()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _stopping
    _stopping = True


# --- main-database writer ---------------------------------------------------------------------


def connect_like_django(path: str) -> sqlite3.Connection:
    """A connection with the settings of ``gateway_client.django.database()``."""
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    for pragma in (
        "PRAGMA busy_timeout=5000",
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA wal_autocheckpoint=0",  # only the gateway checkpoints
        "PRAGMA mmap_size=134217728",
        "PRAGMA journal_size_limit=67108864",
        "PRAGMA cache_size=-32768",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA foreign_keys=ON",
    ):
        connection.execute(pragma)
    return connection


def _payload(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.01:
        size = rng.randrange(60_000, 200_000)  # overflow pages
    elif roll < 0.06:
        size = rng.randrange(2_000, 20_000)
    else:
        size = rng.randrange(0, 600)
    return rng.randbytes(size)


def run_writer(args: argparse.Namespace, journal: Journal) -> int:
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        sys.exit(f"writer: SQLite {sqlite3.sqlite_version} has the WAL-reset bug; "
                 "set LD_LIBRARY_PATH to the gateway's build folder")
    rng = random.Random(args.seed)
    connection = connect_like_django(args.db)
    live = [k for (k,) in connection.execute(
        "SELECT key FROM torture_rows WHERE slot = ?", (args.slot,))]
    number = 0
    while not _stopping:
        number += 1
        txn = f"{args.cycle}.{number}"
        statements: list[tuple[str, tuple[Any, ...]]] = []
        ops: list[str] = []
        inserted: list[str] = []
        deleted: list[str] = []
        for j in range(rng.randint(1, 3)):
            key = f"{args.slot}.{txn}.{j}"
            payload = _payload(rng)
            statements.append(("INSERT INTO torture_rows (key, slot, txn, payload) "
                               "VALUES (?, ?, ?, ?)", (key, args.slot, txn, payload)))
            ops.append(f"i={key}={digest(payload)}")
            inserted.append(key)
        if live and rng.random() < 0.4:
            key = rng.choice(live)
            payload = _payload(rng)
            statements.append(("UPDATE torture_rows SET payload = ?, txn = ? WHERE key = ?",
                               (payload, txn, key)))
            ops.append(f"u={key}={digest(payload)}")
        # Deletes keep each writer's rows around MAX_LIVE_ROWS, so checks stay quick.
        deletes = rng.randint(2, 4) if len(live) > MAX_LIVE_ROWS else int(
            len(live) > 20 and rng.random() < 0.2)
        for _ in range(deletes):
            key = live.pop(rng.randrange(len(live)))
            statements.append(("DELETE FROM torture_rows WHERE key = ?", (key,)))
            ops.append(f"d={key}")
            deleted.append(key)
        statements.append(("INSERT INTO torture_writers (slot, txns) VALUES (?, 1) "
                           "ON CONFLICT (slot) DO UPDATE SET txns = txns + 1", (args.slot,)))
        journal.note("B", txn, ",".join(ops))
        committing = False
        # Some transactions take a while, as a view doing work inside atomic() does: the write
        # lock is held longer (other writers wait on busy_timeout) and kills land inside them.
        linger = rng.random() * 0.015 if rng.random() < 0.3 else 0.0
        try:
            connection.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                connection.execute(sql, params)
            time.sleep(linger)
            committing = True
            connection.execute("COMMIT")
        except sqlite3.Error as e:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            _say(f"transaction {txn}: {'COMMIT' if committing else 'write'} failed: {e}")
            if committing:
                journal.ack("U", txn, type(e).__name__)
                return 3
            journal.ack("R", txn, f"{type(e).__name__}:{str(e).replace(' ', '_')}")
            live.extend(deleted)
            continue
        journal.ack("C", txn)
        live.extend(inserted)
        time.sleep(rng.random() * 0.01)
    connection.close()
    return 0


def run_django(args: argparse.Namespace, journal: Journal) -> int:
    """The writer's transactions through Django's ORM (tests/django_project, its Note model),
    with the settings of ``gateway_client.django.database()``: ``transaction.atomic()`` is a
    ``BEGIN IMMEDIATE`` transaction. Keys are Note titles ``dj<slot>.<txn>.<j>``."""
    import django

    django.setup()
    from django.db import DatabaseError, transaction
    from notes.models import Note

    rng = random.Random(args.seed)
    prefix = f"dj{args.slot}."
    live = list(Note.objects.filter(title__startswith=prefix).values_list("title", flat=True))
    number = 0
    while not _stopping:
        number += 1
        txn = f"{args.cycle}.{number}"
        ops: list[str] = []
        inserts = {f"{prefix}{txn}.{j}": _payload(rng)[:3000].hex()
                   for j in range(rng.randint(1, 3))}
        ops += [f"i={key}={digest(body)}" for key, body in inserts.items()]
        update: tuple[str, str] | None = None
        if live and rng.random() < 0.4:
            update = (rng.choice(live), _payload(rng)[:3000].hex())
            ops.append(f"u={update[0]}={digest(update[1])}")
        deletes = [live.pop(rng.randrange(len(live)))
                   for _ in range(rng.randint(2, 4) if len(live) > MAX_LIVE_ROWS
                                  else int(len(live) > 20 and rng.random() < 0.2))]
        ops += [f"d={key}" for key in deletes]
        journal.note("B", txn, ",".join(ops))
        committing = False
        try:
            with transaction.atomic():
                for key, body in inserts.items():
                    Note.objects.create(title=key, body=body)
                if update is not None:
                    Note.objects.filter(title=update[0]).update(body=update[1])
                if deletes:
                    Note.objects.filter(title__in=deletes).delete()
                committing = True  # leaving the block commits
        except DatabaseError as e:
            _say(f"transaction {txn}: {'COMMIT' if committing else 'write'} failed: {e}")
            if committing:
                journal.ack("U", txn, type(e).__name__)
                return 3
            journal.ack("R", txn, f"{type(e).__name__}:{str(e).replace(' ', '_')}")
            live.extend(deletes)
            continue
        journal.ack("C", txn)
        live.extend(inserts)
        time.sleep(rng.random() * 0.01)
    return 0


# --- socket clients ---------------------------------------------------------------------------


class Outcome:
    """Runs one operation and journals its outcome; keeps the process off a gateway that is down.
    """

    def __init__(self, client: Client, journal: Journal) -> None:
        self.client = client
        self.journal = journal
        self.healthy = True

    def wait_healthy(self) -> bool:
        """True once the gateway answers a ping (False if asked to stop meanwhile)."""
        while not self.healthy and not _stopping:
            try:
                self.client.ping()
                self.healthy = True
            except GatewayError:
                time.sleep(0.05)
        return self.healthy

    def run(self, op_id: str, call: Callable[..., Any], *args: Any, **kwargs: Any
            ) -> tuple[bool, Any]:
        """``call(*args, **kwargs)``: ``(True, result)`` if acknowledged, ``(False, None)``
        otherwise (journaled either way)."""
        try:
            result = call(*args, **kwargs)
        except ServerError as e:
            kind = "E" if e.code in NOT_APPLIED else "X"
            self.journal.ack(kind, op_id, e.code)
            _say(f"{op_id}: {kind} {e}")
            return False, None
        except GatewayError as e:
            if getattr(e, "errno", None) in (errno.ECONNREFUSED, errno.ENOENT):
                # No connection could be opened (no socket, or nobody listening): the request
                # never left this process.
                self.journal.ack("E", op_id, "not_connected")
                _say(f"{op_id}: not sent: {e}")
                self.healthy = False
                return False, None
            self.journal.ack("X", op_id, type(e).__name__)
            _say(f"{op_id}: X {type(e).__name__}: {e}")
            self.healthy = False
            return False, None
        return True, result


def _cache_value(rng: random.Random, op_id: str) -> Any:
    roll = rng.random()
    if roll < 0.5:
        return rng.randbytes(rng.randrange(1, 2000) if rng.random() < 0.97 else 100_000)
    if roll < 0.8:
        return f"value {op_id} " + "x" * rng.randrange(0, 300)
    return rng.randrange(-(2**40), 2**40)


def run_cache(args: argparse.Namespace, journal: Journal) -> int:
    rng = random.Random(args.seed)
    client = Client(args.socket, timeout=30.0, connect_attempts=2)
    outcome = Outcome(client, journal)
    counter = counter_key(args.slot)
    number = 0
    while not _stopping:
        if not outcome.wait_healthy():
            break
        number += 1
        op_id = f"{args.cycle}.{number}"
        key = cache_key(args.slot, rng.randrange(KEYS_PER_SLOT))
        roll = rng.random()
        if roll < 0.55:
            value = _cache_value(rng, op_id)
            journal.note("I", op_id, "set", key, digest(value))
            ok, _ = outcome.run(op_id, client.call, "cache.set", key=key, value=value)
            if ok:
                journal.ack("A", op_id, "1")
        elif roll < 0.65:
            items = {cache_key(args.slot, rng.randrange(KEYS_PER_SLOT)): _cache_value(rng, op_id)
                     for _ in range(rng.randint(2, 4))}
            journal.note("I", op_id, "setm",
                         ",".join(f"{k}={digest(v)}" for k, v in items.items()))
            ok, _ = outcome.run(op_id, client.call, "cache.set_many", items=items)
            if ok:
                journal.ack("A", op_id, "1")
        elif roll < 0.7:
            journal.note("I", op_id, "del", key)
            ok, removed = outcome.run(op_id, client.call, "cache.delete", key=key)
            if ok:
                journal.ack("A", op_id, int(bool(removed)))
        elif roll < 0.8:
            journal.note("I", op_id, "get", key)
            ok, value = outcome.run(op_id, client.call, "cache.get", key=key)
            if ok:
                journal.ack("A", op_id, digest(value))
        else:
            journal.note("I", op_id, "incr", counter)
            ok, value = outcome.run(op_id, client.call, "cache.incr", key=counter, delta=1)
            if ok:
                journal.ack("A", op_id, value)
    client.close()
    return 0


def run_enqueue(args: argparse.Namespace, journal: Journal) -> int:
    rng = random.Random(args.seed)
    client = Client(args.socket, timeout=30.0, connect_attempts=2)
    queue = QueueClient(client)
    outcome = Outcome(client, journal)
    number = 0
    while not _stopping:
        if not outcome.wait_healthy():
            break
        number += 1
        op_id = f"{args.cycle}.{number}"
        count = rng.randint(2, 5) if rng.random() < 0.2 else 1
        jobs = [
            enqueue_args(TASK, queue=QUEUE, args=[args.slot, op_id, j],
                         kwargs={"sleep_ms": rng.choice([0, 0, 1, 5, 20, 60])},
                         max_attempts=50, backoff=0.1)
            for j in range(count)
        ]
        journal.note("I", op_id, count)
        if count == 1:
            ok, job = outcome.run(op_id, queue.enqueue, **jobs[0])
            result = [job]
        else:
            ok, result = outcome.run(op_id, queue.enqueue_many, jobs)
        if ok:
            journal.ack("A", op_id, ",".join(job.id for job in result))
        time.sleep(rng.random() * args.pause)
    client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.torture.load")
    parser.add_argument("kind", choices=["writer", "django", "cache", "enqueue"])
    parser.add_argument("--dir", required=True, type=Path, help="the torture's work folder")
    parser.add_argument("--slot", required=True, type=int)
    parser.add_argument("--cycle", required=True, type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="writer: the main database")
    parser.add_argument("--socket", help="cache, enqueue: the gateway's socket")
    parser.add_argument("--pause", type=float, default=0.02,
                        help="enqueue: at most this many seconds between enqueues")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    journal = Journal(args.dir / "journal" / f"{args.kind}-{args.slot}.log")
    journal.ack("P", args.cycle, os.getpid())  # a new process: earlier outcomes are settled
    _say(f"{args.kind} {args.slot} cycle {args.cycle} started")
    run = {"writer": run_writer, "django": run_django, "cache": run_cache,
           "enqueue": run_enqueue}[args.kind]
    try:
        code = run(args, journal)
        _say(f"{args.kind} {args.slot} cycle {args.cycle} stopped: {code}")
        return code
    finally:
        journal.close()


if __name__ == "__main__":
    sys.exit(main())
