"""Replication under faults: the gateway killed with SIGKILL while it syncs, a checkpoint run by
another process, and several writer connections taking turns restarting the WAL.

Writers here commit straight to the main database with Python's sqlite3, set up as Django's
connections are (BEGIN IMMEDIATE, busy_timeout, wal_autocheckpoint=0); a commit that returned is
an acknowledged write.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from gateway_harness import GatewayProcess, build_dir
from replication_harness import (
    assert_healthy,
    diff,
    dump,
    generations,
    integrity,
    replica_overrides,
    require_new_sqlite,
    restore,
    status,
    sync,
    writer_connection,
)
from wire import RawConnection

Factory = Callable[..., GatewayProcess]
SEED = int(os.environ.get("REPLICATION_SEED", "20261121"))
KILLS = 20


class AckedWriters:
    """Threads committing small transactions to ``acked`` and recording each acknowledged commit
    with the monotonic time its COMMIT returned. Some transactions carry a large blob (overflow
    pages, many WAL frames); some update or delete an earlier row of the same writer."""

    def __init__(self, db: Path, count: int = 2, pause_s: float = 0.005) -> None:
        self.db = db
        self.pause_s = pause_s
        self.acked: list[list[tuple[int, float]]] = [[] for _ in range(count)]
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._hold = threading.Event()  # set: writers wait between transactions
        self._held = threading.Semaphore(0)
        self._go = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)
        ]

    def start(self) -> AckedWriters:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.resume()
        for t in self._threads:
            t.join(30)
        assert not self.errors, self.errors[:5]

    def pause(self) -> None:
        """Returns once every writer waits between two transactions."""
        self._go.clear()
        self._hold.set()
        for _ in self._threads:
            assert self._held.acquire(timeout=30), "a writer did not pause"

    def resume(self) -> None:
        self._hold.clear()
        self._go.set()

    def acked_before(self, moment: float) -> set[tuple[int, int]]:
        """(writer, seq) of every commit acknowledged before ``moment`` (time.monotonic())."""
        return {(w, seq) for w, rows in enumerate(self.acked) for seq, at in rows if at < moment}

    def _run(self, writer: int) -> None:
        rng = random.Random(SEED + writer)
        with closing(writer_connection(self.db)) as c:
            seq = 0
            while not self._stop.is_set():
                if self._hold.is_set():
                    self._held.release()
                    self._go.wait()
                seq += 1
                blob = os.urandom(rng.choice([100, 300, 300, 8_000]))
                try:
                    c.execute("BEGIN IMMEDIATE")
                    c.execute(
                        "INSERT INTO acked (writer, seq, payload) VALUES (?, ?, ?)",
                        (writer, seq, blob),
                    )
                    if seq > 10 and rng.random() < 0.2:
                        c.execute(
                            "UPDATE acked SET payload = ? WHERE writer = ? AND seq = ?",
                            (b"updated", writer, rng.randrange(1, seq)),
                        )
                    c.execute("COMMIT")
                except sqlite3.Error as e:
                    self.errors.append(f"writer {writer} seq {seq}: {e!r}")
                    return
                self.acked[writer].append((seq, time.monotonic()))
                time.sleep(self.pause_s)


def create_acked_table(db: Path) -> None:
    with closing(writer_connection(db)) as c:
        c.execute(
            "CREATE TABLE acked (writer INTEGER NOT NULL, seq INTEGER NOT NULL, "
            "payload BLOB NOT NULL, PRIMARY KEY (writer, seq))"
        )


def restored_rows(path: Path) -> set[tuple[int, int]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        return set(c.execute("SELECT writer, seq FROM acked"))


def test_kill_9_while_syncing_under_write_load(gateway_factory: Factory) -> None:
    require_new_sqlite()
    rng = random.Random(SEED)
    # A short lease, so a successor of a killed gateway takes over quickly (--lease-wait).
    overrides = replica_overrides(sync_interval="100ms", lease_ttl="1s")
    gw = gateway_factory(overrides)
    main = gw.db_path("main")
    create_acked_table(main)
    writers = AckedWriters(main).start()
    last_synced_at = time.monotonic()
    sync(gw)
    continued = new_generation = 0
    try:
        for i in range(KILLS):
            time.sleep(rng.uniform(0.05, 0.2))  # let writes pile up (not an assertion)
            quiet = i % 5 == 4
            if quiet:
                # Now and then the WAL is fully checkpointed when the kill comes, and a third
                # connection's commit has just restarted it: the restart must prove continuity
                # from its local note rather than from the WAL.
                writers.pause()
                sync(gw)
                sync(gw)
                with closing(writer_connection(main)) as c:
                    c.execute(
                        "INSERT INTO acked (writer, seq, payload) VALUES (-1, ?, x'00')",
                        (i,),
                    )
            before = status(gw)["databases"]
            # Ask for a sync and kill the gateway while it runs.
            with RawConnection(gw.socket_path) as conn:
                conn.send(1, "replica.sync")
                time.sleep(rng.uniform(0.0, 0.02))
                gw.kill()
            gw.start(timeout=30, extra_args=("--lease-wait", "20s"))
            if quiet:
                writers.resume()
            started = time.monotonic()
            sync(gw)
            last_synced_at = started
            after = status(gw)
            assert_healthy(after)
            d = after["databases"]
            # Progress: everything written since is in the replica now.
            assert d["main"]["last_txid"] > before["main"]["last_txid"], (
                i,
                before,
                after,
            )
            if not quiet:
                # The writers kept committing while the gateway was down, so this gateway must
                # have uploaded something itself. After a quiet kill the last commit may already
                # have reached the store before the kill, and then there is nothing left to send.
                assert d["main"]["segments_sent"] + d["main"]["snapshots_sent"] > 0, (i, after)
            if d["main"]["generation"] == before["main"]["generation"]:
                continued += 1
            else:
                new_generation += 1
        # The last kill: mid-sync again, and this time the replica is read as the kill left it.
        time.sleep(0.2)
        with RawConnection(gw.socket_path) as conn:
            conn.send(1, "replica.sync")
            time.sleep(rng.uniform(0.0, 0.02))
            gw.kill()
    finally:
        writers.stop()

    acknowledged = writers.acked_before(last_synced_at)
    everything = writers.acked_before(float("inf"))
    out = gw.folder / "after-kill.sqlite3"
    restore(gw, "main", out)
    assert integrity(out) == "ok"
    got = {row for row in restored_rows(out) if row[0] >= 0}
    missing = acknowledged - got
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    assert got <= everything, "the replica holds writes that never committed"
    # Transactions come back in commit order: each writer's rows are a prefix of its commits.
    for w in range(len(writers.acked)):
        seqs = sorted(seq for writer, seq in got if writer == w)
        assert seqs == list(range(1, len(seqs) + 1)), f"writer {w}: a gap in {seqs[-5:]}"

    gens = generations(gw, "main")
    replica = gw.folder / "replica"
    strays = [
        p.relative_to(replica)
        for p in replica.rglob("*")
        if p.is_file()
        and p.suffix not in (".seg", ".snap")
        and p.name not in ("lease", "lease.lock")
    ]
    print(
        f"\n{KILLS} kill -9 restarts: {continued} continued the generation, "
        f"{new_generation} started a new one; replica holds {len(gens)} generations of main; "
        f"{len(everything)} commits, {len(acknowledged)} acknowledged before the last sync; "
        f"files in the replica left by interrupted uploads: {len(strays)} {strays[:3]}"
    )
    assert continued + new_generation == KILLS
    assert len(gens) >= new_generation + 1

    # Restarted once more, the gateway carries on, and the replica ends equal to the primary.
    gw.start(timeout=30, extra_args=("--lease-wait", "20s"))
    sync(gw)
    assert_healthy(status(gw))
    assert gw.stop() == 0
    final = gw.folder / "final.sqlite3"
    restore(gw, "main", final)
    assert dump(final) == dump(main), diff(dump(main), dump(final))


def foreign_checkpoint(db: Path) -> subprocess.Popen[str]:
    """Another process, ready to run PRAGMA wal_checkpoint(TRUNCATE) on ``db`` when told to
    (a line on its stdin), so the checkpoint starts right after the test's own writes."""
    code = (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(db)!r}, timeout=20, isolation_level=None)\n"
        "c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('SELECT count(*) FROM sqlite_schema').fetchone()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        # SQLite answers busy at once, without waiting, while another checkpoint (the
        # gateway's) is running: try again until this one has truncated the WAL.
        "import time\n"
        "for attempt in range(1, 101):\n"
        "    result = c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()\n"
        "    if result[0] == 0:\n"
        "        break\n"
        "    time.sleep(0.02)\n"
        "print(*result, attempt, flush=True)\n"
    )
    env = {**os.environ, "LD_LIBRARY_PATH": str(build_dir())}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def insert_rows(db: Path, first: int, count: int) -> None:
    with closing(writer_connection(db)) as c:
        for i in range(first, first + count):
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO t (n, payload) VALUES (?, ?)", (i, os.urandom(200)))
            c.execute("COMMIT")


