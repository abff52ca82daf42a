"""Stored events and live deltas as ACP `session/update`s: one translation for replay and live.

A conversation's history reaches an ACP client as the same updates whether it is replayed
(`session/load`) or streamed as it happens, because both go through `Translator`: stored events
(`{seq, type, ts, ...}`, CONTRACT.md) and `conversation/delta` chunks in, `acp.KnownUpdate`s out.

Table-driven: `EVENT_TYPES` maps each event type to a tolerant view of its body and a function
from that view to updates; a new event type is one entry. Types without an entry (and bodies
that do not fit their view) give no update: a newer daemon must not break an older client.

Text is streamed twice by the daemon: as deltas while a message is open, then whole in the
stored `agent_message` (or `agent_thought`) that closes it. `Translator` counts what it emitted
of each open message and emits only the rest of the event's text, so a client sees each
character once, whichever of the two (or both, after a resubscription) it was given.

Sans-IO: no trio, no I/O. The caller decides what is replay and what is live (`live=False`:
no notices, which ACP defines as live only) and wraps each update in a `session/update`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import msgspec
from msgspec import UNSET

from protocol import acp
from protocol.jsonrpc import NO_RAW

__all__ = [
    "EVENT_TYPES",
    "MAX_TOOL_IDS",
    "STOP_REASONS",
    "Event",
    "EventType",
    "Translator",
    "decode_event",
]

# acpd's stored stop reasons that are ACP's own; the rest (agent_exited, timeout, error,
# daemon_restarted) are acpd's and have no ACP equivalent.
STOP_REASONS: Final = acp.STOP_REASONS
# Tool call ids remembered per session, to tell a new tool call from an update of one: beyond
# this the oldest are forgotten (a late update of one is then sent as a new tool call).
MAX_TOOL_IDS: Final = 4096
# Queued user messages held until their turn starts (or the agent takes them as a steer):
# beyond this the oldest are forgotten (a message removed from the queue is never taken).
MAX_QUEUED: Final = 1024


class _Head(msgspec.Struct, frozen=True, gc=False):
    seq: int
    type: str


@attrs.frozen
class Event:
    """A stored event: its seq, type and body as the view of `EVENT_TYPES[type]` (None if the
    type has no entry or the body does not fit it)."""

    seq: int
    type: str
    body: Any


# --- tolerant views of the stored bodies (unknown members ignored) ------------------------------


class _View(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    pass


class UserMessageView(_View, frozen=True, kw_only=True):
    text: str


class TurnStartedView(_View, frozen=True, kw_only=True):
    prompt_seq: int


class EditedView(_View, frozen=True, kw_only=True):
    """`user_message_edited`: a queued message's new text."""

    message_seq: int
    text: str


class RemovedView(_View, frozen=True, kw_only=True):
    """`user_message_removed`: a queued message taken out; it never becomes history."""

    message_seq: int


class SteeredView(_View, frozen=True, kw_only=True):
    """`user_message_steered`: a message the agent took into the running turn."""

    message_seq: int


class TextView(_View, frozen=True, kw_only=True):
    """`agent_message` and `agent_thought`."""

    text: str
    prompt_seq: int = 0
    partial: bool = False


class ToolCallView(_View, frozen=True, kw_only=True):
    """`tool_call` (and `tool_call_update`): ACP's tool call fields, snake_case; items of
    `content` and `locations` are ACP's objects, in either spelling of their keys."""

    tool_call_id: str
    title: str | None = None
    kind: str | None = None
    status: str | None = None
    content: list[dict[str, Any]] | None = None
    locations: list[dict[str, Any]] | None = None
    raw_input: msgspec.Raw = NO_RAW
    raw_output: msgspec.Raw = NO_RAW


class PlanView(_View, frozen=True, kw_only=True):
    entries: list[dict[str, Any]]


class TurnEndedView(_View, frozen=True, kw_only=True):
    prompt_seq: int
    stop_reason: str
    detail: str | None = None


