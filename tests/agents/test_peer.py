"""AgentPeer's reading and writing over in-memory streams: framing, batches, bad input, bounds.
Our requests: test_peer_calls.py; the agent's: test_peer_serving.py."""

from __future__ import annotations

import logging

import msgspec
import pytest
import trio
import trio.testing

from daemon.agents.peer import (
    READ_SIZE,
    WRITE_BOUND,
    AgentExited,
    AgentPeer,
    DroppedMessage,
)
from protocol import acp
from tests.agents.farend import (
    Far,
    Seen,
    chunk,
    new_session,
    open_peer,
    split_sends,
    start_call,
)
from tests.fakes.guard import hang_guard


@hang_guard()
async def test_malformed_lines_are_counted_and_survived(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer, far = await open_peer(nursery, seen)
    bad_known = chunk("s", "x")
    del bad_known["params"]["update"]["content"]
    unknown = chunk("s", "x")
    unknown["params"]["update"] = {"sessionUpdate": "brand_new", "x": 1}
    with caplog.at_level(logging.WARNING, logger="acpd.peer"):
        await far.send(
            b"not json\n",
            b"[1, 2]\n",
            b'{"jsonrpc": "2.0", "id": 3}\n',  # neither request nor response
            bad_known,
            {"jsonrpc": "2.0", "method": "session/update"},  # no params
            unknown,
            {"jsonrpc": "2.0", "method": "_vendor/thing", "params": {}},  # ignored
            chunk("s", "ok"),
        )
        await trio.testing.wait_all_tasks_blocked()
    assert peer.stats.malformed == 5
    assert peer.stats.lines == 8
    assert peer.stats.notifications == 5
    assert "malformed line" in caplog.text
    (_, u1), (_, u2) = seen.updates
    assert isinstance(u1, acp.UnknownUpdate)
    assert u1.session_update == "brand_new"
    assert u2 == acp.AgentMessageChunk(content=acp.TextContent(text="ok"))
    assert peer.running


@hang_guard()
async def test_oversized_line_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await open_peer(nursery, seen, max_line=200)
    await far.send(chunk("s", "x" * 500), chunk("s", "fits"))
    await far.send(b'{"jsonrpc": "2.0", ' + b" " * 300)  # unterminated and already too long
    await far.send(b"}\n", chunk("s", "after"))
    await trio.testing.wait_all_tasks_blocked()
    assert peer.stats.oversized == 2
    assert seen.texts() == ["fits", "after"]


@hang_guard()
async def test_notifications_and_batches(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    others: list[tuple[str, bytes]] = []
    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(ours, on_update=seen.on_update, on_batch_end=seen.on_batch_end,
                     on_notification=lambda m, raw: others.append((m, bytes(raw))))  # fmt: skip
    await nursery.start(peer.run)
    far = Far(theirs)
    await far.send(chunk("s", "a"), chunk("s", "b"), chunk("s", "c"))
    await trio.testing.wait_all_tasks_blocked()
    assert seen.events == ["update", "update", "update", "batch"]
    await far.send({"jsonrpc": "2.0", "method": "_x/y", "params": {"k": 1}})
    await trio.testing.wait_all_tasks_blocked()
    assert seen.events[-1] == "batch"
    assert others == [("_x/y", b'{"k":1}')]
    assert peer.stats.notifications == 4


@hang_guard()
async def test_lines_split_across_chunks(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await open_peer(nursery, seen)
    line = msgspec.json.encode(chunk("s", "héllo wörld")) + b"\n"
    both = line + msgspec.json.encode(chunk("s", "next")) + b"\n"
    # Split inside a multi-byte UTF-8 character, and the second line across the batch edge.
    cut = line.index("é".encode()) + 1
    await split_sends(far.stream, both, [cut, 10, len(line) - cut - 10 + 5, len(both)])
    assert seen.texts() == ["héllo wörld", "next"]
    # One batch per chunk that completed a line, none for the pieces that didn't.
    assert seen.events == ["update", "batch", "update", "batch"]
    assert peer.stats.lines == 2


@hang_guard()
async def test_cancelled_write_still_sends_whole_line(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    ours, theirs = trio.testing.lockstep_stream_pair()  # send_all waits for the reader
    peer = AgentPeer(ours, on_update=seen.on_update)
    await nursery.start(peer.run)
    far = Far(theirs)

    async def read_late() -> None:
        await trio.sleep(3)
        assert (await far.recv())["method"] == "session/new"

    nursery.start_soon(read_late)
    with trio.move_on_after(1) as scope:
        await new_session(peer)()
    assert scope.cancelled_caught
    assert trio.current_time() >= 3  # the cancel waited for the line to be written
    call = start_call(nursery, new_session(peer))  # and the peer is still usable
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "result": {"sessionId": "s"}})
    assert await call.wait() == acp.NewSessionResponse(session_id="s")


@hang_guard()
async def test_agent_not_reading_breaks_writes(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()
    peer = AgentPeer(ours, on_update=seen.on_update)
    await nursery.start(peer.run)
    start = trio.current_time()
    with pytest.raises(AgentExited, match="did not read"):
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))
    assert trio.current_time() - start == WRITE_BOUND
    with pytest.raises(AgentExited):
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))


