"""acpd's own socket/websocket API (CONTRACT.md): params, results and notifications.

Our own formats: params forbid unknown fields so a typo in a script is an error, not a no-op,
and carry their bounds as msgspec constraints, so a decoded params object is already valid.
`METHODS` maps each method to its params and result types; `params_decoder` hands out the
decoders built once at import (msgspec `perf-tips`).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.acp import McpServer
from protocol.events import ElicitationRequested, PermissionRequested
from protocol.limits import (
    MAX_ID,
    MAX_LIST_LIMIT,
    MAX_NAME,
    MAX_PATH,
    MAX_SEQ,
    MAX_TEXT,
    MAX_TITLE,
)

__all__ = [
    "CAUGHT_UP_METHOD",
    "DELTA_METHOD",
    "ENDED_METHOD",
    "EVENT_METHOD",
    "LAGGED_METHOD",
    "METHODS",
    "AgentInfo",
    "AgentsResult",
    "AnswerParams",
    "CaughtUpParams",
    "ConversationInfo",
    "ConversationResult",
    "CountResult",
    "CreateParams",
    "DeltaParams",
    "EditParams",
    "EmptyResult",
    "EventParams",
    "EventsParams",
    "EventsResult",
    "IdParams",
    "InterruptParams",
    "InterruptResult",
    "LaggedParams",
    "ListParams",
    "ListResult",
    "MethodSpec",
    "MoveParams",
    "MoveResult",
    "NoParams",
    "PendingMessage",
    "PermitParams",
    "QueueResult",
    "RemoveParams",
    "ResumeResult",
    "SendParams",
    "SendResult",
    "SetModeParams",
    "SetOptionParams",
    "SlotsStatus",
    "StatusCounters",
    "StatusResult",
    "StreamedText",
    "SubscribeParams",
    "SubscribeResult",
    "params_decoder",
]

EVENT_METHOD: Final = "conversation/event"
DELTA_METHOD: Final = "conversation/delta"
LAGGED_METHOD: Final = "conversation/lagged"
CAUGHT_UP_METHOD: Final = "conversation/caught_up"
ENDED_METHOD: Final = "conversation/ended"

# Ids are short (store-generated); titles and names are for people.
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
_Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
_Path = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PATH)]
_Word = Annotated[str, msgspec.Meta(max_length=MAX_PATH)]  # of an agent command


class ConversationInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    # The shortest prefix of `id` no other conversation shares (at least 4 characters), as of
    # this reply: it can only grow as conversations are added.
    short_id: str
    title: str
    agent: str
    cwd: str
    status: str  # idle | waiting | starting | running | paused | failed
    created_at: str  # RFC 3339 UTC
    updated_at: str
    last_seq: int
    queued: int
    live: bool
    # Requests from the agent waiting for a person's answer (permission requests and
    # questions): what the dashboard counts in its title and notifies about.
    open_requests: int = 0
    # While `starting` after recent crashes: when the next start begins (RFC 3339 UTC).
    retry_at: str | None = None
    # Those requests themselves, oldest first, as their `permission_requested` events showed
    # them (`acpd show`, `acpd permit`). Only a running agent asks: without one, none.
    permissions: list[PermissionRequested] = msgspec.field(default_factory=list)
    # Likewise the agent's open questions (`elicitation_requested`): `acpd show`, `acpd answer`.
    questions: list[ElicitationRequested] = msgspec.field(default_factory=list)
    # The agent session's current state as the agent last said it (null until it does):
    # `{current, available: [{id, name, description?}]}`, ACP's config options, `[{name,
    # description, input_hint?}]`, `{used?, size?, cost?: {amount, currency}}`.
    modes: msgspec.Raw | None = None
    config_options: msgspec.Raw | None = None
    commands: msgspec.Raw | None = None
    usage: msgspec.Raw | None = None
    # Where the agent's stderr goes (a file in the data dir; it may not exist yet).
    agent_log: str | None = None
    # While `waiting` (no agent slot free): its place in line, 1 first.
    slot_position: int | None = None


# --- notifications on a subscription -----------------------------------------------------------


class EventParams(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    event: msgspec.Raw  # `{seq, type, ts, ...}`, rendered once by the engine


class DeltaParams(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    prompt_seq: int
    kind: str  # message | thought | tool
    text: str


class LaggedParams(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    last_seq: int


class StreamedText(msgspec.Struct, frozen=True, kw_only=True):
    prompt_seq: int
    kind: str  # message | thought
    text: str


class CaughtUpParams(msgspec.Struct, frozen=True, kw_only=True):
    """Sent once, after a subscription's replay and before its first live line, when the
    subscriber asked for it (`caught_up: true`).

    `streamed` is the text of the running turn's open messages that `conversation/delta`s
    carried before the subscription began and that no stored event holds yet: the stored
    `agent_message` (or `agent_thought`) that closes each will repeat it whole.
    """

    id: str
    through_seq: int
    streamed: list[StreamedText]


# --- params ----------------------------------------------------------------------------------


class _Params(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base for every method's params."""


