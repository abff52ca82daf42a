"""The store from trio: one writer, and readers that never wait behind each other's big reads.

`store/` is synchronous (DESIGN.md); every call runs in a worker thread through
`trio.to_thread.run_sync` with a capacity-1 limiter per connection, so SQLite never sees two
threads on one connection and the event loop never waits on disk. `abandon_on_cancel` stays
False: a commit always finishes.

Three connections: the writer; a reader for the small, frequent reads (a conversation's row,
its queue head, a list page); and a bulk reader for what can be megabytes (event pages,
replays), so an 8 MiB replay page never delays a turn loop's queue read. In WAL mode readers
never block the writer, nor it them.

Health: a write refused with `StorageUnavailable` (disk full, I/O error, read-only, the file
deleted or replaced) starts a spell of unavailability, logged once; the next write that goes
through ends it (logged once too). While a spell lasts, `run_upkeep` tries a small durable
write every `PROBE_INTERVAL`, so the daemon notices that space came back without anyone having
to send, and then writes what was deferred meanwhile (`defer`). Otherwise it looks at the
file every `PROBE_INTERVAL` (two stat calls): a file deleted or replaced while nobody writes
is noticed too, and the status says so (and, under systemd, the daemon restarts).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

import attrs
import trio

from store import StorageUnavailable, Store, StoreError
from store.errors import DELETED

__all__ = ["PROBE_INTERVAL", "Deferring", "StorageHealth", "StoreIO", "StoreIOStatistics"]

T = TypeVar("T")
log = logging.getLogger(__name__)

PROBE_INTERVAL: Final = 5.0  # seconds between looks at the storage (see the module's docstring)


class Deferring(Protocol):
    """Something holding writes deferred by an outage (an event log's status, say)."""

    async def write_deferred(self) -> None: ...


@attrs.frozen
class StorageHealth:
    """A snapshot, for `daemon/status`."""

    cause: str | None  # None: writes go through; else e.g. "disk full" (store.errors)
    message: str | None  # the line clients get: "storage unavailable: disk full"
    since: float | None  # time.time() when this spell began
    refused: int  # writes refused since the daemon started


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
    _problem: StorageUnavailable | None = None
    _since: float | None = None
    _refused: int = 0
    _available: trio.Event = attrs.field(factory=trio.Event)  # set while writes go through
    _unavailable: trio.Event = attrs.field(factory=trio.Event)  # a spell, or deferred writes
    _file_lost: trio.Event = attrs.field(factory=trio.Event)
    _deferred: set[Deferring] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        self._available.set()

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
        """Run `fn(writer)` on the writer connection's thread.

        Raises what `fn` raises; a `StorageUnavailable` also starts (or continues) a spell."""
        self._writes += 1
        try:
            result = await self._run(fn, self._writer, self._wlimit)
        except StorageUnavailable as exc:
            self._refused += 1
            self._failing(exc)
            raise
        if self._problem is not None:
            self._recovered()
        return result

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
        except StorageUnavailable as exc:
            if store is not self._writer:
                self._failing(exc)  # an unreadable disk; only a write can say it is back
            raise
        finally:
            self._in_flight -= 1

    # --- health -----------------------------------------------------------------------------

    def health(self) -> StorageHealth:
        problem = self._problem
        return StorageHealth(
            cause=None if problem is None else problem.cause,
            message=None if problem is None else str(problem),
            since=self._since,
            refused=self._refused,
        )

    async def wait_available(self, *, at_most: float = math.inf) -> None:
        """Return once writes go through again, or after `at_most` seconds."""
        with trio.move_on_after(at_most):
            await self._available.wait()

    async def wait_file_lost(self) -> None:
        """Return once the database file was found deleted or replaced."""
        await self._file_lost.wait()

    def defer(self, owner: Deferring) -> None:
        """Have `owner.write_deferred()` called once writes go through again."""
        self._deferred.add(owner)
        self._unavailable.set()  # let `run_upkeep` see to it, even with no spell on

    def _failing(self, exc: StorageUnavailable) -> None:
        if exc.cause == DELETED:
            self._file_lost.set()
        previous, self._problem = self._problem, exc
        if previous is not None and previous.cause == exc.cause:
            return  # logged already
        if previous is None:
            self._since = time.time()
            self._available = trio.Event()
            self._unavailable.set()
        log.error("%s: writes are refused until it is fixed (%s)", exc, exc.detail)

    def _recovered(self) -> None:
        problem, self._problem = self._problem, None
        self._since = None
        self._available.set()
        if not self._deferred:
            self._unavailable = trio.Event()
        log.warning("storage available again (after: %s)", problem)

    async def run_upkeep(self, *, interval: float = PROBE_INTERVAL) -> None:
        """Every `interval`: while storage is unavailable, probe it with a small durable
        write, and once writes go through, write what was deferred; otherwise look whether
        the file is still there. A failure is never raised."""
        while True:
            with trio.move_on_after(interval):
                await self._unavailable.wait()
            if not self._unavailable.is_set():
                try:  # is the file still there? (that it is says nothing of free space)
                    await self._run(lambda s: s.check_file(), self._writer, self._wlimit)
                except StorageUnavailable as exc:
                    self._failing(exc)
                continue
            if self._problem is not None:
                with trio.move_on_after(interval):
                    await self._available.wait()
                if self._problem is not None:
                    try:
                        await self.write(lambda s: s.check_writable())
                    except StoreError:
                        continue
            owners, self._deferred = self._deferred, set()
            for owner in owners:
                await owner.write_deferred()  # re-defers itself if it fails again
            if self._problem is None and not self._deferred:
                self._unavailable = trio.Event()
            elif self._problem is None:
                await trio.sleep(interval)  # they failed otherwise: try again, not in a loop

    def statistics(self) -> StoreIOStatistics:
        return StoreIOStatistics(self._in_flight, self._writes, self._reads, self._bulk_reads)

    def settle_soon(self) -> None:
        """Have the writer's pending activity bumps (a queued message's `updated_at`, which
        its durable append leaves out) written after the caller's reply, by `run_settler`."""
        self._settle_due.set()

    async def run_settler(self) -> None:
        """Write activity bumps when asked, one write however many asks arrived meanwhile.
        A failure is logged (by `write`, for storage), not raised: the bump stays pending for
        the next write."""
        while True:
            await self._settle_due.wait()
            self._settle_due = trio.Event()
            try:
                await self.write(lambda s: s.flush_activity())
            except StorageUnavailable:
                pass
            except StoreError as exc:
                log.warning("could not record activity: %s", exc)

    def close(self) -> None:
        self._bulk_reader.close()
        self._reader.close()
        self._writer.close()
