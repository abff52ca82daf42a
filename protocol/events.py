"""Durable conversation events: the bodies stored per event and their wire rendering.

An event on the wire is `{"seq", "type", "ts", ...body}` (CONTRACT.md). The store keeps `type`,
`ts` and the msgspec-encoded body apart, so rendering is a byte splice, not a decode/encode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "AgentMessage",
    "AgentRestarted",
    "AgentThought",
    "ErrorEvent",
    "PermissionRequested",
    "PermissionResolved",
    "PlanEvent",
    "ToolCallEvent",
    "TurnEnded",
    "TurnStarted",
    "UserMessage",
    "encode_body",
    "event_notification",
    "render_event",
    "rfc3339",
    "text_event",
]


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    pass


class UserMessage(_Body, frozen=True, kw_only=True):
    text: str
    # What people call it: 1, 2, 3 in the order sent (seqs count every event). One more than
    # the newest message's before it, so a removed message leaves a gap unless it was the
    # newest. Absent from messages stored before numbers existed (see `EventLog`).
    number: int | UnsetType = UNSET


class TurnStarted(_Body, frozen=True, kw_only=True):
    prompt_seq: int


class AgentMessage(_Body, frozen=True, kw_only=True):
    text: str
    prompt_seq: int
    # True when recovered from a draft after a crash: the agent may have said more.
    partial: bool = False


class AgentThought(_Body, frozen=True, kw_only=True):
    text: str
    prompt_seq: int
    partial: bool = False


class ToolCallEvent(_Body, frozen=True, kw_only=True):
    tool_call_id: str
    title: str
    status: str
    prompt_seq: int
    kind: str | UnsetType = UNSET


class PlanEvent(_Body, frozen=True, kw_only=True):
    entries: list[dict[str, Any]]
    prompt_seq: int


class PermissionOptionView(msgspec.Struct, frozen=True, kw_only=True):
    option_id: str
    name: str
    kind: str


class PermissionRequested(_Body, frozen=True, kw_only=True):
    request: str
    options: list[PermissionOptionView]
    title: str
    prompt_seq: int
    deadline: str  # RFC 3339: when the default answer is given


class PermissionResolved(_Body, frozen=True, kw_only=True):
    request: str
    outcome: str  # "selected" | "cancelled"
    option: str | UnsetType = UNSET
    by: str  # "user", "policy", "timeout", "cancel"


class TurnEnded(_Body, frozen=True, kw_only=True):
    prompt_seq: int
    stop_reason: str
    detail: str | UnsetType = UNSET


class AgentRestarted(_Body, frozen=True, kw_only=True):
    reason: str
    session_loaded: bool


class ErrorEvent(_Body, frozen=True, kw_only=True):
    message: str
    stderr: str | UnsetType = UNSET


# The stored event type of a turn's text, by the kind of its chunks.
TEXT_EVENT_TYPES: Final = {"message": "agent_message", "thought": "agent_thought"}


def text_event(
    kind: str, text: str, prompt_seq: int, *, partial: bool = False
) -> tuple[str, bytes]:
    """The stored (type, body) of a turn's text of `kind` ("message" or "thought")."""
    body: _Body
    if kind == "message":
        body = AgentMessage(text=text, prompt_seq=prompt_seq, partial=partial)
    else:
        body = AgentThought(text=text, prompt_seq=prompt_seq, partial=partial)
    return TEXT_EVENT_TYPES[kind], encode_body(body)


_encoder = msgspec.json.Encoder()


def encode_body(body: _Body) -> bytes:
    return _encoder.encode(body)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_event(seq: int, type_: str, ts: float, body: bytes) -> bytes:
    """`{"seq":..,"type":..,"ts":..,<body members>}` spliced from the stored parts."""
    head = b'{"seq":%d,"type":%s,"ts":"%s"' % (seq, _encoder.encode(type_), rfc3339(ts).encode())
    if len(body) <= 2:  # "{}"
        return head + b"}"
    return head + b"," + body[1:]


_EVENT_PREFIX: Final = b'{"jsonrpc":"2.0","method":"conversation/event","params":{"id":'


def event_notification(conv_id: str, rendered: bytes) -> bytes:
    """A complete `conversation/event` notification line around an already rendered event."""
    return b'%s%s,"event":%s}}\n' % (_EVENT_PREFIX, _encoder.encode(conv_id), rendered)
