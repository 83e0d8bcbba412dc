"""The worker's pipelined completions against a fake gateway that answers in ways a real one
only does at its limits (an error with id 0, such as ``too_many_connections``, then a close).

Whatever the channel's answer, a completion in flight must be reported again on its own, never
dropped, and the worker must not crash.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

from gateway_client.frames import FrameDecoder, encode_frame, unpack_payload
from gateway_client.queue import Job
from gateway_client.worker.completions import Attempt, CompletionPipeline
from gateway_client.worker.dequeue import Answer, DequeueChannel


def serve_once(path: Path, reply: Any) -> threading.Thread:
    """Accept one connection, read one request, send ``reply`` and close."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        decoder = FrameDecoder(1 << 20)
        requests: list[Any] = []
        while not requests:
            data = conn.recv(65536)
            if not data:
                break
            requests.extend(unpack_payload(p) for p in decoder.feed(data))
        conn.sendall(encode_frame(reply))
        conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_error_with_id_0_on_the_channel_reports_the_completions_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.sock"
    server = serve_once(
        path, [0, 6, {"code": "too_many_connections", "message": "the server is full"}]
    )
    stop_r, stop_w = os.pipe()
    channel = DequeueChannel(str(path), stop_r)
    stored: list[Answer] = []
    reported: list[tuple[str, Any]] = []
    pipeline = CompletionPipeline(
        channel,
        stored=lambda attempt, answer: stored.append(answer),
        report=lambda attempt, value: reported.append((attempt.job.id, value)),
    )
    job = Job.from_map({"id": "ab" * 16, "task": "t.x", "state": "RUNNING", "lease_token": "k"})
    pipeline.send(Attempt(job, None, 0.001), 42)
    assert len(pipeline) == 1
    server.join(5)
    pipeline.settle(5.0)  # must not raise
    assert reported == [(job.id, 42)] and stored == [] and len(pipeline) == 0
    channel.close()
    os.close(stop_r)
    os.close(stop_w)
