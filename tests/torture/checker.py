"""What the torture checks after every cycle: the journals against what the gateway holds.

Each checker keeps a model built from the journals (:mod:`.load` describes their lines) and, at a
quiet moment (no load process running), compares it with the databases:

- :class:`MainChecker`: every committed transaction of the direct writers is in the main database
  (rows, payloads, deletions, the per-writer transaction count), and a transaction whose outcome
  is unknown was applied whole or not at all.
- :class:`CacheChecker`: each key holds the value last acknowledged, or one of the values of
  writes with an unknown outcome since then; an acknowledged ``incr`` never goes back; an
  acknowledged ``get`` or ``delete`` saw a value that could be there.
- :class:`QueueChecker`: every acknowledged enqueue is a job the gateway knows; no job was
  completed twice (two ``state=SUCCESSFUL`` lines of the workers); a completion the worker logged
  is stored; a stored completion names a run the task recorded.

Problems are collected as :class:`Problem` values, not raised, so that a long run reports all of
them with their counts.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_client import Client
from gateway_client.errors import JobNotFound

from .journal import JournalReader
from .values import ABSENT, KEYS_PER_SLOT, cache_key, counter_key, digest


@dataclass(frozen=True)
class Problem:
    """One violated guarantee. ``kind`` is a stable category (``lost_main_write``, ...)."""

    kind: str
    detail: str


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection: checking a database must not write to it or checkpoint it."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of the file, ``"ok"`` when it is sound."""
    connection = connect_ro(path)
    try:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


# --- main database ----------------------------------------------------------------------------


@dataclass
class _Txn:
    txn: str
    ops: list[tuple[str, ...]]


@dataclass
class _WriterModel:
    rows: dict[str, str] = field(default_factory=dict)  # key -> payload digest
    applied: int = 0  # transactions applied (committed, or unknown and found applied)
    pending: _Txn | None = None
    unknown: list[_Txn] = field(default_factory=list)


