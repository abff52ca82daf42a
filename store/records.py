"""What the store hands out: frozen records, the closed vocabularies, ids and page cursors.

Records are msgspec Structs (they cross the disk boundary) that forbid unknown fields, so a
typo in our own format fails loudly instead of silently dropping data.
"""

from __future__ import annotations

import math
import re
import secrets

import msgspec

__all__ = [
    "KINDS",
    "POLICIES",
    "STATUSES",
    "USER_MESSAGE",
    "ConversationRecord",
    "EventRecord",
    "new_conversation_id",
    "unique_prefix_length",
]

STATUSES = frozenset({"idle", "running", "paused", "failed"})
POLICIES = frozenset({"ask", "allow", "deny"})
KINDS = frozenset({"message", "thought"})  # draft kinds
USER_MESSAGE = "user_message"  # the only event type the store gives meaning to (the queue)


class ConversationRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One row of `conversations`: metadata only, never events."""

    id: str
    title: str
    agent: str
    agent_cmd: list[str]
    cwd: str
    acp_session_id: str | None
    acp_session_cwd: str | None
    status: str  # one of STATUSES
    created_at: float  # unix seconds
    updated_at: float  # bumped by every event append and status change; never goes back
    last_seq: int  # highest seq ever given out (0 = none); never decreases, never reused
    cursor: int  # the seq of the message the latest turn prompted (0 = none yet)
    queued: int  # user messages waiting in the queue
    permission_policy: str  # one of POLICIES
    # The agent session's current state, each the JSON text of CONTRACT.md's shape, None
    # until the agent first said it: {current, available}, [option...], [command...],
    # {used?, size?, cost?}.
    modes: str | None = None
    config_options: str | None = None
    commands: str | None = None
    usage: str | None = None
    title_auto: bool = False  # the title is no person's: the agent's may replace it
    # ACP `McpServer` objects (JSON text) for this conversation's sessions, besides those its
    # agent's config names; None: none.
    mcp_servers: str | None = None


class EventRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One durable event; `body` is a JSON object, so the wire form is a cheap splice."""

    seq: int
    type: str
    ts: float
    body: bytes


# Crockford's base32, lowercase (no i, l, o, u: nothing to misread when typing a prefix).
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 20


def _base32(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def new_conversation_id() -> str:
    """20 random characters (100 bits): unguessable, and random from the first character, so
    a few characters pick one out (`acpd ls` shows how many). Ids carry no time: whatever
    orders by creation reads `created_at`. Ids made before were 'c' + 12 characters of
    milliseconds + 8 random ones; they stay valid (any lowercase base32 string is an id)."""
    return _base32(secrets.randbits(5 * ID_LENGTH), ID_LENGTH)


def unique_prefix_length(conv_id: str, neighbours: tuple[str | None, ...], minimum: int) -> int:
    """How many leading characters of `conv_id` no other id shares, given its neighbours in
    id order (any id sharing a prefix with it shares at least as much with one of them), at
    least `minimum` and at most the whole id (an id that is a prefix of another is itself)."""
    shared = 0
    for other in neighbours:
        if other is not None:
            n = 0
            for a, b in zip(conv_id, other, strict=False):
                if a != b:
                    break
                n += 1
            shared = max(shared, n)
    return min(len(conv_id), max(minimum, shared + 1))


def check_event(type_: str, body: bytes) -> None:
    """Refuse what would make a broken wire line; O(1), the caller encoded the body."""
    if not type_:
        raise ValueError("event type must not be empty")
    if not isinstance(body, bytes) or body[:1] != b"{" or body[-1:] != b"}":
        raise ValueError(f"event body must be a JSON object, got {body[:20]!r}")


_CURSOR_ID_RE = re.compile(r"[0-9a-z]{1,64}")


def encode_page_cursor(updated_at: float, conv_id: str) -> str:
    # repr() of a float round-trips exactly, so the next page starts exactly after this row.
    return f"{updated_at!r}:{conv_id}"


def decode_page_cursor(cursor: str) -> tuple[float, str]:
    """The inverse of `encode_page_cursor`; ValueError for anything we did not make."""
    stamp, sep, conv_id = cursor.partition(":")
    try:
        updated_at = float(stamp)
    except ValueError:
        updated_at = math.nan
    if not sep or not math.isfinite(updated_at) or not _CURSOR_ID_RE.fullmatch(conv_id):
        raise ValueError(f"not a conversation list cursor: {cursor[:80]!r}")
    return updated_at, conv_id
