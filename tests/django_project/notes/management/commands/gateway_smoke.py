"""Write and read through the ORM and report what the database connection looks like, as JSON."""

import json
import sqlite3

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from notes.models import Note

PRAGMAS = (
    "journal_mode",
    "wal_autocheckpoint",
    "synchronous",
    "busy_timeout",
    "mmap_size",
    "journal_size_limit",
    "cache_size",
    "foreign_keys",
    "temp_store",
)


def write_lock_is_free(path: str) -> bool:
    """Whether another connection can take the write lock right now (no waiting)."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


class Command(BaseCommand):
    help = "Create notes in a transaction, read them back, report the connection's settings."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=25)

    def handle(self, *args, **options):
        count = options["count"]
        with transaction.atomic():
            Note.objects.bulk_create(Note(title=f"note {i}") for i in range(count))
            Note.objects.create(title="single", body="x" * 1000)
        titles = list(Note.objects.order_by("id").values_list("title", flat=True))

        connection.ensure_connection()
        raw = connection.connection
        pragmas = {name: raw.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS}

        # A read-only atomic block must still hold the write lock: BEGIN IMMEDIATE, not BEGIN.
        path = connection.settings_dict["NAME"]
        with transaction.atomic():
            Note.objects.exists()
            lock_free_inside = write_lock_is_free(path)
        lock_free_after = write_lock_is_free(path)

        self.stdout.write(
            json.dumps(
                {
                    "titles": titles,
                    "pragmas": pragmas,
                    "sqlite_version": sqlite3.sqlite_version,
                    "engine": connection.settings_dict["ENGINE"],
                    "vendor": connection.vendor,
                    "immediate": not lock_free_inside,
                    "lock_free_after": lock_free_after,
                }
            )
        )
