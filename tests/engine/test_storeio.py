"""The store writer's two lanes and its group commit of user messages (issue 18).

The turnstile is tested with the worker-thread call replaced by an awaitable (`_run`), so
each store call can be held open and released on cue; the last test runs the real threaded
store.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.engine.eventlog import EventLog
from daemon.engine.fanout import Fanout
from daemon.engine.storeio import CONTROL_PAUSE, StoreIO, WriteTicket
from store import EventRecord, NotFound, Store, StoreError
from tests.engine.harness import harness

GUARD = 5  # virtual seconds: a writer that is never handed on fails at once, not hangs


class _FakeStore:
    """What the writer's calls see: user-message batches are recorded, and each one waits
    for `gate` when set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: trio.Event | None = None
        self.calls: list[str] = []  # event appends and user-message batches, as run
        self.held: list[trio.Event] = []  # the next calls wait for these, one each
        self.activity_pending = False
        self._seq = 0

    def append_events(
        self, conv_id: str, items: list[tuple[str, bytes]], *, clear_drafts: bool = False
    ) -> list[EventRecord]:
        self.calls.append(f"{conv_id} output")
        self._seq += len(items)
        return [EventRecord(seq=self._seq, type=t, ts=0.0, body=b) for t, b in items]

    def newest_user_message_seq(self, conv_id: str) -> int:
        return 0

    async def append_user_messages(
        self, items: list[tuple[str, Callable[[], bytes], bool]]
    ) -> list[tuple[EventRecord, int] | StoreError]:
        self.batches.append([conv for conv, _, _ in items])
        self.calls.extend(f"{conv} message" for conv, _, _ in items)
        if self.gate is not None:
            await self.gate.wait()
        out: list[tuple[EventRecord, int] | StoreError] = []
        for i, (conv, make_body, _first) in enumerate(items, 1):
            body = make_body()
            if conv == "gone":
                out.append(NotFound(f"no conversation {conv}"))
            else:
                out.append((EventRecord(seq=i, type="user_message", ts=0.0, body=body), 1))
        return out


@pytest.fixture
def io(monkeypatch: pytest.MonkeyPatch) -> tuple[StoreIO, _FakeStore]:
    async def run(self: StoreIO, fn: Callable[[Any], Any], store: Any, limit: Any) -> Any:
        if store.held:
            await store.held.pop(0).wait()
        await trio.lowlevel.checkpoint()  # a worker thread's round trip is never instant
        result = fn(store)
        return (await result) if inspect.isawaitable(result) else result

    monkeypatch.setattr(StoreIO, "_run", run)
    fake = _FakeStore()
    return StoreIO(fake, fake, fake), fake  # type: ignore[arg-type]


def _op(order: list[str], name: str, gate: trio.Event | None = None) -> Callable[[Any], Any]:
    async def op() -> str:
        if gate is not None:
            await gate.wait()
        order.append(name)
        return name

    return lambda _store: op()


