"""Every hand-off bounded, and what keeps an agent: back-pressure from a slow store to the
agent's pipe, idle_ttl against subscribers, requests from the agent that are not ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from daemon.agents.peer import WRITE_BOUND
from daemon.engine import recorder
from daemon.engine.storeio import StoreIO
from daemon.engine.supervisor import Conversation
from protocol import acp
from protocol.jsonrpc import INVALID_PARAMS, RpcFailure
from tests.engine.harness import harness, wait_turn_ended
from tests.fakes.agent import AskPermission, Chunk, Reply, Sleep


async def test_a_stalled_store_pushes_back_on_the_agent_and_loses_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant: with the store stalled, what the reader holds stays bounded and the agent's
    writes block; once the store resumes, every chunk is stored, in order."""
    monkeypatch.setattr(recorder, "BUFFER_CHARS", 1000)
    monkeypatch.setattr(recorder, "SEGMENT_CHARS", 300)  # the recorder writes early
    stalled = trio.Event()
    resume = trio.Event()
    for lane in ("write", "write_bulk"):
        real = getattr(StoreIO, lane)

        async def write(self: StoreIO, fn: Any, real: Any = real, **kw: Any) -> Any:
            if stalled.is_set():
                await resume.wait()
            return await real(self, fn, **kw)

        monkeypatch.setattr(StoreIO, lane, write)
    chunks = [f"<{i:03d}:" + "x" * 93 + ">" for i in range(200)]  # 100 characters each
    async with harness(tmp_path) as h:
        h.lockstep = True
        cid = await h.create()
        h.script(Sleep(1), *[Chunk(c) for c in chunks], Reply())
        await h.e.send(cid, "flood", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        stalled.set()  # before the flood starts
        # Long after the whole script could have been sent, and before the fake agent's own
        # peer gives up a write that nobody reads (WRITE_BOUND: a real agent just blocks).
        await trio.sleep(WRITE_BOUND - 1)
        await trio.testing.wait_all_tasks_blocked()
        conv = h.supervisor(cid)
        held = conv.recorder.statistics()
        # Bounded: the buffer plus the one batch the reader was in (lockstep: one line).
        assert 1000 < held.buffered_chars <= 1000 + 2 * 100
        assert held.reader_waits >= 1
        # The agent is still trying to write its output: acpd has read only part of it.
        assert h.agent.turn_running
        assert held.buffered_chars // 100 < len(chunks) - held.deltas_published
        resume.set()
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "end_turn"
        events = await h.events(cid)
        text = "".join(e["text"] for e in events if e["type"] == "agent_message")
        assert text == "".join(chunks)
        assert conv.recorder.statistics().buffered_chars == 0


async def test_a_subscriber_keeps_the_agent_past_idle_ttl(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        cid = await h.create()
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True)
        await h.e.send(cid, "hi", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        await trio.sleep(1000)  # ten idle_ttls, watched the whole time
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.agents_running() == 1
        assert h.agent.count("session/prompt") == 1
        sub.close()  # nobody watches any more: idle from now
        await trio.sleep(99)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.agents_running() == 1
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.agents_running() == 0


async def test_a_straggler_read_with_the_reply_is_not_the_turns(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An update that follows a prompt's reply belongs to no turn, even when the reply and it
    arrive in one read (ACP: the reply is the drain point)."""
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Chunk("one"), Reply("end_turn", then=(Chunk(" STRAY"),)))
        await h.e.send(cid, "first", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "agent_message"]
        assert texts == ["one"]
        assert h.supervisor(cid).dropped_updates == 1


@pytest.mark.parametrize(
    ("session", "options", "why"),
    [
        ("someone-else", None, "no such session"),
        ("sess-1", [], "at least one option"),
    ],
)
async def test_a_permission_request_that_is_not_ours_is_refused_and_never_shown(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    session: str,
    options: list[object] | None,
    why: str,
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(AskPermission(), Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        conv: Conversation = h.supervisor(cid)
        ask: dict[str, Any] = {
            "sessionId": session,
            "toolCall": {"toolCallId": "x", "title": "rm -rf /"},
            "options": options
            if options is not None
            else [{"optionId": "ok", "name": "OK", "kind": "allow_once"}],
        }
        with pytest.raises(RpcFailure) as info:
            await conv.agent_input.on_request(
                acp.REQUEST_PERMISSION, msgspec.Raw(json.dumps(ask).encode())
            )
        assert info.value.code == INVALID_PARAMS
        assert why in info.value.message
        requested = [e for e in await h.events(cid) if e["type"] == "permission_requested"]
        assert [e["title"] for e in requested] == ["May I?"]  # only the real one