class NoParams(_Params, frozen=True):
    """`daemon/status`, `agents/list`, `conversations/count`: nothing (or `{}`)."""


class IdParams(_Params, frozen=True):
    """Any method addressing one conversation; `id` may be a unique prefix."""

    id: _Id


class CreateParams(_Params, frozen=True):
    agent: _Name | None = None
    agent_cmd: (
        Annotated[
            list[Annotated[str, msgspec.Meta(max_length=MAX_PATH)]], msgspec.Meta(min_length=1)
        ]
        | None
    ) = None
    cwd: _Path | None = None
    title: Annotated[str, msgspec.Meta(max_length=MAX_TITLE)] | None = None
    # ACP `McpServer` objects for this conversation's sessions, besides its agent's own from
    # config (an ACP client's `session/new` brings them).
    mcp_servers: Annotated[list[McpServer], msgspec.Meta(max_length=64)] | None = None

    def __post_init__(self) -> None:  # ValueError here becomes msgspec's ValidationError
        if self.agent is not None and self.agent_cmd is not None:
            raise ValueError("give `agent` or `agent_cmd`, not both")
        if self.agent_cmd is not None and not self.agent_cmd[0]:
            raise ValueError("`agent_cmd[0]` must not be empty")
        if self.cwd is not None and not os.path.isabs(self.cwd):
            raise ValueError("`cwd` must be an absolute path")


class ListParams(_Params, frozen=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)] = 50
    before: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None
    cwd: _Path | None = None  # only conversations in exactly this directory

    def __post_init__(self) -> None:
        if self.cwd is not None and not os.path.isabs(self.cwd):
            raise ValueError("`cwd` must be an absolute path")


class EventsParams(IdParams, frozen=True):
    after_seq: _Seq = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)] = 500


class SubscribeParams(IdParams, frozen=True):
    after_seq: _Seq = 0
    deltas: bool = True
    # Also replay the running turn: the replay starts at the message it prompts, if that is
    # earlier than `after_seq` (a client attaching mid-turn learns its open requests).
    from_turn: bool = False
    # After the replay, one `conversation/caught_up` notification (see CaughtUpParams); and if
    # the daemon ends the subscription (other than for lag: the conversation was deleted or
    # its supervisor stopped), `conversation/ended {id, last_seq}` (LaggedParams' shape):
    # subscribe again from `last_seq` to go on, and -32001 then means it is gone.
    caught_up: bool = False


_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
_MessageSeq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]


class SendParams(IdParams, frozen=True):
    text: _Text
    run: bool = True
    interrupt: bool = False
    # Into the running turn if the agent can take it, else first in line (CONTRACT.md).
    steer: bool = False

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("`text` must not be blank")
        if self.steer and self.interrupt:
            raise ValueError("give `steer` or `interrupt`, not both")
        if self.steer and not self.run:
            raise ValueError("a steer is for now: `run: false` does not go with `steer`")


