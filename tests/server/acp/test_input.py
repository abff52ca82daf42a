"""What an ACP client may send that acpd does not take: JSON-RPC errors, and the front door
serves on. Also what it passes on as the daemon answers it (modes, options)."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from protocol import acp
from tests.server.acp.harness import Client, Front


def _errors(client: Client) -> list[tuple[object, int]]:
    out = []
    for line in bytes(client.tap.sent).splitlines():
        msg = json.loads(line)
        if "error" in msg:
            out.append((msg["id"], msg["error"]["code"]))
    return out


async def test_malformed_lines_get_errors_and_the_door_serves_on(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.stream.send_all(b'not json\n[1, 2]\n{"jsonrpc": "2.0", "id": 5}\n\xff\n')
    await client.initialize()
    # One each (written by tasks of their own, so in any order).
    assert sorted(_errors(client), key=str) == sorted(
        [(None, -32700), (None, -32600), (5, -32600), (None, -32700)], key=str
    )
    sid = await client.new(tmp_path)
    assert await client.prompt(sid, "still here") == {"stopReason": "end_turn"}


async def test_unknown_methods_and_bad_params(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    assert (await client.error("nope/nothing")).code == -32601
    assert (await client.error("_vendor/extension", {})).code == -32601
    assert (await client.error("logout")).code == -32601  # not advertised
    assert (await client.error("session/new", {"cwd": 3})).code == -32602
    assert (await client.error("session/new", {"cwd": "relative", "mcpServers": []})).code == -32602
    missing = tmp_path / "missing"
    assert (
        await client.error("session/new", {"cwd": str(missing), "mcpServers": []})
    ).code == -32602
    err = await client.error("authenticate", {"methodId": "x"})
    assert (err.code, "no authentication methods" in err.message) == (-32602, True)
    await client.notify("_vendor/notice", {"x": 1})  # unknown notifications: ignored
    await client.notify("session/update", {"sessionId": "x", "update": {}})
    sid = await client.new(tmp_path)
    assert (await client.error("session/prompt", {"sessionId": sid})).code == -32602
    blank = {"sessionId": sid, "prompt": [{"type": "text", "text": "  "}]}
    assert (await client.error("session/prompt", blank)).code == -32602
    unknown = {"sessionId": "c-not-open", "prompt": [{"type": "text", "text": "x"}]}
    assert (await client.error("session/prompt", unknown)).code == -32002
    assert await client.prompt(sid, "fine") == {"stopReason": "end_turn"}


async def test_content_that_is_not_text_is_refused(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    image = {"type": "image", "data": "aGk=", "mimeType": "image/png"}
    resource = {"type": "resource", "resource": {"uri": "file:///a", "text": "x"}}
    for block in (image, resource):
        err = await client.error("session/prompt", {"sessionId": sid, "prompt": [block]})
        assert err.code == -32602
        assert "not supported" in err.message
    assert await f.e.queue(sid) == []  # nothing was sent


async def test_mcp_servers_of_session_new_reach_the_hosted_agent_each_time(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    server = {"name": "files", "command": "/bin/true", "args": ["-x"], "env": []}
    sid = (await client.call("session/new", {"cwd": str(tmp_path), "mcpServers": [server]}))[
        "sessionId"
    ]
    assert await client.prompt(sid, "hi") == {"stopReason": "end_turn"}
    (opened,) = f.h.agent.params("session/new")
    assert isinstance(opened, acp.NewSessionRequest)
    assert [(s.name, s.command, s.args) for s in opened.mcp_servers] == [
        ("files", "/bin/true", ["-x"])
    ]
    # Kept with the conversation: a restarted agent's session gets them again.
    await f.h.e.supervisor(sid).slot.stop("idle")  # type: ignore[union-attr]
    assert await client.prompt(sid, "again") == {"stopReason": "end_turn"}
    (loaded,) = f.h.agent.params("session/load")
    assert isinstance(loaded, acp.LoadSessionRequest)
    assert [s.name for s in loaded.mcp_servers] == ["files"]


async def test_modes_and_options_are_forwarded_and_the_daemons_answer_passed_on(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    modes = [acp.SessionMode(id="ask", name="Ask"), acp.SessionMode(id="plan", name="Plan")]
    f.h.agent_kwargs.update(
        modes=acp.SessionModeState(current_mode_id="ask", available_modes=modes),
        config_options=[{"type": "boolean", "id": "fast", "name": "Fast", "currentValue": False}],
    )
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    assert await client.call("session/set_mode", {"sessionId": sid, "modeId": "plan"}) == {}
    assert f.h.agent.modes is not None
    assert f.h.agent.modes.current_mode_id == "plan"
    params = {"sessionId": sid, "configId": "fast", "value": True, "type": "boolean"}
    result = await client.call("session/set_config_option", params)
    assert [o["currentValue"] for o in result["configOptions"]] == [True]
    # What the agent refuses comes back as the daemon passed it on.
    err = await client.error("session/set_mode", {"sessionId": sid, "modeId": "yolo"})
    assert err.code == -32602
    other = {"sessionId": "c-not-open", "modeId": "plan"}
    assert (await client.error("session/set_mode", other)).code == -32002


async def test_an_attach_that_cannot_subscribe_fails_with_the_reason(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    await client.call("session/close", {"sessionId": sid})
    f.daemon.down = True  # the control connection stays; a new one is refused
    err = await client.error("session/resume", {"sessionId": sid, "cwd": str(tmp_path)})
    assert err.code == -32603
    assert "not running" in err.message
    f.daemon.down = False
    await client.call("session/resume", {"sessionId": sid, "cwd": str(tmp_path)})
    assert await client.prompt(sid, "back") == {"stopReason": "end_turn"}


async def test_loading_twice_replaces_the_attachment(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    assert await client.prompt(sid, "one") == {"stopReason": "end_turn"}
    load = {"sessionId": sid, "cwd": str(tmp_path), "mcpServers": []}
    for _ in range(2):
        await client.call("session/load", load)
    replayed = len(client.updates)
    await f.e.send(sid, "two", run=True, interrupt=False)
    await client.wait_for(lambda c: c.text().endswith("two"))
    await trio.testing.wait_all_tasks_blocked()
    # Once each: the user's message and the echo (no second attachment doubles them).
    assert len(client.updates) - replayed == 2
