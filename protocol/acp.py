"""ACP (Agent Client Protocol) version 1 types: what a client sends and what it handles.

Checked against the official JSON Schema (npm `@agentclientprotocol/sdk@2.4.0`,
`schema/v1/schema.json`, a copy lives in `tests/protocol/schema/`); Structs are named after
the schema's `$defs` where the two can match.

Conventions (STYLE.md §6): snake_case here, camelCase on the wire via `rename="camel"`;
discriminator values are snake_case; `_meta` maps to `meta`.

Tolerance (ACP.md §18):
* Incoming types never forbid unknown fields, so newer agents can add members.
* Optional members are `T | None | UnsetType`: the schema allows `null` for almost all of them,
  and keeping `None` apart from `UNSET` re-encodes what the peer sent.
* Open-ended enums (tool kind/status, stop reason, severity, ...) are plain `str`: an agent
  inventing a value must not fail a whole update or turn.
* No `omit_defaults` (but see `ToolCall`): every field with a non-UNSET default is one the
  schema requires or defaults to the same value, so emitting it keeps our output
  schema-valid (e.g. `args`/`env` of a stdio MCP server are required). Absent optional
  members are UNSET and always omitted.
* `gc=False`: decoded wire data cannot form reference cycles, and skipping GC tracking makes
  allocation measurably cheaper on the `session/update` hot path (msgspec perf tips).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from protocol.jsonrpc import NO_RAW

PROTOCOL_VERSION: Final = 1


class Wire(msgspec.Struct, rename="camel", kw_only=True, frozen=True, gc=False):
    """Base for ACP payloads."""


Meta = dict[str, Any]
# Capability markers are objects: present (even `{}`) means supported, absent or null not.
Marker = dict[str, Any]


def _meta() -> Any:
    return msgspec.field(default=UNSET, name="_meta")


def supported(marker: Marker | None | UnsetType) -> bool:
    """Whether an object capability marker advertises support."""
    return isinstance(marker, dict)


# --- content blocks -------------------------------------------------------------------------


class Annotations(Wire, kw_only=True, frozen=True):
    audience: list[str] | None | UnsetType = UNSET
    priority: float | None | UnsetType = UNSET
    last_modified: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class TextContent(Wire, tag_field="type", tag="text", kw_only=True, frozen=True):
    text: str
    annotations: Annotations | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ImageContent(Wire, tag_field="type", tag="image", kw_only=True, frozen=True):
    data: str
    mime_type: str
    uri: str | None | UnsetType = UNSET
    annotations: Annotations | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class AudioContent(Wire, tag_field="type", tag="audio", kw_only=True, frozen=True):
    data: str
    mime_type: str
    annotations: Annotations | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ResourceLink(Wire, tag_field="type", tag="resource_link", kw_only=True, frozen=True):
    uri: str
    name: str
    mime_type: str | None | UnsetType = UNSET
    title: str | None | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    size: int | None | UnsetType = UNSET
    annotations: Annotations | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ResourceContents(Wire, kw_only=True, frozen=True):
    """The schema's `TextResourceContents | BlobResourceContents` as one Struct.

    The two shapes differ only in `text` vs `blob` and carry no tag, and msgspec cannot
    decode an untagged union of Structs, so exactly one of the two must be set.
    """

    uri: str
    text: str | UnsetType = UNSET
    blob: str | UnsetType = UNSET
    mime_type: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()

    def __post_init__(self) -> None:
        if (self.text is UNSET) == (self.blob is UNSET):
            raise ValueError("resource contents need exactly one of `text` and `blob`")


def TextResourceContents(  # named like the schema type it builds
    *, uri: str, text: str, mime_type: str | None | UnsetType = UNSET
) -> ResourceContents:
    return ResourceContents(uri=uri, text=text, mime_type=mime_type)


def BlobResourceContents(
    *, uri: str, blob: str, mime_type: str | None | UnsetType = UNSET
) -> ResourceContents:
    return ResourceContents(uri=uri, blob=blob, mime_type=mime_type)


class EmbeddedResource(Wire, tag_field="type", tag="resource", kw_only=True, frozen=True):
    resource: ResourceContents
    annotations: Annotations | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


ContentBlock = TextContent | ImageContent | AudioContent | ResourceLink | EmbeddedResource

CONTENT_BLOCK_TAGS: Final = frozenset(t.__struct_config__.tag for t in ContentBlock.__args__)


def content_text(block: ContentBlock) -> str:
    """Best-effort plain text of a content block, for logs, titles and the CLI."""
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ResourceLink):
        return f"[{block.name}]({block.uri})"
    if isinstance(block, EmbeddedResource):
        res = block.resource
        return res.text if isinstance(res.text, str) else f"<resource {res.uri}>"
    return "<image>" if isinstance(block, ImageContent) else "<audio>"


# --- initialize -----------------------------------------------------------------------------


class FileSystemCapability(Wire, kw_only=True, frozen=True):
    """The schema's `FileSystemCapabilities`."""

    read_text_file: bool = False
    write_text_file: bool = False
    meta: Meta | None | UnsetType = _meta()


