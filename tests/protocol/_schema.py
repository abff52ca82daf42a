"""The official ACP v1 JSON Schema (vendored in `schema/`), and acpd's Structs mapped onto it."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    acp.CreateElicitationRequest: ("CreateElicitationRequest",),
    acp.CreateElicitationResponse: ("CreateElicitationResponse",),
    acp.CompleteElicitationNotification: ("CompleteElicitationNotification",),
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

# Types acpd only ever reads (what an agent asks), kept looser than the schema's unions of
# variants on purpose: their encoding is not checked against it, their decoding is.
PARSED_ONLY: frozenset[type[msgspec.Struct]] = frozenset({acp.CreateElicitationRequest})

# Wire members we read on purpose although the schema does not have them (ACP.md §18).
# Vendor extensions, which the schema does not have (ACP.md §20).
EXTENSION_STRUCTS: set[type[msgspec.Struct]] = {acp.SteeringRequest, acp.SteeringResponse}

EXTRA_FIELDS: dict[type[msgspec.Struct], set[str]] = {
    acp.SessionCapabilities: {"steering"},  # the session steering RFD's, not yet in v1
    acp.CurrentModeUpdate: {"modeId"},  # the docs' spelling
    acp.AuthMethod: {"vars", "type"},  # legacy env_var; `type` is only in the terminal variant
    acp.McpServer: {"type"},  # only in the http/sse variants
    # The schema puts these in its mode (form, url) and scope (session, request) variants.
    acp.CreateElicitationRequest: {
        "mode",
        "sessionId",
        "toolCallId",
        "requestId",
        "requestedSchema",
        "url",
        "elicitationId",
    },
    acp.CreateElicitationResponse: {"action", "content"},  # in its action variants
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


# --- whole messages, by method ------------------------------------------------------------------
#
# The schema's root is a union of very loose envelopes (its "ProtocolLevel" arm takes any method
# with any params), so validating a message against it proves almost nothing:
# `{"jsonrpc": "2.0", "method": "session/prompt", "params": {"foo": 1}}` passes. A message is
# checked instead against the def for its method, found by the defs' `x-method`/`x-side` tags.

Side = Literal["client", "agent"]
_ENVELOPE = {"jsonrpc", "id", "method", "params", "result", "error"}


@dataclass(frozen=True)
class MethodDefs:
    """One method's defs. `side` is its `x-side`: the side that handles it ("protocol": both)."""

    side: str
    params: str
    result: str | None  # None for a notification


def _method_table() -> dict[str, MethodDefs]:
    found: dict[str, dict[str, str]] = {}
    for name, d in DEFS.items():
        if "x-method" not in d:
            continue
        kind = "result" if name.endswith("Response") else "params"
        assert name.endswith(("Request", "Notification", "Response")), name
        entry = found.setdefault(d["x-method"], {})
        assert kind not in entry, (d["x-method"], name, entry)
        assert entry.setdefault("side", d["x-side"]) == d["x-side"], name
        entry[kind] = name
    return {
        m: MethodDefs(side=e["side"], params=e["params"], result=e.get("result"))
        for m, e in found.items()
    }


METHODS: dict[str, MethodDefs] = _method_table()


def _handled_by(sender: Side) -> tuple[str, str]:
    """The `x-side` values of methods whose requests and notifications `sender` may send."""
    return ("agent" if sender == "client" else "client", "protocol")


def assert_valid_sent(
    message: Any, *, sender: Side = "client", requests: Mapping[Any, str] | None = None
) -> str:
    """Check one message `sender` sends against the def for its method.

    Requests and notifications: the method must be one the *other* side handles, and `params`
    must match its params def. Responses: `requests` maps the ids of the other side's requests
    to their methods, and `result` must match the result def of the method it answers (an
    `error`, the `Error` def). Returns a label: the method, or "<method> result"/"<method> error".
    """
    assert isinstance(message, dict), f"not a JSON object: {message!r}"
    assert message.get("jsonrpc") == "2.0", f"not JSON-RPC 2.0: {message!r}"
    assert set(message) <= _ENVELOPE, f"unknown envelope members: {set(message) - _ENVELOPE}"
    if "id" in message:
        assert_valid(message["id"], "RequestId")
    if "method" in message:
        method = message["method"]
        defs = METHODS.get(method)
        assert defs is not None, f"{sender} sent {method!r}, a method the schema does not have"
        assert defs.side in _handled_by(sender), f"{sender} sent {method!r}, its own method"
        assert {"result", "error"}.isdisjoint(message), f"a request with a result: {message!r}"
        if "id" in message:
            assert defs.result is not None, f"{method!r} is a notification, sent with an id"
        else:
            assert defs.result is None, f"{method!r} is a request, sent without an id"
        assert_valid(message.get("params"), defs.params)
        return str(method)
    assert "id" in message, f"neither a request, a notification nor a response: {message!r}"
    assert ("result" in message) != ("error" in message), f"result xor error: {message!r}"
    answered = (requests or {}).get(message["id"])
    assert answered is not None, f"a response to no request of the other side: {message!r}"
    if "error" in message:
        assert_valid(message["error"], "Error")
        return f"{answered} error"
    defs = METHODS[answered]
    assert defs.result is not None
    assert_valid(message["result"], defs.result)
    return f"{answered} result"


def requests_in(traffic: bytes) -> dict[Any, str]:
    """id -> method of the requests in a stream of lines (lines that are not JSON are skipped)."""
    found: dict[Any, str] = {}
    for line in traffic.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and isinstance(msg.get("method"), str) and "id" in msg:
            rid = msg["id"]
            assert found.setdefault(rid, msg["method"]) == msg["method"], f"id {rid!r} reused"
    return found


def assert_valid_traffic(sent: bytes, received: bytes, *, sender: Side = "client") -> list[str]:
    """Check every line of `sent` (see `assert_valid_sent`); `received` is what the other side
    sent, for the ids of its requests. Returns the labels, in order."""
    requests = requests_in(received)
    lines = sent.splitlines()
    assert all(line.strip() for line in lines), "an empty line was sent"
    return [assert_valid_sent(json.loads(line), sender=sender, requests=requests) for line in lines]


def method_answered_by(result_def: str) -> str:
    """The method whose result def is `result_def` (e.g. "LoadSessionResponse" -> session/load)."""
    (method,) = [m for m, d in METHODS.items() if d.result == result_def]
    return method


def assert_valid_message(message: Any, *, answers: str | None = None) -> str:
    """`assert_valid_sent` for a message in either direction, its sender told by its method's
    `x-side`. A response needs `answers`, the method of the request it answers."""
    assert isinstance(message, dict), f"not a JSON object: {message!r}"
    method = message.get("method", answers)
    assert isinstance(method, str), f"a response needs the method it answers: {message!r}"
    defs = METHODS.get(method)
    assert defs is not None, f"{method!r} is not a method the schema has"
    is_call = "method" in message
    # A call goes to the handling side; an answer comes from it.
    handler: Side = "client" if defs.side == "client" else "agent"
    sender: Side = ("agent" if handler == "client" else "client") if is_call else handler
    requests = None if is_call else {message.get("id"): method}
    return assert_valid_sent(message, sender=sender, requests=requests)
