"""Steering a running turn, and editing and moving queued messages (steering.py).

Fake agents in-process (tests/fakes/agent.py) over the real store, under autojump_clock.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.engine.eventlog import EventLog
from protocol import acp
from protocol.api import SendResult
from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, NOT_FOUND, RpcFailure
from tests.engine.harness import Event, Harness, harness, pending, wait_turn_ended
from tests.fakes.agent import Chunk, Reply, Sleep, SteerReply


def triple(sent: SendResult) -> tuple[int, int, bool]:
    """A steer's (seq, queued, steered)."""
    assert isinstance(sent.steered, bool)
    return sent.seq, sent.queued, sent.steered


def _of(events: list[Event], type_: str) -> list[Event]:
    return [e for e in events if e["type"] == type_]


async def _running(h: Harness, cid: str, *steps: Any, text: str = "first") -> None:
    """Start a turn that runs `steps` (default: ten virtual seconds), prompt written."""
    h.script(*(steps or (Sleep(10), Chunk("done"))))
    await h.e.send(cid, text, run=True, interrupt=False)
    await h.agents_wait_prompt(1)


# --- steering into a running turn ------------------------------------------------------------


@pytest.mark.parametrize("advertised", ["meta", "capabilities_meta", "rfd"])
async def test_a_steer_goes_into_the_running_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, advertised: str
) -> None:
    async with harness(tmp_path) as h:
        h.agent_kwargs["steering"] = advertised
        cid = await h.create()
        await _running(h, cid)
        queued = (await h.e.send(cid, "queued", run=True, interrupt=False)).seq
        steer_seq = queued + 1
        assert triple(await h.e.steer(cid, "go left")) == (steer_seq, 0, True)
        (steering,) = h.agent.params(acp.SESSION_STEERING)
        assert isinstance(steering, acp.SteeringRequest)
        assert steering.session_id == "sess-1"
        assert [acp.content_text(b) for b in steering.prompt] == ["go left"]
        assert steering.meta == {"steering": {"idleBehavior": "promptRequired"}}
        assert pending(await h.e.queue(cid)) == [(queued, "queued")]
        await wait_turn_ended(h, cid, 2)
        # Prompted never: one turn for "first", one for "queued", none for the steer.
        assert h.agent.prompts == ["first", "queued"]
        events = await h.events(cid)
        steer = _of(events, "user_message")[2]
        assert (steer["seq"], steer["text"], steer["steer"]) == (steer_seq, "go left", True)
        (steered,) = _of(events, "user_message_steered")
        assert (steered["message_seq"], steered["prompt_seq"]) == (steer_seq, 1)
        assert steered["outcome"] == "injected"
        assert [e["prompt_seq"] for e in _of(events, "turn_started")] == [1, queued]
        assert (await h.e.get(cid)).queued == 0


@pytest.mark.parametrize(
    "agent",
    [
        {},  # says nothing about steering
        {"unknown_empty": True},  # and answers `{}` to what it does not know, as codex-acp
    ],
    ids=["silent", "answers-anything"],
)
async def test_an_agent_that_does_not_advertise_steering_is_never_asked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, agent: dict[str, Any]
) -> None:
    async with harness(tmp_path) as h:
        h.agent_kwargs.update(agent)
        cid = await h.create()
        await _running(h, cid)
        queued = (await h.e.send(cid, "queued", run=True, interrupt=False)).seq
        # Next in line, ahead of the older queued message; one turn (the running one) first.
        assert triple(await h.e.steer(cid, "now")) == (queued + 1, 1, False)
        assert pending(await h.e.queue(cid)) == [(queued + 1, "now"), (queued, "queued")]
        await wait_turn_ended(h, cid, 3)
        assert h.agent.count(acp.SESSION_STEERING) == 0
        assert h.agent.prompts == ["first", "now", "queued"]
        assert _of(await h.events(cid), "user_message_steered") == []


async def test_a_steer_when_no_turn_runs_is_prompted_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.agent_kwargs["steering"] = "meta"
        cid = await h.create()
        assert triple(await h.e.steer(cid, "hello")) == (1, 0, False)
        await wait_turn_ended(h, cid)
        assert h.agent.prompts == ["hello"]
        assert h.agent.count(acp.SESSION_STEERING) == 0  # no turn ran: nothing to steer
        # A paused queue: the steer is a person acting, so it runs (first).
        h.script(Sleep(5), Reply())
        await h.e.send(cid, "long", run=True, interrupt=False)
        await h.agents_wait_prompt(2)
        assert await h.e.interrupt(cid)
        await wait_turn_ended(h, cid, 2)
        await h.e.send(cid, "staged", run=False, interrupt=False)
        assert (await h.e.get(cid)).status == "paused"
        seq, ahead, steered = triple(await h.e.steer(cid, "go"))
        assert (ahead, steered) == (0, False)
        await wait_turn_ended(h, cid, 4)
        assert h.agent.prompts == ["hello", "long", "go", "staged"]
        assert seq == _of(await h.events(cid), "turn_started")[2]["prompt_seq"]