class SessionConfigOptionsCapabilities(Wire, kw_only=True, frozen=True):
    boolean: Marker | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ClientSessionCapabilities(Wire, kw_only=True, frozen=True):
    config_options: SessionConfigOptionsCapabilities | None | UnsetType = UNSET
    # Gates for the `notice` and `compaction_*` session updates (SDK 2.4.0 schema).
    notices: Marker | None | UnsetType = UNSET
    compaction: Marker | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class AuthCapabilities(Wire, kw_only=True, frozen=True):
    terminal: bool = False
    meta: Meta | None | UnsetType = _meta()


class ElicitationCapabilities(Wire, kw_only=True, frozen=True):
    # A mode is supported only if its key is present and non-null, so `{}` advertises nothing.
    form: Marker | None | UnsetType = UNSET
    url: Marker | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ClientCapabilities(Wire, kw_only=True, frozen=True):
    fs: FileSystemCapability | UnsetType = UNSET
    terminal: bool = False
    session: ClientSessionCapabilities | None | UnsetType = UNSET
    auth: AuthCapabilities | UnsetType = UNSET
    elicitation: ElicitationCapabilities | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class Implementation(Wire, kw_only=True, frozen=True):
    name: str
    version: str
    title: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class InitializeRequest(Wire, kw_only=True, frozen=True):
    protocol_version: int
    client_capabilities: ClientCapabilities = msgspec.field(default_factory=ClientCapabilities)
    client_info: Implementation | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class PromptCapabilities(Wire, kw_only=True, frozen=True):
    image: bool = False
    audio: bool = False
    embedded_context: bool = False
    meta: Meta | None | UnsetType = _meta()


class McpCapabilities(Wire, kw_only=True, frozen=True):
    http: bool = False
    sse: bool = False
    meta: Meta | None | UnsetType = _meta()


class SessionCapabilities(Wire, kw_only=True, frozen=True):
    # Careful: the field named `list` shadows the builtin for annotations below it in this
    # class body, so no `list[...]` here.
    list: Marker | None | UnsetType = UNSET
    delete: Marker | None | UnsetType = UNSET
    resume: Marker | None | UnsetType = UNSET
    close: Marker | None | UnsetType = UNSET
    additional_directories: Marker | None | UnsetType = UNSET
    # The "session steering" RFD's capability (not in the v1 schema): see `steering_advertised`.
    steering: Marker | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class AgentAuthCapabilities(Wire, kw_only=True, frozen=True):
    logout: Marker | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class AgentCapabilities(Wire, kw_only=True, frozen=True):
    load_session: bool = False
    prompt_capabilities: PromptCapabilities = msgspec.field(default_factory=PromptCapabilities)
    mcp_capabilities: McpCapabilities = msgspec.field(default_factory=McpCapabilities)
    session_capabilities: SessionCapabilities = msgspec.field(default_factory=SessionCapabilities)
    auth: AgentAuthCapabilities = msgspec.field(default_factory=AgentAuthCapabilities)
    meta: Meta | None | UnsetType = _meta()


class AuthMethod(Wire, kw_only=True, frozen=True):
    """An `authMethods[]` entry. One flat Struct for every `type`, since `agent` has no tag.

    `type` absent means `agent`; `terminal` adds `args`/`env`; the legacy `env_var` (removed
    from the schema, still sent by codex-acp 0.16.0) adds `vars`. Unknown types are opaque.
    """

    id: str
    name: str = ""  # required by the schema; tolerated if missing
    description: str | None | UnsetType = UNSET
    type: str | UnsetType = UNSET
    args: list[str] | None | UnsetType = UNSET
    env: dict[str, str] | None | UnsetType = UNSET
    vars: list[dict[str, Any]] | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()

    @property
    def kind(self) -> str:
        return self.type if isinstance(self.type, str) else "agent"


class InitializeResponse(Wire, kw_only=True, frozen=True):
    protocol_version: int
    agent_capabilities: AgentCapabilities = msgspec.field(default_factory=AgentCapabilities)
    auth_methods: list[AuthMethod] = msgspec.field(default_factory=list)
    agent_info: Implementation | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class AuthenticateRequest(Wire, kw_only=True, frozen=True):
    method_id: str
    meta: Meta | None | UnsetType = _meta()


class LogoutRequest(Wire, kw_only=True, frozen=True):
    meta: Meta | None | UnsetType = _meta()


class EmptyResult(Wire, kw_only=True, frozen=True):
    """The `{}` results. A `null` result is accepted too (`jsonrpc.decode_result`)."""

    meta: Meta | None | UnsetType = _meta()


AuthenticateResponse = EmptyResult
LogoutResponse = EmptyResult
CloseSessionResponse = EmptyResult
DeleteSessionResponse = EmptyResult
SetSessionModeResponse = EmptyResult
WriteTextFileResponse = EmptyResult
KillTerminalResponse = EmptyResult
ReleaseTerminalResponse = EmptyResult


# --- session setup --------------------------------------------------------------------------