class MainChecker:
    """The writers' journals against the main database (see the module doc).

    :param kind: ``writer`` (direct sqlite3 writers: table ``torture_rows`` and the transaction
        counts in ``torture_writers``) or ``django`` (Django ORM writers: ``notes_note`` rows
        titled ``dj<slot>.*``).
    """

    def __init__(self, journal_dir: Path, db: Path, kind: str = "writer") -> None:
        self.journal_dir = journal_dir
        self.db = db
        self.kind = kind
        self.models: dict[int, _WriterModel] = defaultdict(_WriterModel)
        self.readers: dict[int, JournalReader] = {}
        self.committed = 0
        self.rolled_back: Counter[str] = Counter()
        self.unknown_applied = 0
        self.unknown_not_applied = 0
        self.rows_checked = 0

    def _read(self) -> None:
        for path in sorted(self.journal_dir.glob(f"{self.kind}-*.log")):
            slot = int(path.stem.split("-")[1])
            reader = self.readers.setdefault(slot, JournalReader(path))
            model = self.models[slot]
            for fields in reader.new_lines():
                self._line(model, fields)
        for model in self.models.values():  # every writer has stopped: in flight is unknown
            if model.pending is not None:
                model.unknown.append(model.pending)
                model.pending = None

    def _line(self, model: _WriterModel, fields: list[str]) -> None:
        kind = fields[0]
        if kind == "P" and model.pending is not None:
            model.unknown.append(model.pending)
            model.pending = None
        elif kind == "B":
            ops = [tuple(op.split("=")) for op in fields[2].split(",")] if fields[2:] else []
            model.pending = _Txn(fields[1], ops)
        elif kind == "C":
            assert model.pending is not None and model.pending.txn == fields[1], fields
            _apply(model, model.pending)
            self.committed += 1
            model.pending = None
        elif kind == "R":
            self.rolled_back[fields[2].split(":")[0]] += 1
            model.pending = None
        elif kind == "U":
            if model.pending is not None:
                model.unknown.append(model.pending)
            model.pending = None

    def check(self) -> list[Problem]:
        """Read the journals' new lines and compare with the database (writers stopped)."""
        self._read()
        if not self.models:
            return []
        actual, counts = self._actual()
        problems: list[Problem] = []
        for slot, model in sorted(self.models.items()):
            rows = actual.get(slot, {})
            for txn in model.unknown:
                problems += self._resolve(slot, model, txn, rows)
            model.unknown.clear()
            problems += _compare_rows(f"{self.kind} {slot}", model.rows, rows)
            if counts is not None and counts.get(slot, 0) != model.applied:
                problems.append(Problem(
                    "lost_main_write",
                    f"{self.kind} {slot}: torture_writers counts {counts.get(slot, 0)} "
                    f"transactions, {model.applied} were committed"))
            self.rows_checked = sum(len(m.rows) for m in self.models.values())
        return problems

    def _actual(self) -> tuple[dict[int, dict[str, str]], dict[int, int] | None]:
        """The writers' rows (slot -> key -> digest) and transaction counts, in one snapshot."""
        actual: dict[int, dict[str, str]] = defaultdict(dict)
        counts = None
        connection = connect_ro(self.db)
        try:
            connection.execute("BEGIN")
            if self.kind == "writer":
                for key, slot, payload in connection.execute(
                    "SELECT key, slot, payload FROM torture_rows"
                ):
                    actual[slot][key] = digest(bytes(payload))
                counts = dict(connection.execute("SELECT slot, txns FROM torture_writers"))
            else:
                for title, body in connection.execute(
                    "SELECT title, body FROM notes_note WHERE title LIKE 'dj%'"
                ):
                    actual[int(title[2:].split(".")[0])][title] = digest(body)
            connection.execute("COMMIT")
        finally:
            connection.close()
        return actual, counts

    def _resolve(self, slot: int, model: _WriterModel, txn: _Txn,
                 rows: dict[str, str]) -> list[Problem]:
        """Decide whether a transaction of unknown outcome was applied; it must be all or none."""
        before = dict(model.rows)
        after = dict(model.rows)
        _apply_rows(after, txn)
        touched = {op[1] for op in txn.ops}
        now = {k: rows.get(k, ABSENT) for k in touched}
        if now == {k: after.get(k, ABSENT) for k in touched}:
            _apply(model, txn)
            self.unknown_applied += 1
            return []
        if now == {k: before.get(k, ABSENT) for k in touched}:
            self.unknown_not_applied += 1
            return []
        return [Problem("partial_transaction",
                        f"{self.kind} {slot}: transaction {txn.txn} of unknown outcome is half "
                        f"applied: {now} (before {before_subset(before, touched)}, "
                        f"after {before_subset(after, touched)})")]


def before_subset(rows: dict[str, str], keys: Iterable[str]) -> dict[str, str]:
    return {k: rows.get(k, ABSENT) for k in keys}


def _apply_rows(rows: dict[str, str], txn: _Txn) -> None:
    for op in txn.ops:
        if op[0] in ("i", "u"):
            rows[op[1]] = op[2]
        elif op[0] == "d":
            rows.pop(op[1], None)


def _apply(model: _WriterModel, txn: _Txn) -> None:
    _apply_rows(model.rows, txn)
    model.applied += 1


def _compare_rows(slot: str, expected: dict[str, str], actual: dict[str, str]) -> list[Problem]:
    problems = []
    missing = [k for k in expected if k not in actual]
    wrong = [k for k in expected if k in actual and actual[k] != expected[k]]
    extra = [k for k in actual if k not in expected]
    if missing:
        problems.append(Problem("lost_main_write",
                                f"{slot}: {len(missing)} committed rows missing, "
                                f"e.g. {missing[:5]}"))
    if wrong:
        problems.append(Problem("lost_main_write",
                                f"{slot}: {len(wrong)} rows hold another payload than the "
                                f"last committed one, e.g. {wrong[:5]}"))
    if extra:
        problems.append(Problem("unexpected_main_row",
                                f"{slot}: {len(extra)} rows that no committed transaction "
                                f"left there (deleted or never committed), e.g. {extra[:5]}"))
    return problems


