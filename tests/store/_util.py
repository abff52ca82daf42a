"""Helpers shared by the store tests."""

from __future__ import annotations


def body(text: str) -> bytes:
    """A user_message body as the daemon encodes it (text without quotes or escapes)."""
    return b'{"text":"' + text.encode() + b'"}'
