"""A conversation's event log: every durable write, in seq order, then its fan-out.

All writes for one conversation go through one FIFO lock, so the order subscribers see is the
store's seq order even when a `send` and the turn's recorder write at the same moment. The
in-memory `last_seq` moves only after a commit, which is what makes subscribe's "replay up to
`last_seq`, then live" gap-free.

When storage is unavailable (`store.StorageUnavailable`: disk full, I/O error, read-only, the
file deleted or replaced), each write does what its caller can live with:
- `append_user` (a send, which a reply acknowledges) fails at once: nothing is acknowledged
  that is not on the file;
- the turn's writes (`append`, `append_draft`, `start_turn`, `end_turn`) wait the outage out
  and retry, in their order (one FIFO of their own, the store lock taken per attempt, so sends
  are answered meanwhile): a turn's output is stored late rather than lost or reordered;
- state writes (`set_status`, `set_title`, `set_acp_session`) are deferred: applied in memory
  by the caller as usual, written when storage is back (`StoreIO.run_upkeep`), the latest of
  each kind winning.

The turn's output (`append`, `append_draft`, `end_turn`) goes to the store writer's bulk lane,
everything else to its control lane (`storeio`). A control write (a user's message, a turn's
start, a status) that waits for this lock while a bulk write of the same conversation holds it
hurries that one into the control lane too, and bulk writes taking the lock while one waits go
there directly: the conversation's own output never holds its user's message up behind every
other conversation's output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

import attrs
import msgspec
import trio

from daemon.engine.fanout import Fanout
from daemon.engine.storeio import StoreIO, WriteTicket
from protocol import events as ev
from store import (
    ConversationRecord,
    EventRecord,
    NotFound,
    StorageUnavailable,
    Store,
    StoreError,
)
from store.records import USER_MESSAGE

__all__ = [
    "RETRY_MAX",
    "SEGMENT_CHARS",
    "EventLog",
    "LogClosed",
    "removed_event",
    "text_events",
]

T = TypeVar("T")

# The bound on one stored agent_message (or thought): what one join, one encode and one row
# cost. Longer text is stored as several events of the same turn, in order. A full segment is
# one bulk write (with the drafts it replaces dropped) that a person's message may wait for:
# at 256 K characters it takes about a millisecond; 1 M characters took 5-10 ms beside a
# flood, and set the p99 of a send's acknowledgement.
SEGMENT_CHARS = 256 * 1024
RETRY_FIRST: Final = 0.25  # seconds before a turn's write refused by storage is tried again
RETRY_MAX: Final = 5.0  # ... doubling up to this; and at once when storage is back


class LogClosed(Exception):
    """The conversation was retired or deleted: this log writes nothing any more."""


class _Numbered(msgspec.Struct, frozen=True):
    """A stored user message's number, decoded without keeping its text."""

    number: int | None = None


_numbered = msgspec.json.Decoder(_Numbered)
_user_message = msgspec.json.Decoder(ev.UserMessage)
# Numbers of sent messages not yet claimed by their sender (`take_number`); a send that fails
# after its append leaves one behind, so the map is bounded.
_UNCLAIMED_MAX = 256


def message_number(s: Store, conv_id: str, seq: int) -> int:
    """The number of the user message at `seq` (0 for seq 0): from its body, or, for one
    stored before messages had numbers, its place among the user messages (a scan, once)."""
    if seq == 0:
        return 0
    rec = s.event_at(conv_id, seq)
    number = _numbered.decode(rec.body).number if rec is not None else None
    return number if number is not None else s.count_user_messages(conv_id, seq)


def _line(conv_id: str, rec: EventRecord) -> bytes:
    return ev.event_notification(conv_id, ev.render_event(rec.seq, rec.type, rec.ts, rec.body))


