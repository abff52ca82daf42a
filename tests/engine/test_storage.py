"""The engine under storage faults: refused acknowledgements, turns that wait, recovery.

The fault is real: the store's file is moved away from its path (every write is refused, as
for a file deleted or replaced) and later put back, which is storage coming back without a
restart. What is told to whom, and what the store holds afterwards, is checked; the cause
strings themselves are the store's (tests/store/test_faults.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.engine.storagehealth import PROBE_INTERVAL
from protocol.jsonrpc import STORAGE_UNAVAILABLE, RpcFailure
from store.errors import DELETED
from tests.engine.harness import harness, next_event, wait_turn_ended
from tests.fakes.agent import Chunk, Reply, Sleep, Tool

GONE = "storage unavailable: the database file was deleted or replaced"


def _away(tmp_path: Path) -> Path:
    """Move the store's file off its path; returns where it is."""
    aside = tmp_path / "aside.sqlite3"
    (tmp_path / "acpd.sqlite3").rename(aside)
    return aside


def _back(aside: Path) -> None:
    aside.rename(aside.with_name("acpd.sqlite3"))


async def _refused(call: object) -> str:
    with pytest.raises(RpcFailure) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code == STORAGE_UNAVAILABLE
    return caught.value.message


async def test_acknowledged_writes_are_refused_then_taken_again_without_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.engine.storagehealth")
    async with harness(tmp_path) as h:
        cid = await h.create()
        seq = (await h.e.send(cid, "queued before", run=False, interrupt=False)).seq
        assert h.e.storage().cause is None
        aside = _away(tmp_path)
        sent = h.e.send(cid, "refused", run=True, interrupt=False)
        assert await _refused(sent) == f"{GONE}; the message was not queued"
        created = h.e.create(agent=None, agent_cmd=None, cwd=str(tmp_path), title="x")
        assert await _refused(created) == f"{GONE}; the conversation was not created"
        assert await _refused(h.e.remove(cid, seq)) == f"{GONE}; the message was not removed"
        assert await _refused(h.e.delete(cid)) == f"{GONE}; the conversation was not deleted"
        health = h.e.storage()
        assert (health.cause, health.message) == (DELETED, GONE)
        assert health.refused >= 4  # and the activity bump the settler tried, if it did
        with trio.fail_after(1):
            await h.e.io.wait_file_lost()
        assert [r.levelname for r in caplog.records] == ["ERROR"]  # logged once
        assert GONE in caplog.records[0].getMessage()

        _back(aside)
        t0 = trio.current_time()
        while h.e.storage().cause is not None:  # nobody writes: the upkeep's probe notices
            await trio.sleep(0.1)
        assert trio.current_time() - t0 <= PROBE_INTERVAL + 0.1
        assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]
        h.script(Reply())
        h.script(Reply())
        await h.e.send(cid, "after", run=True, interrupt=False)
        await wait_turn_ended(h, cid, 2)
        texts = [e["text"] for e in await h.events(cid) if e["type"] == "user_message"]
        assert texts == ["queued before", "after"]  # the refused one is nowhere


async def test_a_turn_waits_an_outage_out_and_stores_everything_in_order(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        h.script(Sleep(1), Chunk("hello "), Tool("t1"), Chunk("world"), Sleep(1), Reply())
        sub = await h.e.subscribe(cid, after_seq=0, deltas=True)
        await h.e.send(cid, "go", run=True, interrupt=False)
        await next_event(sub, "turn_started")
        aside = _away(tmp_path)
        await trio.sleep(30)  # the agent has answered; its tool call waits to be stored
        assert h.agent.count("session/prompt") == 1
        assert (await h.e.get(cid)).status == "running"
        sent = h.e.send(cid, "refused", run=True, interrupt=False)
        assert await _refused(sent) == f"{GONE}; the message was not queued"
        _back(aside)
        with trio.fail_after(10):  # at most one retry interval after storage came back
            await wait_turn_ended(h, cid)
        sub.close()
        events = await h.events(cid)
        got = [(e["type"], e.get("text", e.get("tool_call_id"))) for e in events]
        assert got == [
            ("user_message", "go"),
            ("turn_started", None),
            ("agent_message", "hello "),
            ("tool_call", "t1"),
            ("agent_message", "world"),
            ("turn_ended", None),
        ]
        assert [e["seq"] for e in events] == list(range(1, 7))
        assert (await h.e.get(cid)).status == "idle"


async def test_a_pause_during_an_outage_is_stored_once_storage_is_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        await h.e.send(cid, "queued", run=False, interrupt=False)
        await h.e.resume(cid)
        h.script(Reply())
        await wait_turn_ended(h, cid)
        aside = _away(tmp_path)
        assert await h.e.interrupt(cid) is False  # nothing running; the queue pauses
        assert (await h.e.get(cid)).status == "paused"  # as the supervisor has it
        assert (await h.e.io.read(lambda s: s.get_conversation(cid))).status == "idle"  # type: ignore[union-attr]
        _back(aside)
        await trio.sleep(PROBE_INTERVAL + 1)
        rec = await h.e.io.read(lambda s: s.get_conversation(cid))
        assert rec is not None
        assert rec.status == "paused"


async def test_a_file_gone_while_nobody_writes_is_noticed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        await h.create()
        t0 = trio.current_time()
        aside = _away(tmp_path)
        with trio.fail_after(PROBE_INTERVAL + 0.1):
            await h.e.io.wait_file_lost()
        assert trio.current_time() - t0 <= PROBE_INTERVAL
        assert h.e.storage().cause == DELETED
        assert h.e.storage().refused == 0  # nothing was refused: nothing was asked
        _back(aside)
