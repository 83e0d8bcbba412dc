"""How Python values are stored in the gateway cache.

Integers of type exactly ``int`` that fit a signed 64-bit integer travel as msgpack integers, so
the server stores them natively and ``cache.incr`` is atomic on them. Every other value, ``bool``
and ``int`` subclasses included, is pickled and travels as ``bin``. A ``str`` value coming back
(which this module never writes, but another client may) is returned as it is.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["INT64_MAX", "INT64_MIN", "decode_value", "encode_value", "is_native_int"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def is_native_int(value: Any) -> bool:
    """True if ``value`` is stored as a server-side integer (an exact ``int`` in int64 range)."""
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def encode_value(value: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes | int:
    """Return the wire form of ``value``: the int itself, or its pickle.

    :raises pickle.PicklingError: (or whatever ``pickle.dumps`` raises, such as ``TypeError``
        or ``AttributeError``) if ``value`` cannot be pickled.
    """
    if is_native_int(value):
        return value
    return pickle.dumps(value, protocol)


def decode_value(raw: Any) -> Any:
    """Return the Python value of a stored ``raw`` value (bytes are a pickle).

    :raises pickle.UnpicklingError: if bytes are not a valid pickle.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        return pickle.loads(raw)
    return raw
