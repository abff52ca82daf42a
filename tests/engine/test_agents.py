"""The agent as the engine sees it: start-up bound, backoff, resume, requests, stragglers."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.agents.connection import AgentStartError
from daemon.engine.eventlog import EventLog
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, RpcFailure
from tests.engine.harness import Harness, drain, harness, next_event, pair, wait_turn_ended
from tests.fakes.agent import AskPermission, Chunk, Exit, FakeAgent, Reply, Request, Sleep, Tool


def _chunk(text: str) -> acp.AgentMessageChunk:
    return acp.AgentMessageChunk(content=acp.TextContent(text=text))


def _crash_first(h: Harness, n: int) -> None:
    """The first `n` agents started crash in their first turn."""

    def prepare(agent: FakeAgent) -> None:
        if h.launches <= n:
            agent.script(Exit())

    h.prepare = prepare


async def test_crash_backoff_doubles(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_crashes=10) as h:
        _crash_first(h, 3)
        cid = await h.create()
        for i in range(4):
            await h.e.send(cid, f"m{i}", run=True, interrupt=False)
        ended = await wait_turn_ended(h, cid, 4)
        assert [e["stop_reason"] for e in ended] == ["agent_exited"] * 3 + ["end_turn"]
        gaps = [b - a for a, b in zip(h.launch_times, h.launch_times[1:], strict=False)]
        assert gaps == [0.5, 1.0, 2.0]


async def test_a_backed_off_start_is_visible_as_starting_with_retry_at(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    async with harness(tmp_path, max_crashes=10) as h:
        _crash_first(h, 2)
        cid = await h.create()
        await h.e.send(cid, "one", run=True, interrupt=False)
        await h.e.send(cid, "two", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 1)
        await trio.testing.wait_all_tasks_blocked()
        info = await h.e.get(cid)  # backing off 0.5 s before the second start
        assert (info.status, info.retry_at) == ("starting", ev.rfc3339(wall[0] + 0.5))
        await wait_turn_ended(h, cid, 2)
        info = await h.e.get(cid)
        assert info.retry_at is None


async def test_a_crash_outside_the_window_adds_no_backoff(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, crash_window=300.0, idle_ttl=1000.0) as h:
        _crash_first(h, 1)
        cid = await h.create()
        await h.e.send(cid, "one", run=True, interrupt=False)
        await h.e.send(cid, "two", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        assert h.launch_times[1] - h.launch_times[0] == 0.5  # the crash's backoff
        await trio.sleep(400)
        await h.agent.exit()  # it goes away while idle: no turn, no crash (no exit status)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.agents_running() == 0
        # ... but people are told at once, not at the next message.
        assert (await h.events(cid))[-1]["message"] == "agent exited while idle"
        t = trio.current_time()
        await h.e.send(cid, "three", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 3)
        assert h.launch_times[-1] == t


async def test_an_update_during_a_permission_wait_keeps_the_turn_timeout_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(
        tmp_path, permission_timeout=120.0, turn_timeout=60.0, permission_default="reject"
    ) as h:
        cid = await h.create()
        h.script(AskPermission(), Reply())
        t0 = trio.current_time()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        await h.e.send(cid, "edit", run=True, interrupt=False)
        await next_event(sub, "permission_requested")
        sub.close()
        await trio.sleep(10)
        await h.inject(_chunk("still here"))
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "end_turn"
        assert trio.current_time() - t0 == 120.0


@pytest.mark.parametrize("stall", ["init_hang", "new_hang"])
async def test_agent_start_up_is_bounded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, stall: str
) -> None:
    async with harness(tmp_path, start_timeout=10.0, max_crashes=3) as h:
        h.agent_kwargs[stall] = True
        cid = await h.create()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        t0 = trio.current_time()
        await h.e.send(cid, "hi", run=True, interrupt=False)
        with trio.fail_after(60):
            error = await next_event(sub, "error")
        assert trio.current_time() - t0 == 10.0
        assert error["message"] == "agent failed to start: no answer within 10s"
        await trio.testing.wait_all_tasks_blocked()
        # Two more tries (with backoff), then the conversation is failed, visibly.
        await trio.sleep(30)
        await trio.testing.wait_all_tasks_blocked()
        sub.close()
        assert (await h.e.get(cid)).status == "failed"
        assert h.launches == 3
        assert h.running is None
        assert h.e.agents_running() == 0
        assert not any(a.peer.running for a in h.agents)
        assert not any(a.prompts for a in h.agents)


async def _stop_after_idle(h: Harness, cid: str) -> None:
    await h.e.send(cid, "one", run=True, interrupt=False)
    await wait_turn_ended(h, cid)
    await trio.sleep(101)  # idle_ttl after the subscriber left: the agent is stopped
    await trio.testing.wait_all_tasks_blocked()
    assert h.e.agents_running() == 0


async def _restart_after_idle(h: Harness, cid: str) -> None:
    await _stop_after_idle(h, cid)
    await h.e.send(cid, "two", run=True, interrupt=False)
    await wait_turn_ended(h, cid, 2)


async def test_session_resume_is_preferred_when_advertised(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        h.agent_kwargs.update(resume=True, load_session=True)
        cid = await h.create()
        await _restart_after_idle(h, cid)
        methods = h.agent.methods
        assert "session/resume" in methods
        assert "session/load" not in methods
        restarted = [e for e in await h.events(cid) if e["type"] == "agent_restarted"]
        assert [(e["reason"], e["session_loaded"]) for e in restarted] == [("idle", True)]


async def test_failed_resume_falls_back_to_load(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        h.agent_kwargs.update(
            resume=True, load_session=True, resume_error=RpcFailure(-32002, "cannot resume")
        )
        cid = await h.create()
        await _restart_after_idle(h, cid)
        methods = h.agent.methods
        assert methods.index("session/resume") < methods.index("session/load")
        assert "session/new" not in methods
        events = await h.events(cid)
        assert "error" not in [e["type"] for e in events]
        restarted = [e for e in events if e["type"] == "agent_restarted"]
        assert [e["session_loaded"] for e in restarted] == [True]


async def test_neither_resume_nor_load_starts_a_new_session_visibly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        h.agent_kwargs.update(
            resume=True,
            load_session=True,
            resume_error=RpcFailure(-32002, "cannot resume"),
            load_error=RpcFailure(-32002, "cannot load"),
        )
        cid = await h.create()
        await _restart_after_idle(h, cid)
        assert h.agent.sessions == ["sess-1"]
        events = await h.events(cid)
        (error,) = [e["message"] for e in events if e["type"] == "error"]
        assert "cannot load" in error
        restarted = [e for e in events if e["type"] == "agent_restarted"]
        assert [e["session_loaded"] for e in restarted] == [False]


async def test_session_load_replay_is_not_shown_as_live(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        h.agent_kwargs["load_replay"] = [("user", "one"), ("agent", "REPLAYED")]
        cid = await h.create()
        await _stop_after_idle(h, cid)
        # Watched from before the restart: the load's replay must not show up as live.
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True)
        await h.e.send(cid, "two", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        assert h.agent.count("session/load") == 1
        lines = await drain(sub)
        deltas = [m["params"]["text"] for m in lines if m["method"] == "conversation/delta"]
        assert deltas == ["two"]
        texts = [e.get("text") for e in await h.events(cid) if e["type"] == "agent_message"]
        assert texts == ["one", "two"]
        assert h.e.statistics().updates_dropped == 2


async def test_updates_sent_after_the_reply_stay_out_of_the_next_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    orig = EventLog.start_turn

    async def slow_commit(self: EventLog, *args: Any) -> Any:
        rec = await orig(self, *args)
        await trio.sleep(1)  # the next turn exists, its prompt is not sent yet
        return rec

    monkeypatch.setattr(EventLog, "start_turn", slow_commit)
    async with harness(tmp_path) as h:
        cid = await h.create()
        # One straggler right behind the reply, more while the next turn is being started.
        late = (Chunk(" STRAY"), Sleep(0.5), Chunk(" LATER"), Tool("late"))
        h.script(Chunk("one"), Reply("end_turn", then=late))
        h.script(Chunk("two"), Reply())
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True)
        first, _ = pair(await h.e.send(cid, "first", run=True, interrupt=False))
        second, _ = pair(await h.e.send(cid, "second", run=True, interrupt=False))
        await wait_turn_ended(h, cid, 2)
        lines = await drain(sub)
        deltas = [m["params"] for m in lines if m["method"] == "conversation/delta"]
        assert [d["text"] for d in deltas if d["prompt_seq"] == second] == ["two"]
        events = await h.events(cid)
        ended_first = next(
            i
            for i, e in enumerate(events)
            if (e["type"], e.get("prompt_seq")) == ("turn_ended", first)
        )
        for e in events[ended_first + 1 :]:
            assert e.get("prompt_seq") != first or e["type"] == "turn_started", e
        second_turn = [e for e in events if e.get("prompt_seq") == second]
        assert [e.get("text") for e in second_turn if e["type"] == "agent_message"] == ["two"]
        assert not [e for e in second_turn if e["type"] == "tool_call"]
        assert h.supervisor(cid).dropped_updates >= 2  # " LATER" and the tool call at least


async def test_client_requests_the_daemon_does_not_serve(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        read: dict[str, Any] = {"sessionId": "sess-1", "path": str(tmp_path / "x")}
        h.script(
            Request("fs/read_text_file", read),
            Request("fs/write_text_file", {**read, "content": "x"}),
            Request("terminal/create", {"sessionId": "sess-1", "command": "ls"}),
            Request("session/request_permission", {"sessionId": "sess-1"}),
            Request("session/request_permission", None),
            Request("session/request_permission", {"sessionId": 5, "options": "no"}),
            Reply(),
        )
        await h.e.send(cid, "go", run=True, interrupt=False)
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "end_turn"
        codes = [a.code if isinstance(a, RpcFailure) else a for a in h.agent.client_answers]
        assert codes == [METHOD_NOT_FOUND] * 3 + [INVALID_PARAMS] * 3
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_agent_that_cannot_be_spawned_fails_the_conversation_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    def missing(agent: Any) -> None:
        raise AgentStartError("cannot start agent 'x': command not found: x", permanent=True)

    async with harness(tmp_path, max_crashes=3) as h:
        h.prepare = missing
        cid = await h.create()
        await h.e.send(cid, "hi", run=True, interrupt=False)
        await trio.sleep(60)  # no retries, however long we wait
        assert h.launches == 1
        info = await h.e.get(cid)
        assert (info.status, info.queued) == ("failed", 1)  # the message waits, unprompted
        errors = [e["message"] for e in await h.events(cid) if e["type"] == "error"]
        assert errors == [
            "agent failed to start: cannot start agent 'x': command not found: x",
            "the conversation is stopped until resumed",
        ]
        h.prepare = None
        h.script(Reply())
        await h.e.resume(cid)  # fixed: a person tries again
        await wait_turn_ended(h, cid)
        assert h.launches == 2
