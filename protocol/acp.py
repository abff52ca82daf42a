"""ACP (Agent Client Protocol) version 1 types: what a client sends and what it handles.

Conventions (STYLE.md §6): snake_case here, camelCase on the wire via `rename="camel"`;
discriminator values are snake_case. Incoming types never forbid unknown fields, so newer
agents can add members (ACP.md §18). `_meta` maps to `meta`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

PROTOCOL_VERSION: Final = 1


class Wire(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, frozen=True):
    """Base for ACP payloads."""


Meta = dict[str, Any]


def _meta() -> Any:
    return msgspec.field(default=UNSET, name="_meta")


# --- content blocks -------------------------------------------------------------------------


class Annotations(Wire, kw_only=True, frozen=True):
    audience: list[str] | UnsetType = UNSET
    priority: float | UnsetType = UNSET
    last_modified: str | UnsetType = UNSET


class TextContent(Wire, tag_field="type", tag="text", kw_only=True, frozen=True):
    text: str
    annotations: Annotations | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class ImageContent(Wire, tag_field="type", tag="image", kw_only=True, frozen=True):
    data: str
    mime_type: str
    uri: str | UnsetType = UNSET
    annotations: Annotations | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class AudioContent(Wire, tag_field="type", tag="audio", kw_only=True, frozen=True):
    data: str
    mime_type: str
    annotations: Annotations | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class ResourceLink(Wire, tag_field="type", tag="resource_link", kw_only=True, frozen=True):
    uri: str
    name: str
    mime_type: str | UnsetType = UNSET
    title: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    size: int | UnsetType = UNSET
    annotations: Annotations | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class TextResourceContents(Wire, kw_only=True, frozen=True):
    uri: str
    text: str
    mime_type: str | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class BlobResourceContents(Wire, kw_only=True, frozen=True):
    uri: str
    blob: str
    mime_type: str | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class EmbeddedResource(Wire, tag_field="type", tag="resource", kw_only=True, frozen=True):
    # Not a tagged union (no tag field inside), so keep it as an untyped object that is either
    # shape; `resource_text()` reads it.
    resource: dict[str, Any]
    annotations: Annotations | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


ContentBlock = TextContent | ImageContent | AudioContent | ResourceLink | EmbeddedResource


def content_text(block: ContentBlock) -> str:
    """Best-effort plain text of a content block, for logs, titles and the CLI."""
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ResourceLink):
        return f"[{block.name}]({block.uri})"
    if isinstance(block, EmbeddedResource):
        text: object = block.resource.get("text")
        return text if isinstance(text, str) else f"<resource {block.resource.get('uri', '?')}>"
    return "<image>" if isinstance(block, ImageContent) else "<audio>"


# --- initialize -----------------------------------------------------------------------------


class FileSystemCapability(Wire, kw_only=True, frozen=True):
    read_text_file: bool = False
    write_text_file: bool = False


class ClientCapabilities(Wire, kw_only=True, frozen=True):
    fs: FileSystemCapability | UnsetType = UNSET
    terminal: bool = False
    meta: Meta | UnsetType = _meta()


class Implementation(Wire, kw_only=True, frozen=True):
    name: str
    version: str
    title: str | UnsetType = UNSET


class InitializeRequest(Wire, kw_only=True, frozen=True):
    protocol_version: int
    client_capabilities: ClientCapabilities = msgspec.field(default_factory=ClientCapabilities)
    client_info: Implementation | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class PromptCapabilities(Wire, kw_only=True, frozen=True):
    image: bool = False
    audio: bool = False
    embedded_context: bool = False


class McpCapabilities(Wire, kw_only=True, frozen=True):
    http: bool = False
    sse: bool = False


class SessionCapabilities(Wire, kw_only=True, frozen=True):
    # Object markers: present (even `{}`) means supported.
    list: dict[str, Any] | None | UnsetType = UNSET
    delete: dict[str, Any] | None | UnsetType = UNSET
    resume: dict[str, Any] | None | UnsetType = UNSET
    close: dict[str, Any] | None | UnsetType = UNSET
    additional_directories: dict[str, Any] | None | UnsetType = UNSET


def supported(marker: dict[str, Any] | None | UnsetType) -> bool:
    return isinstance(marker, dict)


class AgentCapabilities(Wire, kw_only=True, frozen=True):
    load_session: bool = False
    prompt_capabilities: PromptCapabilities = msgspec.field(default_factory=PromptCapabilities)
    mcp_capabilities: McpCapabilities = msgspec.field(default_factory=McpCapabilities)
    session_capabilities: SessionCapabilities = msgspec.field(default_factory=SessionCapabilities)
    meta: Meta | UnsetType = _meta()


class AuthMethod(Wire, kw_only=True, frozen=True):
    id: str
    name: str = ""
    description: str | None | UnsetType = UNSET
    type: str | UnsetType = UNSET


class InitializeResponse(Wire, kw_only=True, frozen=True):
    protocol_version: int
    agent_capabilities: AgentCapabilities = msgspec.field(default_factory=AgentCapabilities)
    auth_methods: list[AuthMethod] = msgspec.field(default_factory=list)
    agent_info: Implementation | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class AuthenticateRequest(Wire, kw_only=True, frozen=True):
    method_id: str
    meta: Meta | UnsetType = _meta()


# --- sessions -------------------------------------------------------------------------------


class EnvVariable(Wire, kw_only=True, frozen=True):
    name: str
    value: str


class HttpHeader(Wire, kw_only=True, frozen=True):
    name: str
    value: str


class McpServerStdio(Wire, kw_only=True, frozen=True):
    name: str
    command: str
    args: list[str] = msgspec.field(default_factory=list)
    env: list[EnvVariable] = msgspec.field(default_factory=list)


class NewSessionRequest(Wire, kw_only=True, frozen=True):
    cwd: str
    # Required in v1 even when empty (ACP.md §5): no omit for an empty list, so no default.
    mcp_servers: list[McpServerStdio]
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class SessionMode(Wire, kw_only=True, frozen=True):
    id: str
    name: str
    description: str | None | UnsetType = UNSET


class SessionModeState(Wire, kw_only=True, frozen=True):
    current_mode_id: str
    available_modes: list[SessionMode] = msgspec.field(default_factory=list)


class NewSessionResponse(Wire, kw_only=True, frozen=True):
    session_id: str
    modes: SessionModeState | None | UnsetType = UNSET
    config_options: list[dict[str, Any]] | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class LoadSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    cwd: str
    mcp_servers: list[McpServerStdio]
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class LoadSessionResponse(Wire, kw_only=True, frozen=True):
    # The docs show `null`; the schema an object: callers decode `LoadSessionResponse | None`.
    modes: SessionModeState | None | UnsetType = UNSET
    config_options: list[dict[str, Any]] | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class ResumeSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    cwd: str
    mcp_servers: list[McpServerStdio] | UnsetType = UNSET
    additional_directories: list[str] | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class ResumeSessionResponse(Wire, kw_only=True, frozen=True):
    modes: SessionModeState | None | UnsetType = UNSET
    config_options: list[dict[str, Any]] | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class CloseSessionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    meta: Meta | UnsetType = _meta()


class CancelNotification(Wire, kw_only=True, frozen=True):
    session_id: str
    meta: Meta | UnsetType = _meta()


class PromptRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    prompt: list[ContentBlock]
    meta: Meta | UnsetType = _meta()


STOP_REASONS: Final = frozenset(
    {"end_turn", "max_tokens", "max_turn_requests", "refusal", "cancelled"}
)


class PromptResponse(Wire, kw_only=True, frozen=True):
    # A plain str, not a Literal: an agent inventing a reason must not fail the whole turn.
    stop_reason: str
    meta: Meta | UnsetType = _meta()


class EmptyResult(Wire, kw_only=True, frozen=True):
    """`{}` results (authenticate, set_mode, close, fs/write_text_file, ...); `null` tolerated."""

    meta: Meta | UnsetType = _meta()


# --- session/update -------------------------------------------------------------------------


class _Update(Wire, tag_field="sessionUpdate", kw_only=True, frozen=True):
    meta: Meta | UnsetType = _meta()


class UserMessageChunk(_Update, tag="user_message_chunk", kw_only=True, frozen=True):
    content: ContentBlock
    message_id: str | None | UnsetType = UNSET


class AgentMessageChunk(_Update, tag="agent_message_chunk", kw_only=True, frozen=True):
    content: ContentBlock
    message_id: str | None | UnsetType = UNSET


class AgentThoughtChunk(_Update, tag="agent_thought_chunk", kw_only=True, frozen=True):
    content: ContentBlock
    message_id: str | None | UnsetType = UNSET


class ToolCallLocation(Wire, kw_only=True, frozen=True):
    path: str
    line: int | None | UnsetType = UNSET


class ToolCall(_Update, tag="tool_call", kw_only=True, frozen=True):
    tool_call_id: str
    title: str
    kind: str | UnsetType = UNSET
    status: str | UnsetType = UNSET
    # Content items are {type: content|diff|terminal, ...}: kept as plain objects.
    content: list[dict[str, Any]] | UnsetType = UNSET
    locations: list[ToolCallLocation] | UnsetType = UNSET
    raw_input: Any = UNSET
    raw_output: Any = UNSET
    name: str | UnsetType = UNSET


class ToolCallUpdate(_Update, tag="tool_call_update", kw_only=True, frozen=True):
    tool_call_id: str
    title: str | None | UnsetType = UNSET
    kind: str | None | UnsetType = UNSET
    status: str | None | UnsetType = UNSET
    content: list[dict[str, Any]] | None | UnsetType = UNSET
    locations: list[ToolCallLocation] | None | UnsetType = UNSET
    raw_input: Any = UNSET
    raw_output: Any = UNSET


class PlanEntry(Wire, kw_only=True, frozen=True):
    content: str
    priority: str = "medium"
    status: str = "pending"


class Plan(_Update, tag="plan", kw_only=True, frozen=True):
    entries: list[PlanEntry]


class AvailableCommandInput(Wire, kw_only=True, frozen=True):
    hint: str


class AvailableCommand(Wire, kw_only=True, frozen=True):
    name: str
    description: str = ""
    input: AvailableCommandInput | None | UnsetType = UNSET


class AvailableCommandsUpdate(_Update, tag="available_commands_update", kw_only=True, frozen=True):
    available_commands: list[AvailableCommand]


class CurrentModeUpdate(_Update, tag="current_mode_update", kw_only=True, frozen=True):
    current_mode_id: str | UnsetType = UNSET
    mode_id: str | UnsetType = UNSET  # the docs' example spelling (ACP.md §18.2)


class ConfigOptionUpdate(_Update, tag="config_option_update", kw_only=True, frozen=True):
    config_options: list[dict[str, Any]]


class SessionInfoUpdate(_Update, tag="session_info_update", kw_only=True, frozen=True):
    title: str | None | UnsetType = UNSET
    updated_at: str | None | UnsetType = UNSET


class Cost(Wire, kw_only=True, frozen=True):
    amount: float
    currency: str


class UsageUpdate(_Update, tag="usage_update", kw_only=True, frozen=True):
    used: int
    size: int
    cost: Cost | None | UnsetType = UNSET


class Notice(_Update, tag="notice", kw_only=True, frozen=True):
    severity: str
    title: str
    description: str | None | UnsetType = UNSET


class CompactionUpdate(_Update, tag="compaction_update", kw_only=True, frozen=True):
    compaction_id: str
    status: str
    summary: str | None | UnsetType = UNSET
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
    """A `session/update` variant this acpd does not know: passed through raw (ACP.md §10)."""

    session_update: str
    raw: msgspec.Raw


SessionUpdate = KnownUpdate | UnknownUpdate


class SessionNotification(Wire, kw_only=True, frozen=True):
    session_id: str
    update: KnownUpdate
    meta: Meta | UnsetType = _meta()


class _RawSessionNotification(Wire, kw_only=True, frozen=True):
    session_id: str
    update: msgspec.Raw


class _UpdateTag(Wire, kw_only=True, frozen=True):
    session_update: str = ""


_notification_decoder = msgspec.json.Decoder(SessionNotification)
_raw_notification_decoder = msgspec.json.Decoder(_RawSessionNotification)
_tag_decoder = msgspec.json.Decoder(_UpdateTag)


def decode_session_notification(raw: bytes | msgspec.Raw) -> tuple[str, SessionUpdate]:
    """Decode `session/update` params into (session id, update).

    One typed pass on the hot path; only when it fails do we look at the tag, so an unknown
    variant is passed through instead of rejected. Raises `msgspec.DecodeError` for a
    malformed known variant.
    """
    try:
        note = _notification_decoder.decode(raw)
    except msgspec.ValidationError:
        loose = _raw_notification_decoder.decode(raw)
        tag = _tag_decoder.decode(loose.update).session_update
        if not tag or tag in KNOWN_UPDATE_TAGS:
            raise
        return loose.session_id, UnknownUpdate(tag, loose.update)
    return note.session_id, note.update


# --- agent -> client requests ---------------------------------------------------------------


class PermissionOption(Wire, kw_only=True, frozen=True):
    option_id: str
    name: str
    kind: str


class RequestPermissionRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    tool_call: dict[str, Any]  # a ToolCallUpdate, kept loose: agents repeat whatever they like
    options: list[PermissionOption]
    meta: Meta | UnsetType = _meta()


class SelectedOutcome(Wire, tag_field="outcome", tag="selected", kw_only=True, frozen=True):
    option_id: str


class CancelledOutcome(Wire, tag_field="outcome", tag="cancelled", kw_only=True, frozen=True):
    pass


class RequestPermissionResponse(Wire, kw_only=True, frozen=True):
    outcome: SelectedOutcome | CancelledOutcome
    meta: Meta | UnsetType = _meta()


class ReadTextFileRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    path: str
    line: int | None | UnsetType = UNSET
    limit: int | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class ReadTextFileResponse(Wire, kw_only=True, frozen=True):
    content: str
    meta: Meta | UnsetType = _meta()


class WriteTextFileRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    path: str
    content: str
    meta: Meta | UnsetType = _meta()


class CreateTerminalRequest(Wire, kw_only=True, frozen=True):
    session_id: str
    command: str
    args: list[str] = msgspec.field(default_factory=list)
    env: list[EnvVariable] = msgspec.field(default_factory=list)
    cwd: str | None | UnsetType = UNSET
    output_byte_limit: int | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class CreateTerminalResponse(Wire, kw_only=True, frozen=True):
    terminal_id: str
    meta: Meta | UnsetType = _meta()


class TerminalRequest(Wire, kw_only=True, frozen=True):
    """Params of terminal/output, wait_for_exit, kill and release."""

    session_id: str
    terminal_id: str
    meta: Meta | UnsetType = _meta()


class TerminalExitStatus(Wire, kw_only=True, frozen=True):
    exit_code: int | None | UnsetType = UNSET
    signal: str | None | UnsetType = UNSET


class TerminalOutputResponse(Wire, kw_only=True, frozen=True):
    output: str
    truncated: bool
    exit_status: TerminalExitStatus | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


class WaitForExitResponse(Wire, kw_only=True, frozen=True):
    exit_code: int | None | UnsetType = UNSET
    signal: str | None | UnsetType = UNSET
    meta: Meta | UnsetType = _meta()


# Method names.
INITIALIZE: Final = "initialize"
AUTHENTICATE: Final = "authenticate"
SESSION_NEW: Final = "session/new"
SESSION_LOAD: Final = "session/load"
SESSION_RESUME: Final = "session/resume"
SESSION_CLOSE: Final = "session/close"
SESSION_PROMPT: Final = "session/prompt"
SESSION_CANCEL: Final = "session/cancel"
SESSION_SET_MODE: Final = "session/set_mode"
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
