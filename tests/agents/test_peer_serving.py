"""AgentPeer serving the agent's requests: handlers, errors, `$/cancel_request`, the cap, and
the grace at the end of the stream."""

from __future__ import annotations

import logging

import msgspec
import pytest
import trio
import trio.testing

from daemon.agents.peer import (
    MAX_SERVING,
    AgentPeer,
)
from protocol import acp
from protocol.jsonrpc import BUSY, RpcFailure
from tests.agents.farend import (
    Far,
    Seen,
    open_peer,
)
from tests.fakes.guard import hang_guard


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

    peer, far = await open_peer(nursery, seen, on_request)
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
    _, far = await open_peer(nursery, seen)
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

    _, far = await open_peer(nursery, seen, on_request)
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
async def test_duplicate_incoming_id_dropped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    gate = trio.Event()

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        await gate.wait()
        return {"method": method}

    peer, far = await open_peer(nursery, seen, on_request)
    await far.send({"jsonrpc": "2.0", "id": 1, "method": "first"},
                   {"jsonrpc": "2.0", "id": 1, "method": "second"})  # fmt: skip
    await trio.testing.wait_all_tasks_blocked()
    gate.set()
    assert (await far.recv())["result"] == {"method": "first"}
    assert peer.stats.malformed == 1


@hang_guard()
async def test_requests_past_the_cap_are_answered_busy_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, seen: Seen
) -> None:
    release = trio.Event()

    async def on_request(method: str, raw: msgspec.Raw) -> object:
        await release.wait()  # a person who takes their time
        return acp.EmptyResult()

    peer, far = await open_peer(nursery, seen, on_request)
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