class RemoveParams(IdParams, frozen=True):
    seq: _MessageSeq


class EditParams(IdParams, frozen=True):
    seq: _MessageSeq
    text: _Text

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("`text` must not be blank")


class MoveParams(IdParams, frozen=True):
    seq: _MessageSeq
    before: _MessageSeq | None = None  # None: first in line; `seq` itself: -32602


class SetModeParams(IdParams, frozen=True):
    """`conversations/set_mode`: one of the modes the agent lists."""

    mode: _Name


class SetOptionParams(IdParams, frozen=True):
    """`conversations/set_option`: a config option's new value (a select's value id, or a
    boolean for a switch)."""

    option: _Name
    value: _Name | bool


class InterruptParams(IdParams, frozen=True):
    # Only if the running turn is this message's: a client cancelling its own prompt must
    # not stop the next one, should its turn have ended meanwhile.
    prompt_seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)] | None = None


class AnswerParams(IdParams, frozen=True):
    """`elicitations/respond`: a person's answer to one of the agent's questions."""

    request: _Name
    action: Literal["accept", "decline", "cancel"]
    # With `accept`: the form's fields (string, number, boolean, or a list of strings).
    content: dict[_Name, str | int | float | bool | list[str]] | None = None


class PermitParams(IdParams, frozen=True):
    request: _Name
    option: _Name | None = None
    cancelled: bool = False

    def __post_init__(self) -> None:
        if (self.option is None) != self.cancelled:
            raise ValueError("give exactly one of `option` or `cancelled: true`")


# --- results ---------------------------------------------------------------------------------


class EmptyResult(msgspec.Struct, frozen=True):
    """`{}`"""