class ErrorView(_View, frozen=True, kw_only=True):
    message: str
    detail: str | None = None
    stderr: str | None = None


class RestartedView(_View, frozen=True, kw_only=True):
    reason: str = ""
    session_loaded: bool = False


class OptionView(_View, frozen=True, kw_only=True):
    option_id: str
    name: str
    kind: str

    def to_acp(self) -> acp.PermissionOption:
        return acp.PermissionOption(option_id=self.option_id, name=self.name, kind=self.kind)


class PermissionRequestedView(_View, frozen=True, kw_only=True):
    request: str
    options: list[OptionView]
    title: str = ""
    prompt_seq: int = 0
    tool_call_id: str | None = None


class ResolvedView(_View, frozen=True, kw_only=True):
    """`permission_resolved` and `elicitation_resolved`."""

    request: str


class ElicitationRequestedView(_View, frozen=True, kw_only=True):
    request: str
    message: str
    mode: str = "form"  # form | url
    schema: dict[str, Any] | None = None  # the form's
    url: str | None = None  # url mode's
    tool_call_id: str | None = None


class UsageView(_View, frozen=True, kw_only=True):
    used: int | None = None
    size: int | None = None
    cost: acp.Cost | None = None


class CommandView(_View, frozen=True, kw_only=True):
    name: str
    description: str = ""
    input_hint: str | None = None


class CommandsView(_View, frozen=True, kw_only=True):
    commands: list[CommandView]


class ModeView(_View, frozen=True, kw_only=True):
    current: str


class ConfigOptionsView(_View, frozen=True, kw_only=True):
    options: list[dict[str, Any]]


class TitleView(_View, frozen=True, kw_only=True):
    title: str | None


# --- the translation ----------------------------------------------------------------------------

Updates = list[acp.KnownUpdate]


@attrs.define(eq=False)
class Translator:
    """One attached ACP session's translation state: what of each open message was emitted,
    which tool calls exist. `notices`: the client advertised `session.notices`."""

    notices: bool = False
    # A user message is history once it is prompted (or steered into a turn), with the text
    # it was prompted with: held from `user_message` until then, edits applied.
    _queued: dict[int, str] = attrs.field(factory=dict)
    _emitted: dict[tuple[int, str], int] = attrs.field(factory=dict)
    _tool_ids: dict[str, None] = attrs.field(factory=dict)  # insertion-ordered set

    def event(self, event: Event, *, live: bool) -> Updates:
        """The updates for one stored event, in order."""
        entry = EVENT_TYPES.get(event.type)
        if entry is None or event.body is None:
            return []
        if event.type == "user_message":
            self._queued[event.seq] = event.body.text
            while len(self._queued) > MAX_QUEUED:
                del self._queued[next(iter(self._queued))]
            return []
        return entry.translate(self, event.body, live)

    def _user(self, seq: int) -> Updates:
        text = self._queued.pop(seq, None)
        return [] if text is None else [acp.UserMessageChunk(content=acp.TextContent(text=text))]

    def delta(self, prompt_seq: int, kind: str, text: str) -> Updates:
        """A `conversation/delta`: message and thought text stream; tool progress has no
        tool call id, so it waits for the stored tool call."""
        block = _TEXT_KINDS.get(kind)
        if block is None or not text:
            return []
        key = (prompt_seq, kind)
        self._emitted[key] = self._emitted.get(key, 0) + len(text)
        return [block(content=acp.TextContent(text=text))]

    def streamed(self, prompt_seq: int, kind: str, text: str) -> Updates:
        """Text an open message already streamed before we subscribed (`conversation/
        caught_up`): what of it was not emitted yet."""
        return self._rest(prompt_seq, kind, text, keep_open=True)

    def _rest(self, prompt_seq: int, kind: str, text: str, *, keep_open: bool) -> Updates:
        block = _TEXT_KINDS.get(kind)
        if block is None:
            return []
        key = (prompt_seq, kind)
        done = self._emitted.pop(key, 0)
        if keep_open:
            self._emitted[key] = max(done, len(text))
        rest = text[done:]
        return [block(content=acp.TextContent(text=rest))] if rest else []

    def _tool(self, view: ToolCallView, *, update: bool) -> Updates:
        known = view.tool_call_id in self._tool_ids
        if not known:
            self._tool_ids[view.tool_call_id] = None
            if len(self._tool_ids) > MAX_TOOL_IDS:
                del self._tool_ids[next(iter(self._tool_ids))]
        fields: dict[str, Any] = {
            "tool_call_id": view.tool_call_id,
            "kind": _opt(view.kind),
            "status": _opt(view.status),
            "content": _items(view.content, acp.ToolCallContent),
            "locations": _items(view.locations, acp.ToolCallLocation),
            "raw_input": view.raw_input,
            "raw_output": view.raw_output,
        }
        if update or known:
            return [acp.ToolCallUpdate(title=_opt(view.title or None), **fields)]
        return [acp.ToolCall(title=view.title or view.tool_call_id, **fields)]

    def _notice(self, live: bool, severity: str, title: str, description: str | None) -> Updates:
        if not (live and self.notices):
            return []
        title = " ".join(title.split())[:200] or severity
        return [acp.Notice(severity=severity, title=title, description=_opt(description))]


