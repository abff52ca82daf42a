"""acpd's ACP types against the official JSON Schema (vendored, see schema/README.md)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from protocol import acp
from protocol.jsonrpc import (
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    ErrorResponse,
    Notification,
    Request,
    Response,
    RpcFailure,
    encode_line,
)
from tests.protocol._schema import (
    DEFS,
    EXTENSION_STRUCTS,
    EXTRA_FIELDS,
    METHODS,
    PARSED_ONLY,
    STRUCT_DEFS,
    assert_valid,
    assert_valid_sent,
    assert_valid_traffic,
    def_fields,
    is_valid,
    method_answered_by,
    validator,
)
from tests.protocol._strategies import strategy

MAPPED = [(tp, defs) for tp, defs in STRUCT_DEFS.items() if defs]


def _ids(tp: type) -> str:
    return tp.__name__


def test_every_public_struct_is_mapped() -> None:
    public = {
        v
        for k, v in vars(acp).items()
        if not k.startswith("_")
        and isinstance(v, type)
        and issubclass(v, acp.Wire)
        and v is not acp.Wire
    }
    assert public - set(STRUCT_DEFS) - EXTENSION_STRUCTS == set()


@pytest.mark.parametrize(("tp", "defs"), MAPPED, ids=[_ids(tp) for tp, _ in MAPPED])
def test_wire_names_and_optionality_match_the_schema(
    tp: type[msgspec.Struct], defs: tuple[str, ...]
) -> None:
    props, schema_required = def_fields(defs)
    info = msgspec.inspect.type_info(tp)
    assert isinstance(info, msgspec.inspect.StructType)
    ours = {f.encode_name for f in info.fields}
    # A tag lives in the schema's union arm, not in the variant's def.
    tag = {info.tag_field} if info.tag_field is not None else set()
    ours_required = {f.encode_name for f in info.fields if f.required}
    extra = EXTRA_FIELDS.get(tp, set())
    # Every member we read or write is a schema member (catches misspelt wire names, which
    # validation cannot: the schema allows additional properties).
    assert ours - props - extra == set(), "not in the schema"
    # Every member the schema has, we have (nothing silently dropped on re-encode).
    assert props - ours - tag == set(), "missing from the Struct"
    # What we require, the schema requires (else we reject valid messages). The reverse may
    # be looser on purpose: defaults tolerate agents that leave required members out.
    assert ours_required - schema_required == set(), "required here, optional in the schema"


def _method_defs(method: str) -> set[str]:
    return {name for name, d in DEFS.items() if d.get("x-method") == method}


@pytest.mark.parametrize(
    ("method", "types"),
    [*acp.CLIENT_REQUESTS.items(), *acp.AGENT_REQUESTS.items()],
    ids=[*acp.CLIENT_REQUESTS, *acp.AGENT_REQUESTS],
)
def test_request_tables_match_the_schema_methods(
    method: str, types: tuple[type[msgspec.Struct], type[msgspec.Struct]]
) -> None:
    params, result = types
    defs = _method_defs(method)
    assert len(defs) == 2, defs
    (req,) = {d for d in defs if d.endswith("Request")}
    (resp,) = {d for d in defs if d.endswith("Response")}
    assert req in STRUCT_DEFS[params]
    assert resp in STRUCT_DEFS[result]


@pytest.mark.parametrize(("method", "tp"), acp.NOTIFICATIONS.items(), ids=list(acp.NOTIFICATIONS))
def test_notification_table_matches_the_schema_methods(
    method: str, tp: type[msgspec.Struct]
) -> None:
    (name,) = _method_defs(method)
    assert name in STRUCT_DEFS[tp]


def test_every_stable_client_method_is_covered() -> None:
    """The schema's methods acpd must speak as a client (ACP.md §2)."""
    ours = {*acp.CLIENT_REQUESTS, *acp.AGENT_REQUESTS, *acp.NOTIFICATIONS}
    schema = {d["x-method"] for d in DEFS.values() if "x-method" in d}
    assert schema - ours == set()