@attrs.define(eq=False)
class EventLog:
    conv_id: str
    _io: StoreIO
    _fanout: Fanout
    _last_seq: int
    _lock: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock)
    # The turn's writes, in order, while one waits out a storage outage.
    _turn_lock: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock)
    # State writes refused by storage, by kind ("status", ...): the latest of each.
    _deferred: dict[str, Callable[[Store], None]] = attrs.field(factory=dict)
    _closed: bool = False
    # (seq, number) of the newest user message this log appended: the next number without
    # reading its body again, as long as it is still the newest (a removal changes that).
    _newest: tuple[int, int] = (0, 0)
    _unclaimed: dict[int, int] = attrs.field(factory=dict)
    _urgent: int = 0  # control writes waiting for (or holding) the lock
    _bulk_ticket: WriteTicket | None = None  # the bulk write holding the lock, if any

    @property
    def last_seq(self) -> int:
        """The newest committed seq: subscribers opened now are live from here."""
        return self._last_seq

    @property
    def closed(self) -> bool:
        return self._closed

    async def yield_to_control(self) -> None:
        """For the turn's bulk work (its reader and recorder, between steps): hold off
        (bounded: `storeio.CONTROL_PAUSE`) while a person's write goes through the store."""
        await self._io.wait_control_quiet()

    def publish_delta(self, line: bytes) -> None:
        """Fan out a transient notification (no seq, never stored)."""
        self._fanout.publish_delta(line)

    def start_at(self, last_seq: int) -> None:
        """Set the seq the store had at hydration."""
        self._last_seq = max(self._last_seq, last_seq)

    def _publish(self, recs: list[EventRecord]) -> None:
        for rec in recs:
            self._last_seq = max(self._last_seq, rec.seq)
            self._fanout.publish_event(rec.seq, _line(self.conv_id, rec))

    async def append_user(
        self,
        text: str,
        *,
        steer: bool = False,
        on_commit: Callable[[EventRecord], None] | None = None,
    ) -> tuple[EventRecord, int]:
        """Queue a user message (a `steer`: first in line); returns it and how many are
        queued with it (the store's count as of this commit, so concurrent sends each get an
        exact position). Its number (one more than the newest message's) waits for
        `take_number`. `on_commit(rec)` runs with the log still locked, before any other
        write of this conversation can look at the queue.

        Raises `StorageUnavailable` at once if the store cannot take it: never acknowledged.
        Sends waiting for the writer together are committed together (`StoreIO.append_user`)."""
        number = 0

        def body(s: Store) -> bytes:
            # In the writer's transaction, between no other writes: nothing can come between
            # the look at the newest message and the append.
            nonlocal number
            newest = s.newest_user_message_seq(self.conv_id)
            seen_seq, seen_number = self._newest
            previous = (
                seen_number if newest == seen_seq else message_number(s, self.conv_id, newest)
            )
            number = previous + 1
            return ev.encode_body(ev.UserMessage(text=text, number=number, steer=steer))

        def alone(s: Store) -> tuple[EventRecord, int]:
            (result,) = s.append_user_messages([(self.conv_id, lambda: body(s), steer)])
            if isinstance(result, StoreError):
                raise result
            return result

        async with self._holding(urgent=True):
            if self._deferred:  # after an outage: with the state writes it held back
                rec, queued = await self._write(alone)
            else:
                rec, queued = await self._io.append_user(self.conv_id, body, first=steer)
            if on_commit is not None:
                on_commit(rec)
            self._newest = (rec.seq, number)
            self._unclaimed[rec.seq] = number
            while len(self._unclaimed) > _UNCLAIMED_MAX:
                del self._unclaimed[next(iter(self._unclaimed))]
            self._publish([rec])
        self._io.settle_soon()  # its activity bump, after the acknowledgement
        return rec, queued

    async def take_number(self, seq: int) -> int:
        """The number of the message this log appended at `seq`, for its sender's reply."""
        number = self._unclaimed.pop(seq, None)
        if number is None:  # not one of ours after all: read it
            number = await self._io.read(lambda s: message_number(s, self.conv_id, seq))
        return number

    async def append(self, items: list[tuple[str, bytes]], *, clear_drafts: bool = False) -> None:
        if not items and not clear_drafts:
            return

        def write(s: Store) -> list[EventRecord]:
            return s.append_events(self.conv_id, items, clear_drafts=clear_drafts)

        await self._turn_write(write, self._publish)

    async def start_turn(
        self, prompt_seq: int, as_read: bytes, may_start: Callable[[], bool]
    ) -> EventRecord | None:
        """Take `prompt_seq` off the queue and record `turn_started`, if `may_start()`.

        `may_start` runs with the log locked, right before the write: no send, edit, move,
        status change or other write of this conversation can come between its decision and
        the commit. (If storage refuses the write, the decision stands while it is retried:
        from `may_start` on, a pause finds the turn and interrupts it.) Returns None if it said
        no. Raises `store.Conflict` if the message is not first in line, or no longer
        `as_read` (its body as the caller read it: edited since).
        """
        body = ev.encode_body(ev.TurnStarted(prompt_seq=prompt_seq))
        try:
            return await self._turn_write(
                lambda s: s.start_turn(self.conv_id, prompt_seq, body, as_read=as_read),
                lambda rec: self._publish([rec]),
                decide=may_start,
                bulk=False,
            )
        except _Declined:
            return None

    # --- the queue's other verbs (each checked with the log locked: see steering.py) --------

    async def edit_queued(self, seq: int, text: str, check: Callable[[], None]) -> None:
        """Queued message `seq` now says `text` (`user_message_edited`), after `check()`
        (which raises to refuse). Raises `store.Conflict` or `NotFound` as the store does."""
        item = (
            "user_message_edited",
            ev.encode_body(ev.UserMessageEdited(message_seq=seq, text=text)),
        )

        def write(s: Store) -> list[EventRecord]:
            # The message as sent, with the new text (its number stays): events never change,
            # and nothing writes between this read and the edit (one writer).
            sent = s.event_at(self.conv_id, seq)
            was = ev.UserMessage(text=text)  # not a user message: edit_pending refuses it
            if sent is not None and sent.type == USER_MESSAGE:
                was = _user_message.decode(sent.body)
            body = ev.encode_body(msgspec.structs.replace(was, text=text))
            return [s.edit_pending(self.conv_id, seq, body, item)]

        async with self._lock:
            self._check()
            check()
            self._publish(await self._write(write))

    async def move_queued(
        self, seq: int, before: int | None, check: Callable[[], None]
    ) -> list[int]:
        """Put queued message `seq` before `before` (None: first), after `check()`; records
        `queue_reordered` if the order changed. Returns the order (seqs, head first)."""

        def event(order: list[int]) -> tuple[str, bytes]:
            return "queue_reordered", ev.encode_body(ev.QueueReordered(order=order))

        async with self._lock:
            self._check()
            check()
            order, rec = await self._write(
                lambda s: s.move_pending(self.conv_id, seq, before, event)
            )
            if rec is not None:
                self._publish([rec])
        return order

    async def remove_queued(self, seq: int, check: Callable[[], None]) -> None:
        """Take queued message `seq` out (its event with it), after `check()`; records
        `user_message_removed`, so whoever waits for its turn (an ACP client) hears it."""
        item = removed_event(seq)
        async with self._lock:
            self._check()
            check()
            rec = await self._write(lambda s: s.remove_pending(self.conv_id, seq, item))
            self._publish([rec] if rec is not None else [])

    async def take_steered(self, seq: int, steered: ev.UserMessageSteered) -> None:
        """Queued message `seq` went into the running turn: off the queue, never prompted.
        Like the turn's own writes, it waits a storage outage out (the agent has the text)."""
        item = ("user_message_steered", ev.encode_body(steered))
        await self._turn_write(
            lambda s: s.take_steered(self.conv_id, seq, item), lambda rec: self._publish([rec])
        )

    async def end_turn(self, items: list[tuple[str, bytes]], status: str) -> None:
        self._deferred.pop("status", None)  # this write sets it
        await self._turn_write(lambda s: s.end_turn(self.conv_id, items, status), self._publish)

    async def append_draft(self, prompt_seq: int, kind: str, text: str) -> None:
        await self._turn_write(lambda s: s.append_draft(self.conv_id, prompt_seq, kind, text))

    async def set_status(self, status: str) -> None:
        """Durable: a pause that a reply acknowledges survives power loss. Deferred while
        storage is unavailable (see the module's docstring)."""
        await self._state_write(
            "status", lambda s: s.set_status(self.conv_id, status, durable=True)
        )

    async def set_title(self, title: str) -> None:
        await self._state_write("title", lambda s: s.set_title(self.conv_id, title))

    async def set_acp_session(self, session_id: str, cwd: str) -> None:
        await self._state_write(
            "acp_session", lambda s: s.set_acp_session(self.conv_id, session_id, cwd)
        )

    async def current(self) -> ConversationRecord | None:
        """The conversation's row as stored now (None: deleted)."""
        return await self._io.read(lambda s: s.get_conversation(self.conv_id))

    async def close(self) -> None:
        """No write starts after this returns (one in flight finishes first); deferred
        writes are dropped."""
        async with self._lock:
            self._closed = True
            self._deferred.clear()

    def close_now(self) -> None:
        """No write starts after this (one in flight, of a caller outside the supervisor,
        still finishes): the supervisor is gone."""
        self._closed = True

    def close_nowait(self) -> bool:
        """Close only if no write is in flight, waiting, retrying or deferred: used by a
        supervisor retiring itself."""
        if self._lock.locked() or self._turn_lock.locked() or self._deferred:
            return False
        self._closed = True
        return True

    # --- writes under an outage ---------------------------------------------------------------

    async def _turn_write(
        self,
        fn: Callable[[Store], T],
        publish: Callable[[T], None] | None = None,
        *,
        decide: Callable[[], bool] | None = None,
        bulk: bool = True,
    ) -> T:
        """`fn` under the lock, retried while storage refuses it, then `publish` of its
        result, still locked; the turn's writes keep their order. With `decide`, it is asked
        (once, locked) whether to write at all; if not, `_Declined` is raised. `bulk`: the
        turn's output (the store writer's bulk lane)."""
        delay = RETRY_FIRST
        async with self._turn_lock:
            while True:
                async with self._holding(urgent=not bulk):
                    if decide is not None:
                        if not decide():
                            raise _Declined
                        decide = None
                    try:
                        result = await self._write(fn, bulk=bulk)
                    except StorageUnavailable:
                        pass  # StoreIO logged it; wait for storage (or a while), try again
                    else:
                        if publish is not None:
                            publish(result)
                        return result
                await self._io.wait_available(at_most=delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _state_write(self, kind: str, fn: Callable[[Store], None]) -> None:
        async with self._holding(urgent=True):
            self._deferred.pop(kind, None)
            try:
                await self._write(fn)
            except StorageUnavailable:
                self._deferred[kind] = fn
                self._io.defer(self)

    async def _write(self, fn: Callable[[Store], T], *, bulk: bool = False) -> T:
        """`fn`, then (in the same worker call, after it: they are newer) the deferred state
        writes that go through; the others stay deferred. Hold the lock. `bulk`: in the
        writer's bulk lane, unless a control write of ours waits."""
        deferred = self._deferred
        if not deferred:
            return await self._lane_write(fn, bulk)

        def write(s: Store) -> T:
            result = fn(s)
            _write_deferred(s, deferred, quiet=True)
            return result

        try:
            return await self._lane_write(write, bulk)
        finally:
            if deferred:
                self._io.defer(self)

    async def _lane_write(self, fn: Callable[[Store], T], bulk: bool) -> T:
        if not bulk or self._urgent:  # a control write waits behind this one: no bulk lane
            return await self._io.write(fn)
        self._bulk_ticket = ticket = WriteTicket()
        try:
            return await self._io.write_bulk(fn, ticket=ticket)
        finally:
            self._bulk_ticket = None

    @asynccontextmanager
    async def _holding(self, *, urgent: bool) -> AsyncIterator[None]:
        """The lock, on an open log. `urgent` for a control write: while it waits, the bulk
        write holding the lock is hurried into the control lane, and bulk writes that take
        the lock before it go there directly (priority inheritance)."""
        if urgent:
            self._urgent += 1
            self._io.control_begins()  # the turn's bulk work holds off from now on
            if self._bulk_ticket is not None:
                self._io.hurry(self._bulk_ticket)
        try:
            async with self._lock:
                self._check()
                yield
        finally:
            if urgent:
                self._urgent -= 1
                self._io.control_ends()

    async def write_deferred(self) -> None:
        """Write the state writes an outage deferred (called by `StoreIO.run_upkeep`)."""
        async with self._lock:
            if self._closed or not self._deferred:
                return
            deferred = self._deferred
            try:
                await self._io.write(lambda s: _write_deferred(s, deferred, quiet=False))
            except StorageUnavailable:
                self._io.defer(self)

    def _check(self) -> None:
        if self._closed:
            raise LogClosed(self.conv_id)


class _Declined(Exception):
    """`start_turn`'s `may_start` said no."""


def _write_deferred(s: Store, deferred: dict[str, Callable[[Store], None]], *, quiet: bool) -> None:
    """Each deferred write, dropped once written (or once its conversation is gone). Runs in
    the writer's thread while the log's lock is held, so nothing else touches `deferred`.
    `quiet`: a refused one stays deferred, silently (the caller's own write went through)."""
    for kind, pending in list(deferred.items()):
        try:
            pending(s)
        except NotFound:
            pass  # deleted meanwhile: nothing to write it to
        except StorageUnavailable:
            if quiet:
                continue
            raise
        del deferred[kind]


def removed_event(seq: int) -> tuple[str, bytes]:
    return "user_message_removed", ev.encode_body(ev.UserMessageRemoved(message_seq=seq))


def text_events(
    kind: str, text: str, prompt_seq: int, *, partial: bool = False
) -> list[tuple[str, bytes]]:
    """A turn's text as stored events of at most `SEGMENT_CHARS` each, in order."""
    return [
        ev.text_event(kind, text[i : i + SEGMENT_CHARS], prompt_seq, partial=partial)
        for i in range(0, max(len(text), 1), SEGMENT_CHARS)
    ]
