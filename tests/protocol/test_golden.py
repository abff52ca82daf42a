"""One golden JSON-RPC message per ACP message type (`golden/`), round-tripped.

Each golden is decoded the way acpd decodes it (envelope, then params by method or result by
the waiter's type), re-encoded the way acpd encodes it, and must come back equal; where the
Struct keeps every member, the re-encoded JSON equals the golden (key order aside). Goldens
are realistic, modelled on the spec docs' examples, and are schema-valid unless marked as a
tolerated deviation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from protocol import acp
from protocol.jsonrpc import (
    Envelope,
    ErrorResponse,
    Notification,
    Request,
    Response,
    RpcError,
    decode_envelope,
    decode_params,
    decode_result,
    encode_line,
)
from tests.protocol._schema import METHODS, assert_valid, assert_valid_message, method_answered_by

GOLDEN = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Case:
    name: str
    type: Any  # of params (requests, notifications) or result (responses)
    schema_def: str | None  # None: deliberately not schema-valid (a tolerated deviation)
    exact: bool = True  # re-encoded JSON equals the golden
    # The def of the re-encoded body, if the golden's is None (a tolerated deviation that
    # acpd re-encodes into a valid message); requests and notifications need none: the method
    # picks it.
    encoded_def: str | None = None


CASES = [
    Case("initialize_request", acp.InitializeRequest, "InitializeRequest"),
    Case("initialize_response", acp.InitializeResponse, "InitializeResponse"),
    Case("authenticate_request", acp.AuthenticateRequest, "AuthenticateRequest"),
    Case("authenticate_response", acp.EmptyResult, "AuthenticateResponse"),
    Case("logout_request", acp.LogoutRequest, "LogoutRequest"),
    Case("logout_response", acp.EmptyResult, "LogoutResponse"),
    Case("session_new_request", acp.NewSessionRequest, "NewSessionRequest"),
    Case("session_new_response", acp.NewSessionResponse, "NewSessionResponse"),
    Case("session_load_request", acp.LoadSessionRequest, "LoadSessionRequest"),
    Case("session_load_response", acp.LoadSessionResponse, "LoadSessionResponse"),
    # The docs' `null` (ACP.md §18.1): decodes as an empty result, re-encodes as `{}`.
    Case(
        "session_load_response_null",
        acp.LoadSessionResponse,
        None,
        exact=False,
        encoded_def="LoadSessionResponse",
    ),
    Case("session_resume_request", acp.ResumeSessionRequest, "ResumeSessionRequest"),
    Case("session_resume_response", acp.ResumeSessionResponse, "ResumeSessionResponse"),
    Case("session_close_request", acp.CloseSessionRequest, "CloseSessionRequest"),
    Case("session_close_response", acp.EmptyResult, "CloseSessionResponse"),
    Case("session_list_request", acp.ListSessionsRequest, "ListSessionsRequest"),
    Case("session_list_response", acp.ListSessionsResponse, "ListSessionsResponse"),
    Case("session_delete_request", acp.DeleteSessionRequest, "DeleteSessionRequest"),
    Case("session_delete_response", acp.EmptyResult, "DeleteSessionResponse"),
    Case("session_prompt_request", acp.PromptRequest, "PromptRequest"),
    Case("session_prompt_response", acp.PromptResponse, "PromptResponse"),
    Case("session_cancel_notification", acp.CancelNotification, "CancelNotification"),
    Case("session_set_mode_request", acp.SetSessionModeRequest, "SetSessionModeRequest"),
    Case("session_set_mode_response", acp.EmptyResult, "SetSessionModeResponse"),
    Case(
        "session_set_config_option_request",
        acp.SetSessionConfigOptionRequest,
        "SetSessionConfigOptionRequest",
    ),
    Case(
        "session_set_config_option_boolean_request",
        acp.SetSessionConfigOptionRequest,
        "SetSessionConfigOptionRequest",
    ),
    Case(
        "session_set_config_option_response",
        acp.SetSessionConfigOptionResponse,
        "SetSessionConfigOptionResponse",
    ),
    *(
        Case(f"update_{tag}", acp.SessionNotification, "SessionNotification")
        for tag in sorted(acp.KNOWN_UPDATE_TAGS)
    ),
    # The docs' `modeId` (ACP.md §18.2): accepted, re-encoded as the schema's `currentModeId`.
    Case("update_current_mode_update_docs_spelling", acp.SessionNotification, None, exact=False),
    Case("request_permission_request", acp.RequestPermissionRequest, "RequestPermissionRequest"),
    Case(
        "request_permission_response_selected",
        acp.RequestPermissionResponse,
        "RequestPermissionResponse",
    ),
    Case(
        "request_permission_response_cancelled",
        acp.RequestPermissionResponse,
        "RequestPermissionResponse",
    ),
    Case("fs_read_text_file_request", acp.ReadTextFileRequest, "ReadTextFileRequest"),
    Case("fs_read_text_file_response", acp.ReadTextFileResponse, "ReadTextFileResponse"),
    Case("fs_write_text_file_request", acp.WriteTextFileRequest, "WriteTextFileRequest"),
    Case("fs_write_text_file_response", acp.EmptyResult, "WriteTextFileResponse"),
    Case("terminal_create_request", acp.CreateTerminalRequest, "CreateTerminalRequest"),
    Case("terminal_create_response", acp.CreateTerminalResponse, "CreateTerminalResponse"),
    Case("terminal_output_request", acp.TerminalRequest, "TerminalOutputRequest"),
    Case("terminal_output_response", acp.TerminalOutputResponse, "TerminalOutputResponse"),
    Case("terminal_wait_for_exit_request", acp.TerminalRequest, "WaitForTerminalExitRequest"),
    Case("terminal_wait_for_exit_response", acp.WaitForExitResponse, "WaitForTerminalExitResponse"),
    Case("terminal_kill_request", acp.TerminalRequest, "KillTerminalRequest"),
    Case("terminal_kill_response", acp.EmptyResult, "KillTerminalResponse"),
    Case("terminal_release_request", acp.TerminalRequest, "ReleaseTerminalRequest"),
    Case("terminal_release_response", acp.EmptyResult, "ReleaseTerminalResponse"),
    Case("cancel_request_notification", acp.CancelRequestNotification, "CancelRequestNotification"),
    Case("error_response", RpcError, "Error"),
    # Tolerated input: a new update variant, and a known one carrying a new content type.
    Case("update_unknown_variant", acp.SessionNotification, None),
    Case("update_agent_message_chunk_unknown_block", acp.SessionNotification, None),
    Case("update_tool_call_update_unknown_content", acp.SessionNotification, None),
]
PASSTHROUGH = {
    "update_unknown_variant",
    "update_agent_message_chunk_unknown_block",
    "update_tool_call_update_unknown_content",
}


def _load(name: str) -> tuple[bytes, Any]:
    """(the golden as one line, as a peer sends it; the golden as Python data)."""
    golden = json.loads((GOLDEN / f"{name}.json").read_bytes())
    return msgspec.json.encode(golden), golden


def test_every_golden_has_a_case() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == {c.name for c in CASES}


def _decode(case: Case, env: Envelope) -> Any:
    if env.is_response and env.error is not msgspec.UNSET:
        return env.error
    if env.is_response:
        return decode_result(case.type, env.result)
    return decode_params(msgspec.json.Decoder(case.type), env.params)


def _rebuild(env: Envelope, payload: Any) -> Any:
    if env.is_request:
        assert isinstance(env.method, str)
        assert env.id is not msgspec.UNSET
        return Request(id=env.id, method=env.method, params=payload)  # type: ignore[arg-type]
    if env.is_notification:
        assert isinstance(env.method, str)
        return Notification(method=env.method, params=payload)
    assert env.id is not msgspec.UNSET
    if isinstance(payload, RpcError):
        return ErrorResponse(id=env.id, error=payload)
    return Response(id=env.id, result=payload)


ROUND_TRIP = [c for c in CASES if c.name not in PASSTHROUGH]


@pytest.mark.parametrize("case", ROUND_TRIP, ids=[c.name for c in ROUND_TRIP])
def test_golden_round_trip(case: Case) -> None:
    line, golden = _load(case.name)
    env = decode_envelope(line)
    kinds = [env.is_request, env.is_notification, env.is_response]
    assert kinds.count(True) == 1
    first = _decode(case, env)
    assert type(first) is case.type

    out = bytes(encode_line(_rebuild(env, first)))
    assert out.endswith(b"\n")
    assert out.count(b"\n") == 1
    assert _decode(case, decode_envelope(out)) == first
    if case.exact:
        assert json.loads(out) == golden

    if case.schema_def is not None:
        _assert_valid(case, golden)
    # What we re-encode is valid, even from tolerated input.
    _assert_valid(case, json.loads(out))


def _assert_valid(case: Case, message: Any) -> None:
    """The whole message, against the def its method's schema tags pick, not the schema's
    root (which takes any params for any method)."""
    if "error" in message:
        assert case.schema_def == "Error"
        assert set(message) == {"jsonrpc", "id", "error"}
        assert_valid(message["error"], "Error")
        return
    if "method" in message:
        defs = METHODS[message["method"]]
        assert case.schema_def in (None, defs.params)  # the case table agrees with the tags
        assert_valid_message(message)
        return
    result_def = case.schema_def or case.encoded_def
    assert result_def is not None, f"{case.name}: say what its re-encoded result must match"
    assert_valid_message(message, answers=method_answered_by(result_def))


UPDATES = [c for c in ROUND_TRIP if c.type is acp.SessionNotification]


@pytest.mark.parametrize("case", UPDATES, ids=[c.name for c in UPDATES])
def test_golden_updates_decode_the_same_on_every_path(case: Case) -> None:
    line, _ = _load(case.name)
    env = decode_envelope(line)
    note = decode_params(msgspec.json.Decoder(acp.SessionNotification), env.params)
    assert acp.decode_session_notification(env.params) == (note.session_id, note.update)
    assert acp.decode_update_line(line) == note


@pytest.mark.parametrize("name", sorted(PASSTHROUGH))
def test_golden_unknown_updates_pass_through_verbatim(name: str) -> None:
    line, golden = _load(name)
    assert acp.decode_update_line(line) is None  # the fast path declines...
    env = decode_envelope(line)
    session_id, update = acp.decode_session_notification(env.params)  # ...the general one copes
    assert session_id == golden["params"]["sessionId"]
    assert isinstance(update, acp.UnknownUpdate)
    assert update.session_update == golden["params"]["update"]["sessionUpdate"]
    assert json.loads(bytes(update.raw)) == golden["params"]["update"]
