"""The store from trio: one writer, and readers that never wait behind each other's big reads.

`store/` is synchronous (DESIGN.md); every call runs in a worker thread through
`trio.to_thread.run_sync` with a capacity-1 limiter per connection, so SQLite never sees two
threads on one connection and the event loop never waits on disk. `abandon_on_cancel` stays
False: a commit always finishes.

Three connections: the writer; a reader for the small, frequent reads (a conversation's row,
its queue head, a list page); and a bulk reader for what can be megabytes (event pages,
replays), so an 8 MiB replay page never delays a turn loop's queue read. In WAL mode readers
never block the writer, nor it them.

Health: each write's outcome (and a reader's `StorageUnavailable`) goes to a `HealthWatch`
(storagehealth.py), which keeps spells of unavailability, the writes they deferred, and the
upkeep that probes the storage meanwhile.

The writer serves two lanes. Control writes (`write`: a user's message, a turn's start, a
status) take it before any bulk write (`write_bulk`: a turn's text and events, drafts,
activity, deletes) that waits, so an acknowledgement never queues behind a flooding agent's
output: at most the one bulk write already running (and its own conversation's output already
in line, which `hurry` moves up with it). User messages (`append_user`, the ack path) that
wait together are committed together, in one transaction and one fsync (group commit), by
whichever of them gets the writer first. And while a control write is on its way, the bulk
producers (agents' readers, recorders) hold off between steps (`wait_control_quiet`, at
most CONTROL_PAUSE each time): the write's worker thread then gets the interpreter at once,
rather than fighting a flood's relay for it on every statement.

Checkpoints (copying the WAL into the main file) run from a connection and a thread of their
own (`run_checkpoints`, store/checkpoint.py), never inside a commit that someone waits for.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
from collections.abc import Callable
from typing import Final, TypeVar

import attrs
import trio

from daemon.engine.storagehealth import PROBE_INTERVAL, Deferring, HealthWatch, StorageHealth
from store import EventRecord, StorageUnavailable, Store, StoreError
from store.checkpoint import Checkpointer

__all__ = [
    "CHECKPOINT_INTERVAL",
    "CONTROL_PAUSE",
    "StoreIO",
    "StoreIOStatistics",
    "WriteTicket",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long a bulk producer holds off, per step, while a control write is on its way: bounded,
# so that a stream of control writes slows a flood down but never stops it.
CONTROL_PAUSE: Final = 0.02
# While writes come in, a checkpoint this often: each copies a quarter second of writes (a few
# MB under a flood), well before the writer's own backstop (store.checkpoint.BACKSTOP_PAGES).
CHECKPOINT_INTERVAL: Final = 0.25
# User messages committed in one transaction at most: one group commit stays short.
MAX_GROUP: Final = 256

_Queued = tuple[EventRecord, int]  # a queued user message, and how many its conversation has


@attrs.define(eq=False, slots=True)
class _Ticket:
    """A call waiting for the writer. A user message's may instead be done by another call's
    group commit: then it is `taken`, and `result` is set before `wake`. A bulk write's may
    be moved to the control lane (`StoreIO.hurry`)."""

    # A user message: its conversation, what makes its body in the writer's thread, and
    # whether it goes first in line (a steer).
    message: tuple[str, Callable[[Store], bytes], bool] | None = None
    wake: trio.Event = attrs.field(factory=trio.Event)
    taken: bool = False
    result: _Queued | StoreError | None = None


WriteTicket = _Ticket  # a bulk write's place in line, for `StoreIO.hurry`


@attrs.frozen
class StoreIOStatistics:
    calls_in_flight: int  # store calls running in (or waiting for) a worker thread
    writes: int  # calls made on the writer since start (group commits count each message)
    reads: int
    bulk_reads: int
    group_commits: int  # transactions that committed more than one user message
    grouped_messages: int  # user messages committed by them
    hurried: int  # bulk writes moved to the control lane for a control write behind them
    checkpoints: int  # made by the checkpointer, off the writer's path


@attrs.define(eq=False)
class StoreIO:
    _writer: Store
    _reader: Store
    _bulk_reader: Store
    _checkpointer: Checkpointer | None = None  # None: the writer checkpoints (SQLite's way)
    _wlimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _rlimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _blimit: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    _wrote: trio.Event = attrs.field(factory=trio.Event)  # a write since the last checkpoint
    _checkpoints: int = 0
    _settle_due: trio.Event = attrs.field(factory=trio.Event)
    # Whether the writer holds activity bumps for its next transaction, as of its last call
    # (read between calls, while this task still holds the writer: no thread touches it).
    _bumps_pending: bool = False
    _in_flight: int = 0
    _writes: int = 0
    _reads: int = 0
    _bulk_reads: int = 0
    _health: HealthWatch = attrs.field(factory=HealthWatch)
    _group_commits: int = 0
    _grouped: int = 0
    _hurried: int = 0
    # The writer's turnstile: held by one call at a time; waiting calls by lane, in order.
    _writer_busy: bool = False
    # Since when the writer has been kept free for a control write on its way (see `_give`),
    # and whether a bulk write already went ahead after CONTROL_PAUSE since control writes
    # have been on their way (then bulk writes are no longer held off, until none is).
    _kept_since: float | None = None
    _hold_spent: bool = False
    _control: collections.deque[_Ticket] = attrs.field(factory=collections.deque)
    # Control writes waiting for or holding the writer, and an event set while there are none.
    _control_calls: int = 0
    _control_quiet: trio.Event = attrs.field(factory=trio.Event)
    _bulk: collections.deque[_Ticket] = attrs.field(factory=collections.deque)

    @classmethod
    def open_sync(cls, writer: Store) -> StoreIO:
        """Around an open writer: opens the two readers and the checkpointer on the same file
        (blocking)."""
        with contextlib.ExitStack() as opened:
            reader = writer.reader()
            opened.callback(reader.close)
            bulk = writer.reader()
            opened.callback(bulk.close)
            checkpointer = writer.checkpointer()
            opened.pop_all()
        return cls(writer, reader, bulk, checkpointer)

    async def write(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(writer)` on the writer connection's thread, ahead of waiting bulk writes:
        for what a person or a turn's start waits on (keep it small)."""
        self.control_begins()
        try:
            return await self._write(fn, self._control)
        finally:
            self.control_ends()

    async def write_bulk(self, fn: Callable[[Store], T], *, ticket: WriteTicket | None = None) -> T:
        """Run `fn(writer)` after every control write waiting: for output and housekeeping.
        With `ticket` (`WriteTicket()`), the caller may `hurry` it while it waits."""
        return await self._write(fn, self._bulk, ticket)

    async def wait_control_quiet(self) -> None:
        """Return once no control write is on its way, or after CONTROL_PAUSE: what a bulk
        producer (an agent's reader, a recorder) does between steps, so that a person's write
        has the worker thread, and the interpreter's lock, to itself meanwhile."""
        if self._control_calls:
            with trio.move_on_after(CONTROL_PAUSE):
                await self._control_quiet.wait()

    def control_begins(self) -> None:
        """A control write is on its way (pair with `control_ends`): bulk producers hold off
        (`wait_control_quiet`). `write` and `append_user` say so themselves; a caller that
        must first wait for something else (a log's lock) says so from then on."""
        if not self._control_calls:
            self._control_quiet = trio.Event()
        self._control_calls += 1

    def control_ends(self) -> None:
        self._control_calls -= 1
        if not self._control_calls:
            self._control_quiet.set()
            self._hold_spent = False
            if not self._writer_busy and self._bulk:  # kept free for it (`_give`)
                self._occupy()
                self._bulk.popleft().wake.set()

    def hurry(self, ticket: WriteTicket) -> None:
        """A control write waits for this bulk write (its conversation's, which must commit
        first): it goes in the control lane too, so the control write is not held up behind
        every other bulk write (priority inheritance). No-op unless it waits in the bulk lane."""
        if ticket in self._bulk:
            self._bulk.remove(ticket)
            self._control.append(ticket)
            self._hurried += 1
            if not self._writer_busy:  # kept free for a control write (`_give`): it is this
                self._occupy()
                self._control.popleft().wake.set()

    async def append_user(
        self, conv_id: str, make_body: Callable[[Store], bytes], *, first: bool = False
    ) -> _Queued:
        """Queue a user message durably (`Store.append_user_messages`; `make_body(writer)`
        runs in its transaction; `first`: ahead of the queued ones): a control write,
        committed with every other user message waiting for the writer then."""
        self._writes += 1
        ticket = _Ticket((conv_id, make_body, first))
        self.control_begins()
        try:
            await self._take(self._control, ticket)
            if not ticket.taken:  # we hold the writer: commit the messages waiting with ours
                group = [ticket, *self._take_messages()]
                try:
                    await self._commit(group)
                finally:
                    self._give()
        finally:
            self.control_ends()
        assert ticket.result is not None
        if isinstance(ticket.result, StoreError):
            raise ticket.result
        return ticket.result

    async def _write(
        self,
        fn: Callable[[Store], T],
        lane: collections.deque[_Ticket],
        ticket: _Ticket | None = None,
    ) -> T:
        """A `StorageUnavailable` starts (or continues) a spell; a write that goes through
        ends it."""
        self._writes += 1
        await self._take(lane, ticket or _Ticket())
        try:
            result = await self._run(fn, self._writer, self._wlimit)
        except StorageUnavailable as exc:
            self._health.refused(exc)
            raise
        finally:
            self._bumps_pending = self._writer.activity_pending
            self._give()
        self._wrote.set()
        self._health.wrote()
        return result

    async def _take(self, lane: collections.deque[_Ticket], ticket: _Ticket) -> None:
        """Return holding the writer, or with `ticket` done by another call's group commit.

        A bulk write does not take a writer kept free for a control write on its way (see
        `_give`) until CONTROL_PAUSE has passed; then the first in line goes ahead."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._writer_busy:
            if lane is self._control or not self._holding_off():
                self._occupy()
                return
            if self._kept_since is None:
                self._kept_since = trio.current_time()
        lane.append(ticket)
        try:
            while lane is self._bulk and not ticket.wake.is_set():
                since = self._kept_since
                start = trio.current_time() if since is None else since
                with trio.move_on_at(start + CONTROL_PAUSE):
                    await ticket.wake.wait()
                if (
                    not ticket.wake.is_set()
                    and since is not None
                    and self._kept_since == since  # (so the writer is still free)
                    and self._bulk
                    and self._bulk[0] is ticket
                ):  # kept free for CONTROL_PAUSE, and no control write came: go ahead
                    self._bulk.popleft()
                    self._hold_spent = True
                    self._occupy()
                    return
            await ticket.wake.wait()
        except trio.Cancelled:
            if ticket.taken:
                # In a group commit running now, which cannot be cancelled: like a write in
                # its thread, it finishes and is answered (the cancellation lands after).
                with trio.CancelScope(shield=True):
                    await ticket.wake.wait()
                return
            if ticket.wake.is_set():  # handed the writer as we were cancelled: pass it on
                self._give()
            else:  # out of the line, whichever lane it is in now
                (self._control if ticket in self._control else self._bulk).remove(ticket)
                if not self._bulk:
                    self._kept_since = None
            raise

    def _give(self) -> None:
        """Hand the writer to the next call: control first, each lane in order. While a
        control write is on its way (`control_begins`) but not yet in line (it waits for its
        log's lock, say), the writer is kept free for it rather than handed to a bulk write
        it would then wait for too: `control_ends`, or the bulk write's own CONTROL_PAUSE,
        ends that."""
        if self._control:
            self._control.popleft().wake.set()
        elif self._bulk and not self._holding_off():
            self._bulk.popleft().wake.set()
        else:
            self._writer_busy = False
            self._kept_since = trio.current_time() if self._bulk else None

    def _holding_off(self) -> bool:
        """Whether bulk writes leave a free writer to a control write on its way."""
        return bool(self._control_calls) and not self._hold_spent

    def _occupy(self) -> None:
        self._writer_busy = True
        self._kept_since = None

    def _take_messages(self) -> list[_Ticket]:
        """The user messages waiting in the control lane (up to MAX_GROUP in all), taken out
        of it for a group commit."""
        taken: list[_Ticket] = []
        rest: collections.deque[_Ticket] = collections.deque()
        for ticket in self._control:
            if ticket.message is not None and len(taken) < MAX_GROUP - 1:
                ticket.taken = True
                taken.append(ticket)
            else:
                rest.append(ticket)
        self._control = rest
        return taken

    async def _commit(self, group: list[_Ticket]) -> None:
        """Commit `group`'s messages in one transaction; answer each of them."""
        messages = [t.message for t in group if t.message is not None]

        def commit(s: Store) -> list[_Queued | StoreError]:
            return s.append_user_messages(
                [(c, functools.partial(m, s), first) for c, m, first in messages]
            )

        results: list[_Queued | StoreError] | None = None
        try:
            results = await self._run(commit, self._writer, self._wlimit)
        except StorageUnavailable as exc:  # nothing of the group was stored
            self._health.refused(exc, len(group))
            results = [exc] * len(group)
        except StoreError as exc:
            results = [exc] * len(group)
        else:
            self._wrote.set()
            self._health.wrote()
        finally:
            self._bumps_pending = self._writer.activity_pending
            if results is None:  # anything else (a bug) is raised here; nobody waits for ever
                results = [StoreError("the group commit failed; see the log")] * len(group)
            if len(group) > 1:
                self._group_commits += 1
                self._grouped += len(group)
            for ticket, result in zip(group, results, strict=True):
                ticket.result = result
                ticket.wake.set()

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
                self._health.noticed(exc)  # an unreadable disk; only a write can say it is back
            raise
        finally:
            self._in_flight -= 1

    # --- health -----------------------------------------------------------------------------

    def health(self) -> StorageHealth:
        return self._health.snapshot()

    async def wait_available(self, *, at_most: float = math.inf) -> None:
        """Return once writes go through again, or after `at_most` seconds."""
        await self._health.wait_available(at_most=at_most)

    async def wait_file_lost(self) -> None:
        """Return once the database file was found deleted or replaced."""
        await self._health.wait_file_lost()

    def defer(self, owner: Deferring) -> None:
        """Have `owner.write_deferred()` called once writes go through again."""
        self._health.defer(owner)

    async def run_upkeep(self, *, interval: float = PROBE_INTERVAL) -> None:
        """Look after the storage's health (`HealthWatch.run_upkeep`): the file checked on the
        writer's thread, the probe a durable control write."""

        async def check_file() -> None:
            await self._run(lambda s: s.check_file(), self._writer, self._wlimit)

        async def probe_write() -> None:
            await self.write(lambda s: s.check_writable())

        await self._health.run_upkeep(check_file, probe_write, interval=interval)

    async def run_checkpoints(self, *, interval: float = CHECKPOINT_INTERVAL) -> None:
        """While writes come in, every `interval`: copy the WAL into the main file from the
        checkpointer's connection and thread, so that no commit has to. A failure is logged
        (once a spell), not raised: the writer's backstop still bounds the WAL meanwhile."""
        checkpointer = self._checkpointer
        if checkpointer is None:
            return
        failing = False
        while True:
            await self._wrote.wait()
            self._wrote = trio.Event()
            try:
                await trio.to_thread.run_sync(checkpointer.checkpoint)  # one at a time: this task
            except StoreError as exc:
                if not failing:
                    log.warning("%s (the writer's backstop bounds the WAL meanwhile)", exc)
                failing = True
            else:
                failing = False
                self._checkpoints += 1
            await trio.sleep(interval)

    def statistics(self) -> StoreIOStatistics:
        return StoreIOStatistics(
            self._in_flight,
            self._writes,
            self._reads,
            self._bulk_reads,
            self._group_commits,
            self._grouped,
            self._hurried,
            self._checkpoints,
        )

    def settle_soon(self) -> None:
        """Have the writer's pending activity bumps (a queued message's `updated_at`, which
        its durable append leaves out) written after the caller's reply, by `run_settler`;
        if there are any: one that would change nothing is not kept (`Store` knows), so a
        conversation's sends within the activity resolution cost one write each, not two."""
        if self._bumps_pending:
            self._settle_due.set()

    async def run_settler(self) -> None:
        """Write activity bumps when asked, one write however many asks arrived meanwhile.
        A failure is logged (by `write`, for storage), not raised: the bump stays pending for
        the next write."""
        while True:
            await self._settle_due.wait()
            self._settle_due = trio.Event()
            try:
                await self.write_bulk(lambda s: s.flush_activity())
            except StorageUnavailable:
                pass
            except StoreError as exc:
                log.warning("could not record activity: %s", exc)

    def close(self) -> None:
        if self._checkpointer is not None:  # before the writer, which closes last
            self._checkpointer.close()
        self._bulk_reader.close()
        self._reader.close()
        self._writer.close()
