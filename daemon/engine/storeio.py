"""The store from trio: one writer, and readers that never wait behind each other's big reads.

`store/` is synchronous (DESIGN.md); every call runs in a worker thread through
`trio.to_thread.run_sync` with a capacity-1 limiter per connection, so SQLite never sees two
threads on one connection and the event loop never waits on disk. `abandon_on_cancel` stays
False: a commit always finishes.

Three connections: the writer; a reader for the small, frequent reads (a conversation's row,
its queue head, a list page); and a bulk reader for what can be megabytes (event pages,
replays), so an 8 MiB replay page never delays a turn loop's queue read. In WAL mode readers
never block the writer, nor it them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import attrs
import trio

from store import Store, StoreError

__all__ = ["StoreIO", "StoreIOStatistics"]

T = TypeVar("T")
log = logging.getLogger(__name__)


@attrs.frozen
class StoreIOStatistics:
    calls_in_flight: int  # store calls running in (or waiting for) a worker thread
    writes: int  # calls made on the writer since start
    reads: int
    bulk_reads: int


@attrs.define(eq=False)
class StoreIO:
    _writer: Store
    _reader: Store
    _bulk_reader: Store
    _wlimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _rlimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _blimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _settle_due: trio.Event = attrs.field(factory=trio.Event)
    _in_flight: int = 0
    _writes: int = 0
    _reads: int = 0
    _bulk_reads: int = 0

    @classmethod
    def open_sync(cls, writer: Store) -> StoreIO:
        """Around an open writer: opens the two readers on the same file (blocking)."""
        reader = writer.reader()
        try:
            bulk = writer.reader()
        except BaseException:
            reader.close()
            raise
        return cls(writer, reader, bulk)

    async def write(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(writer)` on the writer connection's thread."""
        self._writes += 1
        return await self._run(fn, self._writer, self._wlimit)

    async def read(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(reader)`: for small reads (a row, a queue head, a page of the list)."""
        self._reads += 1
        return await self._run(fn, self._reader, self._rlimit)

    async def read_bulk(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(reader)` on the bulk reader: for reads that may be megabytes (event pages)."""
        self._bulk_reads += 1
        return await self._run(fn, self._bulk_reader, self._blimit)

    async def _run(self, fn: Callable[[Store], T], store: Store, limit: trio.CapacityLimiter) -> T:
        self._in_flight += 1
        try:
            return await trio.to_thread.run_sync(fn, store, limiter=limit)
        finally:
            self._in_flight -= 1

    def statistics(self) -> StoreIOStatistics:
        return StoreIOStatistics(self._in_flight, self._writes, self._reads, self._bulk_reads)

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
        self._bulk_reader.close()
        self._reader.close()
        self._writer.close()
