"""An agent's process tree: which processes belong to it, and how to end every one of them.

An agent is spawned as the leader of a process group and session of its own, with a marker in
its environment (`ACPD_AGENT_ID=<key>`) and, where acpd has a delegated cgroup, in a cgroup of
its own. What belongs to the agent:

- with a cgroup: everything in it. A process cannot leave a cgroup by forking, `setsid()` or
  losing its parent, so `cgroup.kill` ends the whole tree, whatever it did.
- without one: its process group, every process carrying its marker (inherited through fork and
  exec unless a program replaces its environment), and every descendant of those. While acpd
  runs it is a child subreaper (`daemon.agents.subreaper`), so orphans of the tree come back to
  it instead of init and the search looks only below acpd; after a restart it looks at every
  process started since the agent.

Everything here is synchronous and reads /proc or cgroupfs: callers run it in a worker thread.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

import attrs

from daemon.agents import cgroups

__all__ = [
    "MARKER",
    "AgentTree",
    "Proc",
    "descendants",
    "kill_all",
    "read_proc",
    "send_exact",
    "snapshot",
]

MARKER: Final = "ACPD_AGENT_ID"

# Freeze-and-look rounds before the SIGKILL: each round stops what the last one found, so a
# tree that forks while it is being killed is caught within a few rounds.
_ROUNDS: Final = 8


@attrs.frozen
class Proc:
    """One line of /proc/PID/stat, the fields acpd uses."""

    pid: int
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names a process (pids are reused)
    state: str

    @property
    def running(self) -> bool:
        """Not a zombie: an exited process that its parent has not reaped holds nothing."""
        return self.state not in ("Z", "X")


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return Proc(pid, int(fields[1]), int(fields[2]), int(fields[19]), fields[0].decode())
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def snapshot() -> dict[int, Proc]:
    """Every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (proc := read_proc(int(name))) is not None:
            table[proc.pid] = proc
    return table


def descendants(table: Mapping[int, Proc], roots: Iterable[int]) -> set[int]:
    """`roots` and everything below them in `table` (by parent pid)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for proc in table.values():
        children[proc.ppid].append(proc.pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def _has_marker(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or not ours to read
        return False
    return needle in b"\0" + environ


def send_exact(proc: Proc, sig: int) -> bool:
    """Signal `proc` if it is still the same process (same pid *and* start time): through a
    pidfd, so a pid reused between the check and the signal cannot be hit."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfds (old kernel): check, then signal by pid
        fd = -1
    try:
        current = read_proc(proc.pid)
        if current is None or current.start != proc.start:
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(proc.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd >= 0:
            os.close(fd)


def kill_all(find: Callable[[], Mapping[int, Proc]]) -> dict[int, Proc]:
    """SIGKILL everything `find` returns, found again until nothing new turns up: each round
    SIGSTOPs what it found, so nothing forks out of reach while we look. Returns what was hit."""
    stopped: dict[int, Proc] = {}
    for _ in range(_ROUNDS):
        fresh = [p for pid, p in find().items() if pid not in stopped]
        if not fresh:
            break
        for proc in fresh:
            if send_exact(proc, signal.SIGSTOP):
                stopped[proc.pid] = proc
    for proc in stopped.values():
        send_exact(proc, signal.SIGKILL)
    return stopped


@attrs.define(eq=False)
class AgentTree:
    """One agent's processes (see the module's docstring). Made before the spawn; `spawned`
    names the leader. Safe to rebuild from a record after the daemon that made it died."""

    key: str  # its marker's value; also names its cgroup and its record
    since: int = 0  # no process of the tree started before this (clock ticks after boot)
    cgroup: Path | None = None
    leader: int = 0  # the agent's pid, its process group's id; 0 before the spawn
    # Only processes below this pid can be members (acpd's own pid while it is a subreaper).
    within: int | None = None
    _seen: dict[int, Proc] = attrs.field(factory=dict, init=False)

    @classmethod
    def new(
        cls, *, since: int = 0, cgroup: Path | None = None, within: int | None = None
    ) -> AgentTree:
        return cls(secrets.token_hex(8), since, cgroup, within=within)

    @property
    def env(self) -> dict[str, str]:
        """What the agent's environment gets on top of the rest: its marker."""
        return {MARKER: self.key} if self.key else {}

    def spawned(self, pid: int) -> None:
        """The leader was spawned as `pid` (its group's id); its start time bounds the tree's."""
        self.leader = pid
        if (proc := read_proc(pid)) is not None:
            self.since = proc.start

    def members(self) -> dict[int, Proc]:
        """The tree's live processes (zombies left out), as of now."""
        if self.cgroup is not None:
            found = {}
            for pid in cgroups.procs(self.cgroup):
                if (proc := read_proc(pid)) is not None and proc.running:
                    found[pid] = proc
        else:
            table = snapshot()
            found = {pid: table[pid] for pid in self._scan(table) if table[pid].running}
        self._seen = found
        return found

    def _scan(self, table: Mapping[int, Proc]) -> set[int]:
        me = os.getpid()
        pool = table.keys() if self.within is None else descendants(table, [self.within])
        leader = table.get(self.leader) if self.leader else None
        # The group id is the leader's pid, which is not reused while the group has members:
        # a live process with that pid but another start time means our group is gone.
        group = self.leader if self.leader and (leader is None or leader.start == self.since) else 0
        needle = f"\0{MARKER}={self.key}\0".encode() if self.key else b""
        seeds = [
            pid
            for pid in pool
            if pid != me
            and table[pid].start >= self.since
            and ((group and table[pid].pgid == group) or (needle and _has_marker(pid, needle)))
        ]
        return descendants(table, seeds) - {me}

    def alive(self) -> bool:
        if self.cgroup is not None:
            return cgroups.populated(self.cgroup)
        return bool(self.members())

    def settled(self) -> bool:
        """Whether every process last seen by `members`/`signal`/`kill` is gone (cheap: no
        search for new ones; `alive` does that)."""
        if self.cgroup is not None:
            return not cgroups.populated(self.cgroup)
        for proc in self._seen.values():
            now = read_proc(proc.pid)
            if now is not None and now.start == proc.start and now.running:
                return False
        return True

    def signal(self, sig: int) -> int:
        """Send `sig` to every member; returns how many got it."""
        return sum(send_exact(proc, sig) for proc in self.members().values())

    def kill(self) -> int:
        """SIGKILL the whole tree: `cgroup.kill`, or freeze-and-look without a cgroup. Returns
        how many processes were found (without a cgroup) or whether any were (with one)."""
        if self.cgroup is not None:
            was = cgroups.populated(self.cgroup)
            try:
                cgroups.kill(self.cgroup)
                return int(was)
            except OSError:  # not ours to kill after all: one by one, as listed
                pass
        self._seen = kill_all(self.members)
        return len(self._seen)

    def release(self) -> bool:
        """Remove its cgroup (once empty). False if it could not be removed yet."""
        if self.cgroup is None:
            return True
        with contextlib.suppress(OSError):
            cgroups.remove(self.cgroup)
        return not self.cgroup.exists()