class EnvVariable(Wire, kw_only=True, frozen=True):
    name: str
    value: str
    meta: Meta | None | UnsetType = _meta()


class HttpHeader(Wire, kw_only=True, frozen=True):
    name: str
    value: str
    meta: Meta | None | UnsetType = _meta()


class McpServer(Wire, kw_only=True, frozen=True):
    """Any `mcpServers[]` entry: stdio has no `type`, so there is no tag to dispatch on.

    Decoding gives this flat Struct; build outgoing entries with the subclasses below, whose
    required fields follow the schema's per-transport shapes.
    """

    name: str
    type: str | UnsetType = UNSET  # "http" | "sse"; absent for stdio
    command: str | UnsetType = UNSET
    args: list[str] | UnsetType = UNSET
    env: list[EnvVariable] | UnsetType = UNSET
    url: str | UnsetType = UNSET
    headers: list[HttpHeader] | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class McpServerStdio(McpServer, kw_only=True, frozen=True):
    command: str
    args: list[str] = msgspec.field(default_factory=list)
    env: list[EnvVariable] = msgspec.field(default_factory=list)


class McpServerHttp(McpServer, kw_only=True, frozen=True):
    """Only if the agent advertised `mcpCapabilities.http`."""

    type: str = "http"
    url: str
    headers: list[HttpHeader] = msgspec.field(default_factory=list)


class McpServerSse(McpServer, kw_only=True, frozen=True):
    """Only if the agent advertised `mcpCapabilities.sse` (deprecated transport)."""

    type: str = "sse"
    url: str
    headers: list[HttpHeader] = msgspec.field(default_factory=list)


class NewSessionRequest(Wire, kw_only=True, frozen=True):
    cwd: str
    # Required in v1 even when empty (ACP.md §5), so no default.
    mcp_servers: list[McpServer]
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class SessionMode(Wire, kw_only=True, frozen=True):
    id: str
    name: str
    description: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class SessionModeState(Wire, kw_only=True, frozen=True):
    current_mode_id: str
    available_modes: list[SessionMode] = msgspec.field(default_factory=list)
    meta: Meta | None | UnsetType = _meta()


# Config options stay plain objects on the wire: clients must ignore options of an unknown
# `type` rather than fail the whole response (ACP.md §14). `parse_config_options` types them.
ConfigOptions = list[dict[str, Any]]


class NewSessionResponse(Wire, kw_only=True, frozen=True):
    session_id: str
    modes: SessionModeState | None | UnsetType = UNSET
    config_options: ConfigOptions | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class LoadSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    cwd: str
    mcp_servers: list[McpServer]
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class LoadSessionResponse(Wire, kw_only=True, frozen=True):
    """The docs show a `null` result, the schema an object: `decode_result` maps null here."""

    modes: SessionModeState | None | UnsetType = UNSET
    config_options: ConfigOptions | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ResumeSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    cwd: str
    mcp_servers: list[McpServer] | UnsetType = UNSET  # optional here, unlike new/load
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ResumeSessionResponse(Wire, kw_only=True, frozen=True):
    modes: SessionModeState | None | UnsetType = UNSET
    config_options: ConfigOptions | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class CloseSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    meta: Meta | None | UnsetType = _meta()


class DeleteSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    meta: Meta | None | UnsetType = _meta()


class ListSessionsRequest(Wire, kw_only=True, frozen=True):
    cwd: str | None | UnsetType = UNSET
    cursor: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class SessionInfo(Wire, kw_only=True, frozen=True):
    session_id: str
    cwd: str
    title: str | None | UnsetType = UNSET
    updated_at: str | None | UnsetType = UNSET
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ListSessionsResponse(Wire, kw_only=True, frozen=True):
    sessions: list[SessionInfo]
    next_cursor: str | None | UnsetType = UNSET  # opaque; absent means the end
    meta: Meta | None | UnsetType = _meta()


class SetSessionModeRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    mode_id: str
    meta: Meta | None | UnsetType = _meta()


class SetSessionConfigOptionRequest(Wire, kw_only=True, frozen=True):
    """`value` is a value id (select) or a bool; booleans also send `type: "boolean"`."""

    session_id: str
    config_id: str
    value: bool | str
    type: str | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()

    @classmethod
    def boolean(cls, session_id: str, config_id: str, value: bool) -> SetSessionConfigOptionRequest:
        return cls(session_id=session_id, config_id=config_id, value=value, type="boolean")


class SetSessionConfigOptionResponse(Wire, kw_only=True, frozen=True):
    config_options: ConfigOptions  # the complete state
    meta: Meta | None | UnsetType = _meta()


# Typed config options, for callers that want them (see `ConfigOptions`).


class SessionConfigSelectOption(Wire, kw_only=True, frozen=True):
    value: str
    name: str
    description: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class SessionConfigSelectEntry(Wire, kw_only=True, frozen=True):
    """A select's `options[]` item: an option (`value`) or a group of them (`group`).

    The schema's ungrouped and grouped lists are both arrays of untagged objects, which a
    msgspec union cannot tell apart, so one Struct holds either shape.
    """

    name: str
    value: str | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    group: str | UnsetType = UNSET
    options: list[SessionConfigSelectOption] | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class SessionConfigSelect(Wire, tag_field="type", tag="select", kw_only=True, frozen=True):
    id: str
    name: str
    current_value: str
    options: list[SessionConfigSelectEntry]
    description: str | None | UnsetType = UNSET
    category: str | None | UnsetType = UNSET  # mode, model, model_config, thought_level, _x
    meta: Meta | None | UnsetType = _meta()


