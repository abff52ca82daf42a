"""AgentPeer over in-memory streams: the far end is driven byte by byte by the test."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import msgspec
import pytest
import trio
import trio.testing

from daemon.agents.peer import (
    MAX_SERVING,
    WRITE_BOUND,
    AgentExited,
    AgentPeer,
    DroppedMessage,
)
from protocol import acp
from protocol.framing import LineSplitter
from protocol.jsonrpc import BUSY, InvalidResult, RpcFailure
from tests.fakes.guard import hang_guard


@attrs.define(eq=False)
class Far:
    """The agent's end, speaking raw JSON lines."""

    stream: trio.abc.Stream
    splitter: LineSplitter = attrs.field(factory=LineSplitter)
    lines: list[bytes] = attrs.field(factory=list)

    async def send(self, *msgs: dict[str, Any] | bytes) -> None:
        """Send all `msgs` in one chunk."""
        data = b"".join(m if isinstance(m, bytes) else msgspec.json.encode(m) + b"\n" for m in msgs)
        await self.stream.send_all(data)

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(5):
            while not self.lines:
                data = await self.stream.receive_some(65536)
                assert data, "peer closed the stream"
                self.lines.extend(self.splitter.feed(data))
        msg: dict[str, Any] = msgspec.json.decode(self.lines.pop(0))
        return msg


@attrs.define(eq=False)
class Seen:
    updates: list[tuple[str, acp.SessionUpdate]] = attrs.field(factory=list)
    events: list[str] = attrs.field(factory=list)  # "update" / "batch" in call order

    def on_update(self, sid: str, update: acp.SessionUpdate) -> None:
        self.updates.append((sid, update))
        self.events.append("update")

    def on_batch_end(self) -> None:
        self.events.append("batch")

    def texts(self) -> list[str]:
        return [
            acp.content_text(u.content)
            for _, u in self.updates
            if isinstance(u, acp.AgentMessageChunk)
        ]


Handler = Callable[[str, msgspec.Raw], Any]


@pytest.fixture
def seen() -> Seen:
    return Seen()


async def _open(
    nursery: trio.Nursery, seen: Seen, on_request: Handler | None = None, **kw: Any
) -> tuple[AgentPeer, Far]:
    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(
        ours, on_update=seen.on_update, on_request=on_request, on_batch_end=seen.on_batch_end, **kw
    )
    await nursery.start(peer.run)
    return peer, Far(theirs)


def _chunk(sid: str, text: str) -> dict[str, Any]:
    update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}
    return {
        "jsonrpc": "2.0",
        "method": "session/update",
        "params": {"sessionId": sid, "update": update},
    }


