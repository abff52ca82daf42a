"""Behaviours 4-8: interrupt-and-drain, drain timeout, no leaks, turn timeout, crashes."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from protocol import acp
from protocol.jsonrpc import INTERNAL_ERROR, RpcFailure
from tests.engine.harness import harness, pair, wait_turn_ended
from tests.fakes.agent import (
    AskPermission,
    Chunk,
    Exit,
    Hang,
    IgnoreCancel,
    Reply,
    ReplyError,
    Sleep,
    WaitForCancel,
)


async def test_interrupt_cancels_drains_and_pauses(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("hel"), WaitForCancel(), Chunk("lo"), Reply("cancelled"))
        await h.e.send(cid, "first", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await h.e.send(cid, "second", run=True, interrupt=False)
        t0 = trio.current_time()
        assert await h.e.interrupt(cid) is True
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "cancelled"
        assert trio.current_time() - t0 < 1  # the agent answered: no drain timeout
        assert h.agent.cancels == 1
        await trio.testing.wait_all_tasks_blocked()
        info = await h.e.get(cid)
        assert (info.status, info.queued) == ("paused", 1)
        assert h.agent.prompts == ["first"]
        # Text sent after the cancel but before the reply belongs to the cancelled turn.
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "agent_message"]
        assert texts == ["hello"]
        await h.e.resume(cid)
        await wait_turn_ended(h, cid, 2)
        assert h.agent.prompts == ["first", "second"]


async def test_real_stop_reason_after_cancel_is_kept(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(WaitForCancel(), Reply("end_turn"))
        h.script(WaitForCancel(), ReplyError(INTERNAL_ERROR, "This operation was aborted"))
        for n in (1, 2):
            await h.e.send(cid, f"m{n}", run=True, interrupt=False)
            await h.agents_wait_prompt(n)
            assert await h.e.interrupt(cid)
            ended = (await wait_turn_ended(h, cid, n))[-1]
            expected = "end_turn" if n == 1 else "cancelled"
            assert ended["stop_reason"] == expected
        assert "error" not in await h.types(cid)


async def test_send_interrupt_supersedes_and_keeps_the_queue_running(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(WaitForCancel(), Reply("cancelled"))
        h.script(Reply("end_turn"))
        await h.e.send(cid, "slow", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        _, queued = pair(await h.e.send(cid, "instead", run=True, interrupt=True))
        assert queued == 0
        ended = await wait_turn_ended(h, cid, 2)
        assert [e["stop_reason"] for e in ended] == ["cancelled", "end_turn"]
        assert h.agent.prompts == ["slow", "instead"]
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).status == "idle"


async def test_interrupt_answers_pending_permission_cancelled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(AskPermission(), WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "edit it", run=True, interrupt=False)
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        from tests.engine.harness import next_event

        requested = await next_event(sub, "permission_requested")
        sub.close()
        assert [o["option_id"] for o in requested["options"]] == ["allow", "reject"]
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)
        (answer,) = h.agent.permission_answers
        assert isinstance(answer, acp.RequestPermissionResponse)
        assert isinstance(answer.outcome, acp.CancelledOutcome)
        resolved = [e for e in await h.events(cid) if e["type"] == "permission_resolved"]
        assert [(e["outcome"], e["by"]) for e in resolved] == [("cancelled", "cancel")]


async def test_drain_timeout_kills_and_reloads_the_session(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, drain_timeout=5.0) as h:
        cid = await h.create()
        h.script(Chunk("partial"), Hang())
        await h.e.send(cid, "stuck", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        first = h.agent
        t0 = trio.current_time()
        await h.e.interrupt(cid)
        (ended,) = await wait_turn_ended(h, cid)
        assert trio.current_time() - t0 == 5.0  # exactly the drain timeout
        assert ended["stop_reason"] == "cancelled"
        await trio.testing.wait_all_tasks_blocked()
        assert h.running is None  # the hung agent was stopped
        assert h.e.agents_running() == 0
        await h.e.send(cid, "again", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        second = h.agent
        assert second is not first
        (load,) = second.params("session/load")
        assert isinstance(load, acp.LoadSessionRequest)
        assert load.session_id == "sess-1"
        assert second.prompts == ["again"]
        restarted = [e for e in await h.events(cid) if e["type"] == "agent_restarted"]
        assert [(e["reason"], e["session_loaded"]) for e in restarted] == [("drain_timeout", True)]
        # Nothing of the killed turn leaked into the next one.
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "agent_message"]
        assert texts == ["partial", "again"]


async def test_failed_load_is_visible_and_starts_a_new_session(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, drain_timeout=1.0) as h:
        cid = await h.create()
        h.script(Hang())
        await h.e.send(cid, "stuck", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)
        h.agent_kwargs["load_error"] = RpcFailure(-32002, "Session not found")
        await h.e.send(cid, "again", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        events = await h.events(cid)
        errors = [e["message"] for e in events if e["type"] == "error"]
        assert len(errors) == 1
        assert "Session not found" in errors[0]
        restarted = [e for e in events if e["type"] == "agent_restarted"]
        assert restarted[0]["session_loaded"] is False
        assert h.agent.sessions == ["sess-1"]  # a fresh session on the new agent
        assert h.agent.prompts == ["again"]


async def test_updates_outside_their_turn_are_dropped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("one"), Reply("end_turn"))
        await h.e.send(cid, "first", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        conv = h.supervisor(cid)
        # A straggler after the reply (ACP.md §9: agents do this) must not reach turn two.
        await h.inject(acp.AgentMessageChunk(content=acp.TextContent(text="stray")))
        h.script(Chunk("two"), Reply("end_turn"))
        await h.e.send(cid, "second", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "agent_message"]
        assert texts == ["one", "two"]
        assert conv.dropped_updates == 1


async def test_turn_timeout_when_the_agent_goes_quiet(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, turn_timeout=60.0, drain_timeout=5.0) as h:
        cid = await h.create()
        h.script(Chunk("a"), Sleep(50), Chunk("b"), IgnoreCancel(), Sleep(1000), Reply())
        t0 = trio.current_time()
        await h.e.send(cid, "go", run=True, interrupt=False)
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "timeout"
        # Quiet for 60 s after the last update at t=50, then 5 s of drain before the kill.
        assert trio.current_time() - t0 == 50 + 60 + 5
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).status == "idle"


async def test_agent_crash_mid_turn_then_restart_then_failed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_crashes=3, crash_window=300.0) as h:
        cid = await h.create()
        h.script(Chunk("a"), Exit())
        await h.e.send(cid, "one", run=True, interrupt=False)
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "agent_exited"
        events = await h.events(cid)
        assert any(e["type"] == "error" and "exited" in e["message"] for e in events)
        h.script(Reply("end_turn"))
        await h.e.send(cid, "two", run=True, interrupt=False)
        ended2 = (await wait_turn_ended(h, cid, 2))[-1]
        assert ended2["stop_reason"] == "end_turn"
        assert h.launches == 2
        # Two more crashes in the window: failed, visibly, until a person acts.
        for n in (3, 4):
            h.script(Exit())
            await h.e.send(cid, f"m{n}", run=True, interrupt=False)
            await wait_turn_ended(h, cid, n)
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).status == "failed"
        assert any("stopped until resumed" in e.get("message", "") for e in await h.events(cid))
        await h.e.send(cid, "queued while failed", run=False, interrupt=False)
        await trio.testing.wait_all_tasks_blocked()
        launches = h.launches
        assert (await h.e.get(cid)).queued == 1
        await h.e.resume(cid)
        await wait_turn_ended(h, cid, 5)
        assert h.launches == launches + 1