# --- cache ------------------------------------------------------------------------------------


@dataclass
class _CacheModel:
    possible: dict[str, set[str]] = field(default_factory=dict)  # key -> digests it may hold
    counter_low: int = 0
    counter_high: int = 0
    pending: tuple[str, list[str]] | None = None  # (op id, the I line's fields after the id)


class CacheChecker:
    """The cache clients' journals against the cache (see the module doc)."""

    def __init__(self, journal_dir: Path, slots: int) -> None:
        self.journal_dir = journal_dir
        self.models = {slot: _CacheModel() for slot in range(slots)}
        self.readers: dict[int, JournalReader] = {}
        self.acked_writes = 0
        self.acked_reads = 0
        self.refused: Counter[str] = Counter()
        self.unknown = 0
        self.unknown_reasons: Counter[str] = Counter()  # X lines by error
        self.problems: list[Problem] = []

    def keys(self, slot: int) -> list[str]:
        return [cache_key(slot, i) for i in range(KEYS_PER_SLOT)]

    def _read(self) -> None:
        for slot, model in self.models.items():
            path = self.journal_dir / f"cache-{slot}.log"
            reader = self.readers.setdefault(slot, JournalReader(path))
            for fields in reader.new_lines():
                self._line(slot, model, fields)
            if model.pending is not None:
                self._unknown(model)

    def _line(self, slot: int, model: _CacheModel, fields: list[str]) -> None:
        kind = fields[0]
        if kind == "P":
            if model.pending is not None:
                self._unknown(model)
            return
        if kind == "I":
            model.pending = (fields[1], fields[2:])
            return
        if model.pending is None or model.pending[0] != fields[1]:
            raise AssertionError(f"cache journal {slot}: outcome without intent: {fields}")
        if kind == "A":
            self._acked(slot, model, model.pending[1], fields[2])
        elif kind == "E":
            self.refused[fields[2]] += 1
        elif kind == "X":
            self.unknown_reasons[fields[2]] += 1
            self._unknown(model)
        model.pending = None

    def _may(self, model: _CacheModel, key: str) -> set[str]:
        return model.possible.setdefault(key, {ABSENT})

    def _acked(self, slot: int, model: _CacheModel, op: list[str], result: str) -> None:
        name = op[0]
        if name in ("set", "setm"):
            pairs = [(op[1], op[2])] if name == "set" else [p.split("=") for p in op[1].split(",")]
            for key, value in pairs:
                model.possible[key] = {value}
            self.acked_writes += 1
        elif name == "del":
            may = self._may(model, op[1])
            if result == "1" and may == {ABSENT}:
                self.problems.append(Problem("phantom_cache_entry",
                                             f"cache.delete of {op[1]} removed an entry that "
                                             "no write left there"))
            if result == "0" and ABSENT not in may:
                self.problems.append(Problem("lost_cache_write",
                                             f"cache.delete of {op[1]} found no entry; it "
                                             f"should have held one of {sorted(may)}"))
            model.possible[op[1]] = {ABSENT}
            self.acked_writes += 1
        elif name == "get":
            may = self._may(model, op[1])
            if result not in may:
                self.problems.append(Problem(
                    "lost_cache_write" if result == ABSENT else "wrong_cache_value",
                    f"cache.get of {op[1]} answered {result}; it may hold only {sorted(may)}"))
            model.possible[op[1]] = {result}
            self.acked_reads += 1
        elif name == "incr":
            value = int(result)
            if not model.counter_low + 1 <= value <= model.counter_high + 1:
                self.problems.append(Problem(
                    "lost_cache_write",
                    f"cache.incr of {op[1]} answered {value}; after the acknowledged and "
                    f"unknown increments it must be in [{model.counter_low + 1}, "
                    f"{model.counter_high + 1}]"))
            model.counter_low = model.counter_high = value
            self.acked_writes += 1

    def _unknown(self, model: _CacheModel) -> None:
        assert model.pending is not None
        op = model.pending[1]
        model.pending = None
        self.unknown += 1
        name = op[0]
        if name == "set":
            self._may(model, op[1]).add(op[2])
        elif name == "setm":
            for pair in op[1].split(","):
                key, value = pair.split("=")
                self._may(model, key).add(value)
        elif name == "del":
            self._may(model, op[1]).add(ABSENT)
        elif name == "incr":
            model.counter_high += 1

    def check(self, client: Client) -> list[Problem]:
        """Read the journals' new lines and compare every key with the cache (clients stopped)."""
        self._read()
        problems, self.problems = self.problems, []
        for slot, model in self.models.items():
            keys = [*self.keys(slot), counter_key(slot)]
            found = client.call("cache.get_many", keys=keys)
            values = {k.decode() if isinstance(k, bytes) else k: v for k, v in found.items()}
            for key in self.keys(slot):
                got = digest(values.get(key))
                may = self._may(model, key)
                if got not in may:
                    problems.append(Problem(
                        "lost_cache_write" if ABSENT not in may or got == ABSENT
                        else "wrong_cache_value",
                        f"{key} holds {got}; the last acknowledged write left one of "
                        f"{sorted(may)}"))
                model.possible[key] = {got}
            counter = values.get(counter_key(slot))
            if not isinstance(counter, int) or not (
                model.counter_low <= counter <= model.counter_high
            ):
                problems.append(Problem(
                    "lost_cache_write",
                    f"{counter_key(slot)} holds {counter!r}; acknowledged and unknown increments "
                    f"put it in [{model.counter_low}, {model.counter_high}]"))
            elif isinstance(counter, int):
                model.counter_low = model.counter_high = counter
        return problems


