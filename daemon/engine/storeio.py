"""The store from trio: one writer thread at a time, reads on their own connection.

`store/` is synchronous (DESIGN.md); every call goes through `trio.to_thread.run_sync` with a
capacity-1 limiter per connection, so SQLite never sees two threads on one connection and the
event loop never waits on disk. `abandon_on_cancel` stays False: a commit always finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import attrs
import trio

from store import Store, StoreError

__all__ = ["StoreIO"]

T = TypeVar("T")
log = logging.getLogger(__name__)


@attrs.define(eq=False)
class StoreIO:
    writer: Store
    reader: Store
    # Tests under autojump_clock run calls inline: a task waiting on a thread counts as
    # blocked, so the mock clock would jump past deadlines while SQLite works.
    threads: bool = True
    _wlimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _rlimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _settle_due: trio.Event = attrs.field(factory=trio.Event)

    async def write(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(writer)` on the writer connection's thread."""
        if not self.threads:
            await trio.lowlevel.checkpoint()
            return fn(self.writer)
        return await trio.to_thread.run_sync(fn, self.writer, limiter=self._wlimit)

    async def read(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(reader)` on the read connection, which never blocks the writer (WAL)."""
        if not self.threads:
            await trio.lowlevel.checkpoint()
            return fn(self.reader)
        return await trio.to_thread.run_sync(fn, self.reader, limiter=self._rlimit)

    def settle_soon(self) -> None:
        """Have the writer's pending activity bumps (a queued message's `updated_at`, which
        its durable append leaves out) written after the caller's reply, by `run_settler`."""
        self._settle_due.set()

    async def run_settler(self) -> None:
        """Write activity bumps when asked, one write however many asks arrived meanwhile.
        A failure is logged, not raised: the bump stays pending for the next write."""
        while True:
            await self._settle_due.wait()
            self._settle_due = trio.Event()
            try:
                await self.write(lambda s: s.flush_activity())
            except StoreError as exc:
                log.warning("could not record activity: %s", exc)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
