"""The SigV4 signer (replica/sigv4.cc) against botocore's, on a table of S3 requests.

Each case is signed twice with the same inputs and the same fixed time: by
``build/obj/replica/sigv4_tool`` and by botocore's ``S3SigV4Auth`` (what boto3 and the AWS CLI
use). The Authorization headers must be identical. Paths are given raw; for botocore they are
percent-encoded the way botocore serializes S3 keys (``quote(key, safe="/~")``), and query
parameters go in as botocore's ``params``.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import pytest

botocore = pytest.importorskip("botocore")
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("GATEWAY_REPLICA_TOOLS") or REPO / "build" / "obj" / "replica")
SIGV4_TOOL = TOOLS / "sigv4_tool"
WHEN = datetime.datetime(2026, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)

pytestmark = pytest.mark.skipif(not SIGV4_TOOL.exists(), reason=f"{SIGV4_TOOL} is not built")


@dataclass
class Case:
    name: str
    method: str = "GET"
    host: str = "127.0.0.1:9000"
    scheme: str = "http"
    path: str = "/bucket/key"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    region: str = "us-east-1"
    access_key: str = "AKIDEXAMPLE0000001"
    secret_key: str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    token: str = ""


CASES = [
    Case("get-simple"),
    Case("get-root-list", path="/bucket", query=[("list-type", "2"), ("prefix", "main/gen/")]),
    Case("key-with-spaces", path="/bucket/odd key  with spaces.txt"),
    Case("key-unicode", path="/bucket/unicode/é ü 日本 🙂"),
    Case("key-plus-equals-tilde", path="/bucket/a+b=c~d"),
    Case("key-reserved", path="/bucket/amp&pct%25hash#q?semi;colon:at@dollar$comma,"),
    Case("key-quotes-parens", path="/bucket/quote'paren()star*bang!brackets[]{}^`|\\"),
    Case("key-dots", path="/bucket/dots.../.leading/trailing."),
    Case(
        "query-odd-values",
        path="/bucket",
        query=[
            ("list-type", "2"),
            ("prefix", "a b/c+é="),
            ("continuation-token", "tok+/=="),
            ("max-keys", "7"),
        ],
    ),
    Case("query-empty-values", method="POST", path="/bucket/big", query=[("uploads", "")]),
    Case(
        "query-repeated",
        path="/bucket/k",
        query=[("b", "2"), ("a", "z"), ("a", "y"), ("a", ""), ("c~", "x y")],
    ),
    Case(
        "upload-part",
        method="PUT",
        path="/bucket/big file",
        query=[("partNumber", "3"), ("uploadId", "2~abc/DEF+ghi=")],
        body=b"p" * 1000,
    ),
    Case("put-empty-body", method="PUT", path="/bucket/empty", body=b""),
    Case("put-large-body", method="PUT", path="/bucket/large", body=os.urandom(3 << 20)),
    Case(
        "put-conditional",
        method="PUT",
        path="/bucket/lease",
        headers=[
            ("If-Match", '"5d41402abc4b2a76b9719d911017c592"'),
            ("Content-Type", "text/plain"),
        ],
        body=b"lease",
    ),
    Case("put-if-none-match", method="PUT", path="/bucket/new", headers=[("If-None-Match", "*")]),
    Case(
        "header-whitespace",
        path="/bucket/k",
        headers=[("X-Amz-Meta-Note", "  several   inner   spaces  "), ("Range", "bytes=0-9")],
    ),
    Case(
        "session-token",
        token="FwoGZXIvYXdzEJr//////////wEaDOdd+token/with=chars",
        region="eu-west-1",
    ),
    Case(
        "virtual-hosted-https",
        scheme="https",
        host="my-bucket.s3.ap-southeast-2.amazonaws.com",
        path="/main/generations/0a1b/snapshot 1.zst",
        region="ap-southeast-2",
    ),
    Case("delete", method="DELETE", path="/bucket/gone", region="us-west-2"),
    Case("head", method="HEAD", path="/bucket/x", host="localhost:19000", region="auto"),
]


def botocore_authorization(case: Case) -> tuple[str, str]:
    url = f"{case.scheme}://{case.host}{quote(case.path, safe='/~')}"
    request = AWSRequest(
        method=case.method, url=url, headers=dict(case.headers), data=case.body,
        params=list(case.query),
    )  # fmt: skip
    auth = S3SigV4Auth(
        Credentials(case.access_key, case.secret_key, case.token or None), "s3", case.region
    )
    seen: list[str] = []  # the canonical request botocore signed, for a readable diff
    real = auth.canonical_request
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=WHEN),
        mock.patch.object(auth, "canonical_request", lambda r: seen.append(real(r)) or seen[-1]),
    ):
        auth.add_auth(request)
    return request.headers["Authorization"], seen[0]


def tool_authorization(case: Case, tmp_path: Path) -> tuple[str, str]:
    body = tmp_path / "body"
    body.write_bytes(case.body)
    args = [
        str(SIGV4_TOOL),
        "--method", case.method, "--host", case.host, "--path", case.path,
        "--region", case.region, "--date", WHEN.strftime("%Y%m%dT%H%M%SZ"),
        "--access-key", case.access_key, "--secret-key", case.secret_key,
        "--body-file", str(body),
    ]  # fmt: skip
    for name, value in case.query:
        args += ["--query", f"{name}={value}"]
    for name, value in case.headers:
        args += ["--header", f"{name}: {value}"]
    if case.token:
        args += ["--session-token", case.token]
    out = subprocess.run(args, capture_output=True, check=True, text=True).stdout
    head, _, canonical = out.partition("--- canonical request\n")
    auth = next(x for x in head.splitlines() if x.startswith("authorization: "))
    return auth[len("authorization: ") :], canonical.rstrip("\n")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_signature_matches_botocore(case: Case, tmp_path: Path) -> None:
    expected, expected_canonical = botocore_authorization(case)
    got, got_canonical = tool_authorization(case, tmp_path)
    assert got_canonical == expected_canonical
    assert got == expected


def test_aws_documentation_example_through_botocore_and_the_tool(tmp_path: Path) -> None:
    """AWS's GET-object example (examplebucket, AKIAIOSFODNN7EXAMPLE): both give its signature."""
    case = Case(
        "aws-get-object",
        scheme="https",
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        headers=[("Range", "bytes=0-9")],
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    when = datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc)
    with mock.patch(f"{__name__}.WHEN", when):
        expected, _ = botocore_authorization(case)
        got, _ = tool_authorization(case, tmp_path)
    signature = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert expected.endswith(f"Signature={signature}")
    assert got == expected
