"""gateway_client: talk to a gateway server over its Unix-socket msgpack protocol.

``Client`` is the entry point; the exceptions it raises are in :mod:`gateway_client.errors` and
re-exported here. Django integration lives in :mod:`gateway_client.django`.
"""

from gateway_client.client import PROTOCOL_VERSION, Client
from gateway_client.errors import (
    BadArgument,
    BadFrame,
    BadRequest,
    ConnectionError,
    FrameTooLarge,
    GatewayError,
    InternalError,
    InvalidState,
    JobNotFound,
    KeyNotFound,
    LeaseLost,
    NotInteger,
    OutOfRange,
    ProtocolError,
    ServerError,
    ShuttingDown,
    StorageError,
    TimeoutError,
    TooManyConnections,
    UnknownOp,
    ValueTooLarge,
    error_class_for_code,
)

__version__ = "0.1.0"

__all__ = [
    "PROTOCOL_VERSION",
    "BadArgument",
    "BadFrame",
    "BadRequest",
    "Client",
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
    "__version__",
    "error_class_for_code",
]