async def test_control_writes_go_before_waiting_bulk_writes(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, _ = io
    order: list[str] = []
    gate = trio.Event()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            calls = [
                ("bulk 1", store_io.write_bulk, gate),  # holds the writer
                ("bulk 2", store_io.write_bulk, None),
                ("control 1", store_io.write, None),
                ("bulk 3", store_io.write_bulk, None),
                ("control 2", store_io.write, None),
            ]
            for name, lane, g in calls:
                nursery.start_soon(lane, _op(order, name, g))
                await trio.testing.wait_all_tasks_blocked()  # in line, in this order
            gate.set()
    assert order == ["bulk 1", "control 1", "control 2", "bulk 2", "bulk 3"]


async def test_user_messages_waiting_together_are_committed_together(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, fake = io
    order: list[str] = []
    gate = trio.Event()
    answers: dict[str, int] = {}

    async def ack(conv: str) -> None:
        rec, _ = await store_io.append_user(conv, lambda _s: b'{"text":"x"}')
        answers[conv] = rec.seq

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk", gate))
            await trio.testing.wait_all_tasks_blocked()
            for conv in ("a", "b"):
                nursery.start_soon(ack, conv)
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store_io.write, _op(order, "control"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ack, "c")
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    # The first message's call commits the others waiting, past the control write between.
    assert fake.batches == [["a", "b", "c"]]
    assert answers == {"a": 1, "b": 2, "c": 3}
    assert order == ["bulk", "control"]
    stats = store_io.statistics()
    assert (stats.group_commits, stats.grouped_messages) == (1, 3)


async def test_one_message_of_a_group_fails_alone(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, fake = io
    gate = trio.Event()
    outcomes: dict[str, str] = {}

    async def ack(conv: str) -> None:
        try:
            await store_io.append_user(conv, lambda _s: b"{}")
        except NotFound:
            outcomes[conv] = "not found"
        else:
            outcomes[conv] = "queued"

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op([], "bulk", gate))
            await trio.testing.wait_all_tasks_blocked()
            for conv in ("a", "gone", "b"):
                nursery.start_soon(ack, conv)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert fake.batches == [["a", "gone", "b"]]
    assert outcomes == {"a": "queued", "gone": "not found", "b": "queued"}


async def test_a_cancelled_call_leaves_the_line(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, _ = io
    order: list[str] = []
    gate = trio.Event()
    cancelled = trio.CancelScope()

    async def cancellable() -> None:
        with cancelled:
            await store_io.write(_op(order, "cancelled"))

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk", gate))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(cancellable)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store_io.write, _op(order, "after"))
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert order == ["bulk", "after"]
    assert cancelled.cancelled_caught


async def test_a_call_handed_the_writer_as_it_is_cancelled_passes_it_on(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, _ = io
    order: list[str] = []
    gate = trio.Event()
    cancelled = trio.CancelScope()

    async def cancellable() -> None:
        with cancelled:
            await store_io.write(_op(order, "cancelled"))

    async def bulk() -> None:
        await gate.wait()
        # Cancelled now, and handed the writer by this call's end before it runs again.
        cancelled.cancel()
        order.append("bulk")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, lambda _store: bulk())
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(cancellable)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store_io.write, _op(order, "after"))
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert order == ["bulk", "after"]
    assert cancelled.cancelled_caught


async def test_a_message_in_a_running_group_commit_is_answered_even_if_cancelled(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    """Like a write already in its thread: committed, so its caller gets the record (and
    can publish it), and the cancellation lands at its next checkpoint."""
    store_io, fake = io
    gate = trio.Event()
    got: list[int] = []
    follower = trio.CancelScope()

    async def ack(conv: str, scope: trio.CancelScope | None = None) -> None:
        with scope or trio.CancelScope():
            rec, _ = await store_io.append_user(conv, lambda _s: b"{}")
            got.append(rec.seq)
            await trio.lowlevel.checkpoint()
            got.append(-rec.seq)  # not reached when cancelled

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op([], "bulk", gate))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ack, "a")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ack, "b", follower)
            await trio.testing.wait_all_tasks_blocked()
            fake.gate = trio.Event()
            gate.set()  # a's call takes b's message into its commit, which now waits
            await trio.testing.wait_all_tasks_blocked()
            assert fake.batches == [["a", "b"]]
            follower.cancel()
            await trio.testing.wait_all_tasks_blocked()
            fake.gate.set()
    assert sorted(got) == [-1, 1, 2]  # b was answered, then cancelled at its checkpoint
    assert follower.cancelled_caught


