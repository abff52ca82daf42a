"""kill -9 with steers, edits and moves acknowledged: after the restart every one is in effect,
and a message acknowledged `steered: true` is never prompted. A real daemon and the built-in
demo agent (which steers), as in test_process.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from daemon.agents._process import group_alive
from tests.engine.realdaemon import (
    GUARD,
    agent_groups,
    attached,
    created,
    ended,
    sigterm_and_time,
    started,
    stored_events,
    wait_group_gone,
)
from tests.server.test_serve import running_daemon

pytestmark = pytest.mark.subprocess


async def test_kill_9_keeps_steers_edits_and_moves(tmp_path: Path, groups: list[int]) -> None:
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon, created(daemon, tmp_path, None) as conv:
            assert await conv.send("/slow 200") == 1
            await conv.delta()  # the turn streams: its prompt is out
            b, c = await conv.send("/echo b"), await conv.send("/echo c")
            steer = await conv.call("messages/send", text="left", steer=True)
            assert steer == {
                "seq": c + 1,
                "queued": 0,
                "number": 4,
                "resumed": False,
                "steered": True,
            }
            assert await conv.call("messages/edit", seq=c, text="/echo C") == {}
            assert await conv.call("messages/move", seq=c) == {"order": [c, b]}
            pending = (await conv.call("messages/queue"))["pending"]
            assert pending == [  # in line, as edited, each with its number as sent
                {"seq": c, "text": "/echo C", "number": 3},
                {"seq": b, "text": "/echo b", "number": 2},
            ]
            # The demo says what it was steered with, in the running turn.
            while "(steered: left)" not in "".join(d["text"] for d in conv.deltas):
                await conv.delta()
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            daemon.proc.send_signal(signal.SIGKILL)
            assert await daemon.proc.wait() == -signal.SIGKILL
        async with running_daemon(tmp_path) as daemon, attached(daemon, conv.id) as conv:
            await wait_group_gone(pgid, 5)
            await conv.turn_ended(b)
            groups.extend(agent_groups(daemon))
            # The turn cut off is closed; then the edited message, moved first; then b.
            assert [e["prompt_seq"] for e in conv.of_type("turn_started")] == [1, c, b]
            assert conv.events[conv.index(ended(1))]["stop_reason"] == "daemon_restarted"
            replies = [(e["prompt_seq"], e["text"]) for e in conv.of_type("agent_message")]
            assert replies[-2:] == [(c, "C"), (b, "b")]
            # The steer went into turn 1 and was never prompted, before or after the restart.
            (steered,) = conv.of_type("user_message_steered")
            assert (steered["message_seq"], steered["prompt_seq"]) == (c + 1, 1)
            assert not any(started(c + 1)(e) for e in conv.events)
            assert (await conv.call("messages/queue"))["pending"] == []
            await sigterm_and_time(daemon)
        types = [e["type"] for e in stored_events(daemon, conv.id)]
        assert types.count("user_message_edited") == types.count("queue_reordered") == 1
        assert not group_alive(pgid)
