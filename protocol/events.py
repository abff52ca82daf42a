"""Durable conversation events: the bodies stored per event and their wire rendering.

An event on the wire is `{"seq", "type", "ts", ...body}` (CONTRACT.md). The store keeps `type`,
`ts` and the msgspec-encoded body apart, so rendering is a byte splice, not a decode/encode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

from protocol.jsonrpc import NO_RAW

__all__ = [
    "EVENT_BODIES",
    "STATE_TYPES",
    "AgentMessage",
    "AgentRestarted",
    "AgentThought",
    "CommandView",
    "CommandsEvent",
    "ConfigOptionsEvent",
    "CostView",
    "ElicitationRequested",
    "ElicitationResolved",
    "ErrorEvent",
    "ModeEvent",
    "ModeView",
    "PermissionRequested",
    "PermissionResolved",
    "PlanEvent",
    "QueueReordered",
    "TitleEvent",
    "ToolCallEvent",
    "ToolCallUpdateEvent",
    "ToolContentItem",
    "ToolDiffItem",
    "ToolLocation",
    "ToolTerminalItem",
    "TurnEnded",
    "TurnStarted",
    "UsageEvent",
    "UserMessage",
    "UserMessageEdited",
    "UserMessageRemoved",
    "UserMessageSteered",
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
    # Sent as a steer (`messages/send {steer: true}`): for the turn that runs, if the agent
    # takes it (then `user_message_steered` follows), else first in line.
    steer: bool = False


class UserMessageEdited(_Body, frozen=True, kw_only=True):
    """A queued message's new text: what its prompt will carry."""

    message_seq: int
    text: str


class QueueReordered(_Body, frozen=True, kw_only=True):
    """The queue's order after a move: every queued message's seq, first in line first."""

    order: list[int]


class UserMessageRemoved(_Body, frozen=True, kw_only=True):
    """A queued message taken out before it was prompted (its own event goes with it)."""

    message_seq: int


class UserMessageSteered(_Body, frozen=True, kw_only=True):
    """A steer the agent took into the running turn: it is never prompted."""

    message_seq: int
    prompt_seq: int  # the turn it went into
    outcome: str  # the agent's: "injected", "startedNewTurn", ...


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


# --- tool calls: ACP's fields, snake_case (CONTRACT.md "Additions for the second round") -------


