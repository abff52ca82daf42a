"""Start-up permits: at most `max_starting` agents in start-up at once, the rest in FIFO order.

The engine harness with in-process fake agents on the autojump clock: a launch takes
`start_delay` (virtual) seconds before the fake answers `initialize`, so an agent is in
start-up from its launch until it has answered `session/new` (`in_start_up`), which is what
`max_starting` bounds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from daemon.engine.slot import SlotState
from daemon.engine.startups import StartPermits
from protocol.jsonrpc import RpcFailure
from store import Store
from tests.engine.harness import Harness, harness, wait_turn_ended
from tests.engine.test_slots import prompted, prompts, send, state, turns_of
from tests.fakes.agent import Exit, FakeAgent, Reply


def in_start_up(h: Harness) -> int:
    """Agents launched that have not answered `session/new` yet (each starts once here)."""
    return h.launches - sum(1 for a in h.agents if a.sessions)


@attrs.define(eq=False)
class Peak:
    """The most agents seen in start-up at once, looked at every 10 ms (virtual)."""

    h: Harness
    most: int = 0

    async def watch(self) -> None:
        while True:
            self.most = max(self.most, in_start_up(self.h))
            await trio.sleep(0.01)


# --- the bound ----------------------------------------------------------------------------------


async def test_no_more_than_max_starting_agents_start_at_once_under_racing_sends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=20, max_starting=3) as h:
        h.start_delay = 0.5
        h.prepare = turns_of(0.2)
        ids = [await h.create() for _ in range(12)]
        peak = Peak(h)
        async with trio.open_nursery() as watcher:
            watcher.start_soon(peak.watch)
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for cid in ids:
                    nursery.start_soon(send, h, cid, f"1 {cid}")
                await trio.sleep(0.7)  # the line moves: a second message to half of them
                for cid in ids[::2]:
                    nursery.start_soon(send, h, cid, f"2 {cid}")
            for i, cid in enumerate(ids):
                await wait_turn_ended(h, cid, 2 if i % 2 == 0 else 1)
            watcher.cancel_scope.cancel()
        assert peak.most == 3  # reached, never exceeded
        assert h.launches == 12  # each started once: nothing was evicted
        # Each start-up held its permit 0.5 s at least: a launch came after the one three
        # before it had ended.
        times = sorted(h.launch_times)
        assert times[:3] == [t0] * 3
        assert all(times[i + 3] >= times[i] + 0.5 for i in range(len(times) - 3))
        assert h.e.start_counts() == (0, 3, 0)
        for i, cid in enumerate(ids):  # every acknowledged message prompted, once, in order
            mine = [p for a in h.agents for p in a.prompts if p.endswith(cid)]
            assert mine == ([f"1 {cid}", f"2 {cid}"] if i % 2 == 0 else [f"1 {cid}"])


async def test_start_ups_wait_their_turn_first_come_first_served_shown_starting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=3, max_starting=1) as h:
        h.start_delay = 1.0
        h.prepare = turns_of(10.0)
        a, b, c, d = [await h.create() for _ in range(4)]
        for cid in (a, b, c, d):
            await send(h, cid, cid)
            await trio.testing.wait_all_tasks_blocked()
        # a starts; b and c hold a slot each and wait for the permit; d waits for a slot.
        assert [await state(h, cid) for cid in (a, b, c, d)] == [
            ("starting", None),
            ("starting", None),
            ("starting", None),
            ("waiting", 1),
        ]
        assert h.e.slot_counts() == (3, 3, 1)
        assert h.e.start_counts() == (1, 1, 2)
        assert h.launches == 1
        await prompted(h, 1)  # a's agent is up and in its turn; b's start-up runs
        await trio.testing.wait_all_tasks_blocked()
        assert h.launches == 2
        assert [await state(h, cid) for cid in (a, b, c)] == [
            ("running", None),
            ("starting", None),
            ("starting", None),
        ]
        assert h.e.start_counts() == (1, 1, 1)
        await wait_turn_ended(h, d)
        assert prompts(h) == [[a], [b], [c], [d]]  # started in the order they asked


async def test_an_idle_agent_gives_its_slot_to_a_conversation_that_then_waits_to_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=2, max_starting=1) as h:
        h.start_delay = 1.0
        a, b, c = [await h.create() for _ in range(3)]
        await send(h, a, "a")
        await wait_turn_ended(h, a)
        h.prepare = turns_of(10.0)
        await send(h, b, "b")
        await send(h, c, "c")  # no slot: a's idle agent is stopped for it
        await trio.testing.wait_all_tasks_blocked()
        assert [await state(h, cid) for cid in (b, c)] == [("starting", None)] * 2
        assert h.e.start_counts() == (1, 1, 1)
        await wait_turn_ended(h, c)
        assert not h.supervisor(a).live
        assert h.e.slots.statistics().evictions == 1
        assert h.peak_alive == 2
        assert prompts(h) == [["a"], ["b"], ["c"]]


# --- what a conversation in line for a start-up can still do ------------------------------------


async def start_a_and_line_up(h: Harness, a: str, *others: str) -> None:
    """`a`'s agent is in start-up (it hangs in `initialize`); `others` in line behind it."""
    await send(h, a, "a")
    for cid in others:
        await send(h, cid, cid)
    await trio.testing.wait_all_tasks_blocked()
    assert h.e.start_counts() == (1, 1, len(others))


