"""The front door when things go wrong around it: it falls behind, the daemon goes away and
comes back (or does not), the conversation is deleted, the daemon is not running at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.server.acp import session
from protocol import acp
from tests.engine.harness import wait_turn_ended
from tests.fakes.agent import Chunk, Reply, Sleep, Tool
from tests.server.acp.harness import Front


def _busy_turn(n: int) -> list[object]:
    steps: list[object] = []
    for i in range(n):
        steps += [Chunk(f"c{i} "), Tool(f"t{i}", f"tool {i}", "completed")]
    return [*steps, Reply()]


def _assert_each_once(client: object, n: int) -> None:
    text = "".join(f"c{i} " for i in range(n))
    assert client.text() == text  # type: ignore[attr-defined]
    calls = [u.tool_call_id for u in client.of(acp.ToolCall)]  # type: ignore[attr-defined]
    assert calls == [f"t{i}" for i in range(n)]


async def test_falling_behind_resubscribes_with_no_gap_and_no_duplicate(
    f: Front,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No room at all: the second line of any read arrives while the first is being handled.
    monkeypatch.setattr(session, "INBOX", 0)
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    connections = f.daemon.connections
    f.h.script(*_busy_turn(30))  # type: ignore[arg-type]
    assert await client.prompt(sid, "go") == {"stopReason": "end_turn"}
    _assert_each_once(client, 30)
    assert f.daemon.connections > connections  # it did resubscribe


async def test_dropped_by_the_daemon_for_lag_it_resubscribes(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("c0 "), Sleep(1), *_busy_turn(30)[1:])  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        pending = client.prompt_soon(nursery, sid, "go")
        await client.wait_for(lambda c: c.text() == "c0 ")
        fanout = f.h.e._live[sid].fanout
        for sink in list(fanout._sinks):  # what the fan-out does to a subscriber that lags
            fanout._drop(sink, lagged=True)
        assert await pending.wait() == {"stopReason": "end_turn"}
    _assert_each_once(client, 30)
    assert fanout.statistics().lagged == 1


async def test_the_daemon_going_away_and_back_loses_nothing(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("one "), Sleep(1), Chunk("two "), Sleep(1), Chunk("three"), Reply())
    async with trio.open_nursery() as nursery:
        pending = client.prompt_soon(nursery, sid, "go")
        await client.wait_for(lambda c: c.text() == "one ")
        f.daemon.drop()  # every connection cut, the engine (and the turn) going on
        assert await pending.wait() == {"stopReason": "end_turn"}
    assert client.text() == "one two three"
    assert await client.prompt(sid, "again") == {"stopReason": "end_turn"}  # control: back


async def test_a_daemon_that_does_not_come_back_fails_the_waiting_prompt(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("one"), Sleep(600), Reply())
    async with trio.open_nursery() as nursery:
        pending = client.prompt_soon(nursery, sid, "go")
        await client.wait_for(lambda c: c.text() == "one")
        start = trio.current_time()
        f.daemon.down = True
        f.daemon.drop()
        with pytest.raises(Exception) as caught:
            await pending.wait()
        assert trio.current_time() - start >= session.RECONNECT_FOR
    assert "did not come back" in str(caught.value)
    err = await client.error("session/prompt", {"sessionId": sid, "prompt": []})
    assert err.code == -32002
    f.daemon.down = False
    await f.e.interrupt(sid)


async def test_a_deleted_conversation_ends_its_session(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    f.h.script(Chunk("one"), Sleep(600), Reply())
    async with trio.open_nursery() as nursery:
        pending = client.prompt_soon(nursery, sid, "go")
        await client.wait_for(lambda c: c.text() == "one")
        await f.e.delete(sid)
        with pytest.raises(Exception, match="no such conversation") as caught:
            await pending.wait()
    assert caught.value.code == -32002  # type: ignore[attr-defined]
    err = await client.error("session/load", {"sessionId": sid, "cwd": "/", "mcpServers": []})
    assert err.code == -32002


async def test_initialize_says_when_the_daemon_is_not_running(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    f.daemon.down = True
    client = await f.client()
    err = await client.error("initialize", {"protocolVersion": 1})
    assert err.code == -32603
    assert "the acpd daemon is not running" in err.message
    assert "acpd serve" in err.message
    f.daemon.down = False  # started meanwhile: the client tries again
    await client.initialize()
    sid = await client.new(tmp_path)
    assert await client.prompt(sid, "hi") == {"stopReason": "end_turn"}
    await wait_turn_ended(f.h, sid)