_TEXT_KINDS: Final[dict[str, type[acp.AgentMessageChunk] | type[acp.AgentThoughtChunk]]] = {
    "message": acp.AgentMessageChunk,
    "thought": acp.AgentThoughtChunk,
}


def _opt(value: Any) -> Any:
    return UNSET if value is None else value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _camel_keys(item: Any) -> Any:
    """An ACP object's keys in the wire's camelCase (already camel ones unchanged); nested
    objects too (a content item's block), but not `_meta`, which is opaque."""
    if not isinstance(item, dict):
        return item
    return {
        (k if k.startswith("_") else _camel(k)): (v if k == "_meta" else _camel_keys(v))
        for k, v in item.items()
    }


def _items(items: list[dict[str, Any]] | None, tp: Any) -> Any:
    """Stored ACP objects typed as `tp`, in order; ones that do not fit are left out."""
    if items is None:
        return UNSET
    out = []
    for item in items:
        try:
            out.append(msgspec.convert(_camel_keys(item), tp))
        except msgspec.ValidationError:
            continue
    return out


def _turn_started(t: Translator, v: TurnStartedView, live: bool) -> Updates:
    return t._user(v.prompt_seq)


def _edited(t: Translator, v: EditedView, live: bool) -> Updates:
    if v.message_seq in t._queued:
        t._queued[v.message_seq] = v.text
    return []


def _removed(t: Translator, v: RemovedView, live: bool) -> Updates:
    t._queued.pop(v.message_seq, None)
    return []


def _steered(t: Translator, v: SteeredView, live: bool) -> Updates:
    return t._user(v.message_seq)


def _agent_text(kind: str) -> Callable[[Translator, TextView, bool], Updates]:
    def translate(t: Translator, v: TextView, live: bool) -> Updates:
        return t._rest(v.prompt_seq, kind, v.text, keep_open=False)

    return translate


def _tool_call(t: Translator, v: ToolCallView, live: bool) -> Updates:
    # On main, status changes are stored as further `tool_call` events of the same id.
    return t._tool(v, update=False)


def _tool_call_update(t: Translator, v: ToolCallView, live: bool) -> Updates:
    return t._tool(v, update=True)


def _plan(t: Translator, v: PlanView, live: bool) -> Updates:
    entries = _items(v.entries, acp.PlanEntry)
    return [acp.Plan(entries=entries)]


def _turn_ended(t: Translator, v: TurnEndedView, live: bool) -> Updates:
    if v.stop_reason in STOP_REASONS:
        return []  # the prompt's answer says it
    return t._notice(live, "warning", f"turn ended: {v.stop_reason}", v.detail)


def _error(t: Translator, v: ErrorView, live: bool) -> Updates:
    return t._notice(live, "error", v.message, v.detail or v.stderr)


