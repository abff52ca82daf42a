"""Process plumbing for `daemon.agents.connection`: the agent's environment (from
`daemon.agents.environment`), its stderr ring, and signalling a whole process group."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
from typing import Final

import attrs
import trio

from daemon.agents.environment import agent_env

__all__ = [
    "STDERR_TAIL",
    "LogBudget",
    "StderrRing",
    "agent_env",
    "agent_umask",
    "group_alive",
    "printable",
    "remember_umask",
    "signal_group",
    "strip_ansi",
]

STDERR_TAIL: Final = 4096

_agent_umask: int | None = None


def agent_umask() -> int | None:
    """The umask to give agents: the one acpd was started with. The daemon itself runs under
    0o077 (its store, logs and token are the user's only), which files an agent writes in a
    project should not inherit. None: leave the child's umask as it is."""
    return _agent_umask


def remember_umask(mask: int) -> None:
    """Record acpd's original umask for `agent_umask` (called by `acpd serve`)."""
    global _agent_umask
    _agent_umask = mask


# Terminal escapes: CSI (colours, cursor moves), OSC (titles, links) and the two-byte ones.
_ANSI = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()*+][ -~]|\x1b[@-Z\\-_]"
)


def strip_ansi(data: bytes | bytearray) -> bytes:
    """`data` without terminal escape sequences (and without other control characters but
    newline and tab), for text a person reads in an event or a log file."""
    text = _ANSI.sub(b"", data)
    return text.translate(None, _CONTROL)


_CONTROL = bytes(c for c in range(32) if c not in (9, 10)) + b"\x7f"


@attrs.define(eq=False)
class StderrRing:
    """The last `limit` bytes of the agent's stderr."""

    limit: int = STDERR_TAIL
    buf: bytearray = attrs.field(factory=bytearray)
    cut: bool = False

    def add(self, data: bytes | bytearray) -> None:
        self.buf += data
        if len(self.buf) > 2 * self.limit:  # trim in batches, not on every chunk
            del self.buf[: -self.limit]
            self.cut = True

    def text(self) -> str:
        tail = self.buf[-self.limit :]
        if self.cut or len(self.buf) > self.limit:
            nl = tail.find(b"\n")  # start at a line boundary when we had to cut
            if 0 <= nl < len(tail) - 1:
                tail = tail[nl + 1 :]
        return strip_ansi(tail).decode("utf-8", "replace").rstrip()


@attrs.define(eq=False)
class LogBudget:
    """At most `burst` INFO lines per `window` seconds; the rest go to DEBUG."""

    burst: int = 20
    window: float = 10.0
    start: float = -1e9
    used: int = 0

    def log(self, logger: logging.Logger, msg: str, *args: object) -> None:
        now = trio.current_time()
        if now - self.start >= self.window:
            self.start, self.used = now, 0
        self.used += 1
        logger.log(logging.INFO if self.used <= self.burst else logging.DEBUG, msg, *args)


def printable(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    return text if len(text) <= 500 else text[:500] + "..."


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running. Zombies don't count: an init that
    does not reap (containers) leaves orphans as zombies, and they hold no resources."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True  # no /proc: trust kill(0)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False
