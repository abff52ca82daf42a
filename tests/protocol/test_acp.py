"""ACP types: round trips of generated values, and the tolerance rules of ACP.md §18."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from protocol import acp
from protocol.jsonrpc import Notification, decode_envelope, encode_line
from tests.protocol._schema import STRUCT_DEFS
from tests.protocol._strategies import strategy

# The McpServer subclasses used to build outgoing values decode as the flat base, so values
# holding them come back equal on the wire only.
DECODES_AS: dict[type, type] = {
    acp.McpServerStdio: acp.McpServer,
    acp.McpServerHttp: acp.McpServer,
    acp.McpServerSse: acp.McpServer,
}
WIRE_EQUAL_ONLY = {
    *DECODES_AS,
    acp.McpServer,
    acp.NewSessionRequest,
    acp.LoadSessionRequest,
    acp.ResumeSessionRequest,
}
TYPES = sorted(STRUCT_DEFS, key=lambda t: t.__name__)


@pytest.mark.parametrize("tp", TYPES, ids=[t.__name__ for t in TYPES])
def test_generated_values_round_trip(tp: type[msgspec.Struct]) -> None:
    target = DECODES_AS.get(tp, tp)
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(target)

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy(tp))
    def check(value: msgspec.Struct) -> None:
        wire = msgspec.json.encode(value)
        back = decoder.decode(wire)
        assert type(back) is target
        if tp not in WIRE_EQUAL_ONLY:
            assert back == value
        assert msgspec.json.encode(back) == wire

    check()


@settings(max_examples=50, deadline=None)
@given(strategy(acp.SessionNotification))
def test_generated_updates_decode_the_same_on_both_paths(note: acp.SessionNotification) -> None:
    line = bytes(encode_line(Notification(method=acp.SESSION_UPDATE, params=note)))
    assert acp.decode_update_line(line) == note
    assert acp.decode_session_notification(decode_envelope(line).params) == (
        note.session_id,
        note.update,
    )


# --- session/update tolerance ---------------------------------------------------------------


def _params(update: dict[str, Any]) -> bytes:
    return json.dumps({"sessionId": "s", "update": update}).encode()


@pytest.mark.parametrize(
    "update",
    [
        {"sessionUpdate": "subagent_update", "agentId": "a1"},  # a variant from the future
        {"sessionUpdate": "agent_thought_chunk", "content": {"type": "video", "uri": "x"}},
        {"sessionUpdate": "user_message_chunk", "content": {"type": "pdf"}},
        {
            "sessionUpdate": "compaction_summary_chunk",
            "compactionId": "c",
            "content": {"type": "z"},
        },
        {
            "sessionUpdate": "tool_call",
            "toolCallId": "t",
            "title": "x",
            "content": [{"type": "web"}],
        },
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "t",
            "content": [{"type": "content", "content": {"type": "chart"}}],
        },
        {
            "sessionUpdate": "compaction_update",
            "compactionId": "c",
            "status": "x",
            "summary": [{"type": "q"}],
        },
    ],
)
def test_unknown_variants_and_nested_types_pass_through(update: dict[str, Any]) -> None:
    session_id, got = acp.decode_session_notification(_params(update))
    assert session_id == "s"
    assert isinstance(got, acp.UnknownUpdate)
    assert got.session_update == update["sessionUpdate"]
    assert json.loads(bytes(got.raw)) == update


@pytest.mark.parametrize(
    "update",
    [
        {"sessionUpdate": "agent_message_chunk"},  # content missing
        {"sessionUpdate": "agent_message_chunk", "content": {"text": "no type"}},
        {"sessionUpdate": "agent_message_chunk", "content": {"type": "text"}},  # text missing
        {"sessionUpdate": "agent_message_chunk", "content": {"type": 5}},
        {"sessionUpdate": "tool_call", "title": "no id"},
        {"sessionUpdate": "tool_call_update", "toolCallId": "t", "content": [{"type": "diff"}]},
        {"sessionUpdate": "tool_call_update", "toolCallId": "t", "content": "oops"},
        {"sessionUpdate": "usage_update", "used": "lots", "size": 1},
        {"sessionUpdate": "current_mode_update"},  # neither spelling
        {"sessionUpdate": ""},
        {"sessionUpdate": 7},
        {"no": "tag"},
        [],
        "plan",
    ],
)
def test_malformed_known_updates_are_rejected(update: Any) -> None:
    with pytest.raises(msgspec.DecodeError):
        acp.decode_session_notification(_params(update))


@pytest.mark.parametrize("params", [b"{}", b'{"sessionId":"s"}', b'{"update":{}}', b"[]", b"null"])
def test_malformed_params_are_rejected(params: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        acp.decode_session_notification(params)


def test_null_members_are_accepted_and_kept() -> None:
    # The schema allows null for optional members; agents do send it.
    update = {
        "sessionUpdate": "tool_call_update",
        "toolCallId": "t",
        "title": None,
        "kind": None,
        "status": None,
        "content": None,
        "locations": None,
        "rawInput": None,
        "_meta": None,
    }
    _, got = acp.decode_session_notification(_params(update))
    assert isinstance(got, acp.ToolCallUpdate)
    assert got.title is None
    assert got.meta is None
    assert json.loads(msgspec.json.encode(got)) == update


def test_unknown_fields_and_enum_values_are_tolerated() -> None:
    update = {
        "sessionUpdate": "tool_call",
        "toolCallId": "t",
        "title": "Browse",
        "kind": "browse",  # not in ToolKind
        "status": "queued",  # not in ToolCallStatus
        "somethingNew": {"a": 1},
    }
    _, got = acp.decode_session_notification(_params(update))
    assert isinstance(got, acp.ToolCall)
    assert (got.kind, got.status) == ("browse", "queued")


@pytest.mark.parametrize("key", ["currentModeId", "modeId"])
def test_current_mode_update_accepts_both_spellings(key: str) -> None:
    _, got = acp.decode_session_notification(
        _params({"sessionUpdate": "current_mode_update", key: "plan"})
    )
    assert isinstance(got, acp.CurrentModeUpdate)
    assert got.mode == "plan"
    assert got.current_mode_id == "plan"
    assert json.loads(msgspec.json.encode(got)) == {
        "sessionUpdate": "current_mode_update",
        "currentModeId": "plan",
    }


def test_plan_entries_and_commands_tolerate_missing_required_members_but_emit_them() -> None:
    _, got = acp.decode_session_notification(
        _params({"sessionUpdate": "plan", "entries": [{"content": "do it"}]})
    )
    assert isinstance(got, acp.Plan)
    assert json.loads(msgspec.json.encode(got.entries[0])) == {
        "content": "do it",
        "priority": "medium",
        "status": "pending",
    }
    _, got = acp.decode_session_notification(
        _params(
            {"sessionUpdate": "available_commands_update", "availableCommands": [{"name": "x"}]}
        )
    )
    assert isinstance(got, acp.AvailableCommandsUpdate)
    assert json.loads(msgspec.json.encode(got.available_commands[0])) == {
        "name": "x",
        "description": "",
    }


def test_decode_update_line_declines_what_is_not_a_plain_update_notification() -> None:
    update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}
    params = {"sessionId": "s", "update": update}
    ok = {"jsonrpc": "2.0", "method": "session/update", "params": params}
    assert acp.decode_update_line(json.dumps(ok).encode()) is not None
    for bad in [
        {**ok, "id": 1},  # a request: must be answered, so not for the fast path
        {**ok, "jsonrpc": "1.0"},
        {**ok, "method": "session/updates"},
        {**ok, "params": {"sessionId": "s", "update": {"sessionUpdate": "new_thing"}}},
        {"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": "s"}},
    ]:
        assert acp.decode_update_line(json.dumps(bad).encode()) is None
    assert acp.decode_update_line(b'{"method":"session/update",') is None


# --- other types ----------------------------------------------------------------------------


def test_embedded_resource_is_text_or_blob() -> None:
    dec = msgspec.json.Decoder(acp.ContentBlock)
    text = dec.decode(b'{"type":"resource","resource":{"uri":"file:///a","text":"x"}}')
    assert isinstance(text, acp.EmbeddedResource)
    assert text.resource.text == "x"
    assert acp.content_text(text) == "x"
    blob = dec.decode(b'{"type":"resource","resource":{"uri":"file:///b","blob":"AA=="}}')
    assert isinstance(blob, acp.EmbeddedResource)
    assert acp.content_text(blob) == "<resource file:///b>"
    for bad in [b'{"uri":"u"}', b'{"uri":"u","text":"a","blob":"b"}']:
        with pytest.raises(msgspec.ValidationError, match="exactly one"):
            dec.decode(b'{"type":"resource","resource":' + bad + b"}")


def test_content_text() -> None:
    assert acp.content_text(acp.TextContent(text="hi")) == "hi"
    assert acp.content_text(acp.ResourceLink(uri="file:///r", name="r")) == "[r](file:///r)"
    assert acp.content_text(acp.ImageContent(data="", mime_type="image/png")) == "<image>"
    assert acp.content_text(acp.AudioContent(data="", mime_type="audio/wav")) == "<audio>"


def test_mcp_servers_encode_per_transport_and_decode_flat() -> None:
    servers = [
        acp.McpServerStdio(name="a", command="c"),
        acp.McpServerHttp(name="h", url="https://h"),
        acp.McpServerSse(name="s", url="https://s"),
    ]
    wire = msgspec.json.encode(acp.NewSessionRequest(cwd="/", mcp_servers=servers))
    assert json.loads(wire)["mcpServers"] == [
        {"name": "a", "command": "c", "args": [], "env": []},
        {"name": "h", "type": "http", "url": "https://h", "headers": []},
        {"name": "s", "type": "sse", "url": "https://s", "headers": []},
    ]
    back = msgspec.json.decode(wire, type=acp.NewSessionRequest)
    assert [(s.type, s.command, s.url) for s in back.mcp_servers] == [
        (msgspec.UNSET, "c", msgspec.UNSET),
        ("http", msgspec.UNSET, "https://h"),
        ("sse", msgspec.UNSET, "https://s"),
    ]


def test_auth_methods() -> None:
    resp = msgspec.json.decode(
        b'{"protocolVersion":1,"authMethods":['
        b'{"id":"a","name":"Agent"},'
        b'{"id":"t","name":"Terminal","type":"terminal","args":["--login"]},'
        b'{"id":"openai-api-key","name":"OpenAI","type":"env_var","vars":[{"name":"OPENAI_API_KEY"}]},'
        b'{"id":"x","name":"Future","type":"oauth","scopes":["a"]}]}',
        type=acp.InitializeResponse,
    )
    assert [m.kind for m in resp.auth_methods] == ["agent", "terminal", "env_var", "oauth"]
    assert resp.auth_methods[2].vars == [{"name": "OPENAI_API_KEY"}]


def test_capability_markers() -> None:
    caps = msgspec.json.decode(
        b'{"sessionCapabilities":{"list":{},"resume":null,"fork":{}},'
        b'"mcpCapabilities":{"acp":true}}',  # unknown markers seen in the wild (ACP.md §18.5)
        type=acp.AgentCapabilities,
    )
    sc = caps.session_capabilities
    assert acp.supported(sc.list)
    assert not acp.supported(sc.resume)
    assert not acp.supported(sc.close)
    assert caps.load_session is False


def test_permission_request_keeps_the_tool_call_as_sent_and_types_it_on_demand() -> None:
    raw = (
        b'{"sessionId":"s","options":[{"optionId":"o","name":"Allow","kind":"allow_once"}],'
        b'"toolCall":{"toolCallId":"t","title":"Edit","kind":"edit","extra":1,'
        b'"content":[{"type":"diff","path":"/a","newText":"x"}]}}'
    )
    req = msgspec.json.decode(raw, type=acp.RequestPermissionRequest)
    assert req.tool_call["extra"] == 1
    typed = req.typed_tool_call()
    assert typed is not None
    assert typed.title == "Edit"
    assert typed.content == [acp.Diff(path="/a", new_text="x")]
    odd = msgspec.json.decode(
        b'{"sessionId":"s","options":[],"toolCall":{"toolCallId":7}}',
        type=acp.RequestPermissionRequest,
    )
    assert odd.typed_tool_call() is None


def test_parse_config_options_skips_unknown_and_malformed() -> None:
    options: list[dict[str, Any]] = [
        {"id": "m", "name": "Mode", "type": "select", "currentValue": "a", "options": []},
        {"id": "x", "name": "Slider", "type": "range", "currentValue": 3},  # unknown type
        {"id": "b", "name": "Web", "type": "boolean", "currentValue": True},
        {"id": "broken", "type": "boolean"},
    ]
    parsed = acp.parse_config_options(options)
    assert [type(o) for o in parsed] == [acp.SessionConfigSelect, acp.SessionConfigBoolean]
    assert [o.id for o in parsed] == ["m", "b"]


@pytest.mark.parametrize(
    ("init", "advertised"),
    [
        ({}, False),
        # codex-acp and claude-agent-acp: `_meta` of the initialize result.
        ({"_meta": {"steering": {"supported": True}}}, True),
        ({"_meta": {"steering": {"supported": False}}}, False),
        ({"_meta": {"steering": {"supported": "yes"}}}, False),
        ({"_meta": {"steering": True}}, False),
        ({"_meta": None}, False),
        # Some agents put it in `agentCapabilities._meta`.
        ({"agentCapabilities": {"_meta": {"steering": {"supported": True}}}}, True),
        # The session steering RFD's capability marker.
        ({"agentCapabilities": {"sessionCapabilities": {"steering": {}}}}, True),
        ({"agentCapabilities": {"sessionCapabilities": {"steering": None}}}, False),
    ],
)
def test_steering_is_used_only_when_advertised(init: dict[str, Any], advertised: bool) -> None:
    resp = msgspec.json.decode(
        msgspec.json.encode({"protocolVersion": 1, **init}), type=acp.InitializeResponse
    )
    assert acp.steering_advertised(resp) is advertised


def test_steering_wire_shapes() -> None:
    req = acp.SteeringRequest(
        session_id="s",
        prompt=[acp.TextContent(text="go left")],
        meta=acp.STEERING_PROMPT_REQUIRED,
    )
    assert msgspec.json.decode(msgspec.json.encode(req)) == {
        "sessionId": "s",
        "prompt": [{"type": "text", "text": "go left"}],
        "_meta": {"steering": {"idleBehavior": "promptRequired"}},
    }
    decode = msgspec.json.Decoder(acp.SteeringResponse).decode
    resp = decode(b'{"outcome":"promptRequired","reason":"noRunningTurn","x":1}')
    assert (resp.outcome, resp.reason) == (acp.STEERING_NOT_TAKEN, "noRunningTurn")
    assert decode(b'{"outcome":"teleported"}').outcome == "teleported"  # kept, as a str
    assert decode(b"{}").outcome == ""  # not "promptRequired": the agent may have taken it


def test_decode_update_lines_is_exactly_decode_update_line_for_a_whole_batch() -> None:
    def line(text: str, **extra: object) -> bytes:
        update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}
        params = {"sessionId": "s", "update": update}
        return json.dumps(
            {"jsonrpc": "2.0", "method": "session/update", "params": params, **extra}
        ).encode()

    good = [line("a"), line("b\\n"), b" " + line("c") + b"\r"]
    got = acp.decode_update_lines(good)
    assert got == [acp.decode_update_line(x) for x in good]
    assert acp.decode_update_lines([]) == []
    for bad in [
        [line("a"), line("b", id=1)],  # a request among them
        [line("a"), b""],  # a blank line
        [line("a") + b"," + line("b")],  # two on one line
        [line("a")[:-1], b"}"],  # one cut in two
        [line("a"), b"\xff"],
    ]:
        assert acp.decode_update_lines(bad) is None
