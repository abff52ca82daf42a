"""Behaviours 9-12: two streams out, permissions, idle and shutdown, crash recovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.engine import reads as reads_mod
from daemon.engine import recorder
from daemon.engine.eventlog import SEGMENT_CHARS, EventLog
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, NOT_FOUND, RpcFailure
from store import Store
from tests.engine.harness import harness, next_event, parse, wait_turn_ended
from tests.fakes.agent import AskPermission, Chunk, Reply, Sleep, Thought, Tool, WaitForCancel


async def test_replay_then_live_without_gap_or_duplicate(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("one"), Reply())
        await h.e.send(cid, "first", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        stored = [e["seq"] for e in await h.events(cid)]
        # Subscribe from the middle of the history while the second turn runs.
        h.script(Chunk("tw"), Sleep(1), Chunk("o"), Reply())
        await h.e.send(cid, "second", run=True, interrupt=False)
        sub = await h.e.subscribe(cid, after_seq=stored[1], deltas=True)
        seqs: list[int] = []
        deltas: list[str] = []
        async for line in sub:
            msg = parse(line)
            if msg["method"] == "conversation/delta":
                deltas.append(msg["params"]["text"])
                continue
            event = msg["params"]["event"]
            seqs.append(event["seq"])
            if event["type"] == "turn_ended" and event["prompt_seq"] > stored[0]:
                break
        sub.close()
        all_seqs = [e["seq"] for e in await h.events(cid)]
        assert seqs == [s for s in all_seqs if s > stored[1]]
        assert "".join(deltas) == "two"


async def test_slow_subscriber_is_dropped_with_lagged_and_never_slows_the_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, subscriber_buffer=4) as h:
        cid = await h.create()
        steps: list[Any] = []
        for i in range(20):
            steps += [Chunk(f"c{i} "), Tool(f"t{i}", status="completed")]
        h.script(*steps, Reply())
        slow = await h.e.subscribe(cid, after_seq=0, deltas=True)  # never read during the turn
        t0 = trio.current_time()
        await h.e.send(cid, "flood", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        assert trio.current_time() == t0
        lines = [parse(line) async for line in slow]
        assert len(lines) == 5  # its buffer, then the notice
        lagged = lines[-1]
        assert lagged["method"] == "conversation/lagged"
        last = lagged["params"]["last_seq"]
        delivered = [m["params"]["event"]["seq"] for m in lines if "event" in m["params"]]
        assert last == max(delivered, default=0)
        # Resubscribing from last_seq continues with no gap.
        again = await h.e.subscribe(cid, after_seq=last, deltas=False)
        first = await next_event(again)
        again.close()
        assert first["seq"] == min(e["seq"] for e in await h.events(cid) if e["seq"] > last)


async def test_text_is_stored_in_order_once_per_message(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Thought("hmm"), *[Chunk(c) for c in "abcdefghij"], Tool("t1"), Chunk("!"), Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        events = await h.events(cid)
        assert [e["type"] for e in events] == [
            "user_message",
            "turn_started",
            "agent_thought",
            "agent_message",
            "tool_call",
            "agent_message",
            "turn_ended",
        ]
        texts = [e.get("text") for e in events if e["type"] == "agent_message"]
        assert texts == ["abcdefghij", "!"]


async def test_a_long_message_is_stored_in_bounded_parts(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder, "SEGMENT_CHARS", 10)
    async with harness(tmp_path) as h:
        cid = await h.create()
        steps: list[Any] = []
        for _ in range(5):  # one batch each
            steps += [Chunk("abcd"), Sleep(0.1)]
        steps += [Chunk("x" * 25)]  # one chunk over the bound is cut too
        h.script(*steps, Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "agent_message"]
        # Parts of exactly 10 characters, in order, whatever the chunking.
        assert texts == ["abcdabcdab", "cdabcdabcd", "x" * 10, "x" * 10, "x" * 5]


async def test_grouped_chunks_keep_parts_and_deltas_exact(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read of many small chunks is added in groups (the relay's fast path): the stored
    parts, the deltas' bound and the text they carry are exactly as chunk by chunk."""
    monkeypatch.setattr(recorder, "SEGMENT_CHARS", 10)
    monkeypatch.setattr(recorder, "GROUP_CHARS", 4)
    monkeypatch.setattr(recorder, "DELTA_CHARS", 7)
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "go", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await trio.testing.wait_all_tasks_blocked()
        sub = await h.e.subscribe(cid, after_seq=100, deltas=True)
        chunks = ["ab", "c", "defg", "h", "ij", "klmnopq", "r", "s", "tuvw", "x", "yz"] * 3
        on_update = h.supervisor(cid).agent_input.on_update
        for c in chunks:  # one batch: no checkpoint between them
            on_update("sess-1", acp.AgentMessageChunk(content=acp.TextContent(text=c)))
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)
        whole = "".join(chunks)
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "agent_message"]
        assert texts == [whole[i : i + 10] for i in range(0, len(whole), 10)]
        streamed = ""
        while len(streamed) < len(whole):
            msg = parse(await sub.__anext__())
            if msg["method"] == "conversation/delta":
                assert 0 < len(msg["params"]["text"]) <= 7
                streamed += msg["params"]["text"]
        assert streamed == whole
        sub.close()


