"""A conversation's agent log: the agent's stderr in a file of the data dir, bounded and rotated.

`open_agent` writes every stderr chunk here (escapes stripped), framed by a line when the agent
starts and when it ends, so a person can read what an agent said about a failure long after the
`error` event's short tail. One file per conversation (`paths.agent_log_path`); at `limit`
bytes it becomes `<path>.1` (replacing the older one) and a new file starts, so a conversation
costs at most twice `limit` on disk, however chatty its agent.

Synchronous file I/O: the caller runs `write` in a worker thread (`trio.to_thread`);
`open_agent_log` does that for the opening.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Final

import attrs
import trio

from daemon.agents._process import strip_ansi

__all__ = ["AGENT_LOG_BYTES", "AgentLog", "open_agent_log", "remove_agent_log"]

log = logging.getLogger("acpd.agent")

AGENT_LOG_BYTES: Final = 1024 * 1024


@attrs.define(eq=False)
class AgentLog:
    path: Path
    limit: int = AGENT_LOG_BYTES
    _fd: int = -1
    _size: int = 0

    @classmethod
    def open(cls, path: Path, limit: int = AGENT_LOG_BYTES) -> AgentLog:
        """Open (create) `path` for appending, its directory private. Raises OSError."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = cls(path, limit)
        log._open()
        return log

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def note(self, text: str) -> None:
        """A line of acpd's own, marked and stamped."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        self._append(f"--- {stamp} {text} ---\n".encode())

    def write(self, data: bytes | bytearray) -> None:
        """Append a chunk of stderr, terminal escapes stripped."""
        self._append(strip_ansi(data))

    def _append(self, data: bytes) -> None:
        if self._fd < 0 or not data:
            return
        if self._size and self._size + len(data) > self.limit:
            self._rotate()
        if len(data) > self.limit:  # one chunk over the whole bound: keep its end
            data = data[-self.limit :]
        os.write(self._fd, data)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        os.replace(self.path, _older(self.path))
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _older(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def remove_agent_log(path: Path) -> None:
    """Delete a conversation's agent log and its rotated part (missing ones are fine)."""
    for p in (path, _older(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


async def open_agent_log(path: Path, header: str) -> AgentLog | None:
    """The agent log at `path`, opened (in a thread) and headed with `header`; None, and a
    warning, if it cannot be: an agent runs without its log rather than not at all."""

    def open_it() -> AgentLog:
        agent_log = AgentLog.open(path)
        agent_log.note(header)
        return agent_log

    try:
        return await trio.to_thread.run_sync(open_it)
    except OSError as exc:
        log.warning("cannot open the agent log %s: %s", path, exc)
        return None
