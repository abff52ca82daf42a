"""What a JSON-RPC line was, from its two ends only (sans-IO).

A line dropped for its length (`framing.DroppedLine`) cannot be decoded, yet its owner needs
to know whether it answered one of our requests (fail that request now, rather than wait for
ever), asked something (refuse it), or was a notification. JSON producers write the envelope
first (`{"jsonrpc":"2.0","id":7,"result":...` or `..."method":"session/update",...`), so the
top-level keys before the first big value tell; an id written last is found at the very end.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

__all__ = ["Peek", "peek_message"]

Kind = Literal["response", "request", "notification", "unknown"]

_SCALAR: Final = re.compile(rb'\s*(-?\d+|"(?:[^"\\]|\\.)*"|null|true|false)')
_KEY: Final = re.compile(rb'\s*"((?:[^"\\]|\\.)*)"\s*:')
# An id that is the object's last member: directly followed by the final brace.
_LAST_ID: Final = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")\s*}\s*$')


class Peek(NamedTuple):
    kind: Kind
    id: int | str | None  # of a response or request, when it could be read
    method: str | None  # of a request or notification, when it could be read


def _members(head: bytes) -> tuple[dict[str, bytes], bool]:
    """Top-level members of the object `head` starts, as far as it goes: scalars as their raw
    text, others as their first byte. Second: whether the scan stopped at a big value."""
    members: dict[str, bytes] = {}
    pos = head.find(b"{")
    if pos < 0 or head[:pos].strip():
        return members, False
    pos += 1
    while True:
        key = _KEY.match(head, pos)
        if key is None:
            return members, False
        name = key.group(1).decode("utf-8", "replace")
        pos = key.end()
        scalar = _SCALAR.match(head, pos)
        if scalar is not None:
            members[name] = scalar.group(1)
            pos = scalar.end()
        else:
            opener = head[pos:].lstrip()[:1]
            members[name] = opener
            return members, True  # a nested value: skipping it is not worth it here
        sep = head[pos:].lstrip()[:1]
        if sep != b",":
            return members, False
        pos = head.index(b",", pos) + 1


def _id(raw: bytes) -> int | str | None:
    if raw.startswith(b'"'):
        return raw[1:-1].decode("utf-8", "replace")
    try:
        return int(raw)
    except ValueError:
        return None


def peek_message(head: bytes, tail: bytes) -> Peek:
    """Classify a JSON-RPC message seen only by its first and last bytes. Unsure means
    "unknown": both sides number their requests alike, so a guess could fail the wrong one."""
    members, _ = _members(head)
    if "method" in members:
        raw = members["method"]
        method = _id(raw) if raw.startswith(b'"') else None
        name = method if isinstance(method, str) else None
        if "id" not in members:
            return Peek("notification", None, name)
        return Peek("request", _id(members["id"]), name)
    if "result" in members or "error" in members:
        raw_id = members.get("id")
        if raw_id is None:
            last = _LAST_ID.search(tail)
            raw_id = last.group(1) if last else None
        return Peek("response", _id(raw_id) if raw_id else None, None)
    return Peek("unknown", None, None)