@pytest.mark.parametrize(
    ("reply", "taken", "outcome"),
    [
        (SteerReply("promptRequired"), False, None),
        (SteerReply(error=RpcFailure(-32603, "boom")), False, None),
        (SteerReply(exit=True), False, None),
        (SteerReply(hang=True), False, None),
        (SteerReply("startedNewTurn"), True, "startedNewTurn"),
        (SteerReply("teleported"), True, "teleported"),  # unknown: the agent owns it
        (SteerReply(None), True, "unknown"),  # a bare {}: likewise
    ],
    ids=["promptRequired", "error", "exit", "no-answer", "startedNewTurn", "unknown", "empty"],
)
async def test_steer_outcomes(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    reply: SteerReply,
    taken: bool,
    outcome: str | None,
) -> None:
    async with harness(tmp_path, steer_timeout=7.0) as h:
        h.agent_kwargs.update(steering="meta", steer_replies=collections.deque([reply]))
        cid = await h.create()
        await _running(h, cid, Sleep(100), Chunk("done"))
        t0 = trio.current_time()
        seq, ahead, steered = triple(await h.e.steer(cid, "left"))
        # A steer is answered within steer_timeout, whatever the agent does.
        assert trio.current_time() - t0 == (7.0 if reply.hang else 0.0)
        assert steered is taken
        if not reply.exit:  # (an exit also ends the turn: 0 or 1, as the race goes)
            assert ahead == (0 if taken else 1)
        events = await h.events(cid)
        assert [e.get("outcome") for e in _of(events, "user_message_steered")] == (
            [outcome] if taken else []
        )
        assert [m.seq for m in await h.e.queue(cid)] == ([] if taken else [seq])
        await wait_turn_ended(h, cid, 1 if taken else 2)
        prompts = [p for a in h.agents for p in a.prompts]
        assert prompts == (["first"] if taken else ["first", "left"])


