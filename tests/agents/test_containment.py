"""An agent's whole process tree ends with it: group, marker, descendants, and its cgroup.

Real processes and real time, each test under a `fail_after` hang guard. Nothing signals
another process's exit, so waits poll /proc in bounded loops.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from daemon.agents import cgroups, subreaper
from daemon.agents.cgroups import AgentCgroups
from daemon.agents.connection import AgentSpec, AgentStartError, PeerHandlers
from daemon.agents.launch import open_agent
from daemon.agents.tree import MARKER, AgentTree, read_proc
from tests.fakes.cgroup import cgroups_unavailable, enter_cgroup, scratch_cgroup

pytestmark = pytest.mark.subprocess

needs_cgroups = pytest.mark.skipif(
    cgroups_unavailable() is not None, reason=f"cgroup v2: {cgroups_unavailable()}"
)
SLEEP = (sys.executable, "-c", "import time; time.sleep(60)")
ESCAPER = Path(__file__).with_name("_escaper.py")
_IGNORE = PeerHandlers(on_update=lambda s, u: None)  # these tests look at processes


def running(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.running


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids to SIGKILL at teardown if a failing test left them running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


async def wait_pid_file(path: Path, within: float = 10) -> int:
    with trio.fail_after(within):
        while not await trio.Path(path).exists():
            await trio.sleep(0.02)
    return int(await trio.Path(path).read_text())


def escaper(tmp_path: Path, *flags: str) -> tuple[AgentSpec, Path]:
    pid_file = tmp_path / "grandchild.pid"
    argv = (sys.executable, str(ESCAPER), str(pid_file), *flags)
    env = {"ACPD_DEMO_DIR": str(tmp_path / "demo")}
    return AgentSpec("escaper", argv, str(tmp_path), env), pid_file


@pytest.mark.parametrize(
    "flags", [(), ("--double-fork",)], ids=["parent-lives", "orphaned-at-once"]
)
async def test_stop_ends_a_setsid_grandchild_that_ignores_sigterm(
    tmp_path: Path, leftovers: list[int], flags: tuple[str, ...]
) -> None:
    spec, pid_file = escaper(tmp_path, *flags)
    with trio.fail_after(30):
        async with open_agent(spec, _IGNORE, stop_grace=0.5) as conn:
            grandchild = await wait_pid_file(pid_file)
            leftovers.append(grandchild)
            assert conn.process is not None
            assert os.getsid(grandchild) == grandchild != conn.process.pid  # its own session
            assert os.getpgid(grandchild) != conn.process.pid  # so out of the agent's group
            assert conn.tree is not None
            assert f"{MARKER}={conn.tree.key}".encode() in environ(grandchild)
        assert not running(grandchild)


@needs_cgroups
async def test_in_a_cgroup_not_even_a_scrubbed_environment_escapes(
    tmp_path: Path, leftovers: list[int]
) -> None:
    spec, pid_file = escaper(tmp_path, "--double-fork", "--scrub-env")
    with scratch_cgroup() as base, trio.fail_after(30):
        tree = AgentTree.new()
        tree.cgroup = AgentCgroups(base).create(tree.key)
        async with open_agent(spec, _IGNORE, stop_grace=0.5, tree=tree) as conn:
            grandchild = await wait_pid_file(pid_file)
            leftovers.append(grandchild)
            assert conn.process is not None
            assert cgroups.cgroup_of(conn.process.pid) == tree.cgroup  # from before its exec
            assert cgroups.cgroup_of(grandchild) == tree.cgroup
            assert MARKER.encode() not in environ(grandchild)  # only the cgroup holds it
            assert sorted(cgroups.procs(tree.cgroup)) == sorted([conn.process.pid, grandchild])
        assert not running(grandchild)
        assert not cgroups.populated(tree.cgroup)


@pytest.mark.parametrize("nice", [0, 5, 30])
async def test_agents_run_below_the_daemon(tmp_path: Path, nice: int) -> None:
    code = "import os, sys; sys.stderr.write('nice %d\\n' % os.nice(0)); sys.exit(5)"
    spec = AgentSpec("nice", (sys.executable, "-c", code), str(tmp_path))
    with trio.fail_after(10), pytest.raises(AgentStartError) as info:
        async with open_agent(spec, _IGNORE, nice=nice):
            pytest.fail("must not start")
    assert str(info.value).endswith(f"nice {min(os.nice(0) + nice, 19)}")


def test_membership_by_marker_and_by_group(leftovers: list[int]) -> None:
    marked = AgentTree.new()
    with (
        subprocess.Popen(SLEEP, env={MARKER: marked.key}, start_new_session=True) as by_marker,
        subprocess.Popen(SLEEP, start_new_session=True) as leader,
    ):
        leftovers.extend([by_marker.pid, leader.pid])
        try:
            assert list(marked.members()) == [by_marker.pid]
            assert AgentTree.new().members() == {}
            group = AgentTree("", leader=leader.pid)
            group.spawned(leader.pid)
            assert list(group.members()) == [leader.pid]
            # A live process with the leader's pid but another start time is not our leader:
            # our group is gone and the pid was reused, so nothing of that group is ours.
            reused = AgentTree("", since=group.since - 1, leader=leader.pid)
            assert reused.members() == {}
            assert group.kill() == 1
            assert leader.wait(5) == -signal.SIGKILL
            assert marked.signal(signal.SIGTERM) == 1
            assert by_marker.wait(5) == -signal.SIGTERM
        finally:
            by_marker.kill()
            leader.kill()


def _exits_quickly() -> int:
    """A child that exits at once; returns once it is a zombie (exited, not reaped)."""
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], os.environ)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # blocks until it exits; reaps nothing
    return pid


def test_the_reaper_leaves_managed_children_to_trio() -> None:
    assert subreaper.reap_adopted() is True  # nothing of ours waiting
    managed = _exits_quickly()
    adopted = _exits_quickly()
    subreaper.manage(managed)
    try:
        # The managed zombie comes first and hides the other: wait for its owner to reap it.
        assert subreaper.reap_adopted() is False
        assert read_proc(adopted) is not None
        assert os.waitpid(managed, 0)[0] == managed  # what trio's Process.wait does
        assert subreaper.reap_adopted() is True
        assert read_proc(adopted) is None  # reaped
        with subreaper.spawning():  # a child that exits before `manage` names it is spared
            early = _exits_quickly()
            assert subreaper.reap_adopted() is False
            assert read_proc(early) is not None
        assert subreaper.reap_adopted() is True
        assert read_proc(early) is None
    finally:
        subreaper.release(managed)


@needs_cgroups
@pytest.mark.parametrize("delegated", [True, False])
def test_the_daemon_moves_into_a_leaf_of_a_delegated_cgroup(delegated: bool) -> None:
    code = (
        "from daemon.agents.cgroups import AgentCgroups, cgroup_of\n"
        "found, note = AgentCgroups.setup()\n"
        "print(found and found.base, cgroup_of(), note, sep='\\n')\n"
    )
    with scratch_cgroup(delegated=delegated) as base:
        out = subprocess.run(
            [sys.executable, "-c", code],
            preexec_fn=lambda: enter_cgroup(base),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    if delegated:
        assert out[:2] == [str(base), str(base / "daemon")]
        assert out[2] == f"agents get cgroups of their own under {base}"
    else:
        assert out[:2] == ["None", str(base)]  # not ours: left alone
        assert out[2] == f"cgroup {base} is not delegated to acpd (systemd's Delegate=yes)"


@needs_cgroups
def test_a_stopping_daemon_sweeps_agent_cgroups_left_running(leftovers: list[int]) -> None:
    with scratch_cgroup() as base:
        agents = AgentCgroups(base)
        busy, idle = agents.create("busy"), agents.create("idle")
        (base / "daemon").mkdir()  # not an agent's: left alone
        child = subprocess.Popen(SLEEP, preexec_fn=functools.partial(enter_cgroup, busy))
        leftovers.append(child.pid)
        assert agents.sweep() == 1
        assert child.wait(5) == -signal.SIGKILL
        assert not busy.exists()
        assert not idle.exists()
        assert (base / "daemon").exists()
