"""Append-only journals: what each load process attempted and what the gateway acknowledged.

A load process writes a line *before* it sends an operation (its intent) and one *after* the
outcome is known. Acknowledgement lines are fsync'd before the process goes on, so a journal
never claims less than what was acknowledged, even if the process, the gateway or the machine
dies right after. The checker reads the journals back to know which outcomes are certain
(acknowledged, refused) and which are not (the process or the gateway died in between).

Each line is one ``os.write`` on an ``O_APPEND`` descriptor, so lines never interleave; a line
cut short by a crash has no newline and is ignored by the reader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


class Journal:
    """One process's journal file, opened for appending.

    :param path: the file; created if missing, appended to if it exists (a slot's journal spans
        every cycle, one process after another).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            # The previous process died in the middle of a line: end it, so that the reader
            # drops the fragment instead of gluing it to this process's first line.
            os.write(self._fd, b"\n")

    def note(self, *fields: object) -> None:
        """Append a line without waiting for the disk (intents: losing one only widens doubt)."""
        os.write(self._fd, _line(fields))

    def ack(self, *fields: object) -> None:
        """Append a line and fsync it: once this returns the line survives any crash."""
        os.write(self._fd, _line(fields))
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _line(fields: tuple[object, ...]) -> bytes:
    # Every line ends with " ." so that a fragment left by a crash (and then ended by the next
    # process's newline) is recognisable and skipped.
    text = " ".join(str(f) for f in fields)
    assert "\n" not in text and " " not in "".join(str(f) for f in fields), text
    return (text + " .\n").encode()


class JournalReader:
    """Reads a journal incrementally: each :meth:`new_lines` returns the complete lines added
    since the previous call, split into fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def new_lines(self) -> Iterator[list[str]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for raw in data[:end].splitlines():
            fields = raw.decode(errors="replace").split(" ")
            if raw and fields[-1] == ".":  # only lines written whole (see _line)
                yield fields[:-1]