def hang_first(h: Harness) -> None:
    """The first agent launched hangs in `initialize`; the others run 10 s turns."""

    def prepare(agent: FakeAgent) -> None:
        agent.init_hang = h.launches == 1
        turns_of(10.0)(agent)

    h.prepare = prepare


@asynccontextmanager
async def lined_up(tmp: Path) -> AsyncIterator[tuple[Harness, str, str]]:
    """One start-up permit, held by a's agent hanging in `initialize`; b and c in line."""
    async with harness(tmp, max_agents=4, max_starting=1) as h:
        hang_first(h)
        a, b, c = [await h.create() for _ in range(3)]
        await start_a_and_line_up(h, a, b, c)
        yield h, b, c


async def test_a_conversation_in_line_to_start_can_be_interrupted_and_resumed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with lined_up(tmp_path) as (h, b, c):
        t0 = trio.current_time()
        assert await h.e.interrupt(b) is True  # it counts: its turn would have run
        assert trio.current_time() == t0  # no wait for the start-up ahead
        assert await state(h, b) == ("paused", None)
        assert h.supervisor(b).slot.state is SlotState.ABSENT
        assert h.e.start_counts() == (1, 1, 1)  # out of the line
        assert h.e.slot_counts() == (2, 4, 0)  # and its slot given back
        assert [m.text for m in await h.e.queue(b)] == [b]  # kept
        await h.e.resume(b)
        await wait_turn_ended(h, b)  # after a's start-up timed out, and c's turn started
        assert prompts(h)[1:3] == [[c], [b]]  # (then a's retry)


async def test_a_conversation_in_line_to_start_can_have_its_queue_changed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with lined_up(tmp_path) as (h, b, c):
        b2, _ = await send(h, b, "b2")
        c2, _ = await send(h, c, "c2")
        queue = await h.e.queue(b)
        # Edited, moved, one of two removed: b still needs an agent, and keeps its place.
        await h.e.edit(b, queue[0].seq, "b edited")
        assert await h.e.move(b, b2, queue[0].seq) == [b2, queue[0].seq]
        await h.e.remove(c, c2)
        await trio.testing.wait_all_tasks_blocked()
        assert [await state(h, cid) for cid in (b, c)] == [("starting", None)] * 2
        assert h.e.start_counts() == (1, 1, 2)
        # All of c's removed: it leaves the line, and gives its slot back.
        await h.e.remove(c, (await h.e.queue(c))[0].seq)
        await trio.testing.wait_all_tasks_blocked()
        assert await state(h, c) == ("idle", None)
        assert h.e.start_counts() == (1, 1, 1)
        assert h.e.slot_counts() == (2, 4, 0)
        await wait_turn_ended(h, b, 2)
        assert prompts(h)[1] == ["b2", "b edited"]
        assert not any(p.startswith(c) for agent in h.agents for p in agent.prompts)


async def test_a_conversation_in_line_to_start_can_be_deleted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with lined_up(tmp_path) as (h, b, c):
        t0 = trio.current_time()
        await h.e.delete(b)
        assert trio.current_time() == t0  # no wait for the start-up ahead
        assert h.e.start_counts() == (1, 1, 1)
        assert h.e.slot_counts() == (2, 4, 0)
        await wait_turn_ended(h, c)
        assert prompts(h)[1] == [c]


# --- start-ups that fail, hang or back off ------------------------------------------------------


async def test_a_start_up_that_fails_gives_its_permit_to_the_next(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=4, max_starting=1) as h:
        h.start_delay = 1.0

        def prepare(agent: FakeAgent) -> None:
            if h.launches == 1:
                agent.init_error = RpcFailure(-32603, "no")
            turns_of(1.0)(agent)

        h.prepare = prepare
        a, b = await h.create(), await h.create()
        t0 = trio.current_time()
        await send(h, a, "a")
        await send(h, b, "b")
        await wait_turn_ended(h, b)
        # Right after a's failure.
        assert [t - t0 for t in h.launch_times[:2]] == pytest.approx([0.0, 1.0])
        assert "error" in await h.types(a)
        await wait_turn_ended(h, a)  # its retry, after b's start-up
        assert h.e.start_counts() == (0, 1, 0)


