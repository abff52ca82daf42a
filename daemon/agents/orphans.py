"""Agents outlive a daemon killed with SIGKILL; the next daemon finds and ends them.

Every agent we start has a record in `data_dir/run/agent-KEY` while it runs: its conversation,
its tree's key (the `ACPD_AGENT_ID` marker in its environment), its cgroup if it has one, and,
from its spawn on, its pid (= its process group) and the kernel's start time for it. The record
goes when the agent has been stopped. At start-up, any record left names the tree of an agent
whose daemon died: whatever of it still runs is killed, by cgroup where there is one, else by
process group and marker (`daemon.agents.tree`). Agent cgroups left without a record (a daemon
killed between creating one and recording it) are ended too.

The files are written in worker threads, the first one before the spawn and the full one right
after it, before `initialize`: from then on a daemon killed at any moment leaves a record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import msgspec
import trio

from daemon.agents import cgroups, subreaper
from daemon.agents.cgroups import AgentCgroups
from daemon.agents.tree import AgentTree, read_proc
from daemon.config import Config

if TYPE_CHECKING:
    from daemon.agents.connection import AgentConnection, AgentSpec, Launcher, PeerHandlers

__all__ = ["AgentRecord", "AgentTracker", "process_start_time", "read_records"]

log = logging.getLogger("acpd.orphans")

_PREFIX: Final = "agent-"
_KILL_BOUND: Final = 5.0  # seconds to wait for a killed tree to be gone


class AgentRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What `data_dir/run/agent-KEY` holds (JSON)."""

    key: str  # the tree's marker; "" for a record of an older acpd (process group only)
    conversation: str = ""
    agent: str = ""
    pid: int = 0  # the leader, = the process group; 0 until spawned
    since: int = 0  # the leader's start time, or before the spawn its daemon's
    cgroup: str = ""  # the agent's cgroup directory, if it has one

    def tree(self) -> AgentTree:
        """The tree as the next daemon sees it: no subreaper view (the old daemon is gone)."""
        return AgentTree(
            self.key,
            self.since,
            Path(self.cgroup) if self.cgroup else None,
            leader=self.pid,
        )

    def describe(self) -> str:
        whose = f"conversation {self.conversation}" if self.conversation else "no conversation"
        where = f"cgroup {self.cgroup}" if self.cgroup else f"process group {self.pid}"
        return f"the agent of {whose} ({where})"


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if no such process."""
    proc = read_proc(pid)
    return None if proc is None else str(proc.start)


def _parse(text: str) -> AgentRecord | None:
    if text.startswith("{"):
        try:
            return msgspec.json.decode(text, type=AgentRecord)
        except msgspec.DecodeError:
            return None
    try:  # an older acpd's "PID START" line: its process group only
        pid_s, start = text.split()
        return AgentRecord(key="", pid=int(pid_s), since=int(start))
    except ValueError:
        return None


def read_records(run_dir: Path) -> list[tuple[Path, AgentRecord | None]]:
    """Every agent record in `run_dir` (None for a file that does not parse)."""
    try:
        entries = sorted(p for p in run_dir.iterdir() if p.name.startswith(_PREFIX))
    except FileNotFoundError:
        return []
    found = []
    for path in entries:
        try:
            found.append((path, _parse(path.read_text())))
        except OSError:
            continue  # removed meanwhile
    return found


def _daemon_start() -> int:
    proc = read_proc(os.getpid())
    return 0 if proc is None else proc.start


@attrs.define(eq=False)
class AgentTracker:
    run_dir: Path
    cgroups: AgentCgroups | None = None  # where agents' cgroups go, if acpd has a delegated one

    def reap(self) -> int:
        """End what agents left by a dead daemon still run. Returns how many agents were found
        with a live process (only those are logged)."""
        found = 0
        recorded = set()
        for path, rec in read_records(self.run_dir):
            if rec is not None:
                if rec.cgroup:
                    recorded.add(Path(rec.cgroup))
                if self._end(rec.tree(), rec.describe()):
                    found += 1
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for tmp in self.run_dir.glob(f".{_PREFIX}*") if self.run_dir.exists() else ():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # a record being written when the daemon died
        if self.cgroups is not None:
            for path in self.cgroups.leftovers():
                if path not in recorded and self._end(
                    AgentTree("", cgroup=path), f"an unrecorded agent (cgroup {path})"
                ):
                    found += 1
        return found

    @staticmethod
    def _end(tree: AgentTree, what: str) -> bool:
        alive = tree.alive()
        if alive:
            log.warning("stopping %s, left running by a previous acpd", what)
            tree.kill()
            if tree.cgroup is not None:
                cgroups.wait_empty(tree.cgroup, _KILL_BOUND)
        if not tree.release():
            log.warning("cannot remove cgroup %s: it still has processes", tree.cgroup)
        return alive

    def _write(self, rec: AgentRecord) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.run_dir / f"{_PREFIX}{rec.key}"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_bytes(msgspec.json.encode(rec))
        tmp.replace(path)  # never a half-written record

    def _prepare(self, spec: AgentSpec) -> tuple[AgentTree, AgentRecord]:
        """Before the spawn: the tree (with its cgroup, if we can make one) and its record."""
        within = os.getpid() if subreaper.is_active() else None
        tree = AgentTree.new(since=_daemon_start(), within=within)
        if self.cgroups is not None:
            try:
                tree.cgroup = self.cgroups.create(tree.key)
            except OSError as exc:  # contained by group, marker and subreaper still
                log.warning("agent %s: cannot make its cgroup: %s", spec.name, exc)
        rec = AgentRecord(
            key=tree.key,
            conversation=spec.conversation,
            agent=spec.name,
            since=tree.since,
            cgroup=str(tree.cgroup or ""),
        )
        try:
            self._write(rec)
        except OSError as exc:  # untracked is better than unstarted
            log.warning("cannot record agent %s: %s", spec.name, exc)
        return tree, rec

    def _spawned(self, rec: AgentRecord, tree: AgentTree) -> None:
        try:
            self._write(msgspec.structs.replace(rec, pid=tree.leader, since=tree.since))
        except OSError as exc:
            log.warning("cannot record agent process group %d: %s", tree.leader, exc)

    def _forget(self, tree: AgentTree) -> None:
        """After the agent was stopped: end anything its stop did not reach (a spawn cut short),
        remove its cgroup, and drop the record (kept if the cgroup is still there)."""
        if tree.leader == 0 or tree.cgroup is not None:
            self._end_quietly(tree)
        if tree.release():
            with contextlib.suppress(FileNotFoundError):
                (self.run_dir / f"{_PREFIX}{tree.key}").unlink()
        else:
            log.warning("cannot remove cgroup %s: it still has processes", tree.cgroup)

    @staticmethod
    def _end_quietly(tree: AgentTree) -> None:
        if tree.alive():
            tree.kill()
            if tree.cgroup is not None:
                cgroups.wait_empty(tree.cgroup, _KILL_BOUND)

    def launcher(self, config: Callable[[], Config]) -> Launcher:
        """`open_agent`, with each agent's tree recorded while it runs."""
        tracker = self

        @asynccontextmanager
        async def launch(spec: AgentSpec, handlers: PeerHandlers) -> AsyncIterator[AgentConnection]:
            # Here, not at the top: the agents' connection and ACP peer load with the first
            # agent started, not before the daemon is ready (its reap at start-up needs none).
            from daemon.agents.launch import open_agent

            with trio.CancelScope(shield=True):  # made, then always forgotten
                tree, rec = await trio.to_thread.run_sync(tracker._prepare, spec)

            async def spawned(_proc: trio.Process) -> None:
                # At once, not after initialize: a daemon killed during start-up leaves it too.
                await trio.to_thread.run_sync(tracker._spawned, rec, tree)

            try:
                settings = config()
                async with open_agent(
                    spec,
                    handlers,
                    on_spawn=spawned,
                    tree=tree,
                    nice=settings.agent_nice,
                    stop_grace=settings.stop_grace,
                ) as conn:
                    yield conn
            finally:
                # open_agent's exit has stopped the whole tree by now.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(tracker._forget, tree)

        return launch