@hang_guard()
async def test_callback_errors_are_logged_not_fatal(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    texts: list[str] = []

    def on_update(sid: str, update: acp.SessionUpdate) -> None:
        assert isinstance(update, acp.AgentMessageChunk)
        text = acp.content_text(update.content)
        if text == "bad":
            raise TypeError("engine bug")
        texts.append(text)

    def on_batch_end() -> None:
        raise RuntimeError("also a bug")

    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(ours, on_update=on_update, on_batch_end=on_batch_end)
    await nursery.start(peer.run)
    with caplog.at_level(logging.ERROR, logger="acpd.peer"):
        await Far(theirs).send(chunk("s", "a"), chunk("s", "bad"), chunk("s", "c"))
        await trio.testing.wait_all_tasks_blocked()
    assert texts == ["a", "c"]
    assert peer.stats.callback_errors == 2
    assert "on_update raised" in caplog.text
    assert "TypeError: engine bug" in caplog.text
    assert peer.running


@hang_guard()
async def test_the_read_loop_waits_for_space_once_per_batch(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    """While the consumer says it is full, nothing more is read: the agent's writes block."""
    room = trio.Event()
    waits = 0

    async def wait_for_space() -> None:
        nonlocal waits
        waits += 1
        await room.wait()

    ours, theirs = trio.testing.lockstep_stream_pair()
    peer = AgentPeer(ours, on_update=seen.on_update, wait_for_space=wait_for_space)
    await nursery.start(peer.run)
    far = Far(theirs)
    await far.send(chunk("s1", "one"))
    await trio.testing.wait_all_tasks_blocked()
    assert seen.texts() == ["one"]
    assert waits == 1
    blocked = start_call(nursery, lambda: far.send(chunk("s1", "two")))
    await trio.testing.wait_all_tasks_blocked()
    assert not blocked.done.is_set()  # nobody reads: the writer waits
    assert seen.texts() == ["one"]
    room.set()
    await blocked.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert seen.texts() == ["one", "two"]


class _Flood(trio.abc.ReceiveStream):
    """An agent that always has a full read's worth of whole update lines ready."""

    def __init__(self) -> None:
        line = msgspec.json.encode(chunk("s1", ""))
        pad = 512 - len(line) - 1  # a line of 512 bytes, newline included: whole lines a read
        self._data = (msgspec.json.encode(chunk("s1", "x" * pad)) + b"\n") * (READ_SIZE // 512)
        assert len(self._data) == READ_SIZE

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._data[:max_bytes]

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _Sink(trio.abc.SendStream):
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_flood_is_read_between_the_steps_of_other_tasks(nursery: trio.Nursery) -> None:
    """After a full read the loop lets other ready tasks run first (up to YIELDS_PER_BATCH
    of their steps): an ack's several steps are not each a batch of the flood apart."""
    batches = 0

    def on_updates(notes: list[acp.SessionNotification]) -> None:
        nonlocal batches
        batches += 1

    peer = AgentPeer(
        trio.StapledStream(_Sink(), _Flood()), on_update=lambda *_: None, on_updates=on_updates
    )
    nursery.start_soon(peer.run)
    while batches < 3:  # flowing
        await trio.lowlevel.checkpoint()
    start = batches
    for _ in range(20):  # a few requests' steps, say
        await trio.lowlevel.checkpoint()
    # Without the yields every step of this task would be a batch apart (19-21 in 300 runs);
    # with them, whether this task is seen as ready depends on trio's order within a step,
    # so some steps still see one (3-9 in 300 runs).
    assert batches - start <= 12
    nursery.cancel_scope.cancel()


@hang_guard()
async def test_oversized_requests_are_refused_and_notifications_reported(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    dropped: list[DroppedMessage] = []

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        raise AssertionError("an oversized request must never be served")

    _, far = await open_peer(nursery, seen, on_request, max_line=1000, on_dropped=dropped.append)
    ask = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "session/request_permission",
        "params": {"p": "q" * 3000},
    }
    await far.send(ask)
    refusal = await far.recv()
    assert refusal["id"] == 5
    assert refusal["error"]["code"] == -32600
    await far.send(chunk("s1", "z" * 3000), chunk("s1", "small"))
    await trio.testing.wait_all_tasks_blocked()
    assert [(d.kind, d.method) for d in dropped] == [
        ("request", "session/request_permission"),
        ("notification", "session/update"),
    ]
    assert seen.texts() == ["small"]


@hang_guard()
async def test_answer_malformed_replies_with_errors_and_serves_on(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    async def handler(method: str, raw: msgspec.Raw) -> object:
        return {"ok": method}

    peer, far = await open_peer(nursery, seen, handler, answer_malformed=True)
    await far.send(b"not json\n", b'{"jsonrpc": "2.0", "id": 3}\n', b"[1]\n")
    await far.send({"jsonrpc": "2.0", "id": 4, "method": "x"})
    answers = [await far.recv() for _ in range(4)]
    errors = [(a.get("id"), a["error"]["code"]) for a in answers if "error" in a]
    assert errors == [(None, -32700), (3, -32600), (None, -32600)]  # in the order of the lines
    assert {"jsonrpc": "2.0", "id": 4, "result": {"ok": "x"}} in answers
    assert peer.stats.malformed == 3


@hang_guard()
async def test_without_answer_malformed_bad_lines_get_no_reply(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    _peer, far = await open_peer(nursery, seen)
    await far.send(b"not json\n", {"jsonrpc": "2.0", "id": 4, "method": "x"})
    assert (await far.recv())["id"] == 4  # -32601, and nothing for the bad line before it


@hang_guard()
async def test_write_bound_is_configurable(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    ours, _theirs = trio.testing.lockstep_stream_pair()
    peer = AgentPeer(ours, on_update=seen.on_update, write_bound=30.0)
    await nursery.start(peer.run)
    start = trio.current_time()
    with pytest.raises(AgentExited, match="did not read"):
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))
    assert trio.current_time() - start == 30.0


@hang_guard()
async def test_runs_of_updates_go_to_on_updates_in_order_one_call_each(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[object] = []

    def on_updates(notes: list[acp.SessionNotification]) -> None:
        texts = [acp.content_text(n.update.content) for n in notes]  # type: ignore[union-attr,arg-type]
        if "bad" in texts:
            raise TypeError("engine bug")
        events.append(texts)

    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(
        ours,
        on_update=lambda sid, u: events.append(type(u).__name__),
        on_updates=on_updates,
        on_notification=lambda m, raw: events.append(m),
        on_batch_end=lambda: events.append("batch"),
    )
    await nursery.start(peer.run)
    far = Far(theirs)
    await far.send(*[chunk("s", str(i)) for i in range(5)])  # a flood's batch: one call
    await trio.testing.wait_all_tasks_blocked()
    assert events == [["0", "1", "2", "3", "4"], "batch"]
    events.clear()
    unknown = {"sessionUpdate": "new_thing"}
    await far.send(
        chunk("s", "a"),
        chunk("t", "b"),
        {"jsonrpc": "2.0", "method": "_x/y", "params": {}},
        chunk("s", "c"),
        {
            "jsonrpc": "2.0",
            "method": "session/update",
            "params": {"sessionId": "s", "update": unknown},
        },
        chunk("s", "d"),
        b"{bad\n",
        chunk("s", "e"),
    )
    await trio.testing.wait_all_tasks_blocked()
    assert events == [["a", "b"], "_x/y", ["c"], "UnknownUpdate", ["d"], ["e"], "batch"]
    assert peer.stats.notifications == 5 + 7  # the malformed line is not one
    with caplog.at_level(logging.ERROR, logger="acpd.peer"):
        await far.send(chunk("s", "bad"), chunk("s", "f"))
        await far.send(chunk("s", "g"))
        await trio.testing.wait_all_tasks_blocked()
    assert events[-2:] == [["g"], "batch"]  # the run with the bug is lost, not the peer
    assert peer.stats.callback_errors == 1
    assert "on_updates raised" in caplog.text
