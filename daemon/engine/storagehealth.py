"""Whether storage takes writes: spells of unavailability, and what waits for their end.

A write refused with `StorageUnavailable` (disk full, I/O error, read-only, the file deleted or
replaced) starts a spell of unavailability, logged once; the next write that goes through ends
it (logged once too). While a spell lasts, `run_upkeep` tries a small durable write every
`PROBE_INTERVAL`, so the daemon notices that space came back without anyone having to send,
and then writes what was deferred meanwhile (`defer`). Otherwise it looks at the file every
`PROBE_INTERVAL` (two stat calls): a file deleted or replaced while nobody writes is noticed
too, and the status says so (and, under systemd, the daemon restarts).

The store writer (`storeio.StoreIO`) reports each write's outcome here; it holds no state of
its own about health.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import attrs
import trio

from store import StorageUnavailable, StoreError
from store.errors import DELETED

__all__ = ["PROBE_INTERVAL", "Deferring", "HealthWatch", "StorageHealth"]

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


@attrs.define(eq=False)
class HealthWatch:
    """The storage's health as the writes and reads find it (see the module's docstring)."""

    _problem: StorageUnavailable | None = None
    _since: float | None = None
    _refused: int = 0
    _available: trio.Event = attrs.field(factory=trio.Event)  # set while writes go through
    _unavailable: trio.Event = attrs.field(factory=trio.Event)  # a spell, or deferred writes
    _file_lost: trio.Event = attrs.field(factory=trio.Event)
    _deferred: set[Deferring] = attrs.field(factory=set)

    def __attrs_post_init__(self) -> None:
        self._available.set()

    def snapshot(self) -> StorageHealth:
        problem = self._problem
        return StorageHealth(
            cause=None if problem is None else problem.cause,
            message=None if problem is None else str(problem),
            since=self._since,
            refused=self._refused,
        )

    def refused(self, exc: StorageUnavailable, writes: int = 1) -> None:
        """`writes` writes were refused with `exc`."""
        self._refused += writes
        self.noticed(exc)

    def wrote(self) -> None:
        """A write went through: a spell, if one was on, is over."""
        if self._problem is not None:
            self._recovered()

    def noticed(self, exc: StorageUnavailable) -> None:
        """Storage refused something (a write, a read, a look at the file)."""
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

    async def run_upkeep(
        self,
        check_file: Callable[[], Awaitable[None]],
        probe_write: Callable[[], Awaitable[None]],
        *,
        interval: float,
    ) -> None:
        """Every `interval`: while storage is unavailable, `probe_write` (a small durable
        write, which reports its outcome here), and once writes go through, write what was
        deferred; otherwise `check_file` (is it still there?). A failure is never raised."""
        while True:
            with trio.move_on_after(interval):
                await self._unavailable.wait()
            if not self._unavailable.is_set():
                try:  # is the file still there? (that it is says nothing of free space)
                    await check_file()
                except StorageUnavailable as exc:
                    self.noticed(exc)
                continue
            if self._problem is not None:
                with trio.move_on_after(interval):
                    await self._available.wait()
                if self._problem is not None:
                    try:
                        await probe_write()
                    except StoreError:
                        continue
            owners, self._deferred = self._deferred, set()
            for owner in owners:
                await owner.write_deferred()  # re-defers itself if it fails again
            if self._problem is None and not self._deferred:
                self._unavailable = trio.Event()
            elif self._problem is None:
                await trio.sleep(interval)  # they failed otherwise: try again, not in a loop
