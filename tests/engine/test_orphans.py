"""orphans.AgentTracker: every agent's tree is on record from before its spawn until it has been
stopped; a restart ends what a killed daemon left, and only warns about what it found alive."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import trio

from daemon.agents import cgroups
from daemon.agents.cgroups import AgentCgroups
from daemon.agents.connection import AgentSpec, AgentStartError
from daemon.agents.orphans import AgentRecord, AgentTracker, read_records
from daemon.agents.peer import PeerHandlers
from daemon.agents.tree import MARKER, read_proc
from daemon.config import Config
from protocol import acp
from tests.fakes.cgroup import cgroups_unavailable, enter_cgroup, scratch_cgroup

pytestmark = pytest.mark.subprocess

# An "agent" that never answers initialize: a daemon killed now must still find it.
SILENT = (sys.executable, "-c", "import time; time.sleep(60)")
needs_cgroups = pytest.mark.skipif(
    cgroups_unavailable() is not None, reason=f"cgroup v2: {cgroups_unavailable()}"
)


def running(pid: int) -> bool:
    proc = read_proc(pid)
    return proc is not None and proc.running


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[16])


def _records(run: Path) -> list[AgentRecord]:
    return [rec for _, rec in read_records(run) if rec is not None]


def write_record(run: Path, rec: AgentRecord) -> None:
    run.mkdir(exist_ok=True)
    (run / f"agent-{rec.key}").write_bytes(msgspec.json.encode(rec))


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed and reaped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


async def _launch_silent(tmp_path: Path, tracker: AgentTracker, config: Config) -> None:
    spec = AgentSpec(name="silent", argv=SILENT, cwd=str(tmp_path), conversation="c0nv")

    def on_update(_sid: str, _update: acp.SessionUpdate) -> None:
        pass

    async def on_request(_method: str, _raw: msgspec.Raw) -> object:
        return None

    launch = tracker.launcher(lambda: config)
    with pytest.raises(AgentStartError, match="exited during initialize"):
        async with launch(spec, PeerHandlers(on_update=on_update, on_request=on_request)):
            pass


async def _wait_spawned(run: Path) -> AgentRecord:
    while not (recs := [r for r in _records(run) if r.pid]):  # a real child: poll, bounded
        await trio.sleep(0.02)
    (rec,) = recs
    return rec


@pytest.mark.parametrize("with_cgroup", [False, True], ids=["plain", "cgroup"])
async def test_the_tree_is_recorded_before_initialize_answers(
    tmp_path: Path, with_cgroup: bool
) -> None:
    if with_cgroup and cgroups_unavailable():
        pytest.skip(f"cgroup v2: {cgroups_unavailable()}")
    run = tmp_path / "run"
    with scratch_cgroup() if with_cgroup else contextlib.nullcontext() as base:
        tracker = AgentTracker(run, AgentCgroups(base) if base else None)
        config = Config(stop_grace=0.5, agent_nice=3)
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_launch_silent, tmp_path, tracker, config)
                rec = await _wait_spawned(run)
                proc = read_proc(rec.pid)
                assert proc is not None
                assert (rec.conversation, rec.agent, rec.since) == ("c0nv", "silent", proc.start)
                assert (run / f"agent-{rec.key}").exists()
                assert f"{MARKER}={rec.key}".encode() in environ(rec.pid)
                assert nice(rec.pid) == min(os.nice(0) + 3, 19)
                if base:
                    assert rec.cgroup == str(base / f"agent-{rec.key}")
                    assert cgroups.cgroup_of(rec.pid) == Path(rec.cgroup)
                else:
                    assert rec.cgroup == ""
                # What the next daemon does after a kill -9 during this start-up.
                assert AgentTracker(run, AgentCgroups(base) if base else None).reap() == 1
                while running(rec.pid):  # SIGKILL is asynchronous
                    await trio.sleep(0.02)
        assert _records(run) == []
        if base:
            assert not await trio.Path(rec.cgroup).exists()  # removed with its record


def test_only_trees_found_alive_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, children: list[subprocess.Popen[bytes]]
) -> None:
    run = tmp_path / "run"
    # An agent that exited when its daemon died, a zombie now (an init that does not reap).
    exited = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    children.append(exited)
    os.waitid(os.P_PID, exited.pid, os.WEXITED | os.WNOWAIT)
    zombie = read_proc(exited.pid)
    assert zombie is not None
    assert not zombie.running
    write_record(
        run, AgentRecord(key="aa", conversation="gone", pid=zombie.pid, since=zombie.start)
    )
    # One that is long gone, its pid perhaps reused.
    write_record(run, AgentRecord(key="bb", conversation="old", pid=exited.pid, since=1))
    # And one still running.
    alive = subprocess.Popen(SILENT, start_new_session=True)
    children.append(alive)
    proc = read_proc(alive.pid)
    assert proc is not None
    write_record(run, AgentRecord(key="cc", conversation="live", pid=alive.pid, since=proc.start))
    with caplog.at_level(logging.INFO, logger="acpd.orphans"):
        assert AgentTracker(run).reap() == 1
    assert alive.wait(5) == -signal.SIGKILL
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"stopping the agent of conversation live (process group {alive.pid}), "
        "left running by a previous acpd"
    ]
    assert _records(run) == []


def test_marked_processes_are_found_without_a_pid(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A daemon killed between the record and the spawn's pid: the marker finds the tree,
    including processes that left the group, and nothing unmarked is touched."""
    run = tmp_path / "run"
    marked = subprocess.Popen(SILENT, env={MARKER: "k1"}, start_new_session=True)
    unmarked = subprocess.Popen(SILENT, env={MARKER: "k2"}, start_new_session=True)
    children.extend([marked, unmarked])
    write_record(run, AgentRecord(key="k1", conversation="c"))
    assert AgentTracker(run).reap() == 1
    assert marked.wait(5) == -signal.SIGKILL
    assert unmarked.poll() is None


