"""AgentPeer's requests to the agent: ids, answers, cancellation, and the end of the stream."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.testing

from daemon.agents.peer import (
    AgentExited,
    AgentPeer,
    DroppedMessage,
)
from protocol import acp
from protocol.jsonrpc import InvalidResult, RpcFailure
from tests.agents.farend import (
    Seen,
    chunk,
    new_session,
    open_peer,
    start_call,
)
from tests.fakes.guard import hang_guard


@hang_guard()
async def test_request_response_and_ids(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await open_peer(nursery, seen)
    call = start_call(nursery, new_session(peer))
    req = await far.recv()
    assert req == {"jsonrpc": "2.0", "id": 0, "method": "session/new",
                   "params": {"cwd": "/w", "mcpServers": []}}  # fmt: skip
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"sessionId": "s1"}})
    assert await call.wait() == acp.NewSessionResponse(session_id="s1")
    call = start_call(nursery, new_session(peer))
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "auth"}})
    with pytest.raises(RpcFailure) as info:
        await call.wait()
    assert (info.value.code, info.value.message) == (-32000, "auth")
    call = start_call(nursery, new_session(peer))
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

    peer, far = await open_peer(nursery, seen, on_request)
    params = acp.PromptRequest(session_id="s", prompt=[acp.TextContent(text="hi")])
    call = start_call(nursery, lambda: peer.request("session/prompt", params, acp.PromptResponse))
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
    peer, far = await open_peer(nursery, seen)
    call = start_call(nursery, new_session(peer))
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
    peer, far = await open_peer(nursery, seen)
    with trio.move_on_after(1):
        await peer.request("session/new", acp.NewSessionRequest(cwd="/", mcp_servers=[]),
                           acp.NewSessionResponse)  # fmt: skip
    assert (await far.recv())["id"] == 0  # the whole line went out
    await far.send({"jsonrpc": "2.0", "id": 0, "result": {"sessionId": "late"}})
    call = start_call(nursery, new_session(peer))
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "result": {"sessionId": "s"}})
    assert await call.wait() == acp.NewSessionResponse(session_id="s")
    assert peer.stats.unknown_responses == 1


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

    peer, far = await open_peer(nursery, seen, on_request)
    calls = [start_call(nursery, new_session(peer)) for _ in range(3)]
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
        await new_session(peer)()
    with pytest.raises(AgentExited):
        await peer.notify("session/cancel", acp.CancelNotification(session_id="s"))


@hang_guard()
async def test_aclose_ends_run_and_waiters(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await open_peer(nursery, seen)
    call = start_call(nursery, new_session(peer))
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
async def test_an_answer_is_known_before_the_lines_after_it(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    """A reply and an update in one read: the reply's `on_answer` runs before the update is
    handed over, so a turn can tell a straggler from its own output."""
    peer, far = await open_peer(nursery, seen)
    params = acp.PromptRequest(session_id="s1", prompt=[acp.TextContent(text="hi")])
    call = start_call(
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
        chunk("s1", "before"),
        {"jsonrpc": "2.0", "id": 0, "result": {"stopReason": "end_turn"}},
        chunk("s1", "after"),
    )
    assert await call.wait() == acp.PromptResponse(stop_reason="end_turn")
    assert seen.events == ["update", "answer", "update", "batch"]


@hang_guard()
async def test_an_oversized_answer_fails_its_request_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    dropped: list[DroppedMessage] = []
    peer, far = await open_peer(nursery, seen, max_line=1000, on_dropped=dropped.append)
    params = acp.PromptRequest(session_id="s1", prompt=[acp.TextContent(text="hi")])
    call = start_call(nursery, lambda: peer.request("session/prompt", params, acp.PromptResponse))
    assert (await far.recv())["id"] == 0
    huge = {"jsonrpc": "2.0", "id": 0, "result": {"stopReason": "end_turn", "x": "y" * 5000}}
    await far.send(huge, chunk("s1", "after"))
    with pytest.raises(RpcFailure) as info:
        await call.wait()  # not a hang: the answer came, and was too big to read
    assert "over the 1000-byte limit" in info.value.message
    (note,) = dropped
    assert (note.kind, note.failed_request, note.limit) == ("response", "session/prompt", 1000)
    assert note.size > 5000
    assert seen.texts() == ["after"]  # the stream goes on
    assert peer.stats.oversized == 1


@hang_guard()
async def test_withdrawn_request_is_named_in_cancel_request(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    peer, far = await open_peer(nursery, seen)
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
    call = start_call(nursery, lambda: peer.request("session/new", params, dict, withdraw=True))
    assert (await far.recv())["id"] == 1
    await far.send({"jsonrpc": "2.0", "id": 1, "error": {"code": -32800, "message": "no"}})
    with pytest.raises(RpcFailure):
        await call.wait()
    await far.send({"jsonrpc": "2.0", "id": 9, "method": "ping"})
    assert (await far.recv())["id"] == 9  # the next line: no cancel_request for id 1