def _restarted(t: Translator, v: RestartedView, live: bool) -> Updates:
    how = "session resumed" if v.session_loaded else "new session: earlier context is lost"
    return t._notice(live, "info", f"agent restarted ({v.reason or 'restart'})", how)


def _usage(t: Translator, v: UsageView, live: bool) -> Updates:
    if v.used is None or v.size is None:  # ACP requires both
        return []
    return [acp.UsageUpdate(used=v.used, size=v.size, cost=_opt(v.cost))]


def _commands(t: Translator, v: CommandsView, live: bool) -> Updates:
    commands = [
        acp.AvailableCommand(
            name=c.name,
            description=c.description,
            input=UNSET if c.input_hint is None else acp.AvailableCommandInput(hint=c.input_hint),
        )
        for c in v.commands
    ]
    return [acp.AvailableCommandsUpdate(available_commands=commands)]


def _mode(t: Translator, v: ModeView, live: bool) -> Updates:
    return [acp.CurrentModeUpdate(current_mode_id=v.current)]


def _config_options(t: Translator, v: ConfigOptionsView, live: bool) -> Updates:
    return [acp.ConfigOptionUpdate(config_options=v.options)]


def _title(t: Translator, v: TitleView, live: bool) -> Updates:
    return [acp.SessionInfoUpdate(title=v.title)]


def _nothing(t: Translator, v: Any, live: bool) -> Updates:
    return []


@attrs.frozen
class EventType:
    view: type[msgspec.Struct]
    translate: Callable[[Translator, Any, bool], Updates]
    decoder: msgspec.json.Decoder[Any] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "decoder", msgspec.json.Decoder(self.view))


# One entry per stored event type. Those after the blank line are CONTRACT.md's "Additions for
# the second round": written against its shapes, ready for the events that carry them.
EVENT_TYPES: Final[dict[str, EventType]] = {
    # Held by `Translator.event` until its turn starts, or the agent takes it as a steer.
    "user_message": EventType(UserMessageView, _nothing),
    "turn_started": EventType(TurnStartedView, _turn_started),
    "agent_message": EventType(TextView, _agent_text("message")),
    "agent_thought": EventType(TextView, _agent_text("thought")),
    "tool_call": EventType(ToolCallView, _tool_call),
    "plan": EventType(PlanView, _plan),
    # Questions are requests to the client, not updates: the front door asks and withdraws.
    "permission_requested": EventType(PermissionRequestedView, _nothing),
    "permission_resolved": EventType(ResolvedView, _nothing),
    "turn_ended": EventType(TurnEndedView, _turn_ended),
    "agent_restarted": EventType(RestartedView, _restarted),
    "error": EventType(ErrorView, _error),
    #
    "tool_call_update": EventType(ToolCallView, _tool_call_update),
    "usage": EventType(UsageView, _usage),
    "commands": EventType(CommandsView, _commands),
    "mode": EventType(ModeView, _mode),
    "config_options": EventType(ConfigOptionsView, _config_options),
    "title": EventType(TitleView, _title),
    "elicitation_requested": EventType(ElicitationRequestedView, _nothing),
    "elicitation_resolved": EventType(ResolvedView, _nothing),
    "user_message_edited": EventType(EditedView, _edited),
    "user_message_steered": EventType(SteeredView, _steered),
    "user_message_removed": EventType(RemovedView, _removed),
    "queue_reordered": EventType(_View, _nothing),
}

_head_decoder = msgspec.json.Decoder(_Head)


def decode_event(raw: bytes | msgspec.Raw) -> Event:
    """A rendered event (`{seq, type, ts, ...}`) as an `Event`. Raises `msgspec.DecodeError`
    only when it has no integer `seq` or string `type`; a body that does not fit its type's
    view gives `body=None`."""
    head = _head_decoder.decode(raw)
    entry = EVENT_TYPES.get(head.type)
    body: Any = None
    if entry is not None:
        try:
            body = entry.decoder.decode(raw)
        except msgspec.ValidationError:
            body = None
    return Event(head.seq, head.type, body)