def test_foreign_truncate_checkpoint_starts_a_new_generation(
    gateway_factory: Factory,
) -> None:
    require_new_sqlite()
    gw = gateway_factory(replica_overrides(sync_interval="200ms"))
    main = gw.db_path("main")
    with closing(writer_connection(main)) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)")
    insert_rows(main, 0, 50)
    sync(gw)
    first = status(gw)["databases"]["main"]
    first_content = dump(main)

    # Frames the gateway has not copied into the database yet, then someone else's checkpoint.
    checkpointer = foreign_checkpoint(main)
    insert_rows(main, 50, 50)
    assert checkpointer.stdin is not None and checkpointer.stdout is not None
    checkpointer.stdin.write("go\n")
    checkpointer.stdin.flush()
    *result, attempts = checkpointer.stdout.readline().split()
    assert checkpointer.wait(30) == 0
    assert result == ["0", "0", "0"], f"wal_checkpoint(TRUNCATE) answered {result}"
    print(f"\nforeign wal_checkpoint(TRUNCATE) done on attempt {attempts}")
    assert main.with_name(main.name + "-wal").stat().st_size == 0

    insert_rows(main, 100, 20)
    sync(gw)
    second = status(gw)["databases"]["main"]
    assert second["last_error"] is None
    assert second["generation"] != first["generation"], (first, second)
    assert "replica_new_generation db=main" in gw.log_text().split(first["generation"])[-1]
    gens = generations(gw, "main")
    assert [g["id"] for g in gens] == [first["generation"], second["generation"]]
    assert gens[1]["first_txid"] > gens[0]["last_txid"], "txids must not repeat across generations"

    out = gw.folder / "restored"
    latest = restore(gw, "main", out / "latest.sqlite3")
    assert latest["txid"] == second["last_txid"]
    assert dump(out / "latest.sqlite3") == dump(main)
    # The old generation still restores to what it held.
    old = restore(gw, "main", out / "old.sqlite3", txid=first["last_txid"])
    assert old["txid"] == first["last_txid"]
    assert dump(out / "old.sqlite3") == first_content