@attrs.define(eq=False)
class Call:
    """A request running in the background; `result` or `error` once it finished."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: object = None
    error: BaseException | None = None

    async def wait(self) -> object:
        with trio.fail_after(5):
            await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


def _call(nursery: trio.Nursery, fn: Callable[[], Any]) -> Call:
    call = Call()

    async def go() -> None:
        try:
            call.result = await fn()
        except Exception as exc:
            call.error = exc
        finally:
            call.done.set()

    nursery.start_soon(go)
    return call


def _new(peer: AgentPeer, cwd: str = "/w") -> Callable[[], Any]:
    params = acp.NewSessionRequest(cwd=cwd, mcp_servers=[])
    return lambda: peer.request("session/new", params, acp.NewSessionResponse)


@hang_guard()
async def test_request_response_and_ids(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await _open(nursery, seen)
    call = _call(nursery, _new(peer))
    req = await far.recv()
    assert req == {"jsonrpc": "2.0", "id": 0, "method": "session/new",
                   "params": {"cwd": "/w", "mcpServers": []}}  # fmt: skip
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"sessionId": "s1"}})
    assert await call.wait() == acp.NewSessionResponse(session_id="s1")
    call = _call(nursery, _new(peer))
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "auth"}})
    with pytest.raises(RpcFailure) as info:
        await call.wait()
    assert (info.value.code, info.value.message) == (-32000, "auth")
    call = _call(nursery, _new(peer))
    await far.recv()
    await far.send({"jsonrpc": "2.0", "id": 2, "result": {"nope": 1}})
    with pytest.raises(InvalidResult):
        await call.wait()


@hang_guard()
async def test_colliding_ids_are_kept_apart(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    asked: list[acp.RequestPermissionRequest] = []

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        assert method == "session/request_permission"
        asked.append(msgspec.json.decode(raw, type=acp.RequestPermissionRequest))
        return acp.RequestPermissionResponse(outcome=acp.SelectedOutcome(option_id="allow"))

    peer, far = await _open(nursery, seen, on_request)
    params = acp.PromptRequest(session_id="s", prompt=[acp.TextContent(text="hi")])
    call = _call(nursery, lambda: peer.request("session/prompt", params, acp.PromptResponse))
    assert (await far.recv())["id"] == 0
    # The agent's own first request also has id 0 (ACP.md §1).
    opts = [{"optionId": "allow", "name": "Allow", "kind": "allow_once"}]
    ask = {"sessionId": "s", "toolCall": {"toolCallId": "t"}, "options": opts}
    await far.send(
        {"jsonrpc": "2.0", "id": 0, "method": "session/request_permission", "params": ask}
    )
    reply = await far.recv()
    outcome = {"outcome": "selected", "optionId": "allow"}
    assert reply == {"jsonrpc": "2.0", "id": 0, "result": {"outcome": outcome}}
    assert not call.done.is_set()  # our request 0 is still waiting
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"stopReason": "end_turn"}})
    assert await call.wait() == acp.PromptResponse(stop_reason="end_turn")
    assert asked[0].session_id == "s"
    assert peer.stats.requests_in == 1
    assert peer.stats.unknown_responses == 0


@hang_guard()
async def test_unknown_and_missing_ids_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await _open(nursery, seen)
    call = _call(nursery, _new(peer))
    await far.recv()
    err = {"code": -32600, "message": "x"}
    await far.send(
        {"jsonrpc": "2.0", "id": 99, "result": {}},
        {"jsonrpc": "2.0", "error": err},  # no id at all (codex-acp, ACP.md §16)
        {"jsonrpc": "2.0", "id": None, "error": err},
        {"jsonrpc": "2.0", "id": "0", "result": {"sessionId": "wrong"}},  # a string is not 0
    )
    await trio.testing.wait_all_tasks_blocked()
    assert peer.stats.unknown_responses == 4
    assert not call.done.is_set()
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"sessionId": "s1"}})
    assert await call.wait() == acp.NewSessionResponse(session_id="s1")
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"sessionId": "again"}})  # a duplicate
    await trio.testing.wait_all_tasks_blocked()
    assert peer.stats.unknown_responses == 5


@hang_guard()
async def test_cancelled_request_drops_late_answer(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await _open(nursery, seen)
    with trio.move_on_after(1):
        await peer.request("session/new", acp.NewSessionRequest(cwd="/", mcp_servers=[]),
                           acp.NewSessionResponse)  # fmt: skip
    assert (await far.recv())["id"] == 0  # the whole line went out
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"sessionId": "late"}})
    call = _call(nursery, _new(peer))
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "result": {"sessionId": "s"}})
    assert await call.wait() == acp.NewSessionResponse(session_id="s")
    assert peer.stats.unknown_responses == 1


@hang_guard()
async def test_malformed_lines_are_counted_and_survived(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer, far = await _open(nursery, seen)
    bad_known = _chunk("s", "x")
    del bad_known["params"]["update"]["content"]
    unknown = _chunk("s", "x")
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
            _chunk("s", "ok"),
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
    peer, far = await _open(nursery, seen, max_line=200)
    await far.send(_chunk("s", "x" * 500), _chunk("s", "fits"))
    await far.send(b'{"jsonrpc": "2.0", ' + b" " * 300)  # unterminated and already too long
    await far.send(b"}\n", _chunk("s", "after"))
    await trio.testing.wait_all_tasks_blocked()
    assert peer.stats.oversized == 2
    assert seen.texts() == ["fits", "after"]


@hang_guard()
async def test_handler_results_and_errors(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def on_request(method: str, raw: msgspec.Raw) -> object:
        match method:
            case "ok":
                return acp.EmptyResult()
            case "rpc":
                raise RpcFailure(-32002, "not here", {"why": "gone"})
            case "bug":
                raise ValueError("boom")
            case "null":
                return None
            case "unencodable":
                return object()
        raise RpcFailure(-32601, f"method not found: {method}")

    peer, far = await _open(nursery, seen, on_request)
    with caplog.at_level(logging.ERROR, logger="acpd.peer"):
        for i, method in enumerate(["ok", "rpc", "bug", "null", "unencodable", "other"]):
            await far.send({"jsonrpc": "2.0", "id": i, "method": method})
        replies = {r["id"]: r for r in [await far.recv() for _ in range(6)]}
    assert replies[0]["result"] == {}
    assert replies[1]["error"] == {"code": -32002, "message": "not here", "data": {"why": "gone"}}
    assert replies[2]["error"]["code"] == -32603
    assert replies[3] == {"jsonrpc": "2.0", "id": 3, "result": None}
    assert replies[4]["error"]["code"] == -32603
    assert replies[5]["error"] == {"code": -32601, "message": "method not found: other"}
    assert "handler for bug failed" in caplog.text
    assert peer.stats.requests_in == 6


@hang_guard()
async def test_no_handler_means_method_not_found(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    _, far = await _open(nursery, seen)
    await far.send({"jsonrpc": "2.0", "id": "a", "method": "fs/read_text_file", "params": {}})
    assert (await far.recv())["error"]["code"] == -32601
    await far.send({"jsonrpc": "2.0", "id": None, "method": "x"})  # a null id is still a request
    error = {"code": -32601, "message": "method not found: x"}
    assert await far.recv() == {"jsonrpc": "2.0", "id": None, "error": error}


@hang_guard()
async def test_cancel_request_from_the_agent(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    started = trio.Event()
    cancelled: list[str] = []

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(method)
            raise

    _, far = await _open(nursery, seen, on_request)
    await far.send({"jsonrpc": "2.0", "id": 5, "method": "session/request_permission"})
    await started.wait()
    await far.send({"jsonrpc": "2.0", "method": "$/cancel_request", "params": {"requestId": 99}})
    await trio.testing.wait_all_tasks_blocked()
    assert not cancelled  # an unknown id is ignored
    await far.send({"jsonrpc": "2.0", "method": "$/cancel_request", "params": {"requestId": 5}})
    error = {"code": -32800, "message": "request cancelled"}
    assert await far.recv() == {"jsonrpc": "2.0", "id": 5, "error": error}
    assert cancelled == ["session/request_permission"]
    # A cancel in the same chunk as its request, before the handler task even started.
    await far.send(
        {"jsonrpc": "2.0", "id": 6, "method": "m"},
        {"jsonrpc": "2.0", "method": "$/cancel_request", "params": {"requestId": 6}},
    )
    assert (await far.recv())["error"]["code"] == -32800


@hang_guard()
async def test_eof_fails_pending_requests(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    handler_cancelled = trio.Event()

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        try:
            await trio.sleep_forever()
        finally:
            handler_cancelled.set()

    peer, far = await _open(nursery, seen, on_request)
    calls = [_call(nursery, _new(peer)) for _ in range(3)]
    for _ in calls:
        await far.recv()
    await far.send({"jsonrpc": "2.0", "id": 0, "method": "session/request_permission"})
    await trio.testing.wait_all_tasks_blocked()
    await far.send(b'{"jsonrpc": "2.0", "method": "session/update", "params": ')  # cut short
    await far.stream.aclose()
    for call in calls:
        with pytest.raises(AgentExited):
            await call.wait()
    with trio.fail_after(1):
        await peer.wait_finished()
        await handler_cancelled.wait()
    assert not peer.running
    assert peer.stats.malformed == 1  # the unterminated last line was tried, and failed
    with pytest.raises(AgentExited):
        await _new(peer)()
    with pytest.raises(AgentExited):
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))


@hang_guard()
async def test_aclose_ends_run_and_waiters(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await _open(nursery, seen)
    call = _call(nursery, _new(peer))
    await far.recv()
    await peer.aclose()
    with pytest.raises(AgentExited):
        await call.wait()
    with trio.fail_after(1):
        await peer.wait_finished()


@hang_guard()
async def test_write_to_closed_agent_raises(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(ours, on_update=seen.on_update)
    await nursery.start(peer.run)
    await theirs.receive_stream.aclose()
    with pytest.raises(AgentExited):
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))
    with pytest.raises(AgentExited):  # and it stays broken
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))


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
    await far.send(_chunk("s", "a"), _chunk("s", "b"), _chunk("s", "c"))
    await trio.testing.wait_all_tasks_blocked()
    assert seen.events == ["update", "update", "update", "batch"]
    await far.send({"jsonrpc": "2.0", "method": "_x/y", "params": {"k": 1}})
    await trio.testing.wait_all_tasks_blocked()
    assert seen.events[-1] == "batch"
    assert others == [("_x/y", b'{"k":1}')]
    assert peer.stats.notifications == 4


async def _split_sends(stream: trio.abc.SendStream, data: bytes, sizes: list[int]) -> None:
    for n in sizes:
        piece, data = data[:n], data[n:]
        await stream.send_all(piece)
        await trio.testing.wait_all_tasks_blocked()


@hang_guard()
async def test_lines_split_across_chunks(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await _open(nursery, seen)
    line = msgspec.json.encode(_chunk("s", "héllo wörld")) + b"\n"
    both = line + msgspec.json.encode(_chunk("s", "next")) + b"\n"
    # Split inside a multi-byte UTF-8 character, and the second line across the batch edge.
    cut = line.index("é".encode()) + 1
    await _split_sends(far.stream, both, [cut, 10, len(line) - cut - 10 + 5, len(both)])
    assert seen.texts() == ["héllo wörld", "next"]
    # One batch per chunk that completed a line, none for the pieces that didn't.
    assert seen.events == ["update", "batch", "update", "batch"]
    assert peer.stats.lines == 2


@hang_guard()
async def test_duplicate_incoming_id_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    gate = trio.Event()

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        await gate.wait()
        return {"method": method}

    peer, far = await _open(nursery, seen, on_request)
    await far.send({"jsonrpc": "2.0", "id": 1, "method": "first"},
                   {"jsonrpc": "2.0", "id": 1, "method": "second"})  # fmt: skip
    await trio.testing.wait_all_tasks_blocked()
    gate.set()
    assert (await far.recv())["result"] == {"method": "first"}
    assert peer.stats.malformed == 1


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
        await _new(peer)()
    assert scope.cancelled_caught
    assert trio.current_time() >= 3  # the cancel waited for the line to be written
    call = _call(nursery, _new(peer))  # and the peer is still usable
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
        await Far(theirs).send(_chunk("s", "a"), _chunk("s", "bad"), _chunk("s", "c"))
        await trio.testing.wait_all_tasks_blocked()
    assert texts == ["a", "c"]
    assert peer.stats.callback_errors == 2
    assert "on_update raised" in caplog.text
    assert "TypeError: engine bug" in caplog.text
    assert peer.running


@hang_guard()
async def test_an_answer_is_known_before_the_lines_after_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    """A reply and an update in one read: the reply's `on_answer` runs before the update is
    handed over, so a turn can tell a straggler from its own output."""
    peer, far = await _open(nursery, seen)
    params = acp.PromptRequest(session_id="s1", prompt=[acp.TextContent(text="hi")])
    call = _call(
        nursery,
        lambda: peer.request(
            "session/prompt",
            params,
            acp.PromptResponse,
            on_answer=lambda: seen.events.append("answer"),
        ),
    )
    await far.recv()
    await far.send(
        _chunk("s1", "before"),
        {"jsonrpc": "2.0", "id": 0, "result": {"stopReason": "end_turn"}},
        _chunk("s1", "after"),
    )
    assert await call.wait() == acp.PromptResponse(stop_reason="end_turn")
    assert seen.events == ["update", "answer", "update", "batch"]


@hang_guard()
async def test_requests_past_the_cap_are_answered_busy_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    release = trio.Event()

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        await release.wait()  # a person who takes their time
        return acp.EmptyResult()

    peer, far = await _open(nursery, seen, on_request)
    asks = [
        {"jsonrpc": "2.0", "id": i, "method": "x/ask", "params": {}} for i in range(MAX_SERVING + 2)
    ]
    await far.send(*asks)
    # The two over the cap are answered at once, while the others are still being served.
    refused = [await far.recv(), await far.recv()]
    assert [r["id"] for r in refused] == [MAX_SERVING, MAX_SERVING + 1]
    assert {r["error"]["code"] for r in refused} == {BUSY}
    assert "busy" in refused[0]["error"]["message"]
    assert peer.stats.requests_refused == 2
    release.set()
    answered = [await far.recv() for _ in range(MAX_SERVING)]
    assert sorted(a["id"] for a in answered) == list(range(MAX_SERVING))
    assert all(a["result"] == {} for a in answered)
    # Served again once there is room.
    await far.send({"jsonrpc": "2.0", "id": "again", "method": "x/ask", "params": {}})
    assert (await far.recv()) == {"jsonrpc": "2.0", "id": "again", "result": {}}


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
    await far.send(_chunk("s1", "one"))
    await trio.testing.wait_all_tasks_blocked()
    assert seen.texts() == ["one"]
    assert waits == 1
    blocked = _call(nursery, lambda: far.send(_chunk("s1", "two")))
    await trio.testing.wait_all_tasks_blocked()
    assert not blocked.done.is_set()  # nobody reads: the writer waits
    assert seen.texts() == ["one"]
    room.set()
    await blocked.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert seen.texts() == ["one", "two"]


@hang_guard()
async def test_an_oversized_answer_fails_its_request_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    dropped: list[DroppedMessage] = []
    peer, far = await _open(nursery, seen, max_line=1000, on_dropped=dropped.append)
    params = acp.PromptRequest(session_id="s1", prompt=[acp.TextContent(text="hi")])
    call = _call(nursery, lambda: peer.request("session/prompt", params, acp.PromptResponse))
    assert (await far.recv())["id"] == 0
    huge = {"jsonrpc": "2.0", "id": 0, "result": {"stopReason": "end_turn", "x": "y" * 5000}}
    await far.send(huge, _chunk("s1", "after"))
    with pytest.raises(RpcFailure) as info:
        await call.wait()  # not a hang: the answer came, and was too big to read
    assert "over the 1000-byte limit" in info.value.message
    (note,) = dropped
    assert (note.kind, note.failed_request, note.limit) == ("response", "session/prompt", 1000)
    assert note.size > 5000
    assert seen.texts() == ["after"]  # the stream goes on
    assert peer.stats.oversized == 1


@hang_guard()
async def test_oversized_requests_are_refused_and_notifications_reported(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    dropped: list[DroppedMessage] = []

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        raise AssertionError("an oversized request must never be served")

    _, far = await _open(nursery, seen, on_request, max_line=1000, on_dropped=dropped.append)
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
    await far.send(_chunk("s1", "z" * 3000), _chunk("s1", "small"))
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

    peer, far = await _open(nursery, seen, handler, answer_malformed=True)
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
    _peer, far = await _open(nursery, seen)
    await far.send(b"not json\n", {"jsonrpc": "2.0", "id": 4, "method": "x"})
    assert (await far.recv())["id"] == 4  # -32601, and nothing for the bad line before it


@hang_guard()
async def test_withdrawn_request_is_named_in_cancel_request(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await _open(nursery, seen)
    params = acp.NewSessionRequest(cwd="/", mcp_servers=[])
    with trio.move_on_after(1):
        await peer.request("session/new", params, acp.NewSessionResponse, withdraw=True)
    assert (await far.recv())["id"] == 0
    assert await far.recv() == {
        "jsonrpc": "2.0",
        "method": "$/cancel_request",
        "params": {"requestId": 0},
    }
    # Answered (or failed) requests are not withdrawn.
    call = _call(nursery, lambda: peer.request("session/new", params, dict, withdraw=True))
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "error": {"code": -32800, "message": "no"}})
    with pytest.raises(RpcFailure):
        await call.wait()
    await far.send({"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert (await far.recv())["id"] == 9  # the next line: no cancel_request for id 1


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
async def test_eof_grace_lets_requests_in_progress_be_answered(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    quick, never = trio.Event(), trio.Event()
    eof_seen: list[float] = []

    async def handler(method: str, raw: msgspec.Raw) -> object:
        await (quick if method == "quick" else never).wait()
        return {"done": method}

    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(ours, on_update=seen.on_update, on_request=handler, eof_grace=5.0,
                     on_eof=lambda: eof_seen.append(trio.current_time()))  # fmt: skip
    await nursery.start(peer.run)
    far = Far(theirs)
    await far.send({"jsonrpc": "2.0", "id": 1, "method": "quick"},
                   {"jsonrpc": "2.0", "id": 2, "method": "slow"}, b"garbage\n")  # fmt: skip
    await trio.testing.wait_all_tasks_blocked()
    await theirs.send_stream.aclose()  # our input ends; the far end still reads
    await trio.testing.wait_all_tasks_blocked()
    assert eof_seen == [trio.current_time()]
    assert peer.running
    quick.set()
    assert await far.recv() == {"jsonrpc": "2.0", "id": 1, "result": {"done": "quick"}}
    await peer.wait_finished()
    assert trio.current_time() == eof_seen[0] + 5.0  # the slow one: cut at the grace