class _Item(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    pass


class ToolContentItem(_Item, frozen=True, kw_only=True, tag="content"):
    """A content block, kept as the agent sent it (ACP's wire names, e.g. `mimeType`)."""

    content: dict[str, Any]


class ToolDiffItem(_Item, frozen=True, kw_only=True, tag="diff"):
    """A file edit; no `old_text` means a new file."""

    path: str
    new_text: str
    old_text: str | None | UnsetType = UNSET


class ToolTerminalItem(_Item, frozen=True, kw_only=True, tag="terminal"):
    terminal_id: str


ToolItem = ToolContentItem | ToolDiffItem | ToolTerminalItem


class ToolLocation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    path: str
    line: int | None | UnsetType = UNSET


class _ToolFields(_Body, frozen=True, kw_only=True):
    tool_call_id: str
    prompt_seq: int
    kind: str | UnsetType = UNSET
    content: list[ToolItem] | UnsetType = UNSET
    locations: list[ToolLocation] | UnsetType = UNSET
    # The tool's own JSON, verbatim (an empty Raw: absent). A value too big to keep is stored
    # as a string saying so, and `truncated` is set.
    raw_input: msgspec.Raw = NO_RAW
    raw_output: msgspec.Raw = NO_RAW
    # Set when some text or raw value was cut to keep the event within its bound (TOOL_BYTES).
    truncated: bool = False


class ToolCallEvent(_ToolFields, frozen=True, kw_only=True):
    """`tool_call`: a new tool call (`title` and `status` always set)."""

    title: str
    status: str


class ToolCallUpdateEvent(_ToolFields, frozen=True, kw_only=True):
    """`tool_call_update`: only the fields present change; `content` and `locations` replace
    the old arrays whole (ACP's semantics)."""

    title: str | UnsetType = UNSET
    status: str | UnsetType = UNSET


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
    # The agent's `toolCall.toolCallId`, so a front end can tie the question to the tool call.
    tool_call_id: str | UnsetType = UNSET


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
    message: str  # one line
    # What a person needs to act: the agent's error `data`, the last lines of its stderr (ANSI
    # stripped), or the malformed line that ended it. Several lines allowed; bounded.
    detail: str | UnsetType = UNSET
    stderr: str | UnsetType = UNSET  # round 1 (crashes); new events put the tail in `detail`


# --- the session's state: each of these also sets the conversation's current value ------------


class CostView(msgspec.Struct, frozen=True, kw_only=True):
    amount: float
    currency: str


class UsageEvent(_Body, frozen=True, kw_only=True):
    """`usage`: context tokens used, the window's size, the session's cumulative cost."""

    used: int | UnsetType = UNSET
    size: int | UnsetType = UNSET
    cost: CostView | UnsetType = UNSET


class CommandView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    input_hint: str | UnsetType = UNSET


class CommandsEvent(_Body, frozen=True, kw_only=True):
    """`commands`: the agent's slash commands (the whole list)."""

    commands: list[CommandView]


class ModeView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str | UnsetType = UNSET


class ModeEvent(_Body, frozen=True, kw_only=True):
    """`mode`: the current mode; `available` too when the agent listed them (session set-up)."""

    current: str
    available: list[ModeView] | UnsetType = UNSET


class ConfigOptionsEvent(_Body, frozen=True, kw_only=True):
    """`config_options`: ACP's config options as the agent last sent them (the whole state)."""

    options: list[dict[str, Any]]


class TitleEvent(_Body, frozen=True, kw_only=True):
    """`title`: the agent named the session (`null`: it cleared the name)."""

    title: str | None


# Event types that also set the conversation's current state (store: `StatePatch`).
STATE_TYPES: Final = frozenset({"usage", "commands", "mode", "config_options", "title"})


# --- questions from the agent -------------------------------------------------------------------


class ElicitationRequested(_Body, frozen=True, kw_only=True):
    """`elicitation_requested`: the agent asks the user (ACP `elicitation/create`)."""

    request: str
    message: str
    mode: str = "form"  # form | url
    schema: dict[str, Any] | UnsetType = UNSET  # the form's `requestedSchema`
    url: str | UnsetType = UNSET  # url mode
    tool_call_id: str | UnsetType = UNSET
    prompt_seq: int | UnsetType = UNSET
    deadline: str | UnsetType = UNSET  # RFC 3339: when the default answer is given


class ElicitationResolved(_Body, frozen=True, kw_only=True):
    """`elicitation_resolved`: how it was answered (`accept` with `content`, `decline`,
    `cancel`), and by whom (user, timeout, cancel)."""

    request: str
    action: str
    content: dict[str, Any] | UnsetType = UNSET
    by: str | UnsetType = UNSET


# Every event type the daemon stores, with its body: what each front end must render.
# (`protocol.translate.EVENT_TYPES` has the same keys; tests hold the two and the daemon's
# writes to this table.)
EVENT_BODIES: Final[dict[str, type[_Body]]] = {
    "user_message": UserMessage,
    "user_message_edited": UserMessageEdited,
    "user_message_removed": UserMessageRemoved,
    "user_message_steered": UserMessageSteered,
    "queue_reordered": QueueReordered,
    "turn_started": TurnStarted,
    "agent_message": AgentMessage,
    "agent_thought": AgentThought,
    "tool_call": ToolCallEvent,
    "tool_call_update": ToolCallUpdateEvent,
    "plan": PlanEvent,
    "permission_requested": PermissionRequested,
    "permission_resolved": PermissionResolved,
    "elicitation_requested": ElicitationRequested,
    "elicitation_resolved": ElicitationResolved,
    "turn_ended": TurnEnded,
    "agent_restarted": AgentRestarted,
    "error": ErrorEvent,
    "usage": UsageEvent,
    "commands": CommandsEvent,
    "mode": ModeEvent,
    "config_options": ConfigOptionsEvent,
    "title": TitleEvent,
}

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
