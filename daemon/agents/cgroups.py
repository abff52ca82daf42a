"""cgroup v2 for agents: each one in a cgroup of its own, below the one delegated to acpd.

acpd uses a cgroup only where it was delegated to it: systemd's `Delegate=yes` marks the unit's
cgroup with the `trusted.delegate` (or, from systemd 251 on, `user.delegate`) extended
attribute. Anywhere else the tree belongs to someone else, and acpd leaves it alone.

Layout below the delegated cgroup BASE (cgroup v2 allows no processes in a cgroup that has
children with controllers, so the daemon first moves itself into a leaf):

    BASE/daemon         acpd itself
    BASE/agent-KEY      one agent and everything it starts; `cgroup.kill` ends all of it

Synchronous file-system calls on cgroupfs: callers on the event loop use a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path
from typing import Final

import attrs

__all__ = [
    "AGENT_PREFIX",
    "DAEMON_LEAF",
    "AgentCgroups",
    "cgroup_of",
    "delegated",
    "kill",
    "open_procs",
    "populated",
    "procs",
    "remove",
    "wait_empty",
]

DAEMON_LEAF: Final = "daemon"
AGENT_PREFIX: Final = "agent-"
_DELEGATE_XATTRS: Final = ("trusted.delegate", "user.delegate")
_KILL_ROUNDS: Final = 8


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _cgroup2_mounts() -> list[tuple[str, Path]]:
    """(root inside the hierarchy, mount point) of each cgroup2 mount we can see."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            mounts.append((_unescape(fields[3]), Path(_unescape(fields[4]))))
    return mounts


def cgroup_of(pid: int | str = "self") -> Path | None:
    """The directory of `pid`'s cgroup v2 (`/sys/fs/cgroup/...`, or under
    `/sys/fs/cgroup/unified` on a hybrid system), or None without a visible hierarchy."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    for root, mount in _cgroup2_mounts():
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return mount / path[len(root) :].lstrip("/")
    return None


def delegated(path: Path) -> bool:
    """Whether systemd delegated `path` (marked it with a `delegate` extended attribute)."""
    for name in _DELEGATE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(path, name) == b"1":
                return True
    return False


def populated(path: Path) -> bool:
    """Whether a live process is in `path` or below (zombies are not)."""
    try:
        events = (path / "cgroup.events").read_text()
    except FileNotFoundError:
        return False
    return "populated 1" in events.splitlines()


def procs(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except (FileNotFoundError, ValueError):
        return []


def open_procs(path: Path) -> int:
    """A descriptor on `path`'s `cgroup.procs` (close-on-exec): a child writes `0` to it
    between fork and exec to enter the cgroup before it runs anything."""
    return os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


def kill(path: Path) -> None:
    """SIGKILL everything in `path` (`cgroup.kill`; before Linux 5.14, each listed process
    until none is left)."""
    try:
        (path / "cgroup.kill").write_text("1")
        return
    except FileNotFoundError:
        if not path.exists():
            return
    for _ in range(_KILL_ROUNDS):
        pids = procs(path)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def remove(path: Path) -> None:
    """rmdir `path` (a cgroup with live processes cannot be removed: OSError EBUSY)."""
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def wait_empty(path: Path, within: float) -> bool:
    """Block (a worker thread) until `path` has no live process, at most `within` seconds."""
    deadline = time.monotonic() + within
    while populated(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@attrs.frozen
class AgentCgroups:
    """The delegated cgroup acpd puts its agents below."""

    base: Path

    @classmethod
    def setup(cls) -> tuple[AgentCgroups | None, str]:
        """At start-up, before any agent: find the delegated cgroup and move the daemon into
        its `daemon` leaf. Returns the agents' cgroups (None without delegation) and a line
        for the log saying which."""
        own = cgroup_of()
        if own is None:
            return None, "no cgroup v2 hierarchy"
        if delegated(own):
            leaf = own / DAEMON_LEAF
            try:
                leaf.mkdir(exist_ok=True)
                (leaf / "cgroup.procs").write_text(str(os.getpid()))
            except OSError as exc:
                return None, f"cannot move acpd into {leaf}: {exc.strerror or exc}"
            return cls(own), f"agents get cgroups of their own under {own}"
        if delegated(own.parent):  # already in a leaf of a delegated cgroup
            return cls(own.parent), f"agents get cgroups of their own under {own.parent}"
        return None, f"cgroup {own} is not delegated to acpd (systemd's Delegate=yes)"

    def create(self, key: str) -> Path:
        path = self.base / f"{AGENT_PREFIX}{key}"
        path.mkdir()
        return path

    def leftovers(self) -> list[Path]:
        """Agents' cgroups that exist now (a previous daemon's, at start-up)."""
        try:
            entries = list(self.base.iterdir())
        except OSError:
            return []
        return [p for p in entries if p.name.startswith(AGENT_PREFIX) and p.is_dir()]

    def sweep(self, within: float = 5.0) -> int:
        """Kill and remove every agent cgroup left, all within one bound of `within` seconds;
        returns how many still had processes."""
        live = [path for path in self.leftovers() if populated(path)]
        for path in live:
            kill(path)
        deadline = time.monotonic() + within
        for path in self.leftovers():
            wait_empty(path, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                remove(path)
        return len(live)
