"""Agent slots (issue 18): at most `max_agents` agents, a FIFO line, LRU eviction of idle agents.

The engine harness with in-process fake agents on the autojump clock: launching takes
`start_delay` and stopping `stop_delay` (virtual) seconds, and `h.alive` counts agents from
their launch to the end of their stop, which is what `max_agents` bounds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
import trio.testing

from daemon.engine.slot import SlotState
from daemon.engine.slots import SlotTable
from store import Store
from tests.engine.harness import Harness, harness, wait_turn_ended
from tests.fakes.agent import Chunk, Exit, FakeAgent, Hang, Reply, Sleep


def turns_of(seconds: float, n: int = 3) -> Callable[[FakeAgent], None]:
    """A `prepare` giving every agent `n` turns of `seconds` each."""

    def prepare(agent: FakeAgent) -> None:
        for _ in range(n):
            agent.script(Sleep(seconds), Chunk("ok"), Reply())

    return prepare


async def send(h: Harness, cid: str, text: str) -> tuple[int, int]:
    sent = await h.e.send(cid, text, run=True, interrupt=False)
    return sent.seq, sent.queued


async def state(h: Harness, cid: str) -> tuple[str, int | None]:
    info = await h.e.get(cid)
    return info.status, info.slot_position


async def prompted(h: Harness, n: int) -> None:
    """Until the `n`-th agent launched has received its first prompt."""
    while len(h.agents) < n:
        await trio.sleep(0.1)
    await h.agents[n - 1].wait_for("session/prompt")


def prompts(h: Harness) -> list[list[str]]:
    """Each agent's prompts, in launch order."""
    return [a.prompts for a in h.agents]


# --- the cap ----------------------------------------------------------------------------------


async def test_the_cap_is_never_exceeded_under_racing_sends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=3) as h:
        h.start_delay, h.stop_delay = 0.5, 0.3
        h.prepare = turns_of(1.0)
        ids = [await h.create() for _ in range(10)]
        for round_ in (1, 2):
            # Ten sends at once, then a second message to half of them while the line moves.
            async with trio.open_nursery() as nursery:
                for cid in ids:
                    nursery.start_soon(send, h, cid, f"{round_} {cid}")
                await trio.sleep(1.2)
                for cid in ids[::2]:
                    nursery.start_soon(send, h, cid, f"{round_}b {cid}")
            stats = h.e.slots.statistics()
            assert stats.used <= 3
            for i, cid in enumerate(ids):
                await wait_turn_ended(h, cid, round_ * 2 if i % 2 == 0 else round_)
        assert h.peak_alive == 3  # reached, never exceeded
        assert h.e.slots.statistics().used == h.alive <= 3
        # Every acknowledged message was prompted, once, in order per conversation.
        for i, cid in enumerate(ids):
            sent = [f"1 {cid}", f"1b {cid}", f"2 {cid}", f"2b {cid}"]
            mine = [p for a in h.agents for p in a.prompts if p.endswith(cid)]
            assert mine == (sent if i % 2 == 0 else sent[::2])


# --- the line ---------------------------------------------------------------------------------


async def test_conversations_wait_in_line_first_come_first_served(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        h.prepare = turns_of(10.0)
        a, b, c, d = [await h.create() for _ in range(4)]
        await send(h, a, "a")
        await h.agents_wait_prompt(1)
        for cid in (b, c, d):
            await send(h, cid, cid)
            await trio.testing.wait_all_tasks_blocked()
        assert [await state(h, cid) for cid in (a, b, c, d)] == [
            ("running", None),
            ("waiting", 1),
            ("waiting", 2),
            ("waiting", 3),
        ]
        listed, _, _ = await h.e.list(limit=10, before=None)
        assert {i.id: (i.status, i.slot_position) for i in listed}[c] == ("waiting", 2)
        assert h.e.slot_counts() == (1, 1, 3)
        await trio.sleep(5)  # a busy agent is never evicted: the line waits for its turn
        assert (await state(h, b)) == ("waiting", 1)
        await prompted(h, 2)  # b's turn runs: the others moved up
        assert [await state(h, cid) for cid in (b, c, d)] == [
            ("running", None),
            ("waiting", 1),
            ("waiting", 2),
        ]
        await wait_turn_ended(h, d)
        assert prompts(h) == [["a"], [b], [c], [d]]
        assert h.peak_alive == 1
        # Each idle agent gave its slot to the next in line as its turn ended.
        assert h.e.slots.statistics().evictions == 3
        assert h.supervisor(a).slot.state is SlotState.ABSENT


async def test_the_least_recently_used_idle_agent_gives_its_slot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=2) as h:
        a, b, c = [await h.create() for _ in range(3)]
        await send(h, a, "a1")
        await wait_turn_ended(h, a)
        await trio.sleep(1)
        await send(h, b, "b1")
        await wait_turn_ended(h, b)
        assert (h.supervisor(a).live, h.supervisor(b).live) == (True, True)
        await send(h, c, "c1")  # no free slot: a's agent, idle longest, is stopped for it
        await wait_turn_ended(h, c)
        assert (h.supervisor(a).live, h.supervisor(b).live) == (False, True)
        assert h.peak_alive == 2
        # a again: now b's is the least recently used; a's agent comes back, told why it went.
        await send(h, a, "a2")
        await wait_turn_ended(h, a, 2)
        assert (h.supervisor(b).live, h.supervisor(c).live) == (False, True)
        restarted = [e for e in await h.events(a) if e["type"] == "agent_restarted"]
        assert [e["reason"] for e in restarted] == ["evicted"]
        assert prompts(h) == [["a1"], ["b1"], ["c1"], ["a2"]]
        assert h.e.slots.statistics().evictions == 2


