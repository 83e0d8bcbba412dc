"""The frame codec of the gateway protocol.

A frame is a 4-byte big-endian payload length followed by the payload, which is exactly one
msgpack value (``gateway/PROTOCOL.md``, "Frames"). :func:`encode_frame` builds one;
:class:`FrameDecoder` takes bytes as they arrive and hands out complete payloads, checking each
length against a limit before it buffers the payload.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from gateway_client.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "FrameDecoder",
    "encode_frame",
    "pack_payload",
    "unpack_payload",
]

#: The server's default ``[server] max_frame_size`` (32 MiB).
DEFAULT_MAX_FRAME_SIZE = 32 * 1024 * 1024
#: Size of the length prefix.
HEADER_SIZE = 4

_HEADER = struct.Struct(">I")


def pack_payload(value: Any) -> bytes:
    """Serialise ``value`` as one msgpack value, keeping ``str`` and ``bytes`` distinct.

    :raises TypeError: if ``value`` holds something msgpack cannot represent.
    """
    return msgpack.packb(value, use_bin_type=True)


def encode_frame(value: Any) -> bytes:
    """Return the complete frame (length prefix and payload) carrying ``value``.

    :raises TypeError: if ``value`` holds something msgpack cannot represent.
    :raises ValueError: if the payload is longer than a 32-bit length can describe.
    """
    payload = pack_payload(value)
    if len(payload) > 0xFFFFFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame")
    return _HEADER.pack(len(payload)) + payload


def unpack_payload(payload: bytes) -> Any:
    """Decode one frame payload (msgpack ``str`` becomes ``str``, ``bin`` becomes ``bytes``).

    :raises ProtocolError: if the payload is not exactly one well-formed msgpack value.
    """
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as e:
        # ExtraData (trailing bytes) and FormatError are ValueError subclasses.
        raise ProtocolError(f"the server sent a frame that is not one msgpack value: {e}") from e


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    Not thread-safe; one decoder belongs to one connection. After :meth:`feed` has raised, the
    decoder is out of sync and must be discarded together with its connection.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        """:param max_frame_size: the largest payload accepted; longer frames are an error."""
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._need: int | None = None  # payload length of the frame being read, once known

    @property
    def buffered(self) -> int:
        """Number of bytes received that are not yet part of a returned payload."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the payloads of all frames now complete, in order.

        :raises ProtocolError: if a frame announces a length of 0 or over ``max_frame_size``.
        """
        self._buffer += data
        payloads: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buffer) < HEADER_SIZE:
                    return payloads
                (length,) = _HEADER.unpack_from(self._buffer)
                if length == 0:
                    raise ProtocolError("the server sent a frame of length 0")
                if length > self.max_frame_size:
                    raise ProtocolError(
                        f"the server sent a frame of {length} bytes, over the limit of "
                        f"{self.max_frame_size}"
                    )
                del self._buffer[:HEADER_SIZE]
                self._need = length
            if len(self._buffer) < self._need:
                return payloads
            payloads.append(bytes(self._buffer[: self._need]))
            del self._buffer[: self._need]
            self._need = None
