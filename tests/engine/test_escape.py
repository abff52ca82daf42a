"""Nothing an agent starts outlives it (issue 14), with `acpd serve` as a real process.

The agent (tests/agents/_escaper.py) leaves a grandchild that calls setsid(), ignores SIGTERM and
was orphaned at once by a double fork: out of the agent's process group and session, and no
longer below it. It must be gone after `rm` of its conversation, after the daemon stops, and
after kill -9 of the daemon followed by a restart. Two ways to hold it:

- "plain": no cgroup. acpd is a child subreaper, so the orphan comes back to it, and the agent's
  marker (`ACPD_AGENT_ID`) in its environment names its conversation's agent.
- "cgroup": the daemon starts in a cgroup marked delegated, as systemd's `Delegate=yes` leaves
  it; each agent gets a cgroup of its own. The grandchild also wipes its environment here:
  only the cgroup holds it, and that is enough.

Real time, a hang guard per test; waits for another process's exit poll /proc, bounded.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from daemon.agents import cgroups
from daemon.agents.tree import read_proc
from tests.engine.realdaemon import Conv, call, config, created, sigterm_and_time
from tests.fakes.cgroup import cgroups_unavailable, scratch_cgroup
from tests.server.test_serve import Daemon, running_daemon

pytestmark = pytest.mark.subprocess

GUARD = 45
ESCAPER = Path(__file__).parents[1] / "agents" / "_escaper.py"
FLAGS = {"plain": ("--double-fork",), "cgroup": ("--double-fork", "--scrub-env")}


def running(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.running


async def wait_gone(pid: int, within: float = 5) -> None:
    with trio.move_on_after(within):
        while running(pid):
            await trio.sleep(0.02)
    assert not running(pid), f"process {pid} survived"


@pytest.fixture(params=sorted(FLAGS))
def mode(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path | None]]:
    """("plain", None), or ("cgroup", a delegated scratch cgroup to start the daemon in)."""
    if request.param == "plain":
        yield "plain", None
        return
    if (reason := cgroups_unavailable()) is not None:
        pytest.skip(f"cgroup v2: {reason}")
    with scratch_cgroup(delegated=True) as base:
        yield "cgroup", base


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


@asynccontextmanager
async def escaping(
    daemon: Daemon, tmp_path: Path, flags: tuple[str, ...], leftovers: list[int]
) -> AsyncIterator[tuple[Conv, int]]:
    """A conversation whose agent has left its grandchild behind: (conversation, its pid)."""
    pid_file = tmp_path / "grandchild.pid"
    pid_file.unlink(missing_ok=True)
    async with created(
        daemon, tmp_path, [sys.executable, str(ESCAPER), str(pid_file), *flags]
    ) as conv:
        seq = await conv.send("/echo hi")
        assert (await conv.turn_ended(seq))["stop_reason"] == "end_turn"
        while not pid_file.exists():  # written as the agent started, before it answered
            await trio.sleep(0.02)
        grandchild = int(pid_file.read_text())
        leftovers.append(grandchild)
        assert running(grandchild)
        assert os.getsid(grandchild) == grandchild  # a session (and group) of its own
        yield conv, grandchild


def check_held(mode: tuple[str, Path | None], grandchild: int) -> Path | None:
    """Where the grandchild is held: its agent's cgroup (cgroup mode), else None."""
    kind, base = mode
    if kind == "plain":
        return None
    assert base is not None
    where = cgroups.cgroup_of(grandchild)
    assert where is not None
    assert where.parent == base
    assert where.name.startswith("agent-")
    assert cgroups.cgroup_of(os.getpid()) != where
    return where


async def test_rm_ends_the_agents_whole_tree(
    tmp_path: Path, mode: tuple[str, Path | None], leftovers: list[int]
) -> None:
    args = config(tmp_path, "stop_grace = 0.5\n")
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path, *args, cgroup=mode[1]) as daemon:
            async with escaping(daemon, tmp_path, FLAGS[mode[0]], leftovers) as (conv, pid):
                where = check_held(mode, pid)
                assert await call(conv.client, "conversations/delete", {"id": conv.id}) == {}
                await wait_gone(pid)
                # It had come back to acpd (the subreaper), which reaped it: no zombie left.
                with trio.fail_after(5):
                    while read_proc(pid) is not None:
                        await trio.sleep(0.02)
                if where is not None:
                    assert not where.exists()  # its cgroup went with it
            await sigterm_and_time(daemon)


async def test_daemon_stop_ends_every_agents_tree(
    tmp_path: Path, mode: tuple[str, Path | None], leftovers: list[int]
) -> None:
    args = config(tmp_path, "stop_grace = 0.5\n")
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path, *args, cgroup=mode[1]) as daemon:
            async with escaping(daemon, tmp_path, FLAGS[mode[0]], leftovers) as (_, pid):
                check_held(mode, pid)
                await sigterm_and_time(daemon)
            await wait_gone(pid)
            if mode[1] is not None:
                assert cgroups.AgentCgroups(mode[1]).leftovers() == []


async def test_daemon_stop_ends_an_orphan_that_nothing_names(
    tmp_path: Path, leftovers: list[int]
) -> None:
    """Without a cgroup, an orphan that also wiped its environment cannot be told apart from
    other agents' processes: its agent's stop misses it. It is below acpd all the same (the
    subreaper), and a stopping daemon ends everything below it."""
    args = config(tmp_path, "stop_grace = 0.5\n")
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path, *args) as daemon:
            flags = ("--double-fork", "--scrub-env")
            async with escaping(daemon, tmp_path, flags, leftovers) as (_, pid):
                proc = read_proc(pid)
                assert proc is not None
                assert proc.ppid == daemon.proc.pid  # orphaned, and come back to acpd
                await sigterm_and_time(daemon)
            await wait_gone(pid)
            assert b"killed 1 process(es) of agents still running at exit" in daemon.stderr


async def test_kill_9_then_restart_ends_what_the_dead_daemon_left(
    tmp_path: Path, mode: tuple[str, Path | None], leftovers: list[int]
) -> None:
    args = config(tmp_path, "stop_grace = 0.5\n")
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path, *args, cgroup=mode[1]) as daemon,
            escaping(daemon, tmp_path, FLAGS[mode[0]], leftovers) as (_, pid),
        ):
            check_held(mode, pid)
            daemon.proc.send_signal(signal.SIGKILL)
            assert await daemon.proc.wait() == -signal.SIGKILL
        assert running(pid), "the grandchild should have outlived the daemon"
        async with running_daemon(tmp_path, *args, cgroup=mode[1]) as daemon:
            await wait_gone(pid)
            assert b"left running by a previous acpd" in daemon.stderr
            await sigterm_and_time(daemon)