def test_session_update_variants_match_the_schema() -> None:
    tags = {arm["properties"]["sessionUpdate"]["const"] for arm in DEFS["SessionUpdate"]["oneOf"]}
    assert tags == acp.KNOWN_UPDATE_TAGS
    blocks = {arm["properties"]["type"]["const"] for arm in DEFS["ContentBlock"]["oneOf"]}
    assert blocks == acp.CONTENT_BLOCK_TAGS
    items = {arm["properties"]["type"]["const"] for arm in DEFS["ToolCallContent"]["oneOf"]}
    assert items == acp.TOOL_CALL_CONTENT_TAGS
    reasons = {arm["const"] for arm in DEFS["StopReason"]["oneOf"]}
    assert reasons == acp.STOP_REASONS


ENCODED = [(tp, defs) for tp, defs in MAPPED if tp not in PARSED_ONLY]


# Anything we encode is schema-valid, whatever its field values (within the schema's enums).
@pytest.mark.parametrize(("tp", "defs"), ENCODED, ids=[_ids(tp) for tp, _ in ENCODED])
def test_encoded_structs_are_schema_valid(tp: type[msgspec.Struct], defs: tuple[str, ...]) -> None:
    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy(tp))
    def check(value: msgspec.Struct) -> None:
        data = json.loads(msgspec.json.encode(value))
        if not is_valid(data, defs):
            for part in defs[0].split("+"):
                assert_valid(data, part)  # shows why

    check()


# --- every message acpd sends, built the way the daemon builds them -------------------------

SID = "sess_1"
CWD = "/home/user/project"

