"""Telling what a dropped line was from its two ends."""

from __future__ import annotations

import json

import pytest

from protocol.framing import KEPT_ENDS
from protocol.peek import Peek, peek_message


def _ends(msg: object) -> tuple[bytes, bytes]:
    line = json.dumps(msg, separators=(",", ":")).encode()
    return line[:KEPT_ENDS], line[-KEPT_ENDS:]


BIG = "x" * 100_000


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        ({"jsonrpc": "2.0", "id": 7, "result": {"stopReason": BIG}}, Peek("response", 7, None)),
        ({"jsonrpc": "2.0", "result": {"text": BIG}, "id": 8}, Peek("response", 8, None)),
        (
            {"jsonrpc": "2.0", "id": "a", "error": {"code": 1, "message": BIG}},
            Peek("response", "a", None),
        ),
        (
            {"jsonrpc": "2.0", "method": "session/update", "params": {"u": BIG}},
            Peek("notification", None, "session/update"),
        ),
        (
            {"jsonrpc": "2.0", "id": 3, "method": "session/request_permission", "params": BIG},
            Peek("request", 3, "session/request_permission"),
        ),
        # A nested "id" at the end is not the message's.
        ({"jsonrpc": "2.0", "result": {"x": BIG, "id": 9}}, Peek("response", None, None)),
        # Unsure is unknown: an id, then something big that is neither result nor method.
        ({"jsonrpc": "2.0", "id": 4, "params": BIG, "method": "m"}, Peek("unknown", None, None)),
        ("just a very long string " + BIG, Peek("unknown", None, None)),
    ],
)
def test_what_a_dropped_line_was(msg: object, expected: Peek) -> None:
    assert peek_message(*_ends(msg)) == expected


def test_garbage_is_unknown() -> None:
    assert peek_message(b"\xff" * 100, b"}" * 100) == Peek("unknown", None, None)
    assert peek_message(b'{"id": ', b"") == Peek("unknown", None, None)
