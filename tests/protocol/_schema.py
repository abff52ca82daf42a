"""The official ACP v1 JSON Schema (vendored in `schema/`), and acpd's Structs mapped onto it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from protocol import acp

SCHEMA_PATH = Path(__file__).parent / "schema" / "schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
DEFS: dict[str, Any] = SCHEMA["$defs"]

# Every public ACP Struct and the schema `$defs` it stands for. Several defs mean the Struct
# merges them (untagged unions msgspec cannot dispatch on, see acp.py).
STRUCT_DEFS: dict[type[msgspec.Struct], tuple[str, ...]] = {
    acp.Annotations: ("Annotations",),
    acp.TextContent: ("TextContent",),
    acp.ImageContent: ("ImageContent",),
    acp.AudioContent: ("AudioContent",),
    acp.ResourceLink: ("ResourceLink",),
    acp.ResourceContents: ("TextResourceContents", "BlobResourceContents"),
    acp.EmbeddedResource: ("EmbeddedResource",),
    acp.FileSystemCapability: ("FileSystemCapabilities",),
    acp.SessionConfigOptionsCapabilities: ("SessionConfigOptionsCapabilities",),
    acp.ClientSessionCapabilities: ("ClientSessionCapabilities",),
    acp.AuthCapabilities: ("AuthCapabilities",),
    acp.ElicitationCapabilities: ("ElicitationCapabilities",),
    acp.ClientCapabilities: ("ClientCapabilities",),
    acp.Implementation: ("Implementation",),
    acp.InitializeRequest: ("InitializeRequest",),
    acp.PromptCapabilities: ("PromptCapabilities",),
    acp.McpCapabilities: ("McpCapabilities",),
    acp.SessionCapabilities: ("SessionCapabilities",),
    acp.AgentAuthCapabilities: ("AgentAuthCapabilities",),
    acp.AgentCapabilities: ("AgentCapabilities",),
    acp.AuthMethod: ("AuthMethodAgent", "AuthMethodTerminal"),
    acp.InitializeResponse: ("InitializeResponse",),
    acp.AuthenticateRequest: ("AuthenticateRequest",),
    acp.LogoutRequest: ("LogoutRequest",),
    acp.EmptyResult: (
        "AuthenticateResponse",
        "LogoutResponse",
        "CloseSessionResponse",
        "DeleteSessionResponse",
        "SetSessionModeResponse",
        "WriteTextFileResponse",
        "KillTerminalResponse",
        "ReleaseTerminalResponse",
    ),
    acp.EnvVariable: ("EnvVariable",),
    acp.HttpHeader: ("HttpHeader",),
    acp.McpServer: ("McpServerStdio", "McpServerHttp", "McpServerSse"),
    acp.McpServerStdio: ("McpServerStdio",),
    acp.McpServerHttp: ("McpServerHttp",),
    acp.McpServerSse: ("McpServerSse",),
    acp.NewSessionRequest: ("NewSessionRequest",),
    acp.SessionMode: ("SessionMode",),
    acp.SessionModeState: ("SessionModeState",),
    acp.NewSessionResponse: ("NewSessionResponse",),
    acp.LoadSessionRequest: ("LoadSessionRequest",),
    acp.LoadSessionResponse: ("LoadSessionResponse",),
    acp.ResumeSessionRequest: ("ResumeSessionRequest",),
    acp.ResumeSessionResponse: ("ResumeSessionResponse",),
    acp.CloseSessionRequest: ("CloseSessionRequest",),
    acp.DeleteSessionRequest: ("DeleteSessionRequest",),
    acp.ListSessionsRequest: ("ListSessionsRequest",),
    acp.SessionInfo: ("SessionInfo",),
    acp.ListSessionsResponse: ("ListSessionsResponse",),
    acp.SetSessionModeRequest: ("SetSessionModeRequest",),
    acp.SetSessionConfigOptionRequest: ("SetSessionConfigOptionRequest",),
    acp.SetSessionConfigOptionResponse: ("SetSessionConfigOptionResponse",),
    acp.SessionConfigSelectOption: ("SessionConfigSelectOption",),
    acp.SessionConfigSelectEntry: ("SessionConfigSelectOption", "SessionConfigSelectGroup"),
    acp.SessionConfigSelect: ("SessionConfigOption+SessionConfigSelect",),
    acp.SessionConfigBoolean: ("SessionConfigOption+SessionConfigBoolean",),
    acp.PromptRequest: ("PromptRequest",),
    acp.PromptResponse: ("PromptResponse",),
    acp.CancelNotification: ("CancelNotification",),
    acp.CancelRequestNotification: ("CancelRequestNotification",),
    acp.UserMessageChunk: ("ContentChunk",),
    acp.AgentMessageChunk: ("ContentChunk",),
    acp.AgentThoughtChunk: ("ContentChunk",),
    acp.Content: ("Content",),
    acp.Diff: ("Diff",),
    acp.Terminal: ("Terminal",),
    acp.ToolCallLocation: ("ToolCallLocation",),
    acp.ToolCall: ("ToolCall",),
    acp.ToolCallFields: ("ToolCallUpdate",),
    acp.ToolCallUpdate: ("ToolCallUpdate",),
    acp.PlanEntry: ("PlanEntry",),
    acp.Plan: ("Plan",),
    acp.AvailableCommandInput: ("UnstructuredCommandInput",),
    acp.AvailableCommand: ("AvailableCommand",),
    acp.AvailableCommandsUpdate: ("AvailableCommandsUpdate",),
    acp.CurrentModeUpdate: ("CurrentModeUpdate",),
    acp.ConfigOptionUpdate: ("ConfigOptionUpdate",),
    acp.SessionInfoUpdate: ("SessionInfoUpdate",),
    acp.Cost: ("Cost",),
    acp.UsageUpdate: ("UsageUpdate",),
    acp.Notice: ("Notice",),
    acp.CompactionUpdate: ("CompactionUpdate",),
    acp.CompactionSummaryChunk: ("CompactionSummaryChunk",),
    acp.SessionNotification: ("SessionNotification",),
    acp.PermissionOption: ("PermissionOption",),
    acp.RequestPermissionRequest: ("RequestPermissionRequest",),
    acp.SelectedOutcome: ("SelectedPermissionOutcome",),
    acp.CancelledOutcome: (),  # the schema's cancelled outcome is just its tag
    acp.RequestPermissionResponse: ("RequestPermissionResponse",),
    acp.ReadTextFileRequest: ("ReadTextFileRequest",),
    acp.ReadTextFileResponse: ("ReadTextFileResponse",),
    acp.WriteTextFileRequest: ("WriteTextFileRequest",),
    acp.CreateTerminalRequest: ("CreateTerminalRequest",),
    acp.CreateTerminalResponse: ("CreateTerminalResponse",),
    acp.TerminalRequest: (
        "TerminalOutputRequest",
        "WaitForTerminalExitRequest",
        "KillTerminalRequest",
        "ReleaseTerminalRequest",
    ),
    acp.TerminalExitStatus: ("TerminalExitStatus",),
    acp.TerminalOutputResponse: ("TerminalOutputResponse",),
    acp.WaitForExitResponse: ("WaitForTerminalExitResponse",),
}

# Wire members we read on purpose although the schema does not have them (ACP.md §18).
EXTRA_FIELDS: dict[type[msgspec.Struct], set[str]] = {
    acp.CurrentModeUpdate: {"modeId"},  # the docs' spelling
    acp.AuthMethod: {"vars", "type"},  # legacy env_var; `type` is only in the terminal variant
    acp.McpServer: {"type"},  # only in the http/sse variants
    # Inherited from the flat McpServer, always UNSET in these variants.
    acp.McpServerStdio: {"type", "url", "headers"},
    # `type` is the tag of the http/sse arms of the schema's McpServer union.
    acp.McpServerHttp: {"command", "args", "env", "type"},
    acp.McpServerSse: {"command", "args", "env", "type"},
}


def _merged(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Property names and required names of an object def: `allOf` parts add up, inline
    `anyOf`/`oneOf` arms are alternatives (their members are optional unless all require
    them)."""
    props = set(schema.get("properties", {}))
    required = set(schema.get("required", ()))
    for part in schema.get("allOf", ()):
        p, r = _merged(DEFS[part["$ref"].rsplit("/", 1)[1]] if "$ref" in part else part)
        props |= p
        required |= r
    # Only inline arms: arms that refer to other defs are union variants, mapped one by one.
    arms = [
        _merged(arm)
        for arm in schema.get("anyOf", schema.get("oneOf", ()))
        if "allOf" not in arm and "$ref" not in arm
    ]
    if arms:
        props = props.union(*(p for p, _ in arms))
        required |= set.intersection(*(r for _, r in arms))
    return props, required


