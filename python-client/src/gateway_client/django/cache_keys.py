"""What a Django cache's key function says about key prefixes, found by probing it.

The gateway clears, lists and deletes by key *prefix*. Django builds keys with
``KEY_FUNCTION(key, KEY_PREFIX, version)``; the default makes ``f"{prefix}:{version}:{key}"``, so
every key of one ``KEY_PREFIX`` starts with ``f"{prefix}:"`` and every key of one version starts
with ``key_func("", prefix, version)``. A custom key function may not work that way (it may hash
the key, say), so instead of assuming, :func:`key_layout` calls it on probe keys and versions and
derives only what the probes prove:

- ``appends_key``: ``key_func(k, prefix, v) == key_func("", prefix, v) + k`` for the probes, so a
  user-key prefix maps to a stored-key prefix (``iter_keys``, ``delete_pattern``);
- ``clear_prefix``: the longest common prefix of the probe keys over several versions, if it
  contains ``KEY_PREFIX``; ``None`` when ``KEY_PREFIX`` is empty or the probes share no prefix
  that holds it, in which case ``clear()`` must clear the whole cache, as Django's own backends
  always do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["KeyLayout", "key_layout", "pattern_prefix"]

_KEY_PROBES = ("a", "b", "zz", "key:with/sep")
_VERSION_PROBES = (1, 2, 37, -1, 0)
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class KeyLayout:
    """What probing a key function found (see the module docstring)."""

    appends_key: bool
    clear_prefix: str | None


@lru_cache(maxsize=64)
def key_layout(key_func: Callable[..., Any], key_prefix: str, version: int) -> KeyLayout:
    """Probe ``key_func`` with ``key_prefix`` around ``version``; cached per arguments."""
    return KeyLayout(
        appends_key=all(_appends_key(key_func, key_prefix, v) for v in (version, version + 1)),
        clear_prefix=_clear_prefix(key_func, key_prefix),
    )


def _appends_key(key_func: Callable[..., Any], key_prefix: str, version: int) -> bool:
    try:
        head = key_func("", key_prefix, version)
        return isinstance(head, str) and all(
            key_func(probe, key_prefix, version) == head + probe for probe in _KEY_PROBES
        )
    except Exception:
        return False  # a key function that rejects probes cannot be shown to append keys


def _clear_prefix(key_func: Callable[..., Any], key_prefix: str) -> str | None:
    if not key_prefix:
        return None
    try:
        probes = [key_func(k, key_prefix, v) for k in _KEY_PROBES for v in _VERSION_PROBES]
    except Exception:
        return None
    if not all(isinstance(p, str) for p in probes):
        return None
    common = _common_prefix(probes)
    return common if str(key_prefix) in common else None


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


def pattern_prefix(pattern: str) -> str:
    """Return the literal prefix a django-redis style ``pattern`` stands for.

    Only prefix patterns are supported: literal text with an optional single trailing ``*``
    (``"user:*"`` and ``"user:"`` both mean every key starting with ``user:``). A backslash makes
    the next character literal (``"a\\*b*"``: keys starting with ``a*b``).

    :raises ValueError: if the pattern has a glob character (``*``, ``?``, ``[``) anywhere but at
        the end.
    """
    literal: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            literal.append(pattern[index + 1])
            index += 2
            continue
        if char == "*" and index == len(pattern) - 1:
            break
        if char in _GLOB_CHARS:
            raise ValueError(
                f"pattern {pattern!r}: only prefix patterns are supported (literal text and an "
                f"optional trailing '*'); {char!r} at position {index} is a glob character "
                "(escape it with a backslash to match it literally)"
            )
        literal.append(char)
        index += 1
    return "".join(literal)