async def test_a_start_up_that_hangs_holds_its_permit_for_start_timeout_at_most(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=4, max_starting=1, start_timeout=30.0) as h:

        def prepare(agent: FakeAgent) -> None:  # the first two hang in `initialize`
            agent.init_hang = h.launches <= 2
            turns_of(10.0)(agent)

        h.prepare = prepare
        a, b, c = [await h.create() for _ in range(3)]
        t0 = trio.current_time()
        await start_a_and_line_up(h, a, b, c)
        await prompted(h, 3)  # c's agent, once a's and b's start-ups timed out
        assert [t - t0 for t in h.launch_times[:3]] == pytest.approx([0.0, 30.0, 60.0])
        for cid in (a, b):
            assert (await h.types(cid)).count("error") == 1
        # 60 s in line, more than start_timeout: that bounds a start-up, not the wait for one.
        assert "error" not in await h.types(c)


async def test_a_start_up_backing_off_after_a_crash_holds_no_permit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=4, max_starting=1) as h:
        a, b = await h.create(), await h.create()
        h.script(Exit())  # a's first agent crashes in its first turn
        await send(h, a, "a1")
        await send(h, a, "a2")
        await wait_turn_ended(h, a)
        await trio.testing.wait_all_tasks_blocked()
        slot = h.supervisor(a).slot
        assert ((await state(h, a))[0], slot.retry_at is not None) == ("starting", True)
        assert h.e.start_counts() == (0, 1, 0)
        t0 = trio.current_time()
        h.script(Reply())
        await send(h, b, "b")
        await wait_turn_ended(h, b)
        assert h.launch_times[1] == t0  # b's start did not wait for a's backoff
        await wait_turn_ended(h, a, 2)


# --- the daemon stopping, a reload ----------------------------------------------------------------


async def test_shutdown_does_not_wait_for_start_ups_in_line(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=8, max_starting=1, shutdown_grace=10.0) as h:
        hang_first(h)
        ids = [await h.create() for _ in range(6)]
        await start_a_and_line_up(h, *ids)
        t0 = trio.current_time()
    assert trio.current_time() - t0 <= 10.0
    assert h.launches == 1
    assert h.alive == 0
    with Store.open(tmp_path / "acpd.sqlite3") as s:
        for cid in ids:
            rec = s.get_conversation(cid)
            assert rec is not None
            assert (rec.status, rec.queued) == ("idle", 1)  # kept for the next start


async def test_a_reload_changes_max_starting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=8, max_starting=1) as h:
        h.start_delay = 1.0
        h.prepare = turns_of(10.0)
        ids = [await h.create() for _ in range(4)]
        for cid in ids:
            await send(h, cid, cid)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.start_counts() == (1, 1, 3)
        h.e.reload(attrs.evolve(h.e.config, max_starting=3))
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.start_counts() == (3, 3, 1)
        assert h.launches == 3
        h.e.reload(attrs.evolve(h.e.config, max_starting=1))  # as start-ups end
        while h.launches < 4:
            await trio.sleep(0.01)
        assert h.e.start_counts() == (1, 1, 0)
        assert h.launch_times[3] >= max(h.launch_times[:3]) + 1.0  # once all three ended
        for cid in ids:
            await wait_turn_ended(h, cid)


# --- the permits alone ----------------------------------------------------------------------------


def test_a_permit_comes_back_once_and_goes_to_the_head_of_the_line() -> None:
    permits = StartPermits(1)
    first, second, third = permits.join(), permits.join(), permits.join()
    assert (first.position, second.position, third.position) == (None, 1, 2)
    permit = first._granted
    assert permit is not None
    permit.release()
    permit.release()  # idempotent: the second frees nothing more
    assert (second._granted is not None, third.position) == (True, 1)
    assert permits.statistics().starting == 1
    second.leave()  # granted, never taken: it goes on to the next
    assert third._granted is not None
    third.leave()
    assert (permits.statistics().starting, permits.statistics().waiting) == (0, 0)


async def test_a_waiter_poked_keeps_its_place(autojump_clock: trio.testing.MockClock) -> None:
    permits = StartPermits(1)
    held = permits.join()._granted
    waiter = permits.join()
    waiter.poke()
    assert await waiter.wait() is None
    assert waiter.position == 1
    assert held is not None
    held.release()
    assert await waiter.wait() is waiter._granted is not None
