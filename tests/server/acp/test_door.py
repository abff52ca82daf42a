"""The ACP front door in-process: sessions, prompts, replay and live, against a real engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.server.acp import door
from protocol import acp
from tests.engine.harness import wait_turn_ended
from tests.fakes.agent import Chunk, Reply, Sleep, Thought, Tool, Update
from tests.server.acp.harness import Front

PLAN = acp.Plan(entries=[acp.PlanEntry(content="step", priority="high", status="pending")])


async def test_initialize_advertises_what_acpd_passes_through(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    init = await client.call("initialize", {"protocolVersion": 7})
    assert init["protocolVersion"] == 1  # the one we speak, whatever was asked
    caps = init["agentCapabilities"]
    assert caps["loadSession"] is True
    assert caps["sessionCapabilities"] == {"list": {}, "resume": {}, "close": {}}
    assert caps["promptCapabilities"] == {
        "image": False,
        "audio": False,
        "embeddedContext": False,
    }
    assert init["authMethods"] == []
    assert init["agentInfo"]["name"] == "acpd"


async def test_new_and_prompt_stream_the_turn_and_answer_end_turn(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    info = await f.e.get(sid)
    assert (info.cwd, info.agent) == (str(tmp_path), "demo")
    f.h.script(
        Thought("hmm"),
        Update(PLAN),
        Tool("t1", "Read", "in_progress"),
        Chunk("hel"),
        Sleep(1),
        Chunk("lo"),
        Tool("t1", "Read", "completed"),
        Reply(),
    )
    link = {"type": "resource_link", "uri": "file:///a", "name": "a"}
    prompt = [{"type": "text", "text": "hi "}, link]
    answer = await client.call("session/prompt", {"sessionId": sid, "prompt": prompt})
    assert answer == {"stopReason": "end_turn"}
    assert f.h.agent.prompts == ["hi [a](file:///a)"]
    # Its own message is not echoed; everything else streamed, in order.
    assert client.kinds() == [
        "agent_thought_chunk",
        "plan",
        "tool_call",
        "agent_message_chunk",
        "agent_message_chunk",
        "tool_call_update",
    ]
    assert client.text() == "hello"
    call, done = client.of(acp.ToolCall)[0], client.of(acp.ToolCallUpdate)[0]
    assert (call.tool_call_id, call.title, call.status) == ("t1", "Read", "in_progress")
    assert (done.tool_call_id, done.status) == ("t1", "completed")
    assert {s for s, _ in client.updates} == {sid}


async def test_a_second_client_lists_loads_and_sees_the_same_history(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    first = await f.client()
    await first.initialize()
    sid = await first.new(tmp_path)
    f.h.script(
        Thought("hmm"),
        Update(PLAN),
        Tool("t1", "Read", "in_progress"),
        Chunk("hel"),
        Chunk("lo"),
        Tool("t1", "Read", "completed"),
        Reply(),
    )
    await first.prompt(sid, "one")
    second = await f.client()
    await second.initialize()
    listed = await second.call("session/list", {"cwd": str(tmp_path)})
    assert [s["sessionId"] for s in listed["sessions"]] == [sid]
    assert listed["sessions"][0]["title"] == "one"
    assert listed["sessions"][0]["cwd"] == str(tmp_path)
    assert "nextCursor" not in listed
    assert (await second.call("session/list", {"cwd": "/elsewhere"}))["sessions"] == []
    loaded = await second.call(
        "session/load", {"sessionId": sid, "cwd": str(tmp_path), "mcpServers": []}
    )
    assert loaded == {}
    # Replay and live went through one translation: the same updates, and the history
    # has the user's message first (the first client showed its own).
    user = acp.UserMessageChunk(content=acp.TextContent(text="one"))
    assert second.merged() == [user, *first.merged()]


async def test_a_turn_started_over_the_socket_reaches_an_attached_client(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("from "), Sleep(1), Chunk("elsewhere"), Reply())
    await f.e.send(sid, "typed in a terminal", run=True, interrupt=False)
    await client.wait_for(lambda c: c.text() == "from elsewhere")
    assert client.kinds()[0] == "user_message_chunk"
    assert client.text(acp.UserMessageChunk) == "typed in a terminal"


async def test_list_pages_with_a_cursor(
    f: Front,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(door, "LIST_PAGE", 2)
    client = await f.client()
    await client.initialize()
    ids = []
    for _ in range(3):
        ids.append(await client.new(tmp_path))
        time.sleep(0.002)  # distinct activity times (the store's, in real time): one order
    page = await client.call("session/list", {})
    rest = await client.call("session/list", {"cursor": page["nextCursor"]})
    assert [s["sessionId"] for s in page["sessions"]] == ids[:0:-1]
    assert [s["sessionId"] for s in rest["sessions"]] == ids[:1]
    assert "nextCursor" not in rest
    bad = await client.error("session/list", {"cursor": "not ours"})
    assert bad.code == -32602


async def test_a_client_that_goes_away_leaves_the_conversation_alone(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("a"), Sleep(5), Chunk("b"), Reply())
    async with trio.open_nursery() as nursery:
        pending = client.prompt_soon(nursery, sid, "go")
        await client.wait_for(lambda c: c.text() == "a")
        await client.close()
    assert pending.error is not None  # its answer had nowhere to go
    ended = await wait_turn_ended(f.h, sid)
    assert ended[0]["stop_reason"] == "end_turn"  # the turn went on without the client
    events = await f.h.events(sid)
    assert [e["text"] for e in events if e["type"] == "agent_message"] == ["ab"]
