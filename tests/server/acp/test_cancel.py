"""`session/cancel` and `session/close`: this client's running prompt is interrupted (answered
`cancelled`), its queued ones withdrawn; other front ends' messages are not touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.engine.registry import Engine
from protocol.api import SendResult
from tests.engine.harness import wait_turn_ended
from tests.fakes.agent import Chunk, Reply, WaitForCancel
from tests.server.acp.harness import Front


async def test_cancel_interrupts_the_running_prompt_and_withdraws_the_queued_one(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("working"), WaitForCancel(), Reply("cancelled"))
    async with trio.open_nursery() as nursery:
        running = client.prompt_soon(nursery, sid, "first")
        await client.wait_for(lambda c: c.text() == "working")
        queued = client.prompt_soon(nursery, sid, "second")
        await trio.testing.wait_all_tasks_blocked()
        assert [m.text for m in await f.e.queue(sid)] == ["second"]
        await client.notify("session/cancel", {"sessionId": sid})
        assert await queued.wait() == {"stopReason": "cancelled"}
        assert await running.wait() == {"stopReason": "cancelled"}
    assert await f.e.queue(sid) == []  # withdrawn: it will never run
    assert f.h.agent.cancels == 1
    assert f.h.agent.prompts == ["first"]
    # The queue pauses, as `acpd interrupt` does; the next prompt runs it again.
    assert (await f.e.get(sid)).status == "paused"
    assert await client.prompt(sid, "third") == {"stopReason": "end_turn"}


async def test_cancel_leaves_other_front_ends_messages_alone(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
    await f.e.send(sid, "from the terminal", run=True, interrupt=False)
    async with trio.open_nursery() as nursery:
        mine = client.prompt_soon(nursery, sid, "mine, queued")
        await client.wait_for(lambda c: c.text() == "x")
        await trio.testing.wait_all_tasks_blocked()
        await client.notify("session/cancel", {"sessionId": sid})
        assert await mine.wait() == {"stopReason": "cancelled"}
    # Its own message was withdrawn; the terminal's turn runs on, not interrupted.
    assert f.h.agent.cancels == 0
    assert f.h.agent.turn_running
    await f.e.interrupt(sid)
    await wait_turn_ended(f.h, sid)


async def test_a_cancel_that_overtakes_the_send_still_withdraws_it(
    f: Front,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
    await f.e.send(sid, "someone else's turn", run=True, interrupt=False)
    await f.h.agents_wait_prompt(1)
    gate = trio.Event()
    real_send = Engine.send

    async def slow_send(self: Engine, *args: Any, **kw: Any) -> SendResult:
        seq_queued = await real_send(self, *args, **kw)
        await gate.wait()  # stored, but not answered yet
        return seq_queued

    monkeypatch.setattr(Engine, "send", slow_send)
    async with trio.open_nursery() as nursery:
        mine = client.prompt_soon(nursery, sid, "mine")
        await trio.testing.wait_all_tasks_blocked()
        await client.notify("session/cancel", {"sessionId": sid})
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        assert await mine.wait() == {"stopReason": "cancelled"}
    assert await f.e.queue(sid) == []
    await f.e.interrupt(sid)


async def test_close_cancels_this_clients_prompt_then_detaches(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
    async with trio.open_nursery() as nursery:
        running = client.prompt_soon(nursery, sid, "go")
        await client.wait_for(lambda c: c.text() == "x")
        assert await client.call("session/close", {"sessionId": sid}) == {}
        assert await running.wait() == {"stopReason": "cancelled"}
    ended = await wait_turn_ended(f.h, sid)
    assert ended[0]["stop_reason"] == "cancelled"
    # Detached: a prompt now needs a load or resume first; closing again is harmless.
    err = await client.error("session/prompt", {"sessionId": sid, "prompt": []})
    assert err.code == -32002
    assert await client.call("session/close", {"sessionId": sid}) == {}
    f.h.script(Chunk("later"), Reply())
    await f.e.send(sid, "from elsewhere", run=True, interrupt=False)
    await wait_turn_ended(f.h, sid, 2)
    assert client.text() == "x"  # nothing more reached it


async def test_cancel_of_an_unknown_session_or_when_idle_is_harmless(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    await client.notify("session/cancel", {"sessionId": "nope"})
    await client.notify("session/cancel", {"sessionId": sid})
    await client.notify("session/cancel", {"bad": 1})
    await trio.testing.wait_all_tasks_blocked()
    assert await client.prompt(sid, "still fine") == {"stopReason": "end_turn"}
    assert (await f.e.get(sid)).status == "idle"


async def test_a_queued_prompt_removed_elsewhere_is_answered_cancelled(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Taken out of the queue by another front end (`acpd queue --remove`), a client's
    prompt's turn never comes: it is answered, not left waiting."""
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
    await f.e.send(sid, "someone else's turn", run=True, interrupt=False)
    await f.h.agents_wait_prompt(1)
    async with trio.open_nursery() as nursery:
        mine = client.prompt_soon(nursery, sid, "mine")
        await trio.testing.wait_all_tasks_blocked()
        (queued,) = await f.e.queue(sid)
        await f.e.remove(sid, queued.seq)
        assert await mine.wait() == {"stopReason": "cancelled"}
    types = [e["type"] for e in await f.h.events(sid)]
    assert types.count("user_message_removed") == 1
    await f.e.interrupt(sid)