SENT: list[tuple[str, Any, str | None]] = [
    # (label, message, $def of its params/result)
    (
        "initialize-minimal",
        Request(id=0, method=acp.INITIALIZE, params=acp.InitializeRequest(protocol_version=1)),
        "InitializeRequest",
    ),
    (
        "initialize-full",
        Request(
            id=0,
            method=acp.INITIALIZE,
            params=acp.InitializeRequest(
                protocol_version=acp.PROTOCOL_VERSION,
                client_capabilities=acp.ClientCapabilities(
                    fs=acp.FileSystemCapability(read_text_file=True, write_text_file=True),
                    terminal=True,
                    session=acp.ClientSessionCapabilities(
                        config_options=acp.SessionConfigOptionsCapabilities(boolean={}),
                        notices={},
                    ),
                    auth=acp.AuthCapabilities(terminal=False),
                ),
                client_info=acp.Implementation(name="acpd", version="0.1.0", title="acpd"),
            ),
        ),
        "InitializeRequest",
    ),
    (
        "authenticate",
        Request(id=1, method=acp.AUTHENTICATE, params=acp.AuthenticateRequest(method_id="api-key")),
        "AuthenticateRequest",
    ),
    ("logout", Request(id=1, method=acp.LOGOUT, params=acp.LogoutRequest()), "LogoutRequest"),
    (
        "session/new-no-mcp",
        Request(
            id=2, method=acp.SESSION_NEW, params=acp.NewSessionRequest(cwd=CWD, mcp_servers=[])
        ),
        "NewSessionRequest",
    ),
    (
        "session/new-mcp",
        Request(
            id=2,
            method=acp.SESSION_NEW,
            params=acp.NewSessionRequest(
                cwd=CWD,
                mcp_servers=[
                    acp.McpServerStdio(name="fs", command="/usr/bin/mcp-fs"),  # args/env default
                    acp.McpServerStdio(
                        name="git",
                        command="mcp-git",
                        args=["--stdio"],
                        env=[acp.EnvVariable(name="K", value="v")],
                    ),
                    acp.McpServerHttp(
                        name="api",
                        url="https://api.example.com/mcp",
                        headers=[acp.HttpHeader(name="Authorization", value="Bearer t")],
                    ),
                    acp.McpServerSse(name="old", url="https://old.example.com/sse"),
                ],
                additional_directories=["/home/user/lib"],
            ),
        ),
        "NewSessionRequest",
    ),
    (
        "session/load",
        Request(
            id=3,
            method=acp.SESSION_LOAD,
            params=acp.LoadSessionRequest(session_id=SID, cwd=CWD, mcp_servers=[]),
        ),
        "LoadSessionRequest",
    ),
    (
        "session/resume",
        Request(
            id=4,
            method=acp.SESSION_RESUME,
            params=acp.ResumeSessionRequest(session_id=SID, cwd=CWD),
        ),
        "ResumeSessionRequest",
    ),
    (
        "session/close",
        Request(id=5, method=acp.SESSION_CLOSE, params=acp.CloseSessionRequest(session_id=SID)),
        "CloseSessionRequest",
    ),
    (
        "session/list",
        Request(id=6, method=acp.SESSION_LIST, params=acp.ListSessionsRequest(cwd=CWD)),
        "ListSessionsRequest",
    ),
    (
        "session/delete",
        Request(id=7, method=acp.SESSION_DELETE, params=acp.DeleteSessionRequest(session_id=SID)),
        "DeleteSessionRequest",
    ),
    (
        "session/prompt",
        Request(
            id="p-8",
            method=acp.SESSION_PROMPT,
            params=acp.PromptRequest(
                session_id=SID,
                prompt=[
                    acp.TextContent(text="Fix the failing test"),
                    acp.ResourceLink(uri="file:///home/user/project/a.py", name="a.py"),
                    acp.EmbeddedResource(
                        resource=acp.TextResourceContents(
                            uri="file:///home/user/project/a.py",
                            text="x = 1\n",
                            mime_type="text/x-python",
                        ),
                        annotations=acp.Annotations(audience=["assistant"], priority=0.5),
                    ),
                    acp.EmbeddedResource(
                        resource=acp.BlobResourceContents(uri="file:///tmp/b.bin", blob="AAEC")
                    ),
                    acp.ImageContent(data="iVBORw0KGgo=", mime_type="image/png"),
                    acp.AudioContent(data="UklGRg==", mime_type="audio/wav"),
                ],
            ),
        ),
        "PromptRequest",
    ),
    (
        "session/cancel",
        Notification(method=acp.SESSION_CANCEL, params=acp.CancelNotification(session_id=SID)),
        "CancelNotification",
    ),
    (
        "session/set_mode",
        Request(
            id=9,
            method=acp.SESSION_SET_MODE,
            params=acp.SetSessionModeRequest(session_id=SID, mode_id="plan"),
        ),
        "SetSessionModeRequest",
    ),
    (
        "session/set_config_option-select",
        Request(
            id=10,
            method=acp.SESSION_SET_CONFIG_OPTION,
            params=acp.SetSessionConfigOptionRequest(session_id=SID, config_id="model", value="m2"),
        ),
        "SetSessionConfigOptionRequest",
    ),
    (
        "session/set_config_option-boolean",
        Request(
            id=11,
            method=acp.SESSION_SET_CONFIG_OPTION,
            params=acp.SetSessionConfigOptionRequest.boolean(SID, "web_search", True),
        ),
        "SetSessionConfigOptionRequest",
    ),
    (
        "$/cancel_request",
        Notification(method=acp.CANCEL_REQUEST, params=acp.CancelRequestNotification(request_id=8)),
        "CancelRequestNotification",
    ),
    # Answers to the agent's requests.
    (
        "permission-selected",
        Response(
            id=0,
            result=acp.RequestPermissionResponse(outcome=acp.SelectedOutcome(option_id="allow")),
        ),
        "RequestPermissionResponse",
    ),
    (
        "permission-cancelled",
        Response(id=0, result=acp.RequestPermissionResponse(outcome=acp.CancelledOutcome())),
        "RequestPermissionResponse",
    ),
    (
        "fs/read_text_file",
        Response(id=1, result=acp.ReadTextFileResponse(content="line 1\nline 2\n")),
        "ReadTextFileResponse",
    ),
    ("fs/write_text_file", Response(id=2, result=acp.EmptyResult()), "WriteTextFileResponse"),
    (
        "terminal/create",
        Response(id=3, result=acp.CreateTerminalResponse(terminal_id="term_1")),
        "CreateTerminalResponse",
    ),
    (
        "terminal/output-running",
        Response(id=4, result=acp.TerminalOutputResponse(output="building…\n", truncated=False)),
        "TerminalOutputResponse",
    ),
    (
        "terminal/output-exited",
        Response(
            id=4,
            result=acp.TerminalOutputResponse(
                output="ok\n",
                truncated=True,
                exit_status=acp.TerminalExitStatus(exit_code=None, signal="SIGKILL"),
            ),
        ),
        "TerminalOutputResponse",
    ),
    (
        "terminal/wait_for_exit",
        Response(id=5, result=acp.WaitForExitResponse(exit_code=1)),
        "WaitForTerminalExitResponse",
    ),
    ("terminal/kill", Response(id=6, result=acp.EmptyResult()), "KillTerminalResponse"),
    ("terminal/release", Response(id=7, result=acp.EmptyResult()), "ReleaseTerminalResponse"),
    (
        "error-method-not-found",
        ErrorResponse(
            id=8, error=RpcFailure(METHOD_NOT_FOUND, "method not found: _x/y").to_error()
        ),
        None,
    ),
    (
        "error-cancelled-with-data",
        ErrorResponse(
            id="t-1", error=RpcFailure(REQUEST_CANCELLED, "cancelled", {"why": "user"}).to_error()
        ),
        None,
    ),
    (
        "error-null-id",
        ErrorResponse(id=None, error=RpcFailure(-32700, "parse error").to_error()),
        None,
    ),
]


