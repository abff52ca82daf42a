"""Everything an agent says, kept: every update kind as an event and as the conversation's state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio
import trio.testing

from daemon.agents.session import OpenedSession
from daemon.engine import updates
from daemon.engine.eventlog import EventLog
from daemon.engine.fanout import Fanout
from daemon.engine.recorder import Recorder
from daemon.engine.storeio import StoreIO
from protocol import acp
from protocol.api import ConversationResult, ListResult
from store import Store
from tests.engine.harness import harness, wait_turn_ended
from tests.fakes.agent import Chunk, Reply, Step, Update

DIFF = acp.Diff(path="/p/a.py", old_text="x = 1\n", new_text="x = 2\n")
OPTIONS: list[dict[str, Any]] = [
    {"id": "model", "name": "Model", "type": "select", "category": "model",
     "currentValue": "fast", "options": [{"value": "fast", "name": "Fast"},
                                         {"value": "deep", "name": "Deep"}]},
]  # fmt: skip


def body(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("seq", "ts")}


async def test_every_update_kind_becomes_an_event(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    steps: list[Step] = [
        Update(acp.ToolCall(
            tool_call_id="t1", title="Edit a.py", kind="edit", status="pending",
            content=[acp.Content(content=acp.TextContent(text="about to edit"))],
            locations=[acp.ToolCallLocation(path="/p/a.py", line=3)],
            raw_input=msgspec.Raw(b'{"path":"/p/a.py"}'),
        )),
        Update(acp.ToolCallUpdate(
            tool_call_id="t1", status="completed",
            content=[DIFF, acp.Terminal(terminal_id="term-1")],
            raw_output=msgspec.Raw(b'{"ok":true,"lines":[1,2]}'),
        )),
        Update(acp.UsageUpdate(used=1200, size=200000, cost=acp.Cost(amount=0.25, currency="USD"))),
        Update(acp.AvailableCommandsUpdate(available_commands=[
            acp.AvailableCommand(name="web", description="Search the web",
                                 input=acp.AvailableCommandInput(hint="query")),
            acp.AvailableCommand(name="init", description="Write AGENTS.md"),
        ])),
        Update(acp.CurrentModeUpdate(current_mode_id="plan")),
        Update(acp.ConfigOptionUpdate(config_options=OPTIONS)),
        Update(acp.SessionInfoUpdate(title="Fix the counter")),
        Update(acp.SessionInfoUpdate(updated_at="2026-01-01T00:00:00Z")),  # no title: nothing
        Update(acp.Notice(severity="info", title="fyi")),  # not advertised: dropped
        Chunk("done"),
        Reply(),
    ]  # fmt: skip
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(*steps)
        await h.e.send(cid, "go", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        events = [body(e) for e in await h.events(cid)]
        info = msgspec.json.decode(
            msgspec.json.encode(ConversationResult(conversation=await h.e.get(cid)))
        )["conversation"]
    kept = events[2:-2]  # after user_message and turn_started, before the text and turn_ended
    assert kept == [
        {"type": "tool_call", "tool_call_id": "t1", "title": "Edit a.py", "kind": "edit",
         "status": "pending", "prompt_seq": 1,
         "content": [{"type": "content", "content": {"type": "text", "text": "about to edit"}}],
         "locations": [{"path": "/p/a.py", "line": 3}], "raw_input": {"path": "/p/a.py"}},
        {"type": "tool_call_update", "tool_call_id": "t1", "status": "completed",
         "prompt_seq": 1,
         "content": [{"type": "diff", "path": "/p/a.py", "old_text": "x = 1\n",
                      "new_text": "x = 2\n"},
                     {"type": "terminal", "terminal_id": "term-1"}],
         "raw_output": {"ok": True, "lines": [1, 2]}},
        {"type": "usage", "used": 1200, "size": 200000,
         "cost": {"amount": 0.25, "currency": "USD"}},
        {"type": "commands", "commands": [
            {"name": "web", "description": "Search the web", "input_hint": "query"},
            {"name": "init", "description": "Write AGENTS.md"}]},
        {"type": "mode", "current": "plan"},
        {"type": "config_options", "options": OPTIONS},
        {"type": "title", "title": "Fix the counter"},
    ]  # fmt: skip
    assert [e["type"] for e in events[-2:]] == ["agent_message", "turn_ended"]
    # The state, folded from the events: `modes` knows no list (set-up never said one).
    assert info["modes"] == {"current": "plan", "available": []}
    assert info["config_options"] == OPTIONS
    assert info["commands"] == kept[3]["commands"]
    assert info["usage"] == {"used": 1200, "size": 200000,
                             "cost": {"amount": 0.25, "currency": "USD"}}  # fmt: skip
    assert info["title"] == "Fix the counter"  # nobody gave one: the agent's wins
    assert info["agent_log"] == str(tmp_path / "logs" / "agents" / f"{cid}.log")


async def test_state_is_null_until_the_agent_says_it_and_a_given_title_stays(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create(title="Mine")
        info = await h.e.get(cid)
        assert (info.modes, info.config_options, info.commands, info.usage) == (None,) * 4
        plain = json.loads(msgspec.json.encode(info))
        assert {
            k: plain[k] for k in ("modes", "config_options", "commands", "usage")
        } == dict.fromkeys(("modes", "config_options", "commands", "usage"))
        h.script(Update(acp.SessionInfoUpdate(title="Agent's name")), Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        assert (await h.e.get(cid)).title == "Mine"
        assert "title" in [e["type"] for e in await h.events(cid)]
        # list carries the state too.
        convs, _, _ = await h.e.list(limit=10, before=None)
        listed = json.loads(
            msgspec.json.encode(ListResult(conversations=convs, total=1, next=None))
        )
        assert listed["conversations"][0]["title"] == "Mine"


async def _recorder(tmp_path: Path) -> tuple[Store, str, Recorder]:
    store = Store.open(tmp_path / "s.sqlite3")
    conv = store.create_conversation(title="", agent="a", agent_cmd=["x"], cwd="/")
    io = StoreIO.open_sync(store)
    log = EventLog(conv.id, io, Fanout(conv.id, 64), 0)
    return store, conv.id, Recorder(log, 1.0)


async def test_a_backlog_of_one_tool_calls_updates_is_merged(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store, cid, rec = await _recorder(tmp_path)
    nursery.start_soon(rec.run)
    # All handed over before the recorder runs: one backlog.
    rec.update(acp.ToolCall(tool_call_id="t", title="Run", status="pending"), 1)
    rec.update(
        acp.ToolCallUpdate(
            tool_call_id="t",
            status="in_progress",
            content=[acp.Content(content=acp.TextContent(text="a"))],
        ),
        1,
    )
    rec.update(
        acp.ToolCallUpdate(
            tool_call_id="t", content=[acp.Content(content=acp.TextContent(text="ab"))]
        ),
        1,
    )
    rec.update(
        acp.ToolCallUpdate(tool_call_id="t", status="completed", raw_output=msgspec.Raw(b"[1]")), 1
    )
    rec.update(acp.ToolCallUpdate(tool_call_id="u", status="completed"), 1)  # another call
    rec.update(acp.UsageUpdate(used=1, size=10), 1)
    rec.update(acp.UsageUpdate(used=2, size=10), 1)
    rec.update(acp.UsageUpdate(used=3, size=10), 1)
    await rec.flush()  # fmt: skip
    events = [(e.type, json.loads(e.body)) for e in store.read_events(cid)]
    assert events == [
        ("tool_call", {"tool_call_id": "t", "title": "Run", "status": "pending", "prompt_seq": 1}),
        ("tool_call_update", {
            "tool_call_id": "t", "prompt_seq": 1, "status": "completed", "raw_output": [1],
            "content": [{"type": "content", "content": {"type": "text", "text": "ab"}}]}),
        ("tool_call_update", {"tool_call_id": "u", "prompt_seq": 1, "status": "completed"}),
        ("usage", {"used": 3, "size": 10}),
    ]  # fmt: skip
    conv = store.get_conversation(cid)
    assert conv is not None
    assert json.loads(conv.usage or "") == {"used": 3, "size": 10}


async def test_huge_tool_content_is_cut_visibly_within_the_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store, cid, rec = await _recorder(tmp_path)
    nursery.start_soon(rec.run)
    big = "line\n" * 1_000_000  # 5 MB
    rec.update(acp.ToolCall(
        tool_call_id="t", title="Rewrite", status="completed",
        content=[acp.Diff(path="/p/big.txt", old_text=big, new_text=big + "more\n"),
                 acp.Content(content=acp.ImageContent(data="Q" * 3_000_000, mime_type="image/png")),
                 acp.Content(content=acp.TextContent(text="small note"))],
        raw_output=msgspec.Raw(msgspec.json.encode({"log": big})),
    ), 1)  # fmt: skip
    await rec.flush()
    (stored,) = store.read_events(cid)
    assert len(stored.body) <= updates.TOOL_BYTES
    event = json.loads(stored.body)
    assert event["truncated"] is True
    diff, image, note = event["content"]
    assert diff["old_text"].startswith("line\nline\n")
    assert diff["old_text"].endswith(" more characters not stored]")
    assert diff["new_text"].endswith(" more characters not stored]")
    note_text = "[image of 3000000 characters not stored]"
    assert image == {"type": "content", "content": {"type": "text", "text": note_text}}
    assert note["content"]["text"] == "small note"  # small values stay whole
    assert event["raw_output"].startswith("[raw_output of ")
    # A normal-sized one is untouched and not marked.
    rec.update(acp.ToolCallUpdate(tool_call_id="t", content=[DIFF]), 1)
    await rec.flush()
    last = json.loads(store.read_events(cid)[-1].body)
    assert "truncated" not in last
    assert last["content"][0]["new_text"] == "x = 2\n"


async def test_set_up_state_and_updates_outside_a_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store, cid, rec = await _recorder(tmp_path)
    nursery.start_soon(rec.run)
    modes = acp.SessionModeState(
        current_mode_id="ask",
        available_modes=[acp.SessionMode(id="ask", name="Ask"),
                         acp.SessionMode(id="code", name="Code", description="Edits files")],
    )  # fmt: skip
    rec.session_opened(modes, OPTIONS)
    assert rec.session_update(acp.CurrentModeUpdate(current_mode_id="code"))
    assert not rec.session_update(acp.AgentMessageChunk(content=acp.TextContent(text="x")))
    assert not rec.session_update(acp.SessionInfoUpdate(updated_at="2026-01-01T00:00:00Z"))
    await rec.flush()
    assert [e.type for e in store.read_events(cid)] == ["mode", "config_options", "mode"]
    conv = store.get_conversation(cid)
    assert conv is not None
    assert json.loads(conv.modes or "") == {
        "current": "code",
        "available": [{"id": "ask", "name": "Ask"},
                      {"id": "code", "name": "Code", "description": "Edits files"}],
    }  # fmt: skip
    assert json.loads(conv.config_options or "") == OPTIONS
    rec.session_opened(None, None)  # a set-up that said neither changes nothing
    await rec.flush()
    assert len(store.read_events(cid)) == 3


def test_what_a_session_set_up_records() -> None:
    modes = acp.SessionModeState(current_mode_id="ask")
    new = OpenedSession(
        session_id="s2", how="new", why_not="Session not found", modes=modes,
        config_options=None, auth_method=None, left_out=("MCP server 'x' left out: …",),
    )  # fmt: skip
    recorded = [(t, msgspec.to_builtins(b)) for t, b in updates.opened_events(
        new, had_session=True, reason="idle")]  # fmt: skip
    assert recorded == [
        ("error", {"message": "MCP server 'x' left out: …"}),
        ("error", {"message": "could not resume the agent's session (Session not found); "
                              "started a new one: the agent has lost this conversation's context"}),
        ("agent_restarted", {"reason": "idle", "session_loaded": False}),
        ("mode", {"current": "ask", "available": []}),
    ]  # fmt: skip
    loaded = attrs.evolve(new, how="load", why_not="", modes=None, left_out=())
    assert [t for t, _ in updates.opened_events(loaded, had_session=True, reason="crashed")] == [
        "agent_restarted"
    ]
    assert updates.opened_events(loaded, had_session=False, reason="") == []


async def test_a_run_of_updates_is_recorded_as_the_same_updates_one_by_one(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    def text(t: str) -> acp.AgentMessageChunk:
        return acp.AgentMessageChunk(content=acp.TextContent(text=t))

    run: list[acp.SessionUpdate] = [
        text("a"),
        text(""),
        text("b"),
        acp.AgentThoughtChunk(content=acp.TextContent(text="hm")),
        text("c"),
        acp.ToolCall(tool_call_id="t", title="Run", status="pending"),
        acp.AgentMessageChunk(content=acp.ResourceLink(name="f", uri="file:///f")),
        acp.UsageUpdate(used=1, size=10),
        text(""),
        text("d"),
        text("e"),
    ]
    stored = []
    for name, record in (
        ("one by one", lambda r: [r.update(u, 1) for u in run]),
        ("as a run", lambda r: r.updates(run, 1)),
    ):
        (tmp_path / name).mkdir()
        store, cid, rec = await _recorder(tmp_path / name)
        nursery.start_soon(rec.run)
        rec.update(text("before"), 1)  # an open delta the run's first text joins
        record(rec)
        await rec.flush()
        stored.append([(e.type, json.loads(e.body)) for e in store.read_events(cid)])
    assert stored[0] == stored[1]
    assert stored[0] == [
        ("agent_message", {"text": "beforeabc", "prompt_seq": 1}),
        ("agent_thought", {"text": "hm", "prompt_seq": 1}),
        ("tool_call", {"tool_call_id": "t", "prompt_seq": 1, "title": "Run", "status": "pending"}),
        ("agent_message", {"text": "[f](file:///f)", "prompt_seq": 1}),
        ("usage", {"used": 1, "size": 10}),
        ("agent_message", {"text": "de", "prompt_seq": 1}),
    ]
