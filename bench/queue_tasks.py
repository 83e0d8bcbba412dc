"""The job bodies every queue peer runs, and how a job tells the benchmark it ran.

Each peer wraps these plain functions its own way (a dotted path for gateway and RQ, a decorated
task for Celery, Huey and django.tasks), so every peer runs the same code. A job reports to the
benchmark by sending one small datagram to a Unix socket that the benchmark listens on (path in
``QUEUE_BENCH_REPORT``); the benchmark never asks a peer's result store whether a job finished,
so the figures measure each peer the same way and no peer pays for being polled.

Messages (ASCII): ``s <token> <monotonic>`` when :func:`stamp` starts, ``n`` when :func:`noop`
ends, ``z`` when :func:`nap` ends. ``time.monotonic()`` is one clock for every process on Linux.
"""

from __future__ import annotations

import os
import socket
import time

#: The environment variable naming the benchmark's datagram socket.
REPORT_ENV = "QUEUE_BENCH_REPORT"
#: How long a sleeping job sleeps.
NAP_SECONDS = 0.010

_sender: tuple[int, socket.socket] | None = None  # (pid, socket): one socket per process


def _send(message: bytes) -> None:
    global _sender
    if _sender is None or _sender[0] != os.getpid():  # new process (fork): own socket
        _sender = (os.getpid(), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    _sender[1].sendto(message, os.environ[REPORT_ENV])


def stamp(token: str) -> None:
    """Report when this job started, for pickup latency."""
    _send(b"s %s %.9f" % (token.encode(), time.monotonic()))


def noop() -> None:
    """Nothing but the one report that counts the job as done."""
    _send(b"n")


def nap() -> None:
    """Sleep :data:`NAP_SECONDS`, then report."""
    time.sleep(NAP_SECONDS)
    _send(b"z")