class SessionConfigBoolean(Wire, tag_field="type", tag="boolean", kw_only=True, frozen=True):
    id: str
    name: str
    current_value: bool
    description: str | None | UnsetType = UNSET
    category: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


SessionConfigOption = SessionConfigSelect | SessionConfigBoolean


def parse_config_options(options: ConfigOptions) -> list[SessionConfigOption]:
    """Type the options we understand, skipping unknown types and malformed items, in order."""
    out: list[SessionConfigOption] = []
    for item in options:
        try:
            out.append(msgspec.convert(item, SessionConfigOption))
        except msgspec.ValidationError:
            continue
    return out


# --- prompt turn ----------------------------------------------------------------------------


class PromptRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    prompt: list[ContentBlock]
    meta: Meta | None | UnsetType = _meta()


STOP_REASONS: Final = frozenset(
    {"end_turn", "max_tokens", "max_turn_requests", "refusal", "cancelled"}
)


class PromptResponse(Wire, kw_only=True, frozen=True):
    # A plain str, not a Literal: an agent inventing a reason must not fail the whole turn.
    stop_reason: str
    meta: Meta | None | UnsetType = _meta()


# --- steering (a vendor extension: claude-agent-acp, codex-acp; ACP.md §20) -----------------


class SteeringRequest(Wire, kw_only=True, frozen=True):
    """`_session/steering` params: `prompt` joins the turn that runs. Send it with
    `meta=STEERING_PROMPT_REQUIRED`, so an agent with no turn running does nothing."""

    session_id: str
    prompt: list[ContentBlock]
    meta: Meta | None | UnsetType = _meta()


class SteeringResponse(Wire, kw_only=True, frozen=True):
    # "injected" | "promptRequired" | "startedNewTurn" | anything an agent invents: a str.
    outcome: str = ""
    reason: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


# Nothing running: do nothing and answer `promptRequired` (agents that know this option).
STEERING_PROMPT_REQUIRED: Final[Meta] = {"steering": {"idleBehavior": "promptRequired"}}
STEERING_NOT_TAKEN: Final = "promptRequired"  # the one outcome after which the text is ours


def steering_advertised(init: InitializeResponse) -> bool:
    """Whether an agent advertised `_session/steering`: `_meta.steering.supported: true` in
    its initialize result (codex-acp, claude-agent-acp) or in its `agentCapabilities`, or the
    RFD's `sessionCapabilities.steering` marker. Never probe: codex-acp answers any unknown
    method with a bare `{}`, which would read as delivered."""
    caps = init.agent_capabilities
    for meta in (init.meta, caps.meta):
        steering = meta.get("steering") if isinstance(meta, dict) else None
        if isinstance(steering, dict) and steering.get("supported") is True:
            return True
    return supported(caps.session_capabilities.steering)


class CancelNotification(Wire, kw_only=True, frozen=True):
    """`session/cancel` params (a notification, never a request)."""

    session_id: str
    meta: Meta | None | UnsetType = _meta()


class CancelRequestNotification(Wire, kw_only=True, frozen=True):
    """`$/cancel_request` params: either side asks that one of its requests be cancelled."""

    request_id: int | str | None
    meta: Meta | None | UnsetType = _meta()


# --- session/update -------------------------------------------------------------------------


class _Update(Wire, tag_field="sessionUpdate", kw_only=True, frozen=True):
    meta: Meta | None | UnsetType = _meta()


class UserMessageChunk(_Update, tag="user_message_chunk", kw_only=True, frozen=True):
    content: ContentBlock
    message_id: str | None | UnsetType = UNSET


class AgentMessageChunk(_Update, tag="agent_message_chunk", kw_only=True, frozen=True):
    content: ContentBlock
    message_id: str | None | UnsetType = UNSET


class AgentThoughtChunk(_Update, tag="agent_thought_chunk", kw_only=True, frozen=True):
    content: ContentBlock
    message_id: str | None | UnsetType = UNSET


class Content(Wire, tag_field="type", tag="content", kw_only=True, frozen=True):
    """Tool call content: a content block."""

    content: ContentBlock
    meta: Meta | None | UnsetType = _meta()


class Diff(Wire, tag_field="type", tag="diff", kw_only=True, frozen=True):
    """Tool call content: a file edit. No `old_text` means a new file."""

    path: str
    new_text: str
    old_text: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class Terminal(Wire, tag_field="type", tag="terminal", kw_only=True, frozen=True):
    """Tool call content: a terminal created with `terminal/create`, shown live."""

    terminal_id: str
    meta: Meta | None | UnsetType = _meta()


ToolCallContent = Content | Diff | Terminal

