"""Agents outlive a daemon killed with SIGKILL; the next daemon finds and stops them.

Every agent process group we start gets a small file in `data_dir/run/` naming its pid and the
kernel's start time for it; the file goes when the agent is stopped. At startup, any file left
names a group from a dead daemon: if a process with that pid *and* that start time still exists
(not a reused pid), its whole group is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from daemon.agents.connection import (
    AgentConnection,
    AgentSpec,
    Launcher,
    PeerHandlers,
    open_agent,
)
from daemon.config import Config

__all__ = ["AgentTracker", "process_start_time"]

log = logging.getLogger("acpd.orphans")


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _left_running(pgid: int, start: str) -> bool:
    """Whether agent group `pgid`, whose leader started at `start`, still has a live process.

    The leader may be gone while its children live on in the group (the demo agent exits at
    stdin EOF when the daemon dies; `sleep` it started does not). Linux does not reuse a pid
    while a group is named after it, so a leaderless group `pgid` is ours unless all of it
    died and the pid came round again since; as a sanity check, its members must have started
    no earlier than our leader.
    """
    leader = process_start_time(pgid)
    if leader is not None:
        return leader == start  # the leader itself, or a process that reused its pid
    try:
        since = int(start)
        names = [n for n in os.listdir("/proc") if n.isdigit()]
    except (ValueError, OSError):
        return False
    for name in names:
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
            fields = stat[stat.rfind(b")") + 2 :].split()  # state, ppid, pgrp, ..., starttime
            member = (
                len(fields) > 19
                and int(fields[2]) == pgid
                and fields[0] not in (b"Z", b"X")
                and int(fields[19]) >= since
            )
        except (OSError, ValueError):  # gone meanwhile, or a stat line we cannot read
            continue
        if member:
            return True
    return False


@attrs.define(eq=False)
class AgentTracker:
    run_dir: Path

    def reap(self) -> int:
        """Kill agent groups left by a dead daemon. Returns how many were found alive."""
        killed = 0
        try:
            entries = list(self.run_dir.iterdir())
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.startswith("agent-"):
                continue
            try:
                pid_s, start = entry.read_text().split()
                pid = int(pid_s)
            except (OSError, ValueError):
                pid, start = 0, ""
            if pid > 0 and _left_running(pid, start):
                log.warning("stopping agent process group %d left by a previous acpd", pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                killed += 1
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        return killed

    def _track(self, pid: int) -> Path | None:
        start = process_start_time(pid)
        if start is None:
            return None
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.run_dir / f"agent-{pid}"
        path.write_text(f"{pid} {start}\n")
        return path

    def _untrack(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def launcher(self, config: Callable[[], Config]) -> Launcher:
        """`open_agent`, with each agent's group recorded while it runs."""
        tracker = self

        @asynccontextmanager
        async def launch(spec: AgentSpec, handlers: PeerHandlers) -> AsyncIterator[AgentConnection]:
            path: Path | None = None

            def spawned(proc: trio.Process) -> None:
                # At once, not after initialize: a daemon killed during start-up leaves it too.
                # The group leader's pid is the group id (start_new_session=True).
                nonlocal path
                try:
                    path = tracker._track(proc.pid)
                except OSError as exc:  # untracked is better than unstarted
                    log.warning("cannot record agent process group %d: %s", proc.pid, exc)

            try:
                async with open_agent(
                    spec,
                    handlers,
                    on_spawn=spawned,
                    stop_grace=config().stop_grace,
                ) as conn:
                    yield conn
            finally:
                # open_agent's exit has stopped the whole group by now.
                if path is not None:
                    tracker._untrack(path)

        return launch
