"""Behaviour 12 with real processes: SIGTERM within a bound, hung and crashing agents
(see realdaemon.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import trio

from daemon.agents._process import group_alive
from tests.engine.realdaemon import (
    CRASH_LINE,
    GUARD,
    ORPHANING_DEMO,
    STUBBORN_DEMO,
    agent_groups,
    attached,
    call,
    config,
    created,
    ended,
    sigterm_and_time,
    started,
    stored,
    stored_events,
)
from tests.server.test_serve import running_daemon

pytestmark = pytest.mark.subprocess

# --- 2, 3. SIGTERM: a graceful stop within a bound ---------------------------------------------


async def test_sigterm_drains_the_turn_and_keeps_the_queue(
    tmp_path: Path, groups: list[int]
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, ORPHANING_DEMO) as conv,
        ):
            await conv.send("/slow 200")
            queued = await conv.send("/echo kept")
            await conv.delta()  # the turn is streaming
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            took = await sigterm_and_time(daemon)
            print(f"SIGTERM with a turn streaming: exited in {took:.2f}s")
            assert took < 15  # shutdown_grace (10 s) + slack; the demo honours cancel at once
            assert not group_alive(pgid)
            assert agent_groups(daemon) == []
        # What the stopped daemon left: the turn ended `cancelled`, idle, the queue intact.
        events = stored_events(daemon, conv.id)
        (closed,) = [e for e in events if e["type"] == "turn_ended"]
        assert (closed["prompt_seq"], closed["stop_reason"]) == (1, "cancelled")
        with stored(daemon) as s:
            rec = s.get_conversation(conv.id)
            assert rec is not None
            assert (rec.status, rec.queued, rec.cursor) == ("idle", 1, 1)
            assert [r.seq for r in s.pending_messages(conv.id)] == [queued]
        async with running_daemon(tmp_path) as daemon, attached(daemon, conv.id) as conv:
            await conv.turn_ended(queued)
            groups.extend(agent_groups(daemon))
            assert [e["prompt_seq"] for e in conv.of_type("turn_started")] == [1, queued]
            assert conv.of_type("turn_ended")[-1]["stop_reason"] == "end_turn"
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("daemon_restarted", True)
            await sigterm_and_time(daemon)


@pytest.mark.parametrize(
    ("settings", "expect"),
    [
        # Drain first: the hung turn is cut off after drain_timeout and recorded `cancelled`.
        ("drain_timeout = 1.0\nstop_grace = 1.0\n", "cancelled"),
        # Grace first: the turn is abandoned as running; the next start closes it.
        ("drain_timeout = 30.0\nshutdown_grace = 1.0\nstop_grace = 1.0\n", "daemon_restarted"),
    ],
    ids=["drain-timeout", "shutdown-grace"],
)
async def test_sigterm_with_a_hung_agent(
    tmp_path: Path, groups: list[int], settings: str, expect: str
) -> None:
    args = config(tmp_path, settings)
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path, *args) as daemon,
            created(daemon, tmp_path, STUBBORN_DEMO) as conv,
        ):
            await conv.send("/hang")
            await conv.turn_started(1)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            took = await sigterm_and_time(daemon)
            print(f"SIGTERM with a hung agent ({settings.strip()!r}): exited in {took:.2f}s")
            assert took < 1.0 + 1.0 + 5  # the first bound + stop_grace + slack
            assert not group_alive(pgid)
            assert agent_groups(daemon) == []
        if expect == "cancelled":
            events = stored_events(daemon, conv.id)
            endings = [(e["prompt_seq"], e["stop_reason"]) for e in events
                       if e["type"] == "turn_ended"]  # fmt: skip
            assert endings == [(1, "cancelled")]
            with stored(daemon) as s:
                rec = s.get_conversation(conv.id)
                assert rec is not None
                assert rec.status == "idle"
            return
        async with running_daemon(tmp_path, *args) as daemon, attached(daemon, conv.id) as conv:
            assert (await conv.turn_ended(1))["stop_reason"] == "daemon_restarted"
            info = (await conv.call("conversations/get"))["conversation"]
            assert info["status"] == "idle"
            await sigterm_and_time(daemon)


async def test_sigterm_with_many_hung_agents_meets_the_grace(
    tmp_path: Path, groups: list[int]
) -> None:
    # Each agent ignores the cancel (for longer than the grace) and SIGTERM: only SIGKILL ends
    # it. One deadline for all of them, not shutdown_grace and then stop_grace for each.
    n = 8
    settings = (
        "drain_timeout = 30.0\nshutdown_grace = 3.0\nstop_grace = 2.0\n"
        f"max_agents = {n}\nmax_starting = {n}\n"
    )
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path, *config(tmp_path, settings)) as daemon:
            async with contextlib.AsyncExitStack() as stack:
                convs = [
                    await stack.enter_async_context(created(daemon, tmp_path, STUBBORN_DEMO))
                    for _ in range(n)
                ]
                for conv in convs:
                    await conv.send("/hang")
                for conv in convs:
                    await conv.turn_started(1)
                pgids = agent_groups(daemon)
                groups.extend(pgids)
                assert len(pgids) == n
                status = await call(convs[0].client, "daemon/status", {})
                assert status["slots"] == {
                    "used": n,
                    "max": n,
                    "waiting": 0,
                    "starting": 0,
                    "max_starting": n,
                    "starts_waiting": 0,
                }
                assert status["agents_rss"] > n * 10 * 2**20  # a Python demo each, and a shell
                took = await sigterm_and_time(daemon)
            print(f"SIGTERM with {n} hung, stubborn agents: exited in {took:.2f}s")
            assert took < 3.0 + 1.0  # shutdown_grace, and the interpreter's exit
            assert not any(group_alive(pgid) for pgid in pgids)
            assert agent_groups(daemon) == []


# --- 4, 5. A hung agent interrupted, a crashing agent -------------------------------------------


async def test_interrupt_a_hung_agent_restarts_it(tmp_path: Path, groups: list[int]) -> None:
    args = config(tmp_path, "drain_timeout = 1.0\nstop_grace = 1.0\n")
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path, *args) as daemon,
            created(daemon, tmp_path, STUBBORN_DEMO) as conv,
        ):
            await conv.send("/hang")
            await conv.turn_started(1)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            t0 = time.monotonic()
            assert (await conv.call("turns/interrupt")) == {"interrupted": True}
            assert (await conv.turn_ended(1))["stop_reason"] == "cancelled"
            took = time.monotonic() - t0
            print(f"interrupt with a hung agent: turn ended after {took:.2f}s")
            assert 1.0 <= took < 1.0 + 1.0 + 4  # drain_timeout, then stop_grace, SIGKILL
            assert not group_alive(pgid)  # stopped (whole group) before the turn ended
            assert agent_groups(daemon) == []
            info = (await conv.call("conversations/get"))["conversation"]
            assert (info["status"], info["live"]) == ("paused", False)
            assert await conv.call("conversations/resume") == {"resumed": True, "queued": 0}
            after = await conv.send("/echo after")
            assert (await conv.turn_ended(after))["stop_reason"] == "end_turn"
            groups.extend(agent_groups(daemon))
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("drain_timeout", True)
            assert conv.index(ended(1)) < conv.events.index(restarted) < conv.index(started(after))
            assert conv.of_type("agent_message")[-1]["text"] == "after"
            await sigterm_and_time(daemon)


async def test_agent_crash_is_reported_and_the_next_message_restarts_it(
    tmp_path: Path, groups: list[int]
) -> None:
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon, created(daemon, tmp_path, None) as conv:
            await conv.send("/crash")
            assert (await conv.turn_ended(1))["stop_reason"] == "agent_exited"
            (error,) = conv.of_type("error")
            assert error["message"] == "agent exited with status 3"
            assert CRASH_LINE in error["detail"]
            assert conv.index(lambda e: e["type"] == "error") < conv.index(ended(1))
            # The crash is reported once the agent exited; its record goes as its launcher
            # finishes, concurrently (a worker thread): soon after, not necessarily before.
            with trio.fail_after(5):
                while agent_groups(daemon):
                    await trio.sleep(0.02)
            again = await conv.send("/echo again")
            assert (await conv.turn_ended(again))["stop_reason"] == "end_turn"
            groups.extend(agent_groups(daemon))
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("crashed", True)
            assert conv.of_type("agent_message")[-1]["text"] == "again"
            info = (await conv.call("conversations/get"))["conversation"]
            assert (info["status"], info["live"]) == ("idle", True)
            await sigterm_and_time(daemon)


async def test_an_agent_killed_while_idle_is_reported_at_once(
    tmp_path: Path, groups: list[int]
) -> None:
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon, created(daemon, tmp_path, None) as conv:
            first = await conv.send("/echo hi")
            await conv.turn_ended(first)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            os.killpg(pgid, signal.SIGKILL)  # the OOM killer, say: no turn is running
            error = await conv.until(lambda e: e["type"] == "error")
            assert error["message"] == "agent exited while idle with status -9"
            again = await conv.send("/echo again")
            assert (await conv.turn_ended(again))["stop_reason"] == "end_turn"
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("crashed", True)
            await sigterm_and_time(daemon)
