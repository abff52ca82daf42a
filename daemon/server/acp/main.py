"""`acpd acp`: the front door on this process's stdin and stdout.

stdout carries ACP messages only; the log goes to stderr (an editor keeps it with the agent's
log), at WARNING, or DEBUG with `ACPD_DEBUG=1`. The process ends when stdin does: that
detaches, and the daemon's conversations go on.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

import trio

from daemon.server.acp.door import FrontDoor

__all__ = ["run"]


async def _serve(door: FrontDoor) -> None:
    # Our own descriptors for the pipes: FdStream makes them non-blocking, and nothing else
    # in this process reads stdin or writes stdout.
    stream = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
    async with stream:
        await door.serve(stream)


def run(socket: Path, *, agent: str | None = None, agent_cmd: list[str] | None = None) -> int:
    """Serve ACP on stdin/stdout against the daemon at `socket`; 0 once stdin ends."""
    debug = bool(os.environ.get("ACPD_DEBUG"))
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.WARNING,
        format="acpd acp %(levelname)s: %(message)s",
    )
    connect = functools.partial(trio.open_unix_socket, os.fspath(socket))
    door = FrontDoor(connect, str(socket), agent=agent, agent_cmd=agent_cmd)
    trio.run(_serve, door)
    return 0
