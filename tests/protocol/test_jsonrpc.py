"""JSON-RPC 2.0 envelope: classification, error codes, result decoding, robustness."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import acp
from protocol.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    NO_RAW,
    PARSE_ERROR,
    Envelope,
    ErrorResponse,
    InvalidResult,
    Notification,
    Request,
    Response,
    RpcError,
    RpcFailure,
    decode_envelope,
    decode_params,
    decode_result,
    encode,
    encode_line,
)
from tests.protocol._strategies import json_values


def _kind(env: Envelope) -> str | None:
    kinds = {
        "request": env.is_request,
        "notification": env.is_notification,
        "response": env.is_response,
    }
    found = [k for k, v in kinds.items() if v]
    assert len(found) <= 1
    return found[0] if found else None


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind", "id_"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}', "request", 1),
        (b'{"jsonrpc":"2.0","id":"a-1","method":"x"}', "request", "a-1"),
        (b'{"jsonrpc":"2.0","id":null,"method":"x"}', "request", None),  # RequestId may be null
        (b'{"jsonrpc":"2.0","id":0,"method":"session/request_permission"}', "request", 0),
        (b'{"jsonrpc":"2.0","method":"session/update","params":{}}', "notification", msgspec.UNSET),
        (b'{"method":"session/cancel"}', "notification", msgspec.UNSET),  # no jsonrpc: tolerated
        (b'{"jsonrpc":"2.0","id":1,"result":{}}', "response", 1),
        (b'{"jsonrpc":"2.0","id":"s","result":null}', "response", "s"),  # null is a result
        (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}', "response", None),
        # codex-acp answers `$/cancel_request` with an id-less error: a response to drop.
        (b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"nope"}}', "response", msgspec.UNSET),
        (b'{"jsonrpc":"2.0","id":7}', None, 7),  # nothing: the caller answers -32600 with id 7
        (b'{"jsonrpc":"2.0"}', None, msgspec.UNSET),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","future":[1,2]}', "request", 1),  # unknown member
    ],
)
def test_classification(line: bytes, kind: str | None, id_: Any) -> None:
    env = decode_envelope(line)
    assert _kind(env) == kind
    assert env.id == id_


def test_params_and_result_stay_raw_until_the_second_pass() -> None:
    env = decode_envelope(b'{"jsonrpc":"2.0","id":3,"method":"m","params":{"a": [1, 2]}}')
    assert bytes(env.params) == b'{"a": [1, 2]}'
    assert env.result == NO_RAW
    assert not env.result
    env = decode_envelope(b'{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn"}}')
    assert decode_result(acp.PromptResponse, env.result) == acp.PromptResponse(
        stop_reason="end_turn"
    )


def test_error_member_is_decoded() -> None:
    env = decode_envelope(
        b'{"jsonrpc":"2.0","id":9,"error":{"code":-32603,"message":"Internal error",'
        b'"data":{"details":"Session not found"}}}'
    )
    assert env.error == RpcError(-32603, "Internal error", {"details": "Session not found"})
    exc = RpcFailure.from_error(env.error)
    assert (exc.code, exc.message, exc.data) == (-32603, "Internal error", env.error.data)
    assert exc.to_error() == env.error


# --- error codes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"   ",
        b"{",
        b'{"jsonrpc":"2.0","id":1,"method":"x"',  # truncated
        b'{"jsonrpc":"2.0"} trailing',
        b"{'single': 'quotes'}",
        b'{"jsonrpc":"2.0","id":1,"method":"\xff\xfe"}',  # not UTF-8
        b"nul\x00",
    ],
)
def test_bad_json_is_a_parse_error(line: bytes) -> None:
    with pytest.raises(RpcFailure) as info:
        decode_envelope(line)
    assert info.value.code == PARSE_ERROR


@pytest.mark.parametrize(
    "line",
    [
        b"[]",
        b'[{"jsonrpc":"2.0","id":1,"method":"x"}]',  # a batch: v2 only
        b"42",
        b'"initialize"',
        b"null",
        b"true",
        b'{"jsonrpc":2.0,"id":1,"method":"x"}',
        b'{"jsonrpc":"2.0","id":1.5,"method":"x"}',
        b'{"jsonrpc":"2.0","id":{"a":1},"method":"x"}',
        b'{"jsonrpc":"2.0","id":1,"method":7}',
        b'{"jsonrpc":"2.0","id":1,"error":"boom"}',
        b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}',
        b'{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}',
    ],
)
def test_wrong_shapes_are_invalid_requests(line: bytes) -> None:
    with pytest.raises(RpcFailure) as info:
        decode_envelope(line)
    assert info.value.code == INVALID_REQUEST


@pytest.mark.parametrize(
    "params",
    [
        b"[]",
        b'"x"',
        b"{}",  # sessionId missing
        b'{"sessionId": 1}',
        b'{"sessionId": "s", "_meta": 5}',
    ],
)
def test_bad_params_are_invalid_params(params: bytes) -> None:
    line = b'{"jsonrpc":"2.0","id":1,"method":"session/close","params":' + params + b"}"
    env = decode_envelope(line)
    with pytest.raises(RpcFailure) as info:
        decode_params(msgspec.json.Decoder(acp.CloseSessionRequest), env.params)
    assert info.value.code == INVALID_PARAMS


@pytest.mark.parametrize("params", [b"", b',"params":null'])
def test_absent_or_null_params_decode_as_an_empty_object(params: bytes) -> None:
    env = decode_envelope(b'{"jsonrpc":"2.0","id":1,"method":"logout"' + params + b"}")
    assert decode_params(msgspec.json.Decoder(acp.LogoutRequest), env.params) == acp.LogoutRequest()
    with pytest.raises(RpcFailure) as info:  # but required members are still required
        decode_params(msgspec.json.Decoder(acp.CloseSessionRequest), env.params)
    assert info.value.code == INVALID_PARAMS


# --- results --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (acp.LoadSessionResponse, acp.LoadSessionResponse()),  # the docs' null (ACP.md §18.1)
        (acp.EmptyResult, acp.EmptyResult()),  # fs/write_text_file and every other `{}`
        (acp.ResumeSessionResponse, acp.ResumeSessionResponse()),
        (acp.WaitForExitResponse, acp.WaitForExitResponse()),
    ],
)
def test_null_result_is_the_empty_default_where_all_fields_are_optional(
    tp: type[msgspec.Struct], expected: msgspec.Struct
) -> None:
    env = decode_envelope(b'{"jsonrpc":"2.0","id":1,"result":null}')
    assert decode_result(tp, env.result) == expected
    assert decode_result(tp, b"null") == expected
    assert decode_result(tp, NO_RAW) == expected  # absent altogether


@pytest.mark.parametrize("tp", [acp.NewSessionResponse, acp.PromptResponse, acp.InitializeResponse])
def test_null_result_is_invalid_where_a_field_is_required(tp: type[msgspec.Struct]) -> None:
    with pytest.raises(InvalidResult) as info:
        decode_result(tp, msgspec.Raw(b"null"))
    assert info.value.code == INTERNAL_ERROR
    assert isinstance(info.value, RpcFailure)


def test_bad_result_raises_invalid_result() -> None:
    with pytest.raises(InvalidResult, match="stopReason"):
        decode_result(acp.PromptResponse, b'{"stop":"end_turn"}')
    with pytest.raises(InvalidResult):
        decode_result(acp.PromptResponse, b'{"stopReason":')


def test_results_keep_unknown_fields_out_but_do_not_fail() -> None:
    # claude-agent-acp adds `sessionId` to the load result; agents add `models`, `usage`.
    raw = b'{"sessionId":"s","models":{"currentModelId":"m"},"modes":null}'
    assert decode_result(acp.LoadSessionResponse, raw) == acp.LoadSessionResponse(modes=None)


# --- encoding -------------------------------------------------------------------------------


def test_outgoing_envelopes_keep_jsonrpc_and_omit_absent_members() -> None:
    assert json.loads(encode(Request(id=1, method="m"))) == {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "m",
    }
    assert json.loads(encode(Notification(method="n", params={"a": 1}))) == {
        "jsonrpc": "2.0",
        "method": "n",
        "params": {"a": 1},
    }
    assert json.loads(encode(Response(id=None, result=None))) == {
        "jsonrpc": "2.0",
        "id": None,
        "result": None,
    }
    assert json.loads(encode(ErrorResponse(id="x", error=RpcError(-32601, "nope")))) == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": -32601, "message": "nope"},
    }


def test_encode_line_appends_to_a_buffer() -> None:
    buf = bytearray(b"head\n")
    out = encode_line(Notification(method="a"), buf)
    assert out is buf
    encode_line(Notification(method="b\nc"), buf)  # a newline in a string is escaped
    lines = bytes(buf).split(b"\n")
    assert lines[0] == b"head"
    assert [json.loads(x)["method"] for x in lines[1:3]] == ["a", "b\nc"]
    assert lines[3] == b""
    assert (
        bytes(encode_line(Notification(method="a")))
        == bytes(buf).split(b"\n", 1)[1].split(b"\n")[0] + b"\n"
    )


def test_rpc_failure_repr_names_the_class() -> None:
    assert repr(RpcFailure(-32601, "x")) == "RpcFailure(-32601, 'x')"
    assert repr(InvalidResult("bad")) == "InvalidResult(-32603, 'bad')"


# --- robustness: nothing a peer sends crashes the codec ---------------------------------------


def _code(fn: Callable[..., object], *args: Any) -> int | None:
    """The code of the RpcFailure `fn` raises, None if it returns; anything else propagates."""
    try:
        fn(*args)
    except RpcFailure as exc:
        return exc.code
    return None


ALL_PARAMS = [
    *(p for p, _ in acp.CLIENT_REQUESTS.values()),
    *(p for p, _ in acp.AGENT_REQUESTS.values()),
    *acp.NOTIFICATIONS.values(),
]
ALL_RESULTS = [r for _, r in [*acp.CLIENT_REQUESTS.values(), *acp.AGENT_REQUESTS.values()]]
METHODS = [*acp.CLIENT_REQUESTS, *acp.AGENT_REQUESTS, *acp.NOTIFICATIONS, "_x/y"]


@given(params=json_values, id_=json_values, method=st.sampled_from(METHODS))
def test_any_json_params_never_crash_decoding(params: Any, id_: Any, method: str) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}).encode()
    code = _code(decode_envelope, line)
    assert code in (None, INVALID_REQUEST)  # only a bad id can fail the first pass
    if code is None:
        env = decode_envelope(line)
        for tp in ALL_PARAMS:
            assert _code(decode_params, msgspec.json.Decoder(tp), env.params) in (
                None,
                INVALID_PARAMS,
            )
        with contextlib.suppress(msgspec.DecodeError):
            acp.decode_session_notification(env.params)
    assert acp.decode_update_line(line) is None  # it has an id: never a notification


@given(session_id=json_values, update=json_values)
def test_any_json_update_never_crashes_decoding(session_id: Any, update: Any) -> None:
    params = {"sessionId": session_id, "update": update}
    line = json.dumps({"jsonrpc": "2.0", "method": "session/update", "params": params}).encode()
    fast = acp.decode_update_line(line)
    try:
        slow = acp.decode_session_notification(decode_envelope(line).params)
    except msgspec.DecodeError:
        slow = None
    if fast is not None:
        assert (fast.session_id, fast.update) == slow


@given(value=json_values)
def test_any_json_message_never_crashes_decode_envelope(value: Any) -> None:
    code = _code(decode_envelope, json.dumps(value).encode())
    if isinstance(value, dict) and not set(value) & {"jsonrpc", "id", "method", "error"}:
        assert code is None  # unknown members are ignored
    assert code in (None, INVALID_REQUEST)


@given(data=st.binary(max_size=200))
def test_any_bytes_never_crash_decode_envelope(data: bytes) -> None:
    assert _code(decode_envelope, data) in (None, PARSE_ERROR, INVALID_REQUEST)
    assert acp.decode_update_line(data) is None


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3", b"\xed\xa0\x80"])  # bad byte, cut, surrogate
def test_bad_utf8_inside_params_is_invalid_params(bad: bytes) -> None:
    # `Raw` params are not UTF-8-checked by the first pass: the second one must catch it.
    params = b'{"sessionId":"' + bad + b'","update":{"sessionUpdate":"plan","entries":[]}}'
    line = b'{"jsonrpc":"2.0","method":"session/update","params":' + params + b"}"
    env = decode_envelope(line)
    assert _code(decode_params, msgspec.json.Decoder(acp.SessionNotification), env.params) == (
        INVALID_PARAMS
    )
    with pytest.raises(msgspec.DecodeError):
        acp.decode_session_notification(env.params)
    assert acp.decode_update_line(line) is None
    with pytest.raises(InvalidResult):
        decode_result(acp.NewSessionResponse, params)


@given(result=json_values)
def test_any_json_result_decodes_or_raises_invalid_result(result: Any) -> None:
    raw = json.dumps(result).encode()
    for tp in ALL_RESULTS:
        with contextlib.suppress(InvalidResult):
            decode_result(tp, raw)


def _deep(levels: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * levels + close * levels


DEEP = 100_000  # far past the interpreter's recursion limit, as sent to the daemon


@pytest.mark.parametrize("nest", [_deep(DEEP), b'{"a":' * DEEP + b"1" + b"}" * DEEP])
def test_nesting_past_the_recursion_limit_is_an_error_not_a_crash(nest: bytes) -> None:
    line = b'{"jsonrpc":"2.0","id":1,"method":"m","params":' + nest + b"}"
    with pytest.raises(RpcFailure) as caught:
        decode_envelope(line)
    assert (caught.value.code, caught.value.message) == (
        INVALID_REQUEST,
        "invalid request: nested too deeply",
    )
    with pytest.raises(RpcFailure) as caught:
        decode_params(msgspec.json.Decoder(dict[str, Any]), msgspec.Raw(nest))
    assert caught.value.code == INVALID_PARAMS
    with pytest.raises(InvalidResult, match="nested too deeply"):
        decode_result(Any, nest)  # whatever shape, as a waiter expecting any result
    update = b'{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s","update":'
    assert acp.decode_update_line(update + nest + b"}}") is None
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        acp.decode_session_notification(b'{"sessionId":"s","update":' + nest + b"}")


def test_nesting_a_request_may_need_still_decodes() -> None:
    params = b'{"agent_cmd":["x"],"title":' + b'"t"}'
    env = decode_envelope(b'{"jsonrpc":"2.0","id":1,"method":"m","params":' + params + b"}")
    assert bytes(env.params) == params
    assert decode_params(msgspec.json.Decoder(Any), msgspec.Raw(_deep(200))) is not None
