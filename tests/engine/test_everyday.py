"""What people see of a conversation (issue 19): message numbers, short ids, what a send or a
resume did to the queue, and the permission requests waiting for an answer."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

import store._conversations
from protocol.jsonrpc import INVALID_PARAMS, RpcFailure
from store import Store
from tests.engine.harness import harness, next_event, wait_turn_ended
from tests.fakes.agent import AskPermission, Reply, Sleep

# --- message numbers ---------------------------------------------------------------------------


async def test_messages_are_numbered_in_the_order_sent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Sleep(10), Reply())
        first = await h.e.send(cid, "one", run=True, interrupt=False)
        await h.agents_wait_prompt(1)
        two = await h.e.send(cid, "two", run=True, interrupt=False)
        three = await h.e.send(cid, "three", run=True, interrupt=False)
        assert (first.number, two.number, three.number) == (1, 2, 3)
        assert (first.seq, two.seq) != (1, 2)  # seqs count events: turn_started came between
        assert [(m.text, m.number) for m in await h.e.queue(cid)] == [("two", 2), ("three", 3)]
        # The newest removed: its number goes to the next message. One in the middle: a gap.
        await h.e.remove(cid, three.seq)
        again = await h.e.send(cid, "three again", run=True, interrupt=False)
        assert again.number == 3
        await h.e.remove(cid, two.seq)
        four = await h.e.send(cid, "four", run=True, interrupt=False)
        assert four.number == 4
        await wait_turn_ended(h, cid, 3)
        numbered = [(e["text"], e.get("number")) for e in await h.events(cid)
                    if e["type"] == "user_message"]  # fmt: skip
        assert numbered == [("one", 1), ("three again", 3), ("four", 4)]


async def test_numbers_go_on_after_the_supervisor_retires(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=5.0) as h:
        cid = await h.create()
        await h.e.send(cid, "one", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        await trio.sleep(60)  # idle: the agent and the supervisor go away
        await trio.testing.wait_all_tasks_blocked()
        assert h.e.live_count() == 0
        assert (await h.e.send(cid, "two", run=False, interrupt=False)).number == 2


async def test_messages_stored_without_numbers_are_counted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Messages stored before numbers existed have none: their place stands in for it."""
    async with harness(tmp_path) as h:
        cid = await h.create()
        for text in ("old one", "old two"):
            body = b'{"text":"%s"}' % text.encode()
            await h.e.io.write(functools.partial(_append_user, cid=cid, body=body))
        await h.e.io.write(lambda s: s.set_status(cid, "paused"))
        assert [(m.text, m.number) for m in await h.e.queue(cid)] == [
            ("old one", 1),
            ("old two", 2),
        ]
        new = await h.e.send(cid, "new", run=False, interrupt=False)
        assert new.number == 3
        assert [m.number for m in await h.e.queue(cid)] == [1, 2, 3]


# --- what a send or a resume did to the queue --------------------------------------------------


async def test_a_send_lifts_a_pause_and_runs_the_queue_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        staged = await h.e.send(cid, "staged", run=False, interrupt=False)
        assert not staged.resumed
        assert (await h.e.get(cid)).status == "paused"
        sent = await h.e.send(cid, "new", run=True, interrupt=False)
        assert sent.resumed
        assert sent.queued == 1  # the staged one runs first
        await wait_turn_ended(h, cid, 2)
        assert h.agent.prompts == ["staged", "new"]
        assert not (await h.e.send(cid, "more", run=True, interrupt=False)).resumed


async def test_resume_says_whether_it_was_held_and_what_is_queued(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        for text in ("a", "b"):
            await h.e.send(cid, text, run=False, interrupt=False)
        resumed = await h.e.resume(cid)
        assert (resumed.resumed, resumed.queued) == (True, 2)
        again = await h.e.resume(cid)
        assert not again.resumed  # idempotent, and says so
        await wait_turn_ended(h, cid, 2)


# --- short ids and ambiguous prefixes ----------------------------------------------------------


async def test_short_ids_and_the_candidates_of_an_ambiguous_prefix(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = (f"abcd{n:04d}" for n in itertools.count(1))
    monkeypatch.setattr(store._conversations, "new_conversation_id", lambda: next(ids))
    async with harness(tmp_path) as h:
        made = [await h.e.create(agent=None, agent_cmd=None, cwd=str(tmp_path),
                                 title=f"title {n}") for n in range(7)]  # fmt: skip
        assert made[0].short_id == "abcd"  # alone when created
        assert (await h.e.get("abcd0001")).short_id == "abcd0001"
        page, _, _ = await h.e.list(limit=50, before=None)
        assert {c.short_id for c in page} == {f"abcd000{n}" for n in range(1, 8)}
        assert await h.e.resolve_id("abcd0003") == "abcd0003"
        with pytest.raises(RpcFailure) as ambiguous:
            await h.e.resolve_id("abc")
        assert ambiguous.value.code == INVALID_PARAMS
        assert ambiguous.value.message == (
            "ambiguous id prefix 'abc': abcd0001 (title 0), abcd0002 (title 1), "
            "abcd0003 (title 2), abcd0004 (title 3), abcd0005 (title 4) and 2 more; "
            "give more characters"
        )


# --- open permission requests ------------------------------------------------------------------


async def test_get_and_list_show_the_open_permission_requests(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        assert (await h.e.get(cid)).permissions == []  # no supervisor: nothing can be open
        h.script(AskPermission(then_text="done"), Reply())
        sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
        await h.e.send(cid, "edit", run=True, interrupt=False)
        asked = await next_event(sub, "permission_requested")
        sub.close()
        (open_request,) = (await h.e.get(cid)).permissions
        assert open_request.request == asked["request"]
        assert [(o.option_id, o.name) for o in open_request.options] == [
            (o["option_id"], o["name"]) for o in asked["options"]
        ]
        assert (open_request.title, open_request.deadline) == (asked["title"], asked["deadline"])
        page, _, _ = await h.e.list(limit=50, before=None)
        assert [len(c.permissions) for c in page] == [1]
        await h.e.permit(cid, request=asked["request"], option="allow", cancelled=False)
        assert (await h.e.get(cid)).permissions == []
        await wait_turn_ended(h, cid)


def _append_user(s: Store, *, cid: str, body: bytes) -> None:
    s.append_user_message(cid, body)