def test_an_older_acpds_record_is_still_reaped(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    leader = subprocess.Popen(SILENT, start_new_session=True)
    children.append(leader)
    proc = read_proc(leader.pid)
    assert proc is not None
    (run / f"agent-{leader.pid}").write_text(f"{leader.pid} {proc.start}\n")
    (run / "agent-garbage").write_text("not a record")
    assert AgentTracker(run).reap() == 1
    assert leader.wait(5) == -signal.SIGKILL
    assert list(run.iterdir()) == []


@needs_cgroups
def test_leftover_cgroups_are_ended_with_or_without_a_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, children: list[subprocess.Popen[bytes]]
) -> None:
    run = tmp_path / "run"
    code = "import os, time; os.setsid(); time.sleep(60)"  # only its cgroup holds it
    with scratch_cgroup() as base:
        agents = AgentCgroups(base)
        for key in ("rec", "norec", "empty"):
            path = agents.create(key)
            if key != "empty":
                children.append(subprocess.Popen(
                    [sys.executable, "-c", code], preexec_fn=functools.partial(enter_cgroup, path)
                ))  # fmt: skip
        write_record(run, AgentRecord(key="rec", conversation="c1", cgroup=str(base / "agent-rec")))
        with caplog.at_level(logging.WARNING, logger="acpd.orphans"):
            assert AgentTracker(run, agents).reap() == 2
        assert agents.leftovers() == []
        assert [child.wait(5) for child in children] == [-signal.SIGKILL] * 2
        assert [r.getMessage() for r in caplog.records] == [
            f"stopping the agent of conversation c1 (cgroup {base / 'agent-rec'}), "
            "left running by a previous acpd",
            f"stopping an unrecorded agent (cgroup {base / 'agent-norec'}), "
            "left running by a previous acpd",
        ]
