"""Races around the turn loop: agent start-up, dying agents, retiring supervisors, delete."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.agents.connection import AgentConnection
from daemon.engine.eventlog import EventLog
from daemon.engine.recorder import Recorder
from daemon.engine.storeio import StoreIO
from protocol import acp
from protocol.jsonrpc import NOT_FOUND, RpcFailure
from store import Store
from tests.engine.harness import harness, next_event, pair, pending, wait_turn_ended
from tests.fakes.agent import Chunk, Exit, Hang, Reply, Sleep, WaitForCancel


def _chunk(text: str) -> acp.AgentMessageChunk:
    return acp.AgentMessageChunk(content=acp.TextContent(text=text))


# --- B1: an idle, watched supervisor blocks -------------------------------------------------


async def test_watched_supervisor_without_agent_blocks_then_retires_when_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(tmp_path) as h:  # linger: 60 s
        cid = await h.create()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True)
        conv = h.supervisor(cid)
        rounds = 0
        real = trio.move_on_at

        def counting(*args: Any, **kwargs: Any) -> trio.CancelScope:
            nonlocal rounds
            rounds += 1
            if rounds > 50:  # a busy loop: stop it, the asserts below report it
                raise RuntimeError("the supervisor's wait loop spins")
            return real(*args, **kwargs)

        monkeypatch.setattr(trio, "move_on_at", counting)
        await trio.sleep(600)  # ten lingers with a subscriber and no agent
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.undo()
        assert conv.load_error is None
        assert rounds <= 2
        assert h.e.live_count() == 1
        # The last subscriber leaving wakes it: it retires one linger later.
        sub.close()
        await trio.sleep(59)
        assert h.e.live_count() == 1
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.live_count() == 0


# --- B2: an agent that exited is never handed a prompt ---------------------------------------


@pytest.mark.parametrize("stop_delay", [0.0, 2.0])
async def test_crash_mid_turn_with_a_message_queued_behind(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, stop_delay: float
) -> None:
    async with harness(tmp_path) as h:
        h.stop_delay = stop_delay  # stopping the crashed agent's group takes a while
        cid = await h.create()
        h.script(Chunk("a"), Exit())
        await h.e.send(cid, "one", run=True, interrupt=False)
        await h.e.send(cid, "two", run=True, interrupt=False)
        conv = h.supervisor(cid)
        ended = await wait_turn_ended(h, cid, 2)
        assert [e["stop_reason"] for e in ended] == ["agent_exited", "end_turn"]
        assert conv.load_error is None
        assert [a.prompts for a in h.agents] == [["one"], ["two"]]
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).status == "idle"


async def test_agent_exits_while_its_turn_is_being_started(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        await h.e.send(cid, "warm", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        conv = h.supervisor(cid)
        orig = EventLog.start_turn
        hits = 0

        async def start_turn(self: EventLog, *args: Any) -> Any:
            nonlocal hits
            rec = await orig(self, *args)
            hits += 1
            if hits == 1:  # the cursor moved; now the agent dies before the prompt is sent
                await h.agent.exit()
                await trio.testing.wait_all_tasks_blocked()
            return rec

        monkeypatch.setattr(EventLog, "start_turn", start_turn)
        await h.e.send(cid, "second", run=True, interrupt=False)
        ended = await wait_turn_ended(h, cid, 2)
        assert ended[-1]["stop_reason"] == "agent_exited"
        assert conv.load_error is None
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).status == "idle"
        await h.e.send(cid, "third", run=True, interrupt=False)
        ended = await wait_turn_ended(h, cid, 3)
        assert ended[-1]["stop_reason"] == "end_turn"
        assert h.agent.prompts == ["third"]


async def test_a_dangling_running_turn_is_closed_at_hydration(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("half"), Hang())
        first, _ = pair(await h.e.send(cid, "one", run=True, interrupt=False))
        await h.agents_wait_prompt(1)
        conv = h.supervisor(cid)
        await conv.close(deleting=False)  # a hard stop: records nothing, "running" stays
        assert (await h.e.get(cid)).status == "running"
        second, _ = pair(await h.e.send(cid, "two", run=True, interrupt=False))
        with trio.fail_after(100):
            ended = await wait_turn_ended(h, cid, 2)
        assert [(e["prompt_seq"], e["stop_reason"]) for e in ended] == [
            (first, "agent_exited"),
            (second, "end_turn"),
        ]
        assert h.agent.prompts == ["two"]


# --- B3: what changed while the agent started is honoured ------------------------------------


async def test_interrupt_while_the_agent_starts_keeps_the_message_unprompted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.start_delay = 5.0
        cid = await h.create()
        seq, ahead = pair(await h.e.send(cid, "first", run=True, interrupt=False))
        assert ahead == 0
        await trio.sleep(1)
        # The user's Ctrl-C lands before the prompt: it counts, and nothing is prompted.
        assert await h.e.interrupt(cid) is True
        await trio.sleep(20)
        await trio.testing.wait_all_tasks_blocked()
        assert h.agent.prompts == []
        info = await h.e.get(cid)
        assert (info.status, info.queued) == ("paused", 1)
        assert pending(await h.e.queue(cid)) == [(seq, "first")]
        assert "turn_started" not in await h.types(cid)
        await h.e.resume(cid)
        await wait_turn_ended(h, cid)
        assert h.agent.prompts == ["first"]


async def test_removing_the_message_while_the_agent_starts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.start_delay = 5.0
        cid = await h.create()
        seq, _ = pair(await h.e.send(cid, "first", run=True, interrupt=False))
        await trio.sleep(1)
        conv = h.supervisor(cid)
        await h.e.remove(cid, seq)
        await trio.sleep(20)
        await trio.testing.wait_all_tasks_blocked()
        assert conv.load_error is None
        assert h.agent.prompts == []
        info = await h.e.get(cid)
        assert (info.status, info.queued) == ("idle", 0)
        await h.e.send(cid, "second", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        assert h.agent.prompts == ["second"]


async def test_shutdown_while_the_agent_starts_prompts_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.start_delay = 5.0
        cid = await h.create()
        await h.e.send(cid, "first", run=True, interrupt=False)
        await trio.sleep(1)
        t0 = trio.current_time()
    assert trio.current_time() == t0  # the pending start was cancelled, not waited for
    assert not any(a.prompts for a in h.agents)
    with Store.open(tmp_path / "acpd.sqlite3") as s:
        rec = s.get_conversation(cid)
        assert rec is not None
        assert (rec.status, rec.queued, rec.cursor) == ("idle", 1, 0)
        assert [e.type for e in s.read_events(cid)] == ["user_message"]


async def test_send_interrupt_while_the_agent_starts_supersedes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.start_delay = 5.0
        cid = await h.create()
        first, _ = pair(await h.e.send(cid, "first", run=True, interrupt=False))
        await trio.sleep(1)
        second, ahead = pair(await h.e.send(cid, "instead", run=True, interrupt=True))
        assert ahead == 0
        ended = await wait_turn_ended(h, cid, 2)
        assert [(e["prompt_seq"], e["stop_reason"]) for e in ended] == [
            (first, "cancelled"),
            (second, "end_turn"),
        ]
        assert h.agent.prompts == ["instead"]
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).status == "idle"


# --- B4: a retiring supervisor is not handed out ---------------------------------------------


async def test_subscribe_to_a_retiring_supervisor_gets_a_live_one(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    orig = Recorder.run

    async def slow_teardown(self: Recorder) -> None:
        try:
            await orig(self)
        finally:  # the retiring supervisor takes a second to leave
            with trio.CancelScope(shield=True):
                await trio.sleep(1)

    monkeypatch.setattr(Recorder, "run", slow_teardown)
    async with harness(tmp_path) as h:  # linger: 60 s
        cid = await h.create()
        (await h.e.subscribe(cid, after_seq=0, deltas=False)).close()
        old = h.supervisor(cid)
        await trio.sleep(60.5)
        assert old.retiring
        assert not old.finished.is_set()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        assert old.finished.is_set()
        assert h.supervisor(cid) is not old
        await h.e.send(cid, "hello", run=True, interrupt=False)
        with trio.fail_after(10):
            event = await next_event(sub, "user_message")
        sub.close()
        assert event["text"] == "hello"


# --- B5: run=false stages, even behind a running turn ----------------------------------------


async def test_no_run_during_a_turn_stages_the_message(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Sleep(10), Reply())
        await h.e.send(cid, "one", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        staged, _ = pair(await h.e.send(cid, "staged", run=False, interrupt=False))
        assert (await h.e.get(cid)).status == "running"
        await wait_turn_ended(h, cid)
        await trio.sleep(30)
        await trio.testing.wait_all_tasks_blocked()
        assert h.agent.prompts == ["one"]
        info = await h.e.get(cid)
        assert (info.status, info.queued) == ("paused", 1)
        assert pending(await h.e.queue(cid)) == [(staged, "staged")]
        await h.e.resume(cid)
        await wait_turn_ended(h, cid, 2)
        assert h.agent.prompts == ["one", "staged"]


# --- B6: queue counts are exact --------------------------------------------------------------


async def test_concurrent_sends_get_exact_positions(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Sleep(10), Reply())
        h.script(Sleep(100), Reply())
        await h.e.send(cid, "running", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        results: list[tuple[int, int, int]] = []

        async def send(text: str) -> None:
            sent = await h.e.send(cid, text, run=True, interrupt=False)
            results.append((sent.seq, sent.queued, sent.number))

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(send, f"m{i}")
        assert [ahead for _, ahead, _ in sorted(results)] == [1, 2, 3, 4]
        # Numbers count messages, in the order stored, whatever order the replies come in.
        assert [number for _, _, number in sorted(results)] == [2, 3, 4, 5]
        assert [(m.seq, m.number) for m in await h.e.queue(cid)] == sorted(
            (seq, number) for seq, _, number in results
        )
        assert (await h.e.get(cid)).queued == 4
        await wait_turn_ended(h, cid)
        await trio.testing.wait_all_tasks_blocked()
        assert (await h.e.get(cid)).queued == 3


# --- B8: a delete races nothing into the store -----------------------------------------------


async def test_first_send_racing_delete_is_not_found(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        orig = EventLog.append_user

        async def append_then_delete(self: EventLog, text: str) -> Any:
            result = await orig(self, text)
            await h.e.delete(cid)  # lands between the message and the title
            return result

        monkeypatch.setattr(EventLog, "append_user", append_then_delete)
        with pytest.raises(RpcFailure) as err:
            await h.e.send(cid, "first words", run=False, interrupt=False)
        assert err.value.code == NOT_FOUND
        assert await h.e.count() == 0


async def test_nothing_of_a_deleted_conversation_writes_again(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "run", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await trio.testing.wait_all_tasks_blocked()
        conv = h.supervisor(cid)
        writes_after_delete = 0
        deleted = False
        orig = StoreIO.write

        async def counting(self: StoreIO, fn: Any) -> Any:
            nonlocal writes_after_delete
            # Once its log is closed, only the engine's own delete (after the supervisor has
            # finished) may write.
            if deleted or (conv.retiring and not conv.finished.is_set()):
                writes_after_delete += 1
            return await orig(self, fn)

        monkeypatch.setattr(StoreIO, "write", counting)
        # The recorder has two writes to do, the second queued behind delete's close.
        on_update = conv.agent_input.on_update
        on_update("sess-1", acp.ToolCall(tool_call_id="t1", title="t", status="pending"))
        on_update("sess-1", _chunk("y"))
        on_update("sess-1", acp.ToolCall(tool_call_id="t2", title="t", status="pending"))
        await h.e.delete(cid)
        deleted = True
        # A late update and a recorder kick after the delete.
        on_update("sess-1", _chunk("late"))
        conv.recorder.delta("message", "later", 1)
        await trio.sleep(5)
        await trio.testing.wait_all_tasks_blocked()
        assert writes_after_delete == 0
        assert conv.load_error is None
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert h.e.live_count() == 0
        with pytest.raises(RpcFailure):
            await h.e.get(cid)


# --- B9: restart reasons across supervisors --------------------------------------------------


@pytest.mark.parametrize("how", ["crashed", "drain_timeout"])
async def test_restart_reason_survives_the_supervisor_retiring(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, how: str
) -> None:
    async with harness(tmp_path, drain_timeout=5.0) as h:
        cid = await h.create()
        h.script(Exit() if how == "crashed" else Hang())
        await h.e.send(cid, "one", run=True, interrupt=False)
        if how == "drain_timeout":
            await h.agents_wait_prompt(1)
            await h.e.interrupt(cid)
            await h.e.resume(cid)
        await wait_turn_ended(h, cid)
        await trio.sleep(100)  # past the linger: the supervisor retires
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.live_count() == 0
        await h.e.send(cid, "two", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        restarted = [e for e in await h.events(cid) if e["type"] == "agent_restarted"]
        assert [(e["reason"], e["session_loaded"]) for e in restarted] == [(how, True)]


async def test_an_agent_exiting_mid_turn_is_reported_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn reports the crash; the agent's exit watcher must not report it again as an
    idle agent's exit when it sees the exit after the turn has ended (a real process's exit
    status comes a moment after its stdout closed)."""
    real_wait = AgentConnection.wait_exited

    async def late(self: AgentConnection) -> None:
        await real_wait(self)
        await trio.sleep(0.5)

    monkeypatch.setattr(AgentConnection, "wait_exited", late)
    async with harness(tmp_path, max_crashes=100) as h:
        h.prepare = lambda agent: agent.script(Chunk("a"), Exit())
        cid = await h.create()
        for i in range(3):
            await h.e.send(cid, f"crash {i}", run=True, interrupt=False)
            await wait_turn_ended(h, cid, i + 1)
            await trio.sleep(1)
        types = await h.types(cid)
        assert types.count("turn_ended") == 3
        assert types.count("error") == 3, [
            e["message"] for e in await h.events(cid) if e["type"] == "error"
        ]
