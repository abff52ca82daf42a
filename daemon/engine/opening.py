"""Opening the engine: its store and store bridge, the leftovers of a daemon that was killed,
recovery of what it left open; and, on the way out, a graceful stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from daemon.agents import orphans
from daemon.agents.cgroups import AgentCgroups
from daemon.config import Config
from daemon.engine.registry import Engine
from daemon.engine.storeio import StoreIO
from store import STORE_FILE, Store

if TYPE_CHECKING:
    from daemon.agents.connection import Launcher

__all__ = ["open_engine"]


@asynccontextmanager
async def open_engine(
    config: Config,
    data_dir: Path,
    *,
    launcher: Launcher | None = None,
    cgroups: AgentCgroups | None = None,
) -> AsyncIterator[Engine]:
    """Open the store, recover, and run the registry; on exit, stop gracefully.

    `cgroups`: where agents get cgroups of their own (`acpd serve` under systemd delegation).
    """
    path = data_dir / STORE_FILE
    writer = await trio.to_thread.run_sync(Store.open, path)
    try:
        io = await trio.to_thread.run_sync(StoreIO.open_sync, writer)
    except BaseException:
        writer.close()
        raise
    tracker = orphans.AgentTracker(data_dir / "run", cgroups)
    # Leftovers of a daemon that was killed: the tracker logs each one it found running.
    await trio.to_thread.run_sync(tracker.reap)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(io.run_settler)
            nursery.start_soon(io.run_upkeep)
            nursery.start_soon(io.run_checkpoints)
            engine = Engine(
                config, io, launcher or tracker.launcher(lambda: engine.config), data_dir, nursery
            )
            await engine.recover()
            try:
                yield engine
            finally:
                with trio.CancelScope(shield=True):
                    await engine.shutdown()
    finally:
        io.close()
