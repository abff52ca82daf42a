"""The dispatcher over an in-memory transport: concurrency, subscriptions, slow and gone clients."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio.testing

from daemon.server.dispatch import MAX_IN_FLIGHT, MAX_SUBSCRIPTIONS
from protocol.jsonrpc import CONFLICT
from tests.fakes.engine import FakeEngine
from tests.server._dispatch_client import CONV, make_dispatcher, open_client


async def test_requests_run_concurrently_and_answer_out_of_order(engine: FakeEngine) -> None:
    engine.gates["get"] = gate = trio.Event()
    async with open_client(make_dispatcher(engine)) as client:
        slow = await client.request("conversations/get", {"id": "abc"})
        fast = await client.request("conversations/count")
        first = await client.read()
        assert first["id"] == fast
        gate.set()
        assert (await client.read())["id"] == slow


async def test_in_flight_cap_stops_reading(engine: FakeEngine, autojump_clock: Any) -> None:
    engine.gates["get"] = gate = trio.Event()
    async with open_client(make_dispatcher(engine, max_in_flight=4)) as client:
        for _ in range(4):
            await client.request("conversations/get", {"id": "abc"})
        with trio.move_on_after(100) as blocked:
            await client.request("conversations/count")  # a fifth: handle() waits for a slot
        assert blocked.cancelled_caught
        assert len(engine.calls) == 4
        gate.set()
        await client.request("conversations/count", id="after")
        assert (await client.response("after"))["result"] == {"count": 2}
        for i in range(1, 5):
            assert "result" in await client.response(i)
    assert MAX_IN_FLIGHT == 64


async def test_subscription_streams_while_calls_continue(engine: FakeEngine) -> None:
    async with open_client(make_dispatcher(engine)) as client:
        sub = await client.request("conversations/subscribe", {"id": "abc"})
        # The reply first, then the replay, in order.
        assert await client.read() == {"jsonrpc": "2.0", "id": sub, "result": {"through_seq": 2}}
        for seq in (1, 2):
            note = await client.read()
            assert note["method"] == "conversation/event"
            assert note["params"]["event"]["seq"] == seq
        assert (await client.call("conversations/get", {"id": "abc"}))["conversation"]
        engine.publish(CONV)
        engine.publish("abd456")  # another conversation: not ours
        engine.publish(CONV)
        seqs = [(await client.read())["params"]["event"]["seq"] for _ in range(2)]
        assert seqs == [3, 4]
        assert (await client.call("conversations/unsubscribe", {"id": "ab"})) == {}
        assert engine.subs[0].closed
        engine.publish(CONV)
        assert (await client.call("conversations/count")) == {"count": 2}
        assert client.notes == []


async def test_subscriptions_end_with_the_connection(engine: FakeEngine) -> None:
    dispatcher = make_dispatcher(engine)
    async with open_client(dispatcher) as client:
        for conv in ("abc123", "abd456", "abc123"):
            await client.call("conversations/subscribe", {"id": conv, "after_seq": 2})
        assert client.conn.subscription_count == 3
    assert [sub.closed for sub in engine.subs] == [True] * 3
    assert dispatcher.statistics().connections == 0


async def test_subscription_limit(engine: FakeEngine) -> None:
    async with open_client(make_dispatcher(engine)) as client:
        for _ in range(MAX_SUBSCRIPTIONS):
            await client.request("conversations/subscribe", {"id": "abd"})
        for i in range(1, MAX_SUBSCRIPTIONS + 1):
            await client.response(i)
        err = await client.error("conversations/subscribe", {"id": "abd"})
        assert err["code"] == CONFLICT


async def test_slow_reader_is_dropped_with_lagged_and_others_go_on(
    engine: FakeEngine, autojump_clock: Any
) -> None:
    dispatcher = make_dispatcher(engine)
    release = trio.Event()
    slow_out, slow_inbox = trio.open_memory_channel[bytes](math.inf)

    async def slow_send(line: bytes) -> None:
        await release.wait()
        await slow_out.send(line)

    async with open_client(dispatcher, slow_send) as slow, open_client(dispatcher) as fast:
        slow.inbox = slow_inbox
        await slow.request("conversations/subscribe", {"id": "abc", "after_seq": 2})
        await fast.call("conversations/subscribe", {"id": "abc", "after_seq": 2})
        await trio.testing.wait_all_tasks_blocked()
        for batch in range(25):  # far more than the slow path buffers
            for _ in range(8):
                engine.publish(CONV)  # never blocks, whoever is slow
            await trio.testing.wait_all_tasks_blocked()
            seen = [(await fast.read())["params"]["event"]["seq"] for _ in range(8)]
            assert seen == [3 + 8 * batch + i for i in range(8)]
        assert [sub.lagged for sub in engine.subs] == [True, False]
        release.set()
        assert (await slow.read())["result"] == {"through_seq": 2}
        lines = [await slow.read() for _ in range(4)]
        while lines[-1].get("method") != "conversation/lagged":
            lines.append(await slow.read())
        lagged = lines[-1]["params"]
        assert lagged["id"] == CONV
        assert lines[-2]["params"]["event"]["seq"] == lagged["last_seq"]
        # The slow connection still answers calls after its subscription was dropped.
        assert (await slow.call("conversations/count")) == {"count": 2}


async def test_client_gone_ends_only_that_connection(engine: FakeEngine) -> None:
    dispatcher = make_dispatcher(engine)

    async def broken(line: bytes) -> None:
        raise trio.BrokenResourceError

    async with open_client(dispatcher) as good:
        async with open_client(dispatcher, broken) as bad:
            await bad.request("conversations/subscribe", {"id": "abc"})
            await trio.Event().wait()  # cancelled when the writer finds the client gone
        assert engine.subs[0].closed
        assert (await good.call("conversations/count")) == {"count": 2}


async def test_eof_answers_requests_in_flight(engine: FakeEngine) -> None:
    engine.gates["get"] = gate = trio.Event()
    out, inbox = trio.open_memory_channel[bytes](math.inf)

    async def messages() -> AsyncIterator[bytes]:
        for i, method in enumerate(["conversations/get", "conversations/subscribe"], 1):
            msg = {"jsonrpc": "2.0", "id": i, "method": method, "params": {"id": "abc"}}
            yield json.dumps(msg).encode()
        gate.set()

    async with make_dispatcher(engine).open_connection(out.send) as conn:
        async for message in messages():
            await conn.handle(message)
    out.close()
    replies = [m for m in map(json.loads, [line async for line in inbox]) if "id" in m]
    assert sorted(r["id"] for r in replies) == [1, 2]
    assert engine.subs[0].closed