async def test_drafts_grow_by_appending_what_is_new(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, draft_interval=0.05) as h:
        cid = await h.create()
        h.script(Chunk("abcd"), Sleep(0.1), Chunk("ef"), Sleep(0.1), Chunk("gh"), WaitForCancel())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await trio.sleep(0.5)  # every chunk is in, and a draft interval has passed after each

        def parts(s: Store) -> list[str]:
            rows = s._conn.execute("SELECT text FROM drafts WHERE conversation_id = ?", (cid,))
            return [r[0] for r in rows.fetchall()]

        # Each save holds only the text since the one before.
        assert await h.e.io.read(parts) == ["abcd", "ef", "gh"]
        assert await h.e.io.read(lambda s: s.drafts(cid)) == [(1, "message", "abcdefgh")]
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)
        assert await h.e.io.read(lambda s: s.drafts(cid)) == []  # the turn's end took them


async def test_a_floods_text_is_written_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text whose segments fill within a draft interval goes to the store once, in its
    segments; only the open segment's rest is saved as a draft (when the interval is up)."""
    drafted: list[int] = []
    real = EventLog.append_draft

    async def append_draft(self: EventLog, prompt_seq: int, kind: str, text: str) -> None:
        drafted.append(len(text))
        await real(self, prompt_seq, kind, text)

    monkeypatch.setattr(EventLog, "append_draft", append_draft)
    size = 10_000
    chunks = [Chunk(str(i % 10) * size) for i in range(30)]  # 300,000 characters at once
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(*chunks, WaitForCancel())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await trio.sleep(5)  # every chunk in, and past the draft interval
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)
        events = await h.events(cid)
    text = "".join(e["text"] for e in events if e["type"] == "agent_message")
    assert text == "".join(str(i % 10) * size for i in range(30))
    assert drafted == [30 * size - SEGMENT_CHARS]  # the open segment's rest, once


async def test_one_batch_of_chunks_becomes_one_delta(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "go", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await trio.testing.wait_all_tasks_blocked()
        sub = await h.e.subscribe(cid, after_seq=100, deltas=True)
        conv = h.supervisor(cid)
        before = conv.recorder.statistics().deltas_published
        # What the peer does with one read that holds many lines: all callbacks, no checkpoint.
        on_update = conv.agent_input.on_update
        for c in "abcdefghij":
            on_update("sess-1", acp.AgentMessageChunk(content=acp.TextContent(text=c)))
        await trio.testing.wait_all_tasks_blocked()
        assert conv.recorder.statistics().deltas_published == before + 1
        msg = parse(await sub.__anext__())
        assert msg["params"] == {
            "id": cid,
            "prompt_seq": 1,
            "kind": "message",
            "text": "abcdefghij",
        }
        sub.close()
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)


async def test_permission_first_answer_wins_and_is_recorded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(AskPermission(then_text="done"), Reply())
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        await h.e.send(cid, "edit", run=True, interrupt=False)
        req = await next_event(sub, "permission_requested")
        sub.close()
        # The list and `get` count what waits for a person (the dashboard's title and badge).
        assert (await h.e.get(cid)).open_requests == 1
        with pytest.raises(RpcFailure) as bad:
            await h.e.permit(cid, request=req["request"], option="nope", cancelled=False)
        assert bad.value.code == INVALID_PARAMS
        await h.e.permit(cid, request=req["request"], option="allow", cancelled=False)
        with pytest.raises(RpcFailure) as late:
            await h.e.permit(cid, request=req["request"], option="reject", cancelled=False)
        assert late.value.code == CONFLICT
        assert (await h.e.get(cid)).open_requests == 0
        await wait_turn_ended(h, cid)
        (answer,) = h.agent.permission_answers
        assert answer.outcome.option_id == "allow"  # type: ignore[union-attr]
        resolved = [e for e in await h.events(cid) if e["type"] == "permission_resolved"]
        assert [(e["option"], e["by"]) for e in resolved] == [("allow", "user")]


