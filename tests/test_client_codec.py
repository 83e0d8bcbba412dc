"""Unit tests of gateway_client's frame codec and error mapping (no server needed)."""

from __future__ import annotations

import struct

import gateway_client
import msgpack
import pytest
from gateway_client import errors
from gateway_client.frames import FrameDecoder, encode_frame, unpack_payload


def test_encode_frame_is_length_prefixed_msgpack_with_bin_type() -> None:
    data = encode_frame([1, "cache.set", {"key": "k", "value": b"\x00\xff"}])
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert msgpack.unpackb(data[4:], raw=False) == [
        1,
        "cache.set",
        {"key": "k", "value": b"\x00\xff"},
    ]
    assert b"\xc4\x02\x00\xff" in data, "bytes must be msgpack bin, not str"


def test_decoder_fed_one_byte_at_a_time() -> None:
    values = [[1, 0, "pong"], [2, 0, {"a": [1, 2, 3]}], [3, 5, {"code": "x", "message": "y"}]]
    stream = b"".join(encode_frame(v) for v in values)
    decoder = FrameDecoder()
    payloads = []
    for i in range(len(stream)):
        payloads += decoder.feed(stream[i : i + 1])
    assert [unpack_payload(p) for p in payloads] == values
    assert decoder.buffered == 0


def test_decoder_many_frames_in_one_chunk() -> None:
    stream = b"".join(encode_frame([i, 0, "pong"]) for i in range(1000))
    payloads = FrameDecoder().feed(stream)
    assert [unpack_payload(p)[0] for p in payloads] == list(range(1000))


def test_decoder_checks_the_length_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    with pytest.raises(gateway_client.ProtocolError):
        decoder.feed(struct.pack(">I", 101))
    with pytest.raises(gateway_client.ProtocolError):
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert FrameDecoder(max_frame_size=100).feed(struct.pack(">I", 100)) == []


@pytest.mark.parametrize("payload", [b"\xc1", b"\x01\x02", b"\x92\x01"])
def test_unpack_rejects_what_is_not_one_value(payload: bytes) -> None:
    with pytest.raises(gateway_client.ProtocolError) as info:
        unpack_payload(payload)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        ("bad_frame", gateway_client.BadFrame, 1),
        ("frame_too_large", gateway_client.FrameTooLarge, 2),
        ("bad_request", gateway_client.BadRequest, 3),
        ("unknown_op", gateway_client.UnknownOp, 4),
        ("bad_argument", gateway_client.BadArgument, 5),
        ("too_many_connections", gateway_client.TooManyConnections, 6),
        ("shutting_down", gateway_client.ShuttingDown, 7),
        ("internal", gateway_client.InternalError, 8),
        ("not_a_known_code", gateway_client.ServerError, 99),
    ],
)
def test_error_codes_map_to_classes(code: str, cls: type, status: int) -> None:
    assert errors.error_class_for_code(code) is cls
    error = errors.server_error_from_body(status, {"code": code, "message": "why"})
    assert type(error) is cls
    assert (error.code, error.message, error.status) == (code, "why", status)
    assert code in str(error) and "why" in str(error)


@pytest.mark.parametrize("body", [None, "oops", {"message": "no code"}, {"code": 1, "message": ""}])
def test_malformed_error_body_is_a_protocol_error(body: object) -> None:
    with pytest.raises(gateway_client.ProtocolError):
        errors.server_error_from_body(5, body)


def test_exception_hierarchy() -> None:
    import builtins

    assert issubclass(gateway_client.ConnectionError, builtins.ConnectionError)
    assert issubclass(gateway_client.ConnectionError, gateway_client.GatewayError)
    assert issubclass(gateway_client.TimeoutError, builtins.TimeoutError)
    assert issubclass(gateway_client.TimeoutError, gateway_client.ConnectionError)
    assert issubclass(gateway_client.ServerError, gateway_client.GatewayError)
    assert not issubclass(gateway_client.ProtocolError, gateway_client.ServerError)
    assert gateway_client.__version__ == "0.1.0"