# --- queue ------------------------------------------------------------------------------------

_JOB_LINE = re.compile(r"\bjob=(?P<id>[0-9a-f]+) .*\bstate=(?P<state>[A-Z_]+) "
                       r"attempt=(?P<attempt>\d+)")


@dataclass
class Run:
    attempt: int
    token: str
    pid: int


class QueueChecker:
    """Enqueue journals, the task's run records and the workers' logs against the queue."""

    def __init__(self, journal_dir: Path, runs_dir: Path, worker_logs: Path) -> None:
        self.journal_dir = journal_dir
        self.runs_dir = runs_dir
        self.worker_logs = worker_logs
        self.enqueue_readers: dict[Path, JournalReader] = {}
        self.run_readers: dict[Path, JournalReader] = {}
        self.log_offsets: dict[Path, int] = {}
        self.acked: list[str] = []
        self.refused: Counter[str] = Counter()
        self.unknown = 0
        self.unknown_reasons: Counter[str] = Counter()  # X lines by error
        self.runs: dict[str, list[Run]] = defaultdict(list)
        self.completions: dict[str, list[int]] = defaultdict(list)  # job -> attempts logged
        self.outcomes: Counter[str] = Counter()  # worker log states
        self.states: Counter[str] = Counter()
        self.finished: set[str] = set()

    def _read(self) -> None:
        """Enqueue journals and worker logs: read *before* the jobs are fetched, so that every
        acknowledged enqueue or logged completion is one the fetched state must reflect."""
        for path in sorted(self.journal_dir.glob("enqueue-*.log")):
            reader = self.enqueue_readers.setdefault(path, JournalReader(path))
            for fields in reader.new_lines():
                if fields[0] == "A":
                    self.acked.extend(fields[2].split(","))
                elif fields[0] == "E":
                    self.refused[fields[2]] += 1
                elif fields[0] == "X":
                    self.unknown += 1
                    self.unknown_reasons[fields[2]] += 1
        for path in sorted(self.worker_logs.glob("*.log")):
            offset = self.log_offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.log_offsets[path] = offset + end
            for line in data[:end].decode(errors="replace").splitlines():
                m = _JOB_LINE.search(line)
                if m:
                    self.outcomes[m["state"]] += 1
                    if m["state"] == "SUCCESSFUL":
                        self.completions[m["id"]].append(int(m["attempt"]))

    def _read_runs(self) -> None:
        """The task's run records: read *after* the jobs are fetched (workers keep running during
        the check), so that every completion in the fetched state has its run record here."""
        for path in sorted(self.runs_dir.glob("runs-*.log")):
            reader = self.run_readers.setdefault(path, JournalReader(path))
            for fields in reader.new_lines():
                self.runs[fields[0]].append(Run(int(fields[1]), fields[2], int(fields[3])))

    def fetch(self, client: Client, ids: list[str]) -> dict[str, Any]:
        """``queue.get`` of every id, pipelined; a missing job maps to None."""
        jobs: dict[str, Any] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            results = client.call_many([("queue.get", {"id": i}) for i in chunk], timeout=60,
                                       return_exceptions=True)
            for job_id, result in zip(chunk, results, strict=True):
                if isinstance(result, JobNotFound):
                    jobs[job_id] = None
                elif isinstance(result, Exception):
                    raise result
                else:
                    jobs[job_id] = result
        return jobs

    def check(self, client: Client) -> list[Problem]:
        """Read the new records and check every acknowledged job and every completion."""
        self._read()
        problems: list[Problem] = []
        wanted = sorted(set(self.acked) | set(self.completions))
        jobs = self.fetch(client, wanted)
        self._read_runs()
        acked = set(self.acked)
        missing = [i for i in acked if jobs.get(i) is None]
        if missing:
            problems.append(Problem("lost_enqueue",
                                    f"{len(missing)} acknowledged jobs unknown to the gateway, "
                                    f"e.g. {missing[:5]}"))
        self.states = Counter(job["state"] for i, job in jobs.items() if job and i in acked)
        for job_id, attempts in self.completions.items():
            if len(attempts) > 1:
                problems.append(Problem("completed_twice",
                                        f"job {job_id} completed by attempts {attempts}"))
            job = jobs.get(job_id)
            if job is None or job["state"] != "SUCCESSFUL":
                problems.append(Problem(
                    "lost_completion",
                    f"job {job_id}: a worker logged state=SUCCESSFUL for attempt {attempts}, "
                    f"the gateway has it {None if job is None else job['state']}"))
                continue
            stored = job.get("return_value") or {}
            if stored.get("attempt") not in attempts:
                problems.append(Problem(
                    "lost_completion",
                    f"job {job_id}: completed by attempt {attempts}, the stored result names "
                    f"{stored!r}"))
        for job_id, job in jobs.items():
            if job is None or job["state"] != "SUCCESSFUL":
                continue
            stored = job.get("return_value") or {}
            tokens = {run.token for run in self.runs.get(job_id, [])}
            if stored.get("token") not in tokens:
                problems.append(Problem(
                    "completion_without_run",
                    f"job {job_id} is SUCCESSFUL with {stored!r} but no run of that lease "
                    "was recorded by the task"))
        self.finished = {i for i, job in jobs.items()
                         if job and job["state"] in ("SUCCESSFUL", "FAILED", "CANCELLED")}
        return problems

    def unfinished(self, client: Client) -> list[str]:
        """Acknowledged jobs not finished yet (a fresh look at the gateway)."""
        candidates = [i for i in set(self.acked) if i not in self.finished]
        jobs = self.fetch(client, candidates)
        for job_id, job in jobs.items():
            if job and job["state"] in ("SUCCESSFUL", "FAILED", "CANCELLED"):
                self.finished.add(job_id)
        return [i for i in candidates if i not in self.finished]

    def rerun_jobs(self) -> int:
        """Jobs whose task started more than once (a worker died or lost its lease mid-job)."""
        return sum(1 for runs in self.runs.values() if len(runs) > 1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
