"""Questions from the agent (`elicitation/create`): shown to people as events, answered once
(a person, the deadline's default, a cancelled turn), the answer checked against the form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, RpcFailure
from tests.engine.harness import Harness, harness, next_event, wait_turn_ended
from tests.fakes.agent import Reply, Request, WaitForCancel

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "color": {"type": "string", "enum": ["red", "blue"]},
        "sure": {"type": "boolean"},
    },
    "required": ["name"],
}


def ask(session: str = "sess-1", **extra: Any) -> Request:
    params = {"sessionId": session, "mode": "form", "message": "Who?", "requestedSchema": SCHEMA}
    return Request("elicitation/create", {**params, **extra})


async def _asked(h: Harness, cid: str) -> dict[str, Any]:
    sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
    try:
        return await next_event(sub, "elicitation_requested")
    finally:
        sub.close()


async def test_a_question_is_shown_answered_and_recorded(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, turn_timeout=60.0) as h:
        cid = await h.create()
        h.script(ask(), Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        asked = await _asked(h, cid)
        assert (asked["message"], asked["mode"], asked["schema"]) == ("Who?", "form", SCHEMA)
        info = await h.e.get(cid)
        assert info.open_requests == 1
        assert [q.request for q in info.questions] == [asked["request"]]
        # A person who takes longer than the turn's idle timeout: waiting is not idleness.
        await trio.sleep(100)
        with pytest.raises(RpcFailure) as bad:
            await h.e.answer(cid, request=asked["request"], action="accept", content={"count": 2})
        assert bad.value.code == INVALID_PARAMS
        assert "name: required" in bad.value.message
        content = {"name": "Ada", "count": 3, "color": "blue", "sure": True}
        await h.e.answer(cid, request=asked["request"], action="accept", content=content)
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "end_turn"
        assert h.agent.client_answers == [{"action": "accept", "content": content}]
        resolved = [e for e in await h.events(cid) if e["type"] == "elicitation_resolved"]
        assert [(e["action"], e["by"], e["content"]) for e in resolved] == [
            ("accept", "user", content)
        ]
        with pytest.raises(RpcFailure) as late:  # first answer wins
            await h.e.answer(cid, request=asked["request"], action="decline", content=None)
        assert late.value.code == CONFLICT
        assert (await h.e.get(cid)).questions == []


async def test_an_interrupt_answers_the_question_cancel(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(ask(), WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "go", run=True, interrupt=False)
        await _asked(h, cid)
        assert await h.e.interrupt(cid)
        (ended,) = await wait_turn_ended(h, cid)
        assert ended["stop_reason"] == "cancelled"
        resolved = [e for e in await h.events(cid) if e["type"] == "elicitation_resolved"]
        assert [(e["action"], e["by"]) for e in resolved] == [("cancel", "cancel")]


@pytest.mark.parametrize(("default", "answer"), [("cancel", "cancel"), ("decline", "decline")])
async def test_an_unanswered_question_gets_the_default_at_its_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, default: str, answer: str
) -> None:
    async with harness(tmp_path, elicitation_timeout=30.0, elicitation_default=default) as h:
        cid = await h.create()
        h.script(ask(), Reply())
        t0 = trio.current_time()
        await h.e.send(cid, "go", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        assert trio.current_time() - t0 == 30.0
        assert h.agent.client_answers == [{"action": answer}]
        resolved = [e for e in await h.events(cid) if e["type"] == "elicitation_resolved"]
        assert [e["by"] for e in resolved] == ["timeout"]


async def test_questions_that_are_not_ours_are_refused_and_never_shown(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(ask(session="someone-else"), ask(mode="_telepathy"), Reply())
        await h.e.send(cid, "go", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        codes = [a.code for a in h.agent.client_answers if isinstance(a, RpcFailure)]
        assert codes == [INVALID_PARAMS, INVALID_PARAMS]
        assert "elicitation_requested" not in await h.types(cid)