async def test_concurrent_sends_are_group_committed_through_the_engine(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        ids = [await h.create() for _ in range(6)]
        acks: dict[str, list[tuple[int, int]]] = {cid: [] for cid in ids}

        async def send(cid: str, text: str) -> None:
            sent = await h.e.send(cid, text, run=False, interrupt=False)
            acks[cid].append((sent.seq, sent.queued))

        async with trio.open_nursery() as nursery:
            for cid in ids:
                for i in range(2):
                    nursery.start_soon(send, cid, f"{cid} {i}")
        stats = h.e.io.statistics()
        assert stats.group_commits >= 1
        assert stats.grouped_messages >= 2
        for cid in ids:
            # Each message stored once, in the order of its seq, and counted exactly.
            queue = await h.e.queue(cid)
            assert sorted(m.text for m in queue) == [f"{cid} {i}" for i in range(2)]
            assert sorted(acks[cid]) == [(m.seq, i) for i, m in enumerate(queue)]
            assert [m.number for m in queue] == [1, 2]  # numbered in order, none twice


async def test_a_message_hurries_its_conversations_own_output_ahead(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    """Priority inheritance: x's message must wait for x's output already in line (the same
    log lock), so that output moves up to the control lane; the others' output waits, even
    as the writer comes free before x's message is in line (it is kept for the message)."""
    store_io, fake = io
    gate = trio.Event()
    fake.held.append(gate)
    logs = {c: EventLog(c, store_io, Fanout(c, 8), 0) for c in "yzwx"}
    item = [("agent_message", b'{"text":"t"}')]
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            for conv in "yzwx":  # y's holds the writer; z's, w's, then x's output wait
                nursery.start_soon(logs[conv].append, item)
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(logs["x"].append_user, "hi")
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert fake.calls == ["y output", "x output", "x message", "z output", "w output"]
    assert store_io.statistics().hurried == 1
    assert logs["x"].last_seq > 0


def test_append_user_messages_in_one_transaction(tmp_path: Path) -> None:
    with Store.open(tmp_path / "acpd.sqlite3") as s:
        a = s.create_conversation(title="", agent="demo", agent_cmd=["x"], cwd="/")
        b = s.create_conversation(title="", agent="demo", agent_cmd=["x"], cwd="/")

        def body() -> bytes:
            return b'{"text":"hi"}'

        items = [(a.id, body, False), ("nope", body, False), (b.id, body, False)]
        out = s.append_user_messages([*items, (a.id, body, True)])
        assert isinstance(out[1], NotFound)
        assert [(r[0].seq, r[1]) for r in (out[0], out[2], out[3]) if isinstance(r, tuple)] == [
            (1, 1),
            (1, 1),
            (2, 2),
        ]
        assert [r.seq for r in s.pending_messages(a.id)] == [2, 1]  # a steer goes first
        assert [r.seq for r in s.pending_messages(b.id)] == [1]
        with pytest.raises(NotFound):
            s.append_user_messages([("nope", body, False)])


async def test_bulk_producers_hold_off_while_a_control_write_is_on_its_way(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, fake = io
    t0 = trio.current_time()
    await store_io.wait_control_quiet()  # nothing on its way: at once
    assert trio.current_time() == t0
    gate = trio.Event()
    fake.held.append(gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store_io.write, _op([], "control"))
        await trio.testing.wait_all_tasks_blocked()
        # Bounded: a producer is slowed down by a stream of control writes, never stopped.
        await store_io.wait_control_quiet()
        assert trio.current_time() == t0 + CONTROL_PAUSE
        nursery.start_soon(store_io.wait_control_quiet)
        await trio.sleep(CONTROL_PAUSE / 4)
        gate.set()  # the write goes through: the producer goes on at once
    assert trio.current_time() == t0 + CONTROL_PAUSE * 1.25
    # A caller that must first wait for a log's lock says so from the start.
    store_io.control_begins()
    with trio.move_on_after(1):
        await store_io.wait_control_quiet()
    assert trio.current_time() == t0 + CONTROL_PAUSE * 2.25
    store_io.control_ends()
    await store_io.wait_control_quiet()
    assert trio.current_time() == t0 + CONTROL_PAUSE * 2.25


async def test_a_waiting_bulk_write_leaves_the_writer_to_a_control_write_on_its_way(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    """A send announces itself before it waits for its log's lock: a bulk write waiting then
    does not take the writer as it comes free (the send would wait for that write too), but
    only once the send is through, or after CONTROL_PAUSE at most."""
    store_io, _ = io
    order: list[str] = []
    gate = trio.Event()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk 1", gate))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk 2"))
            await trio.testing.wait_all_tasks_blocked()
            store_io.control_begins()  # on its way: waiting for a lock, say
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["bulk 1"]  # the writer is free, kept for the send
            t0 = trio.current_time()
            await store_io.write(_op(order, "control"))
            assert trio.current_time() == t0  # at once
            store_io.control_ends()
        assert order == ["bulk 1", "control", "bulk 2"]

        # Bounded: an announced write that never comes holds a bulk write up CONTROL_PAUSE.
        gate = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk 3", gate))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk 4"))
            await trio.testing.wait_all_tasks_blocked()
            store_io.control_begins()
            t0 = trio.current_time()
            gate.set()
            await store_io.write_bulk(_op(order, "bulk 5"))  # in line behind bulk 4
            assert trio.current_time() == t0 + CONTROL_PAUSE
            store_io.control_ends()
        assert order[-3:] == ["bulk 3", "bulk 4", "bulk 5"]


async def test_a_bulk_write_hurried_while_the_writer_is_kept_free_runs_at_once(
    io: tuple[StoreIO, _FakeStore], autojump_clock: trio.testing.MockClock
) -> None:
    store_io, _ = io
    order: list[str] = []
    gate = trio.Event()
    ticket = WriteTicket()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store_io.write_bulk, _op(order, "bulk 1", gate))
            await trio.testing.wait_all_tasks_blocked()
            write = functools.partial(store_io.write_bulk, _op(order, "own output"), ticket=ticket)
            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            store_io.control_begins()
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            t0 = trio.current_time()
            store_io.hurry(ticket)  # the send needs it through first (its log's lock)
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["bulk 1", "own output"]
            assert trio.current_time() == t0
            store_io.control_ends()


async def test_while_a_person_waits_the_agents_bulk_work_holds_off(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`Engine.person_waiting` (a send being answered, from the moment it is read): the
    agents' readers and recorders hold off between steps, bounded, as for a control write."""
    async with harness(tmp_path) as h:
        t0 = trio.current_time()
        with h.e.person_waiting():
            await h.e.io.wait_control_quiet()
            assert trio.current_time() == t0 + CONTROL_PAUSE
        t1 = trio.current_time()
        await h.e.io.wait_control_quiet()
        assert trio.current_time() == t1