def test_writers_taking_turns_keep_one_generation(gateway_factory: Factory) -> None:
    """Every writer process restarts the WAL in its turn (the first write after the gateway's
    complete checkpoint does it). SQLite writes the restarting connection's own checkpoint
    counter into the new WAL header, so the sequence numbers of successive WALs are not
    consecutive when different connections restart them; salt-1 is (it is incremented from the
    shared header). None of this loses a frame, so the generation must go on."""
    require_new_sqlite()
    gw = gateway_factory(replica_overrides(sync_interval="200ms"))
    main = gw.db_path("main")
    with closing(writer_connection(main)) as a, closing(writer_connection(main)) as b:
        a.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, payload BLOB)")
        for i in range(6):
            c = a if i % 2 == 0 else b
            c.execute("BEGIN IMMEDIATE")
            c.execute("INSERT INTO t (n, payload) VALUES (?, ?)", (i, os.urandom(100)))
            c.execute("COMMIT")
            # Twice: the second round's checkpoint copies the whole WAL, so the next write
            # restarts it.
            sync(gw)
            sync(gw)
    gens = generations(gw, "main")
    st = status(gw)["databases"]["main"]
    assert len(gens) == 1, (
        f"{len(gens)} generations of main for one unbroken history "
        f"(snapshots_sent={st['snapshots_sent']}); log:\n"
        + "\n".join(line for line in gw.log_text().splitlines() if "new_generation" in line)
    )
