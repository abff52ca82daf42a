"""The subscription and interrupt options the ACP front door relies on (README, socket API):
`caught_up` with the text streamed before a subscription, `from_turn`, `turns/interrupt` with
`prompt_seq`, `conversations/list` by `cwd`, and deltas always ahead of the event repeating
them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.engine import recorder
from protocol import acp
from tests.engine.harness import Harness, harness, next_event, parse, wait_turn_ended
from tests.fakes.agent import AskPermission, Chunk, Reply, Sleep, Thought, WaitForCancel


async def _lines(sub: Any, until: str) -> list[dict[str, Any]]:
    """Parsed lines of `sub` up to and including the first event of type `until`."""
    out: list[dict[str, Any]] = []
    async for line in sub:
        msg = parse(line)
        out.append(msg)
        if msg["method"] == "conversation/event" and msg["params"]["event"]["type"] == until:
            return out
    raise AssertionError(f"no {until} event")


async def test_caught_up_carries_exactly_the_text_streamed_before_the_subscription(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("hel"), Thought("hm"), Sleep(1), Chunk("lo"), Sleep(1), Chunk("!"), Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await trio.sleep(0.5)  # "hel" and "hm" are out, as deltas only
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True, caught_up=True)
        lines = await _lines(sub, "turn_ended")
        sub.close()
        methods = [m["method"] for m in lines]
        first_live = methods.index("conversation/caught_up")
        # The replay (stored events) comes first, then caught_up, then live lines only.
        assert set(methods[:first_live]) == {"conversation/event"}
        caught = lines[first_live]["params"]
        assert caught["id"] == cid
        assert caught["through_seq"] == max(m["params"]["event"]["seq"] for m in lines[:first_live])
        streamed = {s["kind"]: s["text"] for s in caught["streamed"]}
        assert streamed == {"message": "hel", "thought": "hm"}
        live = [m["params"] for m in lines[first_live + 1 :] if m["method"] == "conversation/delta"]
        message = streamed["message"] + "".join(d["text"] for d in live if d["kind"] == "message")
        stored = [e for e in await h.events(cid) if e["type"] == "agent_message"]
        assert [e["text"] for e in stored] == [message] == ["hello!"]


async def test_caught_up_without_a_turn_streams_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True, caught_up=True)
        first = parse(await sub.__anext__())
        sub.close()
        assert first == {
            "jsonrpc": "2.0",
            "method": "conversation/caught_up",
            "params": {"id": cid, "through_seq": 0, "streamed": []},
        }


async def test_deltas_precede_the_event_that_repeats_them_at_a_segment_bound(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "SEGMENT_CHARS", 10)
    async with harness(tmp_path) as h:
        cid = await h.create()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True)
        # What one read batch of the agent hands over: the message passes the bound, then a
        # thought and more message follow before the recorder runs.
        rec = h.e._live[cid].recorder
        rec.delta("message", "abcdefghijk", 1)
        rec.delta("thought", "t", 1)
        rec.delta("message", "z", 1)
        await rec.flush()
        streamed = {"message": "", "thought": ""}
        events = 0
        while events < 3:  # the long message, then the thought and the rest
            msg = parse(await sub.__anext__())
            params = msg["params"]
            if msg["method"] == "conversation/delta":
                streamed[params["kind"]] += params["text"]
            elif (kind := params["event"]["type"]) in ("agent_message", "agent_thought"):
                key = kind.removeprefix("agent_")
                # Every character an event holds was streamed before it.
                assert streamed[key] == params["event"]["text"]
                streamed[key] = ""
                events += 1
        sub.close()


async def test_from_turn_replays_the_running_turn_with_its_open_question(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("first"), Reply())
        await h.e.send(cid, "one", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        h.script(AskPermission(tool_call_id="tool-9"), Reply())
        seq = (await h.e.send(cid, "two", run=True, interrupt=False)).seq
        await h.agents_wait_prompt(2)
        await trio.testing.wait_all_tasks_blocked()
        last = (await h.e.get(cid)).last_seq
        sub = await h.e.subscribe(cid, after_seq=last, deltas=True, from_turn=True)
        replayed: list[dict[str, Any]] = []
        while len(replayed) < 3:
            replayed.append(await next_event(sub))
        sub.close()
        assert [e["type"] for e in replayed] == [
            "user_message",
            "turn_started",
            "permission_requested",
        ]
        assert replayed[0]["seq"] == seq
        assert replayed[2]["tool_call_id"] == "tool-9"
        # Without a running turn, from_turn changes nothing.
        await h.e.permit(cid, request=replayed[2]["request"], option="allow", cancelled=False)
        await wait_turn_ended(h, cid, 2)
        last = (await h.e.get(cid)).last_seq
        sub = await h.e.subscribe(cid, after_seq=last, deltas=True, from_turn=True)
        assert sub.replay_from == last
        sub.close()


async def _paused(h: Harness, cid: str) -> bool:
    return (await h.e.get(cid)).status == "paused"


async def test_interrupt_with_prompt_seq_hits_only_that_messages_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
        first = (await h.e.send(cid, "one", run=True, interrupt=False)).seq
        second = (await h.e.send(cid, "two", run=True, interrupt=False)).seq
        await h.agents_wait_prompt(1)
        assert not await h.e.interrupt(cid, prompt_seq=second)
        assert not await _paused(h, cid)  # the wrong turn: nothing changed
        assert await h.e.interrupt(cid, prompt_seq=first)
        ended = await wait_turn_ended(h, cid)
        assert ended[0]["prompt_seq"] == first
        assert ended[0]["stop_reason"] == "cancelled"
        assert await _paused(h, cid)


async def test_list_filters_by_cwd(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with harness(tmp_path) as h:
        ids = []
        for where in ("a", "b", "a", "a"):
            info = await h.e.create(
                agent=None, agent_cmd=None, cwd=str(tmp_path / where), title=None
            )
            ids.append(info.id)
            time.sleep(0.002)  # distinct activity times (the store's, in real time): one order
        page, total, nxt = await h.e.list(limit=2, before=None, cwd=str(tmp_path / "a"))
        assert [c.id for c in page] == [ids[3], ids[2]]
        assert total == 3
        assert nxt is not None
        page, _, nxt = await h.e.list(limit=2, before=nxt, cwd=str(tmp_path / "a"))
        assert [c.id for c in page] == [ids[0]]
        assert nxt is None
        page, total, _ = await h.e.list(limit=10, before=None, cwd=os.fspath(tmp_path))
        assert (page, total) == ([], 0)
        _, total, _ = await h.e.list(limit=10, before=None)
        assert total == 4


async def test_permission_requested_names_the_tool_call(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        options = (acp.PermissionOption(option_id="ok", name="OK", kind="allow_once"),)
        h.script(AskPermission(options=options, tool_call_id="t-7"), Reply())
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        await h.e.send(cid, "go", run=True, interrupt=False)
        asked = await next_event(sub, "permission_requested")
        sub.close()
        assert asked["tool_call_id"] == "t-7"
        await h.e.permit(cid, request=asked["request"], option="ok", cancelled=False)
        await wait_turn_ended(h, cid)


async def test_a_subscription_the_daemon_ends_says_so_when_asked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        await h.e.send(cid, "hi", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        told = await h.e.subscribe(cid, after_seq=0, deltas=True, caught_up=True)
        plain = await h.e.subscribe(cid, after_seq=0, deltas=True)
        last = (await h.e.get(cid)).last_seq
        replayed = [parse(await told.__anext__()) for _ in range(last + 1)]
        assert replayed[-1]["method"] == "conversation/caught_up"
        assert [parse(await plain.__anext__())["method"] for _ in range(last)] == [
            "conversation/event"
        ] * last
        await h.e.delete(cid)
        assert [parse(line) async for line in told] == [
            {
                "jsonrpc": "2.0",
                "method": "conversation/ended",
                "params": {"id": cid, "last_seq": last},
            }
        ]
        assert [line async for line in plain] == []