TOOL_CALL_CONTENT_TAGS: Final = frozenset(t.__struct_config__.tag for t in ToolCallContent.__args__)


class ToolCallLocation(Wire, kw_only=True, frozen=True):
    path: str
    line: int | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


# `raw_input`/`raw_output` are the tool's own JSON, opaque to a client: kept as `msgspec.Raw`
# (the peer's bytes verbatim, decode on demand) so relaying them neither builds nor re-escapes
# objects, which can be whole files (measured: -13% on a 2 KB tool_call_update round trip).
# Verbatim is safe on one NDJSON line: a line holds no newline, so neither does the Raw. An
# empty Raw means absent, hence omit_defaults on these two classes (no other defaults here).
class ToolCall(_Update, tag="tool_call", kw_only=True, frozen=True, omit_defaults=True):
    tool_call_id: str
    title: str
    # Enums as str (see module doc); `null` tolerated as the schema's default-on-error says.
    kind: str | None | UnsetType = UNSET
    status: str | None | UnsetType = UNSET
    content: list[ToolCallContent] | None | UnsetType = UNSET
    locations: list[ToolCallLocation] | None | UnsetType = UNSET
    raw_input: msgspec.Raw = NO_RAW
    raw_output: msgspec.Raw = NO_RAW
    name: str | None | UnsetType = UNSET  # the tool's program name (SDK 2.4.0 schema)


class ToolCallFields(Wire, kw_only=True, frozen=True, omit_defaults=True):
    """The schema's `ToolCallUpdate` object: a partial tool call, only `tool_call_id` set for
    sure. Present fields replace the old ones (`content`, `locations` whole arrays).

    Tagged, it is the `tool_call_update` update; bare, the `toolCall` of a permission request.
    """

    tool_call_id: str
    title: str | None | UnsetType = UNSET
    kind: str | None | UnsetType = UNSET
    status: str | None | UnsetType = UNSET
    content: list[ToolCallContent] | None | UnsetType = UNSET
    locations: list[ToolCallLocation] | None | UnsetType = UNSET
    raw_input: msgspec.Raw = NO_RAW
    raw_output: msgspec.Raw = NO_RAW
    name: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ToolCallUpdate(
    ToolCallFields, tag_field="sessionUpdate", tag="tool_call_update", kw_only=True, frozen=True
):
    pass


class PlanEntry(Wire, kw_only=True, frozen=True):
    content: str
    # Required by the schema; defaults only tolerate agents that leave them out.
    priority: str = "medium"  # high | medium | low
    status: str = "pending"  # pending | in_progress | completed
    meta: Meta | None | UnsetType = _meta()


class Plan(_Update, tag="plan", kw_only=True, frozen=True):
    """Replaces the whole plan."""

    entries: list[PlanEntry]


class AvailableCommandInput(Wire, kw_only=True, frozen=True):
    hint: str
    meta: Meta | None | UnsetType = _meta()


class AvailableCommand(Wire, kw_only=True, frozen=True):
    name: str
    description: str = ""  # required by the schema; tolerated if missing
    input: AvailableCommandInput | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class AvailableCommandsUpdate(_Update, tag="available_commands_update", kw_only=True, frozen=True):
    available_commands: list[AvailableCommand]


class CurrentModeUpdate(_Update, tag="current_mode_update", kw_only=True, frozen=True):
    # The schema says `currentModeId`, the docs' example `modeId` (ACP.md §18.2): either is
    # accepted and normalised to `current_mode_id`, so it re-encodes in the schema's spelling.
    current_mode_id: str | UnsetType = UNSET
    mode_id: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.current_mode_id is UNSET:
            if self.mode_id is UNSET:
                raise ValueError("current_mode_update needs `currentModeId` (or `modeId`)")
            msgspec.structs.force_setattr(self, "current_mode_id", self.mode_id)
        if self.mode_id is not UNSET:
            msgspec.structs.force_setattr(self, "mode_id", UNSET)

    @property
    def mode(self) -> str:
        assert isinstance(self.current_mode_id, str)  # see __post_init__
        return self.current_mode_id


class ConfigOptionUpdate(_Update, tag="config_option_update", kw_only=True, frozen=True):
    config_options: ConfigOptions  # the complete state


class SessionInfoUpdate(_Update, tag="session_info_update", kw_only=True, frozen=True):
    # Patch semantics: UNSET leaves a field unchanged, None clears it.
    title: str | None | UnsetType = UNSET
    updated_at: str | None | UnsetType = UNSET


class Cost(Wire, kw_only=True, frozen=True):
    amount: float
    currency: str
    meta: Meta | None | UnsetType = _meta()


class UsageUpdate(_Update, tag="usage_update", kw_only=True, frozen=True):
    used: int
    size: int
    cost: Cost | None | UnsetType = UNSET


class Notice(_Update, tag="notice", kw_only=True, frozen=True):
    severity: str  # info | warning | error | other
    title: str
    description: str | None | UnsetType = UNSET


