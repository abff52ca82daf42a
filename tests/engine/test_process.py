"""Behaviour 11 with real processes: kill -9 mid-turn, then restart (see realdaemon.py)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from daemon.agents._process import group_alive
from daemon.agents.orphans import process_start_time
from tests.engine.realdaemon import (
    DEMO,
    GUARD,
    ORPHANING_DEMO,
    agent_groups,
    attached,
    counted,
    created,
    ended,
    sigterm_and_time,
    started,
    stored,
    wait_group_gone,
)
from tests.server.test_serve import running_daemon

pytestmark = pytest.mark.subprocess

PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[list[int]]:
    """Make this process the subreaper of orphans (Linux), so a test can reap an orphaned
    agent's leader as promptly as systemd would, whatever the container's init does. Yields a
    list of pids to reap at teardown."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    orphans: list[int] = []
    try:
        yield orphans
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid`, zombies included."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[2]) == pgid:
                members.append(int(name))
    return members


async def reap_leader(pgid: int, within: float) -> None:
    """Wait for the orphaned group leader (now our child) to exit, and reap it."""
    with trio.move_on_after(within):
        while os.waitpid(pgid, os.WNOHANG) == (0, 0):  # noqa: ASYNC222 (WNOHANG)
            await trio.sleep(0.02)
    assert process_start_time(pgid) is None, f"group leader {pgid} still there"


# `sleep` outlives the demo in its group. "exits": the leader is the demo, which exits at stdin
# EOF, so the orphaned group has no leader; "lives": a shell that waits for `sleep` leads it.
LEADERS = {
    "leader-exits": ORPHANING_DEMO,
    "leader-lives": ["sh", "-c", f"sleep 300 & {DEMO}; wait"],
}


@pytest.mark.parametrize("leader", sorted(LEADERS))
async def test_kill_9_mid_turn_then_restart(
    tmp_path: Path, groups: list[int], subreaper: list[int], leader: str
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, LEADERS[leader]) as conv,
        ):
            assert await conv.send("/slow 200") == 1
            second, third = await conv.send("/echo second"), await conv.send("/echo third")
            assert (second, third) == (2, 3)
            # Let text stream for more than draft_interval (1 s), until a draft is stored.
            await conv.delta()
            first_delta = time.monotonic()
            while True:
                await conv.delta()
                if time.monotonic() - first_delta < 1.5 or len(conv.deltas) < 3:
                    continue
                with stored(daemon) as s:
                    if s.drafts(conv.id):
                        break
            streamed = "".join(d["text"] for d in conv.deltas)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            subreaper.extend(group_members(pgid))
            daemon.proc.send_signal(signal.SIGKILL)
            assert await daemon.proc.wait() == -signal.SIGKILL
            if leader == "leader-exits":
                await reap_leader(pgid, 5)
            else:
                assert process_start_time(pgid) is not None
            assert group_alive(pgid), "the agent group should have outlived the daemon"
        # Same data dir, same socket path (the stale socket is replaced).
        async with running_daemon(tmp_path) as daemon, attached(daemon, conv.id) as conv:
            # (a) The orphaned group was killed at startup, and its record removed.
            await wait_group_gone(pgid, 5)
            assert pgid not in agent_groups(daemon)
            await conv.turn_ended(third)
            groups.extend(agent_groups(daemon))
            # (b) The unfinished turn is closed, after the text saved so far.
            closed = conv.index(ended(1))
            assert conv.events[closed]["stop_reason"] == "daemon_restarted"
            partial = conv.events[closed - 1]
            assert partial["type"] == "agent_message", conv.events
            assert partial["partial"] is True
            assert partial["prompt_seq"] == 1
            assert counted(partial["text"]), partial
            assert partial["text"].startswith(streamed) or streamed.startswith(partial["text"])
            # (c) Every acknowledged message kept; the queue continues, each prompted once.
            users = [(e["seq"], e["text"]) for e in conv.of_type("user_message")]
            assert users == [(1, "/slow 200"), (2, "/echo second"), (3, "/echo third")]
            assert [e["prompt_seq"] for e in conv.of_type("turn_started")] == [1, 2, 3]
            endings = [(e["prompt_seq"], e["stop_reason"]) for e in conv.of_type("turn_ended")]
            assert endings == [(1, "daemon_restarted"), (2, "end_turn"), (3, "end_turn")]
            replies = [(e["prompt_seq"], e["text"]) for e in conv.of_type("agent_message")]
            assert replies[1:] == [(2, "second"), (3, "third")]
            # (d) The agent came back with session/load, between the closed turn and the next.
            (restarted,) = conv.of_type("agent_restarted")
            assert restarted["reason"] == "daemon_restarted"
            assert restarted["session_loaded"] is True
            assert closed < conv.events.index(restarted) < conv.index(started(second))
            assert (await conv.call("messages/queue"))["pending"] == []
            info = (await conv.call("conversations/get"))["conversation"]
            assert (info["status"], info["queued"]) == ("idle", 0)
            await sigterm_and_time(daemon)
