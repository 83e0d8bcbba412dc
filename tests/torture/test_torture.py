"""The crash torture's quick mode, and proof that its checker catches what it is meant to catch.

``test_quick_crash_torture`` runs five short cycles (under a minute) of the torture of
:mod:`.driver`: direct and Django ORM writers on the main database, cache clients and enqueuers
on the socket and two ``python -m gateway_client.worker`` groups, while the gateway and the
workers are SIGKILLed; every cycle ends with integrity checks, the journals checked against the
databases, and main and cache restored from the replica and compared row by row. The long mode
is ``python -m tests.torture --long``.

The other tests feed the checkers made-up journals and databases with a lost write, a
resurrected row, a half-applied transaction, an increment that went back and a job completed
twice, so a torture run that reports nothing means nothing was found, not that nothing was
looked at.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path
from typing import Any

from replication_harness import require_new_sqlite

from .checker import CacheChecker, MainChecker, QueueChecker
from .driver import Settings, Torture
from .journal import Journal
from .values import MAIN_SCHEMA, counter_key, digest

# This seed's five cycles kill the gateway, the workers, both, and the gateway while it starts.
QUICK_SEED = 20261121


def test_quick_crash_torture() -> None:
    require_new_sqlite()
    django = importlib.util.find_spec("django") is not None
    lines: list[str] = []
    settings = Settings(cycles=5, seconds=1.5, min_load_after_restart=0.5, seed=QUICK_SEED,
                        django_writers=1 if django else 0)
    report = Torture(settings, lines.append).run()
    assert not report.problems, report.summary() + "\n" + "\n".join(lines)
    assert report.cycles == 5
    assert report.kills["gateway"] >= 2 and report.kills["worker_group"] >= 2, report.summary()
    acknowledged = report.acknowledged
    for what in ("main_transactions", "cache_writes", "jobs", "completions"):
        assert acknowledged[what] > 0, report.summary()
    assert acknowledged["django_transactions"] > 0 or not django, report.summary()
    # Every acknowledged job ran to completion once the queue was drained.
    assert report.jobs.get("state_SUCCESSFUL") == acknowledged["jobs"], report.summary()
    assert report.final_replica.get("restore_on_boot") == "equal", report.summary()


# --- the checkers -------------------------------------------------------------------------------


def make_main(tmp_path: Path) -> Path:
    db = tmp_path / "main.sqlite3"
    connection = sqlite3.connect(db)
    for statement in MAIN_SCHEMA:
        connection.execute(statement)
    connection.commit()
    connection.close()
    return db


def execute(db: Path, sql: str, *params: Any) -> None:
    connection = sqlite3.connect(db)
    connection.execute(sql, params)
    connection.commit()
    connection.close()


def committed(journal: Journal, db: Path, txn: str, rows: dict[str, bytes]) -> None:
    """Journal and apply one committed transaction inserting ``rows`` for writer 0."""
    journal.note("B", txn, ",".join(f"i={k}={digest(v)}" for k, v in rows.items()))
    for key, payload in rows.items():
        execute(db, "INSERT INTO torture_rows VALUES (?, 0, ?, ?)", key, txn, payload)
    execute(db, "INSERT INTO torture_writers VALUES (0, 1) "
                "ON CONFLICT (slot) DO UPDATE SET txns = txns + 1")
    journal.ack("C", txn)


def kinds(problems: list[Any]) -> list[str]:
    return sorted(p.kind for p in problems)


def test_main_checker_finds_lost_changed_and_resurrected_rows(tmp_path: Path) -> None:
    require_new_sqlite()
    db = make_main(tmp_path)
    (tmp_path / "journal").mkdir()
    journal = Journal(tmp_path / "journal" / "writer-0.log")
    journal.ack("P", 1, 100)
    committed(journal, db, "1.1", {"0.1.1.0": b"a", "0.1.1.1": b"b"})
    journal.note("B", "1.2", "d=0.1.1.1")
    execute(db, "DELETE FROM torture_rows WHERE key = '0.1.1.1'")
    execute(db, "UPDATE torture_writers SET txns = txns + 1")
    journal.ack("C", "1.2")
    checker = MainChecker(tmp_path / "journal", db)
    assert checker.check() == []
    assert checker.committed == 2

    execute(db, "DELETE FROM torture_rows WHERE key = '0.1.1.0'")  # an acknowledged row lost
    execute(db, "INSERT INTO torture_rows VALUES ('0.1.1.1', 0, '1.1', x'62')")  # resurrected
    assert kinds(checker.check()) == ["lost_main_write", "unexpected_main_row"]


def test_main_checker_requires_unknown_transactions_all_or_nothing(tmp_path: Path) -> None:
    require_new_sqlite()
    db = make_main(tmp_path)
    (tmp_path / "journal").mkdir()
    journal = Journal(tmp_path / "journal" / "writer-0.log")
    journal.ack("P", 1, 100)
    # The writer died between BEGIN and the journal's C line: either outcome is fine...
    journal.note("B", "1.1", f"i=0.1.1.0={digest(b'x')},i=0.1.1.1={digest(b'y')}")
    checker = MainChecker(tmp_path / "journal", db)
    assert checker.check() == []
    assert checker.unknown_not_applied == 1
    # ...but half of one is a broken transaction.
    journal.ack("P", 2, 101)
    journal.note("B", "2.1", f"i=0.2.1.0={digest(b'x')},i=0.2.1.1={digest(b'y')}")
    execute(db, "INSERT INTO torture_rows VALUES ('0.2.1.0', 0, '2.1', x'78')")
    execute(db, "INSERT INTO torture_writers VALUES (0, 1)")
    assert "partial_transaction" in kinds(checker.check())


class FakeClient:
    """Answers ``cache.get_many`` from a dict and ``queue.get`` from a dict of jobs."""

    def __init__(self, cache: dict[str, Any], jobs: dict[str, Any] | None = None) -> None:
        self.cache = cache
        self.jobs = jobs or {}

    def call(self, op: str, **args: Any) -> Any:
        assert op == "cache.get_many"
        return {k.encode(): self.cache[k] for k in args["keys"] if k in self.cache}

    def call_many(self, requests: list[tuple[str, dict[str, Any]]], **_: Any) -> list[Any]:
        from gateway_client.errors import JobNotFound

        return [self.jobs.get(args["id"]) or JobNotFound("job_not_found", "", 32)
                for _, args in requests]


def test_cache_checker_finds_lost_values_and_increments(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "cache-0.log")
    journal.ack("P", 1, 100)
    journal.note("I", "1.1", "set", "t:0:k1", digest(b"one"))
    journal.ack("A", "1.1", "1")
    journal.note("I", "1.2", "set", "t:0:k2", digest("two"))
    journal.ack("X", "1.2", "ConnectionError")  # unknown: absent or "two" are both fine
    journal.note("I", "1.3", "incr", counter_key(0))
    journal.ack("A", "1.3", 1)
    checker = CacheChecker(tmp_path, slots=1)
    assert checker.check(FakeClient({"t:0:k1": b"one", counter_key(0): 1})) == []  # type: ignore[arg-type]

    journal.note("I", "2.1", "set", "t:0:k1", digest(b"newer"))
    journal.ack("A", "2.1", "1")
    journal.note("I", "2.2", "incr", counter_key(0))
    journal.ack("A", "2.2", 1)  # went back: the first increment was lost
    problems = checker.check(FakeClient({"t:0:k1": b"one", counter_key(0): 1}))  # type: ignore[arg-type]
    assert kinds(problems) == ["lost_cache_write", "lost_cache_write"], problems


def test_queue_checker_finds_lost_jobs_and_double_completions(tmp_path: Path) -> None:
    for sub in ("journal", "runs", "workers"):
        (tmp_path / sub).mkdir()
    journal = Journal(tmp_path / "journal" / "enqueue-0.log")
    journal.ack("A", "1.1", "a1,b2")
    runs = Journal(tmp_path / "runs" / "runs-7.log")
    runs.ack("a1", 1, "tok1", 7, 0.0)
    runs.ack("a1", 2, "tok2", 8, 0.0)
    (tmp_path / "workers" / "w.log").write_text(
        "x INFO [7] job=a1 task=t queue=torture state=SUCCESSFUL attempt=1 duration=0.1\n"
        "x INFO [8] job=a1 task=t queue=torture state=SUCCESSFUL attempt=2 duration=0.1\n")
    jobs = {"a1": {"id": "a1", "state": "SUCCESSFUL",
                   "return_value": {"attempt": 2, "token": "tok2"}}}
    checker = QueueChecker(tmp_path / "journal", tmp_path / "runs", tmp_path / "workers")
    problems = checker.check(FakeClient({}, jobs))  # type: ignore[arg-type]
    assert kinds(problems) == ["completed_twice", "lost_enqueue"], problems
