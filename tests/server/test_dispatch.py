"""The dispatcher over an in-memory transport: routing, errors, storage failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.engine.storagehealth import StorageHealth
from protocol import api, limits
from protocol.jsonrpc import CONFLICT, STORAGE_UNAVAILABLE, RpcFailure
from store import StorageUnavailable
from store.errors import DISK_FULL, IO_ERROR
from tests.fakes.engine import FakeEngine
from tests.server._dispatch_client import CONV, Json, make_dispatcher, open_client

# method -> (params, the call the engine must see, a check on the result)
ROUTES: dict[str, tuple[Json | None, tuple[object, ...] | None, Callable[[Json], bool]]] = {
    "daemon/status": (None, ("count",), lambda r: r["conversations_stored"] == 2),
    "agents/list": ({}, None, lambda r: r["agents"][0]["name"] == "demo"),
    "conversations/list": ({"limit": 1}, ("list", 1, None), lambda r: r["total"] == 2),
    "conversations/count": (None, ("count",), lambda r: r == {"count": 2}),
    "conversations/get": ({"id": "abc"}, ("get", CONV), lambda r: r["conversation"]["id"] == CONV),
    "conversations/delete": ({"id": "abc"}, ("delete", CONV), lambda r: r == {}),
    "conversations/events": (
        {"id": "abc", "after_seq": 1},
        ("events", CONV, 1, 500),
        lambda r: r["last_seq"] == 2 and [e["seq"] for e in r["events"]] == [2],
    ),
    "conversations/subscribe": (
        {"id": "abc", "after_seq": 2, "deltas": False},
        ("subscribe", CONV, 2, False),
        lambda r: r == {"through_seq": 2},
    ),
    "conversations/unsubscribe": ({"id": "abc"}, None, lambda r: r == {}),
    "messages/send": (
        {"id": "abc", "text": "hi", "interrupt": True},
        ("send", CONV, "hi", True, True),
        lambda r: r == {"seq": 3, "queued": 0, "number": 1, "resumed": False},
    ),
    "messages/queue": (
        {"id": "abc"},
        ("queue", CONV),
        lambda r: r == {"pending": [{"seq": 7, "text": "later", "number": 1}]},
    ),
    "messages/remove": ({"id": "abc", "seq": 3}, ("remove", CONV, 3), lambda r: r == {}),
    "messages/edit": (
        {"id": "abc", "seq": 7, "text": "sooner"},
        ("edit", CONV, 7, "sooner"),
        lambda r: r == {},
    ),
    "messages/move": (
        {"id": "abc", "seq": 7},
        ("move", CONV, 7, None),
        lambda r: r == {"order": [7]},
    ),
    "turns/interrupt": ({"id": "abc"}, ("interrupt", CONV), lambda r: r == {"interrupted": True}),
    "conversations/resume": (
        {"id": "abc"},
        ("resume", CONV),
        lambda r: r == {"resumed": True, "queued": 0},
    ),
    "permissions/respond": (
        {"id": "abc", "request": "r1", "option": "allow"},
        ("permit", CONV, "r1", "allow", False),
        lambda r: r == {},
    ),
    "elicitations/respond": (
        {"id": "abc", "request": "e1-1", "action": "accept", "content": {"name": "x"}},
        ("answer", CONV, "e1-1", "accept", {"name": "x"}),
        lambda r: r == {},
    ),
    "conversations/set_mode": (
        {"id": "abc", "mode": "plan"},
        ("set_mode", CONV, "plan"),
        lambda r: r["conversation"]["id"] == CONV,
    ),
    "conversations/set_option": (
        {"id": "abc", "option": "fast", "value": True},
        ("set_option", CONV, "fast", True),
        lambda r: r["conversation"]["id"] == CONV,
    ),
    "conversations/create": (
        {"agent": "demo", "cwd": "/w", "title": "T"},
        ("create", "demo", None, "/w", "T"),
        lambda r: r["conversation"]["id"] == "new0002",
    ),
}


async def test_every_method_routes(engine: FakeEngine) -> None:
    assert ROUTES.keys() == api.METHODS.keys()
    async with open_client(make_dispatcher(engine)) as client:
        for method, (params, call, check) in ROUTES.items():
            engine.calls.clear()
            result = await client.call(method, params)
            assert check(result), (method, result)
            if call is not None:
                assert engine.calls == [call], method


async def test_the_agents_hold_off_while_a_person_waits_for_a_small_write(
    engine: FakeEngine,
) -> None:
    """Sends, queue edits and interrupts are answered inside `person_waiting` (the agents'
    bulk work holds off from the moment they are read); reads, and writes that wait for an
    agent or are big, are not; a failing one lets go too."""
    async with open_client(make_dispatcher(engine)) as client:
        for method, (params, _, _) in ROUTES.items():
            await client.call(method, params)
        engine.failures["send"] = StorageUnavailable(DISK_FULL, "no space")
        await client.error("messages/send", {"id": "abc", "text": "hi"})
    waited = {m for m, n in engine.seen_waiting.items() if n}
    assert waited == {"send", "remove", "edit", "move", "interrupt"}
    assert engine.seen_waiting.keys() >= {"get", "list", "delete", "set_mode", "subscribe"}
    assert engine.people_waiting == 0


async def test_options_for_the_acp_front_door(engine: FakeEngine) -> None:
    async with open_client(make_dispatcher(engine)) as client:
        await client.call("conversations/list", {"limit": 5, "cwd": "/w"})
        await client.call("turns/interrupt", {"id": "abc", "prompt_seq": 4})
        params = {"id": "abc", "after_seq": 2, "from_turn": True, "caught_up": True}
        await client.call("conversations/subscribe", params)
        assert engine.calls == [
            ("list", 5, None, "/w"),
            ("interrupt", CONV, 4),
            ("subscribe", CONV, 2, True, True, True),
        ]
        err = await client.error("conversations/list", {"cwd": "relative/dir"})
        assert err["code"] == -32602
        assert "absolute" in err["message"]
        err = await client.error("turns/interrupt", {"id": "abc", "prompt_seq": 0})
        assert err["code"] == -32602


async def test_send_with_steer_says_whether_it_was_steered(engine: FakeEngine) -> None:
    async with open_client(make_dispatcher(engine)) as client:
        result = await client.call("messages/send", {"id": "abc", "text": "left", "steer": True})
        assert result == {"seq": 3, "queued": 0, "number": 1, "resumed": False, "steered": True}
        assert engine.calls == [("steer", CONV, "left")]


async def test_status_and_create_defaults(engine: FakeEngine, autojump_clock: Any) -> None:
    dispatcher = make_dispatcher(engine)
    await trio.sleep(12.5)
    async with open_client(dispatcher) as client:
        status = await client.call("daemon/status")
        assert status["uptime_s"] == 12.5
        assert (status["data_dir"], status["version"]) == ("/data", "9.9")
        assert (status["conversations_live"], status["agents_running"]) == (1, 2)
        assert status["slots"] == {
            "used": 2,
            "max": 8,
            "waiting": 1,
            "starting": 1,
            "max_starting": 2,
            "starts_waiting": 0,
        }
        assert status["agents_rss"] == 3 * 2**20
        await client.error("no/such")
        counters = (await client.call("daemon/status"))["counters"]
        assert (counters["requests"], counters["request_errors"]) == (3, 1)
        assert counters["hydrations"] == 0
        await client.call("conversations/create", {})
        assert engine.calls[-1] == ("create", None, None, str(Path.home()), None)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"{not json", -32700),
        (b"\xff\xfe", -32700),
        (b"[]", -32600),  # batches are not supported
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "daemon/status"}]', -32600),
        (b"42", -32600),
        (b'"daemon/status"', -32600),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "daemon/status"}', -32600),
        (b'{"id": 1, "method": "daemon/status"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1.5, "method": "daemon/status"}', -32600),
        (b'{"jsonrpc": "2.0", "id": true, "method": "daemon/status"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "nope/nothing"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "daemon/status", "params": [1]}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "daemon/status", "params": {"x": 1}}', -32602),
    ],
)
async def test_malformed_messages(engine: FakeEngine, message: bytes, code: int) -> None:
    async with open_client(make_dispatcher(engine)) as client:
        await client.raw(message)
        reply = await client.read()
        assert reply["error"]["code"] == code, reply
        assert set(reply) == {"jsonrpc", "id", "error"}
        # The connection lives on.
        assert (await client.call("conversations/count"))["count"] == 2


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("conversations/list", {"limit": 0}),
        ("conversations/list", {"limit": 1001}),
        ("conversations/list", {"limit": "5"}),
        ("conversations/get", {}),
        ("conversations/get", {"id": ""}),
        ("conversations/get", {"id": "abc", "extra": 1}),
        ("conversations/events", {"id": "abc", "after_seq": -1}),
        ("conversations/subscribe", {"id": "abc", "deltas": "yes"}),
        ("messages/send", {"id": "abc"}),
        ("messages/send", {"id": "abc", "text": ""}),
        ("messages/send", {"id": "abc", "text": " \n"}),
        ("messages/send", {"id": "abc", "text": "x" * (limits.MAX_TEXT + 1)}),
        ("messages/remove", {"id": "abc", "seq": 0}),
        ("messages/send", {"id": "abc", "text": "x", "steer": True, "interrupt": True}),
        ("messages/send", {"id": "abc", "text": "x", "steer": True, "run": False}),
        ("messages/edit", {"id": "abc", "seq": 3}),
        ("messages/edit", {"id": "abc", "seq": 3, "text": " "}),
        ("messages/edit", {"id": "abc", "seq": 0, "text": "x"}),
        ("messages/edit", {"id": "abc", "seq": 3, "text": "x" * (limits.MAX_TEXT + 1)}),
        ("messages/move", {"id": "abc"}),
        ("messages/move", {"id": "abc", "seq": 3, "before": 0}),
        ("conversations/create", {"cwd": "relative/dir"}),
        ("conversations/create", {"agent": "demo", "agent_cmd": ["x"]}),
        ("conversations/create", {"agent_cmd": []}),
        ("permissions/respond", {"id": "abc", "request": "r"}),
        ("permissions/respond", {"id": "abc", "request": "r", "option": "o", "cancelled": True}),
        ("conversations/get", {"id": "ab"}),  # ambiguous prefix
    ],
)
async def test_invalid_params(engine: FakeEngine, method: str, params: Json) -> None:
    async with open_client(make_dispatcher(engine)) as client:
        assert (await client.error(method, params))["code"] == -32602
        assert engine.calls == []


async def test_engine_errors_pass_through_and_internal_errors_are_contained(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.failures["remove"] = RpcFailure(CONFLICT, "already prompted")
    engine.failures["resume"] = ZeroDivisionError("bug")
    async with open_client(make_dispatcher(engine)) as client:
        assert await client.error("conversations/get", {"id": "zzz"}) == {
            "code": -32001,
            "message": "no such conversation: zzz",
        }
        err = await client.error("messages/remove", {"id": "abc", "seq": 1})
        assert err == {"code": CONFLICT, "message": "already prompted"}
        err = await client.error("conversations/resume", {"id": "abc"})
        assert err == {"code": -32603, "message": "internal error"}
        assert "ZeroDivisionError" in caplog.text
        assert (await client.call("conversations/count"))["count"] == 2


async def test_notifications_run_but_get_no_reply(engine: FakeEngine) -> None:
    dispatcher = make_dispatcher(engine)
    async with open_client(dispatcher) as client:
        await client.raw('{"jsonrpc": "2.0", "method": "turns/interrupt", "params": {"id": "abc"}}')
        await client.raw('{"jsonrpc": "2.0", "method": "no/such"}')
        await client.raw('{"jsonrpc": "2.0", "method": "messages/send", "params": {}}')
        await client.raw('{"jsonrpc": "2.0", "id": 5, "result": {}}')  # a response: ignored
        await client.request("conversations/count", id="last")
        assert await client.read() == {"jsonrpc": "2.0", "id": "last", "result": {"count": 2}}
        assert ("interrupt", CONV) in engine.calls
        await client.request("conversations/count", id=None)  # id null is still a request
        assert (await client.read()) == {"jsonrpc": "2.0", "id": None, "result": {"count": 2}}
    assert dispatcher.statistics().requests == 6


async def test_create_refuses_an_agent_command_that_cannot_be_found(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """-32002 at create, not an `error` event (and restarts) at the first send."""
    script = tmp_path / "agent.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (tmp_path / "not-executable").write_text("")
    dispatcher = make_dispatcher(engine)
    async with open_client(dispatcher) as client:
        cwd = str(tmp_path)
        err = await client.error("conversations/create", {"agent_cmd": ["no-agent-x"], "cwd": cwd})
        assert err == {
            "code": -32002,
            "message": "agent failed to start: command not found: no-agent-x",
        }
        err = await client.error("conversations/create",
                                 {"agent_cmd": ["./not-executable"], "cwd": cwd})  # fmt: skip
        assert err["code"] == -32002
        assert engine.calls == []  # nothing created
        # Found: on PATH, or relative to the cwd (as the agent will be run).
        await client.call("conversations/create", {"agent_cmd": ["sh"], "cwd": str(tmp_path)})
        await client.call("conversations/create",
                          {"agent_cmd": ["./agent.sh"], "cwd": str(tmp_path)})  # fmt: skip
        assert len(engine.calls) == 2


DEEP = 100_000


@pytest.mark.parametrize(
    "params",
    [b"[" * DEEP + b"]" * DEEP, b'{"title":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}"],
)
async def test_deep_nesting_is_an_error_and_the_connection_and_its_requests_live_on(
    engine: FakeEngine, params: bytes
) -> None:
    engine.gates["get"] = gate = trio.Event()
    async with open_client(make_dispatcher(engine)) as client:
        slow = await client.request("conversations/get", {"id": "abc"})  # in flight meanwhile
        await client.raw(
            b'{"jsonrpc":"2.0","id":7,"method":"conversations/create","params":' + params + b"}"
        )
        assert await client.response(None) == {
            "jsonrpc": "2.0",
            "id": None,  # the envelope could not be read, so neither could its id
            "error": {"code": -32600, "message": "invalid request: nested too deeply"},
        }
        gate.set()
        assert (await client.response(slow))["result"]["conversation"]["id"] == CONV
        assert (await client.call("conversations/count"))["count"] == 2
        assert ("create", None, None, str(Path.home()), None) not in engine.calls


async def test_storage_failures_are_32005_with_their_cause_and_status_says_so(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine.failures["send"] = StorageUnavailable(DISK_FULL, "store /x: database or disk is full")
    engine.health = StorageHealth(DISK_FULL, "storage unavailable: disk full", 1.0, 3)
    async with open_client(make_dispatcher(engine)) as client:
        err = await client.error("messages/send", {"id": "abc", "text": "hi"})
        assert err == {"code": STORAGE_UNAVAILABLE, "message": "storage unavailable: disk full"}
        status = await client.call("daemon/status")
        assert status["storage"] == "disk full"
        assert status["storage_error"] == "storage unavailable: disk full"
        assert status["counters"]["writes_refused"] == 3
        engine.failures["count"] = StorageUnavailable(IO_ERROR, "store /x: disk I/O error")
        engine.health = StorageHealth(IO_ERROR, "storage unavailable: I/O error", 2.0, 3)
        status = await client.call("daemon/status")  # answers, even so
        assert (status["conversations_stored"], status["storage"]) == (-1, "I/O error")
        del engine.failures["count"]
        engine.health = StorageHealth(None, None, None, 3)
        status = await client.call("daemon/status")
        assert (status["storage"], status["storage_error"]) == ("ok", None)
    assert "Traceback" not in caplog.text  # an outage is not a bug: StoreIO logs it, once