@pytest.mark.parametrize(
    ("policy", "expected"), [("allow", ("allow", "policy")), ("deny", ("reject", "policy"))]
)
async def test_permission_policy(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, policy: str, expected: tuple[str, str]
) -> None:
    async with harness(tmp_path, permission_policy=policy) as h:
        cid = await h.create()
        h.script(AskPermission(), Reply())
        await h.e.send(cid, "edit", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        resolved = [e for e in await h.events(cid) if e["type"] == "permission_resolved"]
        assert [(e["option"], e["by"]) for e in resolved] == [expected]


async def test_unanswered_permission_gets_the_default_at_its_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(
        tmp_path, permission_timeout=120.0, turn_timeout=60.0, permission_default="reject"
    ) as h:
        cid = await h.create()
        h.script(AskPermission(), Reply())
        t0 = trio.current_time()
        await h.e.send(cid, "edit", run=True, interrupt=False)
        (ended,) = await wait_turn_ended(h, cid)
        # Waiting for a person is not idleness: the 60 s turn timeout did not fire.
        assert ended["stop_reason"] == "end_turn"
        assert trio.current_time() - t0 == 120.0
        resolved = [e for e in await h.events(cid) if e["type"] == "permission_resolved"]
        assert [(e["option"], e["by"]) for e in resolved] == [("reject", "timeout")]


async def test_idle_agent_stops_and_the_registry_empties(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        cid = await h.create()
        await h.e.send(cid, "hi", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        assert h.e.agents_running() == 1
        await trio.sleep(101)  # idle_ttl from when wait_turn_ended's subscription closed
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.agents_running() == 0
        assert h.running is None
        await trio.sleep(100)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.live_count() == 0
        # Used again: hydrated again, the agent resumes its session with session/load.
        await h.e.send(cid, "again", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        assert h.agent.count("session/load") == 1
        restarted = [e for e in await h.events(cid) if e["type"] == "agent_restarted"]
        assert [e["reason"] for e in restarted] == ["idle"]


async def test_delete_a_live_conversation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "run", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await h.e.delete(cid)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.live_count() == 0
        assert h.running is None
        with pytest.raises(RpcFailure) as err:
            await h.e.get(cid)
        assert err.value.code == NOT_FOUND
        assert await h.e.count() == 0


async def test_graceful_shutdown_drains_and_keeps_the_queue(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("x"), WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "running", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        await h.e.send(cid, "queued", run=True, interrupt=False)
        agent = h.agent
    assert agent.cancels == 1
    with Store.open(tmp_path / "acpd.sqlite3") as store:
        rec = store.get_conversation(cid)
        assert rec is not None
        assert (rec.status, rec.queued) == ("idle", 1)
        types = [e.type for e in store.read_events(cid)]
        assert types[-1] == "turn_ended"


async def test_recovery_after_a_crash_closes_the_turn_and_continues_the_queue(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The state a kill -9 leaves: a turn started, its text in a draft, one more queued.
    with Store.open(tmp_path / "acpd.sqlite3") as store:
        rec = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd=str(tmp_path))
        first = store.append_user_message(rec.id, ev.encode_body(ev.UserMessage(text="one")))
        store.append_user_message(rec.id, ev.encode_body(ev.UserMessage(text="two")))
        store.start_turn(rec.id, first.seq, ev.encode_body(ev.TurnStarted(prompt_seq=first.seq)))
        store.set_acp_session(rec.id, "sess-1", str(tmp_path))
        store.append_draft(rec.id, first.seq, "message", "half a rep")
    async with harness(tmp_path) as h:
        await wait_turn_ended(h, rec.id, 2)
        events = await h.events(rec.id)
        partial = next(e for e in events if e["type"] == "agent_message")
        assert (partial["text"], partial["partial"]) == ("half a rep", True)
        ended = [e for e in events if e["type"] == "turn_ended"]
        assert [e["stop_reason"] for e in ended] == ["daemon_restarted", "end_turn"]
        assert h.agent.prompts == ["two"]  # "one" was started before: never prompted twice
        assert h.agent.count("session/load") == 1


async def test_startup_reads_nothing_but_pending_work(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with Store.open(tmp_path / "acpd.sqlite3") as store:
        for i in range(50):
            store.create_conversation(title=f"{i}", agent="demo", agent_cmd=["x"], cwd="/")
    async with harness(tmp_path) as h:
        assert h.e.live_count() == 0
        assert h.e.hydrations == 0
        assert h.launches == 0


async def test_events_and_subscribe_pages(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        for i in range(3):
            await h.e.send(cid, f"m{i}", run=False, interrupt=False)
        raw, last = await h.e.events(cid, after_seq=1, limit=1)
        assert [json.loads(bytes(r))["seq"] for r in raw] == [2]
        assert last == 3


async def test_pages_are_bounded_by_bytes_and_replay_reads_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads_mod, "PAGE_BYTES", 100)
    async with harness(tmp_path) as h:
        cid = await h.create()
        for i in range(6):
            await h.e.send(cid, f"{i}" * 60, run=False, interrupt=False)  # ~70 B bodies
        raw, last = await h.e.events(cid, after_seq=0, limit=500)
        assert ([json.loads(bytes(r))["seq"] for r in raw], last) == ([1], 6)
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        seqs = []
        for _ in range(6):  # every one, in order, though each page holds one
            seqs.append(parse(await sub.__anext__())["params"]["event"]["seq"])
        sub.close()
        assert seqs == [1, 2, 3, 4, 5, 6]