async def test_an_idle_agent_keeps_its_slot_while_nobody_waits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        a = await h.create()
        await send(h, a, "a1")
        await wait_turn_ended(h, a)
        await trio.sleep(300)  # within idle_ttl (600 s)
        assert h.supervisor(a).live
        assert h.e.slots.statistics().evictions == 0
        await send(h, a, "a2")
        await wait_turn_ended(h, a, 2)
        assert prompts(h) == [["a1", "a2"]]  # the same agent


# --- what a waiting conversation can still do -------------------------------------------------


async def test_a_waiting_conversation_can_be_interrupted_and_resumed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        h.prepare = turns_of(10.0)
        a, b = await h.create(), await h.create()
        await send(h, a, "a")
        await h.agents_wait_prompt(1)
        seq, _ = await send(h, b, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert await state(h, b) == ("waiting", 1)
        assert await h.e.interrupt(b) is True  # it counts: its turn would have run
        assert await state(h, b) == ("paused", None)
        assert h.e.slot_counts() == (1, 1, 0)  # out of the line
        assert [(m.seq, m.text) for m in await h.e.queue(b)] == [(seq, "b")]  # kept
        await wait_turn_ended(h, a)
        await trio.sleep(1)
        assert h.supervisor(a).live  # nobody waits: a keeps its agent
        await h.e.resume(b)
        await wait_turn_ended(h, b)
        assert prompts(h) == [["a"], ["b"]]
        assert not h.supervisor(a).live


async def test_a_waiting_conversation_can_have_its_queue_changed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        h.prepare = turns_of(10.0)
        a, b, c = [await h.create() for _ in range(3)]
        await send(h, a, "a")
        await h.agents_wait_prompt(1)
        b1, _ = await send(h, b, "b1")
        b2, _ = await send(h, b, "b2")
        await send(h, c, "c")
        await trio.testing.wait_all_tasks_blocked()
        assert [await state(h, cid) for cid in (b, c)] == [("waiting", 1), ("waiting", 2)]
        # One of two removed: b still needs an agent, and keeps its place.
        await h.e.remove(b, b1)
        await trio.testing.wait_all_tasks_blocked()
        assert [await state(h, cid) for cid in (b, c)] == [("waiting", 1), ("waiting", 2)]
        # Both removed: b leaves the line and c moves up.
        await h.e.remove(b, b2)
        await trio.testing.wait_all_tasks_blocked()
        assert [await state(h, cid) for cid in (b, c)] == [("idle", None), ("waiting", 1)]
        await wait_turn_ended(h, c)
        assert prompts(h) == [["a"], ["c"]]  # b never took a slot


async def test_a_waiting_conversation_can_have_its_messages_edited_and_moved(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        h.prepare = turns_of(10.0)
        a, b, c = [await h.create() for _ in range(3)]
        await send(h, a, "a")
        await h.agents_wait_prompt(1)
        b1, _ = await send(h, b, "b1")
        b2, _ = await send(h, b, "b2")
        await send(h, c, "c")
        await trio.testing.wait_all_tasks_blocked()
        await h.e.edit(b, b1, "b1 edited")
        assert await h.e.move(b, b2, b1) == [b2, b1]
        await trio.testing.wait_all_tasks_blocked()
        # Still in line, in the same place: the queue changed, not the need for an agent.
        assert [await state(h, cid) for cid in (b, c)] == [("waiting", 1), ("waiting", 2)]
        await wait_turn_ended(h, b, 2)
        assert prompts(h)[:2] == [["a"], ["b2", "b1 edited"]]


async def test_a_waiting_conversation_can_be_deleted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        h.prepare = turns_of(10.0)
        a, b, c = [await h.create() for _ in range(3)]
        await send(h, a, "a")
        await h.agents_wait_prompt(1)
        await send(h, b, "b")
        await send(h, c, "c")
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        await h.e.delete(b)
        assert trio.current_time() == t0  # no wait for a slot
        assert await state(h, c) == ("waiting", 1)
        await wait_turn_ended(h, c)
        assert prompts(h) == [["a"], ["c"]]


async def test_a_conversation_deleted_while_its_agent_backs_off_gives_its_slot_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        a, b = await h.create(), await h.create()
        h.script(Exit())  # a's agent crashes in its first turn
        await send(h, a, "a1")
        await send(h, a, "a2")
        await wait_turn_ended(h, a)
        await trio.testing.wait_all_tasks_blocked()
        assert h.supervisor(a).slot.retry_at is not None  # backing off, holding the slot
        await send(h, b, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert await state(h, b) == ("waiting", 1)
        await h.e.delete(a)
        with trio.fail_after(10):
            await wait_turn_ended(h, b)
        assert h.e.slot_counts() == (1, 1, 0)  # b's: a's came back


async def test_a_reload_changes_the_number_of_slots(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1) as h:
        h.prepare = turns_of(10.0)
        ids = [await h.create() for _ in range(4)]
        for cid in ids:
            await send(h, cid, cid)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.slot_counts() == (1, 1, 3)
        h.e.reload(attrs.evolve(h.e.config, max_agents=3))
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.slot_counts() == (3, 3, 1)
        for cid in ids:
            await wait_turn_ended(h, cid)
        assert h.peak_alive == 3
        # Fewer slots: idle agents over the limit are stopped.
        h.e.reload(attrs.evolve(h.e.config, max_agents=1))
        await trio.sleep(1)
        assert h.e.slot_counts() == (1, 1, 0)
        assert h.alive == 1


# --- shutdown ---------------------------------------------------------------------------------


async def test_shutdown_does_not_wait_for_a_slot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, max_agents=1, shutdown_grace=10.0) as h:
        h.prepare = lambda agent: agent.script(Hang())
        a, b = await h.create(), await h.create()
        await send(h, a, "a")
        await h.agents_wait_prompt(1)
        await send(h, b, "b")
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
    assert trio.current_time() - t0 <= 10.0
    assert len(h.agents) == 1
    with Store.open(tmp_path / "acpd.sqlite3") as s:
        rec = s.get_conversation(b)
        assert rec is not None
        assert (rec.status, rec.queued) == ("idle", 1)  # kept for the next start


async def test_shutdown_with_many_agents_meets_the_grace(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 40 agents in turns that ignore the cancel (for longer than the grace), each ignoring
    # SIGTERM too: only the SIGKILL at the end of each one's stop_grace (2 s) ends them.
    grace = 10.0
    settings = {"shutdown_grace": grace, "stop_grace": 2.0, "drain_timeout": 30.0}
    async with harness(tmp_path, max_agents=40, **settings) as h:
        h.stop_delay = 60.0
        h.prepare = lambda agent: agent.script(Hang())
        ids = [await h.create() for _ in range(40)]
        for cid in ids:
            await send(h, cid, "hang")
        while sum(a.count("session/prompt") for a in h.agents) < 40:
            await trio.sleep(0.1)
        assert h.alive == 40
        t0 = trio.current_time()
    took = trio.current_time() - t0
    assert took <= grace, took
    assert h.alive == 0


def test_a_token_comes_back_once() -> None:
    table = SlotTable(1)
    first = table.join()
    second = table.join()
    assert (first.position, second.position) == (None, 1)
    token = first._granted
    assert token is not None
    token.stopping()
    token.stopping()
    token.release()
    token.release()  # idempotent: the second does not free another slot
    assert table.statistics().used == 1  # b's now
    third = table.join()
    assert third.position == 1
    second.leave()  # granted, never taken: it goes to c
    assert third._granted is not None
    assert table.statistics().used == 1


def test_the_table_kills_every_group_still_holding_a_token_at_the_deadline() -> None:
    """A stopping daemon's last word: one SIGKILL per agent group still there."""
    table = SlotTable(2)
    deaf = "trap '' TERM; sleep 300"
    procs = [subprocess.Popen(["sh", "-c", deaf], start_new_session=True) for _ in range(2)]
    try:
        for proc in procs:
            token = table.join()._granted
            assert token is not None
            token.pgid = proc.pid
        assert table.kill_all() == 2
        assert [proc.wait(timeout=10) for proc in procs] == [-9, -9]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def test_waiting_for_every_token_to_come_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table = SlotTable(2)
    tokens = [table.join()._granted for _ in "ab"]
    with trio.move_on_after(1) as waited:
        await table.wait_all_released()
    assert waited.cancelled_caught  # the tokens are their slots' to release
    async with trio.open_nursery() as nursery:
        nursery.start_soon(table.wait_all_released)
        for token in tokens:
            await trio.sleep(1)
            assert token is not None
            token.release()
    assert trio.current_time() == 3.0
    assert table.kill_all() == 0
