"""Exceptions raised by gateway_client.

Every exception the package raises on purpose derives from :class:`GatewayError`. Failures of
the transport derive from :class:`ConnectionError`, which is also a builtin ``ConnectionError``
so code that already handles OS-level connection failures keeps working. Errors the server
reports in a response (``[id, status, {"code": ..., "message": ...}]``, ``gateway/PROTOCOL.md``)
are :class:`ServerError` subclasses, one per stable error code; switch on the class or on
``.code``, not on ``.status``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BadArgument",
    "BadFrame",
    "BadRequest",
    "ConnectionError",
    "FrameTooLarge",
    "GatewayError",
    "InternalError",
    "InvalidState",
    "JobNotFound",
    "KeyNotFound",
    "LeaseLost",
    "NotInteger",
    "OutOfRange",
    "ProtocolError",
    "ServerError",
    "ShuttingDown",
    "StorageError",
    "TimeoutError",
    "TooManyConnections",
    "UnknownOp",
    "ValueTooLarge",
    "error_class_for_code",
    "server_error_from_body",
]


class GatewayError(Exception):
    """Base class of every error raised by gateway_client."""


class ConnectionError(GatewayError, builtins.ConnectionError):
    """The connection to the gateway could not be made or was lost.

    After this error the connection it happened on is closed; the next call on the same
    :class:`~gateway_client.Client` opens a new one. A request that was in flight when the
    connection was lost may or may not have been carried out by the server.
    """


class TimeoutError(ConnectionError, builtins.TimeoutError):
    """A call did not complete within its timeout.

    The connection is closed because a late reply would otherwise be read as the answer to a
    later request; whether the server carried out the request is unknown.
    """


class ProtocolError(GatewayError):
    """The server sent something that does not follow ``gateway/PROTOCOL.md``.

    The connection it came on is closed, since the stream can no longer be trusted.
    """


class ServerError(GatewayError):
    """The server answered a request with an error response.

    :ivar code: the stable error code string, such as ``"bad_argument"``.
    :ivar message: the server's human-readable explanation.
    :ivar status: the numeric status of the response (non-zero).
    """

    #: The code this class stands for; ``None`` on the base class, which also covers codes
    #: this version of the client does not know.
    default_code: str | None = None

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


class BadFrame(ServerError):
    """The server could not decode a frame: not one well-formed msgpack value, or length 0."""

    default_code = "bad_frame"


class FrameTooLarge(ServerError):
    """A frame was over the server's ``max_frame_size``; the server closes the connection."""

    default_code = "frame_too_large"


class BadRequest(ServerError):
    """The payload was msgpack but not a ``[id, op, args]`` array."""

    default_code = "bad_request"


class UnknownOp(ServerError):
    """The server has no operation of that name (``hello`` lists the ones it has)."""

    default_code = "unknown_op"


class BadArgument(ServerError):
    """An argument was missing, unknown, or of the wrong type; the message names it."""

    default_code = "bad_argument"


class TooManyConnections(ServerError):
    """The server is at ``max_connections`` and refused this connection."""

    default_code = "too_many_connections"


class ShuttingDown(ServerError):
    """The server is stopping and takes no new requests."""

    default_code = "shutting_down"


class InternalError(ServerError):
    """The server failed in a way that is not the client's fault."""

    default_code = "internal"


class KeyNotFound(ServerError):
    """``cache.incr`` found no live entry under the key."""

    default_code = "key_not_found"


class NotInteger(ServerError):
    """``cache.incr`` found an entry whose value is not an integer."""

    default_code = "not_integer"


class OutOfRange(ServerError):
    """``cache.incr`` would take the value outside a signed 64-bit integer."""

    default_code = "out_of_range"


class ValueTooLarge(ServerError):
    """A cache value is over the server's ``[databases.cache] max_value_size``."""

    default_code = "value_too_large"


class StorageError(ServerError):
    """The cache database failed (disk full, I/O error); nothing of the request was applied."""

    default_code = "storage_error"


class JobNotFound(ServerError):
    """No job has this id (it may have been pruned)."""

    default_code = "job_not_found"


class LeaseLost(ServerError):
    """The lease token is not the job's current lease: it expired, or the job was cancelled.

    A worker that gets this must not report the job's outcome again; another attempt owns it.
    """

    default_code = "lease_lost"


class InvalidState(ServerError):
    """The job is not in a state where the operation applies (e.g. cancel of a finished job)."""

    default_code = "invalid_state"


_CLASS_BY_CODE: dict[str, type[ServerError]] = {
    cls.default_code: cls
    for cls in (
        BadFrame,
        FrameTooLarge,
        BadRequest,
        UnknownOp,
        BadArgument,
        TooManyConnections,
        ShuttingDown,
        InternalError,
        KeyNotFound,
        NotInteger,
        OutOfRange,
        ValueTooLarge,
        StorageError,
        JobNotFound,
        LeaseLost,
        InvalidState,
    )
    if cls.default_code is not None
}


def error_class_for_code(code: str) -> type[ServerError]:
    """Return the :class:`ServerError` subclass for an error code.

    Codes this client does not know (for example those of operations added later) map to
    :class:`ServerError` itself, so callers can still catch them.
    """
    return _CLASS_BY_CODE.get(code, ServerError)


def server_error_from_body(status: int, body: Any) -> ServerError:
    """Build the exception for an error response ``[id, status, body]``.

    :param status: the non-zero status of the response.
    :param body: the response body, which the protocol says is ``{"code": str, "message": str}``.
    :raises ProtocolError: if ``body`` does not have that shape.
    """
    if not isinstance(body, Mapping):
        raise ProtocolError(f"error response with status {status} has a {type(body).__name__} body")
    code = body.get("code")
    message = body.get("message", "")
    if not isinstance(code, str) or not isinstance(message, str):
        raise ProtocolError(f"error response with status {status} lacks a str code and message")
    return error_class_for_code(code)(code, message, status)