async def test_no_turn_starts_while_a_steer_is_in_flight(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The turn ends while the agent thinks about the steer: the next turn waits for its
    answer, then starts with whatever is first in line by then."""
    async with harness(tmp_path) as h:
        h.agent_kwargs.update(steering="meta")
        cid = await h.create()
        await _running(h, cid, Sleep(1), Chunk("done"))
        queued = (await h.e.send(cid, "queued", run=True, interrupt=False)).seq
        h.agent.steer_replies.append(SteerReply("promptRequired", delay=5))
        t0 = trio.current_time()

        async def steer() -> None:
            # Answered after the turn ended: nothing runs before it now.
            assert triple(await h.e.steer(cid, "now")) == (queued + 1, 0, False)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(steer)
            await h.agents_wait_prompt(2)
            # The first turn ended at t0 + 1; the next started once the steer was answered.
            assert trio.current_time() == t0 + 5
        await wait_turn_ended(h, cid, 3)
        starts = _of(await h.events(cid), "turn_started")
        assert [e["prompt_seq"] for e in starts] == [1, queued + 1, queued]
        assert h.agent.prompts == ["first", "now", "queued"]


async def test_a_steer_taken_after_its_turn_ended_is_never_prompted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """codex-acp starts a turn of its own for a steer that comes too late (`startedNewTurn`):
    the agent owns it, so acpd does not prompt it too."""
    async with harness(tmp_path) as h:
        h.agent_kwargs.update(steering="meta")
        cid = await h.create()
        await _running(h, cid, Sleep(1), Chunk("done"))
        queued = (await h.e.send(cid, "queued", run=True, interrupt=False)).seq
        h.agent.steer_replies.append(SteerReply("startedNewTurn", delay=5))
        assert triple(await h.e.steer(cid, "now")) == (queued + 1, 0, True)
        await wait_turn_ended(h, cid, 2)
        assert h.agent.prompts == ["first", "queued"]


# --- edit, move, remove ----------------------------------------------------------------------


async def test_edit_and_move_before_the_prompt(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        await _running(h, cid)
        b = (await h.e.send(cid, "b", run=True, interrupt=False)).seq
        c = (await h.e.send(cid, "c", run=True, interrupt=False)).seq
        d = (await h.e.send(cid, "d", run=True, interrupt=False)).seq
        await h.e.edit(cid, b, "b, edited")
        assert await h.e.move(cid, d, None) == [d, b, c]
        assert await h.e.move(cid, c, b) == [d, c, b]
        assert await h.e.move(cid, c, b) == [d, c, b]  # already there: no event
        assert pending(await h.e.queue(cid)) == [(d, "d"), (c, "c"), (b, "b, edited")]
        assert [m.number for m in await h.e.queue(cid)] == [4, 3, 2]  # as sent, edits too
        await wait_turn_ended(h, cid, 4)
        assert h.agent.prompts == ["first", "d", "c", "b, edited"]
        # Prompted out of order: the next number still follows the newest message's.
        assert (await h.e.send(cid, "e", run=False, interrupt=False)).number == 5
        events = await h.events(cid)
        (edited,) = _of(events, "user_message_edited")
        assert (edited["message_seq"], edited["text"]) == (b, "b, edited")
        assert [e["order"] for e in _of(events, "queue_reordered")] == [[d, b, c], [d, c, b]]
        # The message as sent stays in the log; the edit follows it.
        assert _of(events, "user_message")[1]["text"] == "b"


async def test_edit_move_and_remove_after_the_prompt_are_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.agent_kwargs["steering"] = "meta"
        cid = await h.create()
        await _running(h, cid)
        b = (await h.e.send(cid, "b", run=True, interrupt=False)).seq
        steered, _, taken = triple(await h.e.steer(cid, "left"))
        assert taken
        for prompted in (1, steered):
            for op in (
                h.e.edit(cid, prompted, "x"),
                h.e.move(cid, prompted, None),
                h.e.move(cid, b, prompted),
                h.e.remove(cid, prompted),
            ):
                with pytest.raises(RpcFailure) as err:
                    await op
                assert err.value.code == CONFLICT
                assert err.value.message == f"message {prompted} was already prompted"
        with pytest.raises(RpcFailure) as err:
            await h.e.edit(cid, 99, "x")
        assert err.value.code == NOT_FOUND
        with pytest.raises(RpcFailure) as err:
            await h.e.move(cid, 99, None)
        assert err.value.code == NOT_FOUND
        with pytest.raises(RpcFailure) as err:
            await h.e.move(cid, b, b)
        assert (err.value.code, err.value.message) == (
            INVALID_PARAMS,
            f"message {b} cannot move before itself",
        )
        assert pending(await h.e.queue(cid)) == [(b, "b")]


async def test_a_message_being_steered_cannot_be_edited_moved_or_removed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        h.agent_kwargs["steering"] = "meta"
        cid = await h.create()
        await _running(h, cid)
        b = (await h.e.send(cid, "b", run=True, interrupt=False)).seq
        s = b + 1
        h.agent.steer_replies.append(SteerReply("promptRequired", delay=3))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.e.steer, cid, "left")
            await h.agent.wait_for(acp.SESSION_STEERING)
            for op in (h.e.edit(cid, s, "x"), h.e.move(cid, s, b), h.e.remove(cid, s)):
                with pytest.raises(RpcFailure) as err:
                    await op
                assert err.value.code == CONFLICT
                assert err.value.message == f"message {s} is being steered into the running turn"
            # Others can move around it; it stays where it is.
            assert await h.e.move(cid, b, s) == [b, s]
        # Answered: now it is an ordinary queued message.
        await h.e.edit(cid, s, "left, edited")
        assert pending(await h.e.queue(cid)) == [(b, "b"), (s, "left, edited")]


# --- races with the supervisor taking the message ---------------------------------------------


def _paused_start(monkeypatch: pytest.MonkeyPatch) -> tuple[trio.Event, trio.Event]:
    """Hold turn starts between their read of the queue and their commit: the first event is
    set once one is held there, setting the second lets them go on."""
    orig = EventLog.start_turn
    held, go = trio.Event(), trio.Event()

    async def start_turn(self: EventLog, *args: Any) -> Any:
        held.set()
        await go.wait()
        return await orig(self, *args)

    monkeypatch.setattr(EventLog, "start_turn", start_turn)
    return held, go


@pytest.mark.parametrize("who_wins", ["edit", "start"])
async def test_an_edit_racing_the_turn_start_wins_or_is_refused(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    who_wins: str,
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        held, go = _paused_start(monkeypatch)
        seq = (await h.e.send(cid, "as sent", run=True, interrupt=False)).seq
        await held.wait()  # it read "as sent" and is about to commit that
        if who_wins == "edit":
            await h.e.edit(cid, seq, "as edited")
            go.set()
            await wait_turn_ended(h, cid)
            # The start saw the message changed under it, read it again, and prompted that.
            assert h.agent.prompts == ["as edited"]
        else:
            go.set()
            await h.agents_wait_prompt(1)
            with pytest.raises(RpcFailure) as err:
                await h.e.edit(cid, seq, "too late")
            assert err.value.code == CONFLICT
            await wait_turn_ended(h, cid)
            assert h.agent.prompts == ["as sent"]
        assert len(_of(await h.events(cid), "turn_started")) == 1


@pytest.mark.parametrize("who_wins", ["move", "start"])
async def test_a_move_racing_the_turn_start_wins_or_is_refused(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    who_wins: str,
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        held, go = _paused_start(monkeypatch)
        a = (await h.e.send(cid, "a", run=True, interrupt=False)).seq
        await held.wait()  # it read "a" as the head and is about to commit that
        b = (await h.e.send(cid, "b", run=True, interrupt=False)).seq
        if who_wins == "move":
            assert await h.e.move(cid, b, None) == [b, a]
            go.set()
            await wait_turn_ended(h, cid, 2)
            assert h.agent.prompts == ["b", "a"]
        else:
            go.set()
            await h.agents_wait_prompt(1)
            with pytest.raises(RpcFailure) as err:
                await h.e.move(cid, a, None)
            assert err.value.code == CONFLICT
            await wait_turn_ended(h, cid, 2)
            assert h.agent.prompts == ["a", "b"]