def def_fields(names: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(members of any of the alternatives `names`, members every alternative requires).

    A name `A+B` stands for a value that must match both defs.
    """
    props: set[str] = set()
    required: set[str] | None = None
    for name in names:
        p: set[str] = set()
        r: set[str] = set()
        for part in name.split("+"):
            pp, rr = _merged(DEFS[part])
            p |= pp
            r |= rr
        props |= p
        required = r if required is None else required & r
    return props, required or set()


def is_valid(instance: Any, names: tuple[str, ...]) -> bool:
    """Whether `instance` matches one of the alternatives `names` (see `def_fields`)."""
    return any(all(validator(p).is_valid(instance) for p in n.split("+")) for n in names)


def enum_values(name: str) -> list[str]:
    """The `const` values of a closed string enum def (e.g. `ToolKind`)."""
    return [arm["const"] for arm in DEFS[name]["oneOf"]]


@functools.cache
def validator(def_name: str | None = None) -> Draft202012Validator:
    """A validator for one `$defs` entry, or for a whole message (the root) if None."""
    if def_name is None:
        return Draft202012Validator(SCHEMA)
    return Draft202012Validator({"$defs": DEFS, "$ref": f"#/$defs/{def_name}"})


def assert_valid(instance: Any, def_name: str | None = None) -> None:
    errors = sorted(validator(def_name).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, (
        f"not a valid {def_name or 'ACP message'}: "
        + "; ".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:5])
        + f"\n{json.dumps(instance)[:2000]}"
    )