@pytest.mark.parametrize(("msg", "def_name"), [s[1:] for s in SENT], ids=[s[0] for s in SENT])
def test_sent_messages_are_schema_valid(msg: Any, def_name: str | None) -> None:
    line = bytes(encode_line(msg))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    data = json.loads(line)
    assert data["jsonrpc"] == "2.0"
    if "method" in data:  # the table names the def the method's tags pick
        assert METHODS[data["method"]].params == def_name
        requests = None
    else:  # an answer to an agent's request: to the method whose result `def_name` is
        requests = {data["id"]: method_answered_by(def_name or "RequestPermissionResponse")}
    assert_valid_sent(data, sender="client", requests=requests)


# --- the check above can fail ------------------------------------------------------------------

PERMISSION = {"sessionId": SID, "toolCall": {"toolCallId": "t1"}, "options": []}
WRONG: list[tuple[str, dict[str, Any], dict[Any, str] | None, str]] = [
    # (label, message acpd would send, the agent's requests by id, what the failure says)
    ("params-of-no-def", {"jsonrpc": "2.0", "id": 1, "method": "session/prompt",
                          "params": {"foo": 1}}, None, "not a valid PromptRequest"),
    ("prompt-not-a-list", {"jsonrpc": "2.0", "id": 1, "method": "session/prompt",
                           "params": {"sessionId": SID, "prompt": "hi"}}, None, "PromptRequest"),
    ("bad-content-block", {"jsonrpc": "2.0", "id": 1, "method": "session/prompt",
                           "params": {"sessionId": SID, "prompt": [{"type": "txt", "text": "x"}]}},
     None, "PromptRequest"),
    ("cancel-without-session", {"jsonrpc": "2.0", "method": "session/cancel", "params": {}},
     None, "not a valid CancelNotification"),
    ("cancel-without-params", {"jsonrpc": "2.0", "method": "session/cancel"},
     None, "CancelNotification"),
    ("initialize-version-string", {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                   "params": {"protocolVersion": "1"}}, None, "InitializeRequest"),
    ("agent-side-method", {"jsonrpc": "2.0", "method": "session/update",
                           "params": {"sessionId": SID, "update": {}}}, None, "its own method"),
    ("unknown-method", {"jsonrpc": "2.0", "id": 1, "method": "session/frobnicate", "params": {}},
     None, "does not have"),
    ("request-without-id", {"jsonrpc": "2.0", "method": "session/new",
                            "params": {"cwd": CWD, "mcpServers": []}}, None, "without an id"),
    ("notification-with-id", {"jsonrpc": "2.0", "id": 3, "method": "session/cancel",
                              "params": {"sessionId": SID}}, None, "sent with an id"),
    ("fractional-id", {"jsonrpc": "2.0", "id": 1.5, "method": "session/new",
                       "params": {"cwd": CWD, "mcpServers": []}}, None, "RequestId"),
    ("no-jsonrpc", {"id": 1, "method": "session/new", "params": {"cwd": CWD, "mcpServers": []}},
     None, "not JSON-RPC 2.0"),
    ("bad-permission-outcome", {"jsonrpc": "2.0", "id": 0,
                                "result": {"outcome": {"outcome": "ok"}}},
     {0: "session/request_permission"}, "not a valid RequestPermissionResponse"),
    ("selected-without-option", {"jsonrpc": "2.0", "id": 0,
                                 "result": {"outcome": {"outcome": "selected"}}},
     {0: "session/request_permission"}, "RequestPermissionResponse"),
    ("answer-to-no-request", {"jsonrpc": "2.0", "id": 9, "result": {}},
     {0: "session/request_permission"}, "no request"),
    ("result-and-error", {"jsonrpc": "2.0", "id": 0, "result": {},
                          "error": {"code": -32603, "message": "x"}},
     {0: "fs/write_text_file"}, "result xor error"),
    ("error-without-message", {"jsonrpc": "2.0", "id": 0, "error": {"code": -32603}},
     {0: "fs/write_text_file"}, "not a valid Error"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("msg", "requests", "why"), [w[1:] for w in WRONG], ids=[w[0] for w in WRONG]
)
def test_wrong_sent_messages_are_rejected(
    msg: dict[str, Any], requests: dict[Any, str] | None, why: str
) -> None:
    with pytest.raises(AssertionError, match=why):
        assert_valid_sent(msg, sender="client", requests=requests)


def test_the_schema_root_alone_proves_little() -> None:
    """Why messages are checked by method: the root takes params that match no def."""
    wrong = WRONG[0][1]
    assert validator().is_valid(wrong)
    assert validator().is_valid({"jsonrpc": "2.0", "method": "session/cancel", "params": {}})
    with pytest.raises(AssertionError, match="PromptRequest"):
        assert_valid_sent(wrong)


def test_traffic_is_checked_line_by_line() -> None:
    agent = b'{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{}}\n'
    good = [
        {"jsonrpc": "2.0", "id": 0, "method": "session/cancel", "params": {"sessionId": SID}},
        {"jsonrpc": "2.0", "id": 0, "result": {"outcome": {"outcome": "cancelled"}}},
    ]
    good[0].pop("id")
    sent = b"".join(json.dumps(m).encode() + b"\n" for m in good)
    labels = assert_valid_traffic(sent, agent)
    assert labels == ["session/cancel", "session/request_permission result"]
    bad = sent + b'{"jsonrpc":"2.0","id":0,"result":{"outcome":{}}}\n'
    with pytest.raises(AssertionError, match="RequestPermissionResponse"):
        assert_valid_traffic(bad, agent)
    with pytest.raises(AssertionError, match="empty line"):
        assert_valid_traffic(sent + b"\n\n", agent)