class CompactionUpdate(_Update, tag="compaction_update", kw_only=True, frozen=True):
    compaction_id: str
    status: str  # in_progress | completed | failed | cancelled | other
    summary: list[ContentBlock] | None | UnsetType = UNSET
    error: str | None | UnsetType = UNSET


class CompactionSummaryChunk(_Update, tag="compaction_summary_chunk", kw_only=True, frozen=True):
    compaction_id: str
    content: ContentBlock


KnownUpdate = (
    UserMessageChunk
    | AgentMessageChunk
    | AgentThoughtChunk
    | ToolCall
    | ToolCallUpdate
    | Plan
    | AvailableCommandsUpdate
    | CurrentModeUpdate
    | ConfigOptionUpdate
    | SessionInfoUpdate
    | UsageUpdate
    | Notice
    | CompactionUpdate
    | CompactionSummaryChunk
)

KNOWN_UPDATE_TAGS: Final = frozenset(t.__struct_config__.tag for t in KnownUpdate.__args__)


class UnknownUpdate(msgspec.Struct, frozen=True):
    """A `session/update` acpd cannot type, passed through raw (ACP.md §10).

    Either the `sessionUpdate` tag is new, or the tag is known but a nested content block /
    tool call content item has a `type` acpd does not know. The latter is a deliberate,
    cheap choice: the update is kept whole and verbatim instead of failing (or losing the
    unknown item), and it costs nothing on the hot path because it is only looked for after
    the typed decode failed.
    """

    session_update: str
    raw: msgspec.Raw


SessionUpdate = KnownUpdate | UnknownUpdate


class SessionNotification(Wire, kw_only=True, frozen=True):
    session_id: str
    update: KnownUpdate
    meta: Meta | None | UnsetType = _meta()


class _RawSessionNotification(Wire, kw_only=True, frozen=True):
    session_id: str
    update: msgspec.Raw


