"""Behaviours 1-3: lazy hydration, send never waits, the durable FIFO queue."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import store._conversations
import store._events
from protocol import events as ev
from protocol.jsonrpc import CONFLICT, NOT_FOUND, RpcFailure
from tests.engine.harness import harness, pair, pending, wait_turn_ended
from tests.fakes.agent import Chunk, Reply, Sleep


async def test_reads_do_not_hydrate(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path) as h:
        ids = [await h.create(title=f"t{i}") for i in range(5)]
        page, total, _ = await h.e.list(limit=50, before=None)
        assert total == 5
        assert [c.id for c in page] == ids[::-1]
        assert await h.e.count() == 5
        await h.e.get(ids[0])
        await h.e.events(ids[0], after_seq=0, limit=10)
        await h.e.queue(ids[0])
        assert h.e.live_count() == 0
        assert h.e.hydrations == 0
        assert h.launches == 0


async def test_racing_callers_share_one_supervisor(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        subs = []

        async def subscribe() -> None:
            subs.append(await h.e.subscribe(cid, after_seq=0, deltas=True))

        async with trio.open_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(subscribe)
        assert h.e.hydrations == 1
        assert h.e.live_count() == 1
        assert len(subs) == 100
        for sub in subs:
            sub.close()


async def test_send_is_acknowledged_while_a_turn_streams(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("a"), Sleep(30), Chunk("b"), Reply("end_turn"))
        seq1, queued1 = pair(await h.e.send(cid, "first", run=True, interrupt=False))
        assert queued1 == 0
        await h.agents_wait_prompt(1)
        t0 = trio.current_time()
        seq2, queued2 = pair(await h.e.send(cid, "second", run=True, interrupt=False))
        seq3, queued3 = pair(await h.e.send(cid, "third", run=True, interrupt=False))
        assert trio.current_time() == t0  # acknowledged without waiting for the turn
        assert (queued2, queued3) == (1, 2)
        assert seq1 < seq2 < seq3
        await wait_turn_ended(h, cid, 3)
        assert h.agent.prompts == ["first", "second", "third"]
        types = await h.types(cid)
        # One prompt outstanding at a time: each turn ends before the next starts.
        starts = [i for i, t in enumerate(types) if t == "turn_started"]
        ends = [i for i, t in enumerate(types) if t == "turn_ended"]
        assert all(e < s for e, s in zip(ends, starts[1:], strict=False))
        assert (await h.e.get(cid)).status == "idle"


async def test_a_queued_message_is_activity_without_another_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durable append leaves `updated_at` to the settler, which writes it right after the
    acknowledgement: a message queued behind a silent turn still moves its conversation to
    the top of the list."""
    wall = [1_800_000_000.0]  # the store's clock, stepped past its 1 s activity resolution
    for module in (store._events, store._conversations):
        monkeypatch.setattr(module, "now_or", lambda now: wall[0] if now is None else now)
    async with harness(tmp_path) as h:
        busy, other = await h.create(title="busy"), await h.create(title="other")
        h.script(Sleep(60), Reply())
        await h.e.send(busy, "one", run=True, interrupt=False)
        await h.agents_wait_prompt(1)  # the turn has started; the agent now writes nothing
        wall[0] += 5
        await h.e.send(other, "staged", run=False, interrupt=False)  # activity on `other`
        page, _, _ = await h.e.list(limit=50, before=None)
        assert [c.id for c in page] == [other, busy]
        wall[0] += 5
        t0 = trio.current_time()
        await h.e.send(busy, "two", run=True, interrupt=False)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == t0  # the turn is still on, silent
        page, _, _ = await h.e.list(limit=50, before=None)
        assert [(c.id, c.queued, c.updated_at) for c in page] == [
            (busy, 1, ev.rfc3339(wall[0])),
            (other, 1, ev.rfc3339(wall[0] - 5)),
        ]


async def test_sends_within_the_activity_resolution_cost_one_write_each(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settler writes a bump only when it would move `updated_at`: a conversation's
    sends within a second of its last written bump are one write each (their appends), and
    the next past it is two again."""
    wall = [1_800_000_000.0]
    for module in (store._events, store._conversations):
        monkeypatch.setattr(module, "now_or", lambda now: wall[0] if now is None else now)
    async with harness(tmp_path) as h:
        cid = await h.create(title="t")
        wall[0] += 5
        await h.e.send(cid, "first", run=False, interrupt=False)  # and its pause, its bump
        await trio.testing.wait_all_tasks_blocked()
        writes = h.e.io.statistics().writes
        for _ in range(5):
            wall[0] += 0.1
            await h.e.send(cid, "more", run=False, interrupt=False)
            await trio.testing.wait_all_tasks_blocked()
        assert h.e.io.statistics().writes - writes == 5
        wall[0] += 1
        await h.e.send(cid, "later", run=False, interrupt=False)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.io.statistics().writes - writes == 7  # the append, and the settler's bump
        (info,) = (await h.e.list(limit=50, before=None))[0]
        assert info.updated_at == ev.rfc3339(wall[0])


async def test_no_run_stages_until_resumed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        seq, _ = pair(await h.e.send(cid, "later", run=False, interrupt=False))
        await trio.testing.wait_all_tasks_blocked()
        assert h.launches == 0
        info = await h.e.get(cid)
        assert (info.status, info.queued) == ("paused", 1)
        assert pending(await h.e.queue(cid)) == [(seq, "later")]
        await h.e.resume(cid)
        await wait_turn_ended(h, cid)
        assert h.agent.prompts == ["later"]
        assert pending(await h.e.queue(cid)) == []


async def test_queue_is_visible_and_editable(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Sleep(10), Reply())
        first, _ = pair(await h.e.send(cid, "one", run=True, interrupt=False))
        await h.agents_wait_prompt(1)
        two, _ = pair(await h.e.send(cid, "two", run=True, interrupt=False))
        three, _ = pair(await h.e.send(cid, "three", run=True, interrupt=False))
        assert pending(await h.e.queue(cid)) == [(two, "two"), (three, "three")]
        await h.e.remove(cid, two)
        with pytest.raises(RpcFailure) as conflict:
            await h.e.remove(cid, first)
        assert conflict.value.code == CONFLICT
        with pytest.raises(RpcFailure) as missing:
            await h.e.remove(cid, 999)
        assert missing.value.code == NOT_FOUND
        await wait_turn_ended(h, cid, 2)
        assert h.agent.prompts == ["one", "three"]


async def test_unknown_conversation(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path) as h:
        for call in (
            h.e.get("nope"),
            h.e.send("nope", "x", run=True, interrupt=False),
            h.e.subscribe("nope", after_seq=0, deltas=True),
        ):
            with pytest.raises(RpcFailure) as err:
                await call
            assert err.value.code == NOT_FOUND
        assert h.e.live_count() == 0