class StatusResult(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    pid: int
    uptime_s: float
    data_dir: str
    conversations_stored: int  # -1 when the store cannot be read
    conversations_live: int
    agents_running: int
    # The dashboard page as bound (`http://127.0.0.1:7421/`), without its token; null when
    # the daemon serves none. `acpd dashboard` adds the token from the data dir.
    dashboard_url: str | None = None
    counters: StatusCounters | None = None
    # The unix socket it serves (as bound, or as systemd passed it); null if unknown.
    socket: str | None = None
    # "ok", or why writes are refused: "disk full", "I/O error", "read-only", or "deleted or
    # replaced" (the database file); then `storage_error` is the message clients get.
    storage: str = "ok"
    storage_error: str | None = None
    slots: SlotsStatus | None = None
    # Resident memory of every agent's whole process group, in bytes (at most ~1 s old).
    agents_rss: int | None = None


class SlotsStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Agent slots: `max_agents` agent processes at most."""

    used: int  # agents starting, running or being stopped
    max: int
    waiting: int  # conversations in line for a slot
    # Start-ups under way (spawn to session set up), `max_starting`, and start-ups holding a
    # slot in line for their turn to start (shown `starting` too).
    starting: int = 0
    max_starting: int = 0
    starts_waiting: int = 0


class StatusCounters(msgspec.Struct, frozen=True, kw_only=True):
    """Since start-up: what went by, for someone looking into a problem."""

    requests: int  # API messages handled, over every connection
    request_errors: int  # error replies, malformed input included
    hydrations: int  # conversation supervisors started
    updates_dropped: int  # agent updates outside their turn (a load's replay, stragglers)
    subscribers_lagged: int  # subscriptions dropped for falling behind
    writes_refused: int = 0  # by storage (disk full, ...): each one a -32005 or a retry
    log_records_dropped: int = 0  # the log file could not take them (its disk full, say)


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    command: list[str]


class AgentsResult(msgspec.Struct, frozen=True, kw_only=True):
    agents: list[AgentInfo]


class ConversationResult(msgspec.Struct, frozen=True, kw_only=True):
    conversation: ConversationInfo


class ListResult(msgspec.Struct, frozen=True, kw_only=True):
    conversations: list[ConversationInfo]
    total: int
    next: str | None


class CountResult(msgspec.Struct, frozen=True, kw_only=True):
    count: int


class EventsResult(msgspec.Struct, frozen=True, kw_only=True):
    events: list[msgspec.Raw]  # each `{seq, type, ts, ...}`
    last_seq: int


class SubscribeResult(msgspec.Struct, frozen=True, kw_only=True):
    through_seq: int


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    queued: int  # turns that run before this message's, the running one included
    number: int  # the message's number for people (1, 2, 3…; `UserMessage.number`)
    # This send lifted a pause (or `failed`): the messages queued before it run first, in order.
    resumed: bool = False
    # Steers only: whether the agent took it into the running turn (else it is first in line).
    steered: bool | msgspec.UnsetType = msgspec.UNSET


class PendingMessage(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    text: str
    number: int


class ResumeResult(msgspec.Struct, frozen=True, kw_only=True):
    resumed: bool  # it was paused or failed (false: it was running its queue already)
    queued: int  # messages waiting, now to run in order


class QueueResult(msgspec.Struct, frozen=True, kw_only=True):
    pending: list[PendingMessage]


class MoveResult(msgspec.Struct, frozen=True, kw_only=True):
    order: list[int]  # the queue's seqs, first in line first


class InterruptResult(msgspec.Struct, frozen=True, kw_only=True):
    interrupted: bool


# --- the method table ------------------------------------------------------------------------


class MethodSpec(msgspec.Struct, frozen=True):
    params: type[_Params]
    result: type[msgspec.Struct]


METHODS: Final[dict[str, MethodSpec]] = {
    "daemon/status": MethodSpec(NoParams, StatusResult),
    "agents/list": MethodSpec(NoParams, AgentsResult),
    "conversations/create": MethodSpec(CreateParams, ConversationResult),
    "conversations/list": MethodSpec(ListParams, ListResult),
    "conversations/count": MethodSpec(NoParams, CountResult),
    "conversations/get": MethodSpec(IdParams, ConversationResult),
    "conversations/delete": MethodSpec(IdParams, EmptyResult),
    "conversations/events": MethodSpec(EventsParams, EventsResult),
    "conversations/subscribe": MethodSpec(SubscribeParams, SubscribeResult),
    # Extension: end this connection's subscriptions to a conversation.
    "conversations/unsubscribe": MethodSpec(IdParams, EmptyResult),
    "messages/send": MethodSpec(SendParams, SendResult),
    "messages/queue": MethodSpec(IdParams, QueueResult),
    "messages/remove": MethodSpec(RemoveParams, EmptyResult),
    "messages/edit": MethodSpec(EditParams, EmptyResult),
    "messages/move": MethodSpec(MoveParams, MoveResult),
    "turns/interrupt": MethodSpec(InterruptParams, InterruptResult),
    "conversations/resume": MethodSpec(IdParams, ResumeResult),
    "permissions/respond": MethodSpec(PermitParams, EmptyResult),
    "elicitations/respond": MethodSpec(AnswerParams, EmptyResult),
    "conversations/set_mode": MethodSpec(SetModeParams, ConversationResult),
    "conversations/set_option": MethodSpec(SetOptionParams, ConversationResult),
}

# Each made on the method's first call: building all of them (msgspec works out every params
# type, `conversations/create`'s ACP MCP server types among them) would cost the daemon a few ms
# before it is ready. At most one per method.
_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {}


def params_decoder(method: str) -> msgspec.json.Decoder[Any] | None:
    """The params decoder for `method`, or None if there is no such method."""
    decoder = _DECODERS.get(method)
    if decoder is None and (spec := METHODS.get(method)) is not None:
        decoder = _DECODERS[method] = msgspec.json.Decoder(spec.params)
    return decoder