class _UpdateTag(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    session_update: str = ""


# Just enough of a known update to find its nested discriminators once the typed decode failed.
class _ProbeItem(msgspec.Struct, frozen=True, gc=False):
    type: Any = None
    content: _ProbeItem | None = None  # a tool call `content` item wraps a content block


class _ProbeUpdate(msgspec.Struct, frozen=True, gc=False):
    content: _ProbeItem | list[_ProbeItem] | None = None
    summary: list[_ProbeItem] | None = None


_notification_decoder = msgspec.json.Decoder(SessionNotification)
_raw_notification_decoder = msgspec.json.Decoder(_RawSessionNotification)
_tag_decoder = msgspec.json.Decoder(_UpdateTag)
_probe_decoder = msgspec.json.Decoder(_ProbeUpdate)

_BLOCK_CHUNK_TAGS: Final = frozenset(
    {"user_message_chunk", "agent_message_chunk", "agent_thought_chunk", "compaction_summary_chunk"}
)


def _unknown_block(item: _ProbeItem | None) -> bool:
    # A `type` string we don't know. A missing or non-string one is just malformed.
    return item is not None and isinstance(item.type, str) and item.type not in CONTENT_BLOCK_TAGS


def _has_unknown_nested_type(tag: str, update: msgspec.Raw) -> bool:
    try:
        probe = _probe_decoder.decode(update)
    except (msgspec.ValidationError, UnicodeDecodeError):
        return False
    content = probe.content
    if tag in _BLOCK_CHUNK_TAGS:
        return isinstance(content, _ProbeItem) and _unknown_block(content)
    if tag in ("tool_call", "tool_call_update") and isinstance(content, list):
        return any(
            (isinstance(item.type, str) and item.type not in TOOL_CALL_CONTENT_TAGS)
            or (item.type == "content" and _unknown_block(item.content))
            for item in content
        )
    if tag == "compaction_update":
        return any(_unknown_block(block) for block in probe.summary or ())
    return False


def decode_session_notification(raw: bytes | msgspec.Raw) -> tuple[str, SessionUpdate]:
    """Decode `session/update` params into (session id, update).

    One typed pass on the hot path; only when it fails do we look at the tag, so an unknown
    variant (or a known one carrying an unknown content type) is passed through as
    `UnknownUpdate` instead of rejected. Raises `msgspec.DecodeError` (its subclass
    `ValidationError` included) for malformed params or a malformed known variant.
    """
    try:
        note = _notification_decoder.decode(raw)
    except msgspec.ValidationError:
        return _decode_loose(raw)
    except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 in a string
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
    except RecursionError:  # nesting past the interpreter's limit
        raise msgspec.DecodeError("nested too deeply") from None
    return note.session_id, note.update


def _decode_loose(raw: bytes | msgspec.Raw) -> tuple[str, SessionUpdate]:
    try:
        loose = _raw_notification_decoder.decode(raw)
        tag = _tag_decoder.decode(loose.update).session_update
        if tag and (tag not in KNOWN_UPDATE_TAGS or _has_unknown_nested_type(tag, loose.update)):
            return loose.session_id, UnknownUpdate(tag, loose.update)
        # A known variant that is malformed: report the typed decoder's error.
        _notification_decoder.decode(raw)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
    except RecursionError:
        raise msgspec.DecodeError("nested too deeply") from None
    raise AssertionError("unreachable: the typed decode failed before")  # pragma: no cover


class _UpdateLine(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    # A whole `session/update` notification line, for the one-pass fast path. Unknown fields
    # are forbidden here (only here) so that anything unusual, an `id` above all, which would
    # make it a request, goes to the general path.
    jsonrpc: Literal["2.0"]
    method: Literal["session/update"]
    params: SessionNotification


_update_line_decoder = msgspec.json.Decoder(_UpdateLine)


def decode_update_lines(lines: list[bytes]) -> list[SessionNotification] | None:
    """`decode_update_line` for a whole batch of lines (none holding a newline) in one pass:
    their notifications, in order, if every line is one; else None (the caller then goes line
    by line). Never raises. A blank line declines too: the count must match."""
    try:
        decoded = _update_line_decoder.decode_lines(b"\n".join(lines))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if len(decoded) != len(lines):
        return None
    return [d.params for d in decoded]


def decode_update_line(line: bytes | bytearray | memoryview) -> SessionNotification | None:
    """Fast path for the commonest line: a well-formed `session/update` notification of a
    known variant, decoded in one pass (no envelope, no second scan of a `Raw`).

    Returns None for anything else (other messages, unknown variants, malformed input): the
    caller then takes the general path (`jsonrpc.decode_envelope`, then
    `decode_session_notification`), which classifies it and reports errors. Never raises.
    No substring pre-check: measured, it cost more than it saved (a quote-heavy haystack).
    """
    try:
        return _update_line_decoder.decode(line).params
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


# --- agent -> client requests ---------------------------------------------------------------


class PermissionOption(Wire, kw_only=True, frozen=True):
    option_id: str
    name: str
    kind: str  # allow_once | allow_always | reject_once | reject_always: only a UI hint
    meta: Meta | None | UnsetType = _meta()


class RequestPermissionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    # The schema's `ToolCallUpdate`, kept as the plain object (wire names) the agent sent: a
    # permission request must not fail because an agent repeats odd tool-call fields here,
    # and it is relayed as is. `typed_tool_call()` gives the typed view.
    tool_call: dict[str, Any]
    options: list[PermissionOption]
    meta: Meta | None | UnsetType = _meta()

    def typed_tool_call(self) -> ToolCallFields | None:
        """The tool call as `ToolCallFields`, or None if it does not fit the schema's shape."""
        try:  # via JSON, not msgspec.convert: `raw_input` is a Raw, which only decoding makes
            return _tool_call_fields_decoder.decode(msgspec.json.encode(self.tool_call))
        except msgspec.ValidationError:
            return None


_tool_call_fields_decoder = msgspec.json.Decoder(ToolCallFields)


class SelectedOutcome(Wire, tag_field="outcome", tag="selected", kw_only=True, frozen=True):
    option_id: str
    meta: Meta | None | UnsetType = _meta()


class CancelledOutcome(Wire, tag_field="outcome", tag="cancelled", kw_only=True, frozen=True):
    pass


class RequestPermissionResponse(Wire, kw_only=True, frozen=True):
    outcome: SelectedOutcome | CancelledOutcome
    meta: Meta | None | UnsetType = _meta()


class CreateElicitationRequest(Wire, kw_only=True, frozen=True):
    """`elicitation/create` (agent to client): a question for the user. Session scope
    (`session_id`, maybe `tool_call_id`) or request scope (`request_id`); `mode` "form" (with
    `requested_schema`, a flat object of primitive fields) or "url" (with `url` and
    `elicitation_id`); other modes are kept, never rendered as known ones."""

    message: str
    mode: str
    session_id: str | UnsetType = UNSET
    tool_call_id: str | None | UnsetType = UNSET
    request_id: int | str | None | UnsetType = UNSET
    requested_schema: dict[str, Any] | UnsetType = UNSET
    url: str | UnsetType = UNSET
    elicitation_id: str | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class CreateElicitationResponse(Wire, kw_only=True, frozen=True):
    action: str  # accept | decline | cancel
    content: dict[str, Any] | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class CompleteElicitationNotification(Wire, kw_only=True, frozen=True):
    """`elicitation/complete`: a url-mode question was dealt with (ids we do not know are
    ignored)."""

    elicitation_id: str
    meta: Meta | None | UnsetType = _meta()


class ReadTextFileRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    path: str
    line: int | None | UnsetType = UNSET  # 1-based
    limit: int | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class ReadTextFileResponse(Wire, kw_only=True, frozen=True):
    content: str
    meta: Meta | None | UnsetType = _meta()


class WriteTextFileRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    path: str
    content: str
    meta: Meta | None | UnsetType = _meta()


class CreateTerminalRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    command: str
    args: list[str] = msgspec.field(default_factory=list)
    env: list[EnvVariable] = msgspec.field(default_factory=list)
    cwd: str | None | UnsetType = UNSET
    output_byte_limit: int | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class CreateTerminalResponse(Wire, kw_only=True, frozen=True):
    terminal_id: str
    meta: Meta | None | UnsetType = _meta()


class TerminalRequest(Wire, kw_only=True, frozen=True):
    """Params of terminal/output, wait_for_exit, kill and release (one shape in the schema)."""

    session_id: str
    terminal_id: str
    meta: Meta | None | UnsetType = _meta()


TerminalOutputRequest = TerminalRequest
WaitForTerminalExitRequest = TerminalRequest
KillTerminalRequest = TerminalRequest
ReleaseTerminalRequest = TerminalRequest


class TerminalExitStatus(Wire, kw_only=True, frozen=True):
    exit_code: int | None | UnsetType = UNSET
    signal: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class TerminalOutputResponse(Wire, kw_only=True, frozen=True):
    output: str
    truncated: bool
    exit_status: TerminalExitStatus | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


class WaitForExitResponse(Wire, kw_only=True, frozen=True):
    exit_code: int | None | UnsetType = UNSET
    signal: str | None | UnsetType = UNSET
    meta: Meta | None | UnsetType = _meta()


WaitForTerminalExitResponse = WaitForExitResponse


# --- method names and their payload types ---------------------------------------------------

INITIALIZE: Final = "initialize"
AUTHENTICATE: Final = "authenticate"
LOGOUT: Final = "logout"
SESSION_NEW: Final = "session/new"
SESSION_LOAD: Final = "session/load"
SESSION_RESUME: Final = "session/resume"
SESSION_CLOSE: Final = "session/close"
SESSION_LIST: Final = "session/list"
SESSION_DELETE: Final = "session/delete"
SESSION_PROMPT: Final = "session/prompt"
SESSION_CANCEL: Final = "session/cancel"
SESSION_STEERING: Final = "_session/steering"
SESSION_SET_MODE: Final = "session/set_mode"
SESSION_SET_CONFIG_OPTION: Final = "session/set_config_option"
SESSION_UPDATE: Final = "session/update"
REQUEST_PERMISSION: Final = "session/request_permission"
FS_READ: Final = "fs/read_text_file"
FS_WRITE: Final = "fs/write_text_file"
TERMINAL_CREATE: Final = "terminal/create"
TERMINAL_OUTPUT: Final = "terminal/output"
TERMINAL_WAIT: Final = "terminal/wait_for_exit"
TERMINAL_KILL: Final = "terminal/kill"
TERMINAL_RELEASE: Final = "terminal/release"
CANCEL_REQUEST: Final = "$/cancel_request"
ELICITATION_CREATE: Final = "elicitation/create"
ELICITATION_COMPLETE: Final = "elicitation/complete"

# Client -> agent requests: method -> (params, result). The waiter decodes the result with
# `jsonrpc.decode_result(result_type, raw)`.
CLIENT_REQUESTS: Final[dict[str, tuple[type[Wire], type[Wire]]]] = {
    INITIALIZE: (InitializeRequest, InitializeResponse),
    AUTHENTICATE: (AuthenticateRequest, EmptyResult),
    LOGOUT: (LogoutRequest, EmptyResult),
    SESSION_NEW: (NewSessionRequest, NewSessionResponse),
    SESSION_LOAD: (LoadSessionRequest, LoadSessionResponse),
    SESSION_RESUME: (ResumeSessionRequest, ResumeSessionResponse),
    SESSION_CLOSE: (CloseSessionRequest, EmptyResult),
    SESSION_LIST: (ListSessionsRequest, ListSessionsResponse),
    SESSION_DELETE: (DeleteSessionRequest, EmptyResult),
    SESSION_PROMPT: (PromptRequest, PromptResponse),
    SESSION_SET_MODE: (SetSessionModeRequest, EmptyResult),
    SESSION_SET_CONFIG_OPTION: (SetSessionConfigOptionRequest, SetSessionConfigOptionResponse),
}

# Agent -> client requests acpd handles: method -> (params, result).
AGENT_REQUESTS: Final[dict[str, tuple[type[Wire], type[Wire]]]] = {
    REQUEST_PERMISSION: (RequestPermissionRequest, RequestPermissionResponse),
    FS_READ: (ReadTextFileRequest, ReadTextFileResponse),
    FS_WRITE: (WriteTextFileRequest, EmptyResult),
    TERMINAL_CREATE: (CreateTerminalRequest, CreateTerminalResponse),
    TERMINAL_OUTPUT: (TerminalRequest, TerminalOutputResponse),
    TERMINAL_WAIT: (TerminalRequest, WaitForExitResponse),
    TERMINAL_KILL: (TerminalRequest, EmptyResult),
    TERMINAL_RELEASE: (TerminalRequest, EmptyResult),
    ELICITATION_CREATE: (CreateElicitationRequest, CreateElicitationResponse),
}

# Notifications: method -> params. `session/update` is decoded with
# `decode_session_notification` (or the `decode_update_line` fast path) instead.
NOTIFICATIONS: Final[dict[str, type[Wire]]] = {
    SESSION_CANCEL: CancelNotification,
    SESSION_UPDATE: SessionNotification,
    CANCEL_REQUEST: CancelRequestNotification,
    ELICITATION_COMPLETE: CompleteElicitationNotification,
}
