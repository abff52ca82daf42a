"""The prompt queue of each conversation: its order, edits, and taking messages off it.

The queue is the `queue` table: one row per user message not yet prompted (nor steered into a
running turn), with its place in line (`position`) and, once edited, its message body as
edited (`body`; NULL: as its event says). The head is the row with the lowest position.

Positions. A message queued at the end gets its own seq as its position; one queued first
(a steer the agent could not take) gets one less than the head's; a move permutes the
positions of the rows it reorders. So no position is above the last seq handed out, and a new
message's seq is above them all: queueing at the end stays one insert, without a read.

A message leaves the queue once, in one durable transaction: prompted (`start_turn`: only the
head, and only as it was last read), steered (`take_steered`) or removed (`remove_pending`).
What has left it can no longer be edited, moved, removed, prompted or steered (Conflict). So
an edit or a move racing the turn that takes its message either commits first, and the prompt
uses it, or fails; never half.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ._base import Base, now_or
from ._events import _append, _check_items, _cursor_of, _last_seq
from .errors import Conflict, NotFound
from .records import USER_MESSAGE, EventRecord, check_event

__all__ = ["QueueOps"]

_IS_USER_MESSAGE = "SELECT 1 FROM events WHERE conversation_id = ? AND seq = ? AND type = ?"
_IS_QUEUED = "SELECT 1 FROM queue WHERE conversation_id = ? AND seq = ?"
# The queue in line order, with each message's body as it stands (edits applied).
_IN_LINE = (
    "SELECT e.seq, e.type, e.ts, coalesce(q.body, e.body) FROM queue AS q JOIN events AS e "
    "ON e.conversation_id = q.conversation_id AND e.seq = q.seq "
    "WHERE q.conversation_id = ? ORDER BY q.position, q.seq"
)
_ORDER = "SELECT seq, position FROM queue WHERE conversation_id = ? ORDER BY position, seq"
_SET_POSITION = "UPDATE queue SET position = ? WHERE conversation_id = ? AND seq = ?"
# `taken`: the newest seq that left the queue (prompted or steered); see newest_user_message_seq.
_TAKEN = "UPDATE conversations SET taken = max(taken, ?2) WHERE id = ?1"

# Makes the stored (type, body) of the event recording a queue's new order.
OrderEvent = Callable[[list[int]], tuple[str, bytes]]


def _require_queued(conn: sqlite3.Connection, conv_id: str, seq: int) -> None:
    """NotFound for no such conversation or user message; Conflict if it left the queue."""
    if conn.execute(_IS_QUEUED, (conv_id, seq)).fetchall():
        return
    _cursor_of(conn, conv_id)  # NotFound for no such conversation
    if not conn.execute(_IS_USER_MESSAGE, (conv_id, seq, USER_MESSAGE)).fetchall():
        raise NotFound(f"no queued message {seq} in {conv_id}")
    raise Conflict(f"message {seq} in {conv_id} was already prompted")


class QueueOps(Base):
    # --- reads -------------------------------------------------------------------------------

    def queued_count(self, conv_id: str) -> int:
        """How many user messages are queued (0 for an unknown conversation)."""
        rows = self._rows("SELECT count(*) FROM queue WHERE conversation_id = ?", (conv_id,))
        count: int = rows[0][0]
        return count

    def pending_messages(self, conv_id: str) -> list[EventRecord]:
        """The queued user messages in line order, each body as edited; one snapshot."""
        rows = self._rows(_IN_LINE, (conv_id,))
        return [EventRecord(seq=r[0], type=r[1], ts=r[2], body=r[3]) for r in rows]

    # --- changing a queued message -----------------------------------------------------------

    def edit_pending(
        self,
        conv_id: str,
        seq: int,
        body: bytes,
        event: tuple[str, bytes],
        *,
        now: float | None = None,
    ) -> EventRecord:
        """Give queued message `seq` the new message `body` (what its prompt will carry) and
        append `event`, which records the edit. Durable, like the send it changes.

        Raises NotFound (no such conversation or user message) or Conflict (not queued).
        """
        check_event(USER_MESSAGE, body)
        _check_items([event])
        with self._transaction(durable=True) as conn:
            _require_queued(conn, conv_id, seq)
            conn.execute(
                "UPDATE queue SET body = ? WHERE conversation_id = ? AND seq = ?",
                (body, conv_id, seq),
            )
            return _append(conn, conv_id, [event], now_or(now))[0]

    def move_pending(
        self,
        conv_id: str,
        seq: int,
        before: int | None,
        event: OrderEvent,
        *,
        now: float | None = None,
    ) -> tuple[list[int], EventRecord | None]:
        """Put queued message `seq` right before queued message `before` (None: first in
        line). Durable. Returns the queue's order (seqs, head first) and the event
        `event(order)` appended to record it, or None if the order did not change.

        Raises NotFound (no such conversation or user message), Conflict (either message not
        queued), ValueError (a message before itself).
        """
        if before == seq:
            raise ValueError(f"message {seq} cannot move before itself")
        with self._transaction(durable=True) as conn:
            _require_queued(conn, conv_id, seq)
            if before is not None:
                _require_queued(conn, conv_id, before)
            rows = conn.execute(_ORDER, (conv_id,)).fetchall()
            was = [s for s, _ in rows]
            order = [s for s in was if s != seq]
            order.insert(0 if before is None else order.index(before), seq)
            if order == was:
                return order, None
            item = event(order)
            _check_items([item])
            # The same positions, in the new order: none above the last seq, none repeated.
            positions = [p for _, p in rows]
            conn.executemany(
                _SET_POSITION,
                [(p, conv_id, s) for s, p, old in zip(order, positions, was, strict=True)
                 if s != old],
            )  # fmt: skip
            return order, _append(conn, conv_id, [item], now_or(now))[0]

    def remove_pending(
        self,
        conv_id: str,
        seq: int,
        event: tuple[str, bytes] | None = None,
        *,
        now: float | None = None,
    ) -> EventRecord | None:
        """Delete a queued message; its seq stays a gap. Durable, like the send it undoes.
        With `event`, append it too (what says it was removed), and return it.

        Raises NotFound (no such conversation or user message) or Conflict (already prompted).
        """
        if event is not None:
            _check_items([event])
        with self._transaction(durable=True) as conn:
            _require_queued(conn, conv_id, seq)
            # Its seq may be the newest: the floor keeps it from being handed out again.
            conn.execute(
                "UPDATE conversations SET last_seq = ?2 WHERE id = ?1",
                (conv_id, _last_seq(conn, conv_id)),
            )
            conn.execute("DELETE FROM queue WHERE conversation_id = ? AND seq = ?", (conv_id, seq))
            conn.execute("DELETE FROM events WHERE conversation_id = ? AND seq = ?", (conv_id, seq))
            if event is None:
                return None
            return _append(conn, conv_id, [event], now_or(now))[0]

    # --- taking a message off the queue ------------------------------------------------------

    def take_steered(
        self, conv_id: str, seq: int, event: tuple[str, bytes], *, now: float | None = None
    ) -> EventRecord:
        """Take queued message `seq` off the queue, the agent having taken it into the turn
        that runs, and append `event`, which records that. Durable: once this returns the
        message is never prompted, so only then may its steer be acknowledged.

        Raises NotFound (no such conversation or user message) or Conflict (not queued).
        """
        _check_items([event])
        with self._transaction(durable=True) as conn:
            _require_queued(conn, conv_id, seq)
            conn.execute("DELETE FROM queue WHERE conversation_id = ? AND seq = ?", (conv_id, seq))
            conn.execute(_TAKEN, (conv_id, seq))
            return _append(conn, conv_id, [event], now_or(now))[0]

    def start_turn(
        self,
        conv_id: str,
        prompt_seq: int,
        body: bytes,
        *,
        as_read: bytes | None = None,
        now: float | None = None,
    ) -> EventRecord:
        """Take `prompt_seq`, the head of the queue, off it; make it the cursor, mark the
        conversation running and append 'turn_started' (`body`), in one durable transaction,
        so a message is prompted at most once, even across crashes.

        With `as_read` (the message's body as the caller read it), the message must still
        be that: a prompt never carries text other than what was committed when it started.

        Raises Conflict unless `prompt_seq` is queued, first in line (and as read); NotFound
        for no such conversation.
        """
        check_event("turn_started", body)
        with self._transaction(durable=True) as conn:
            try:
                _require_queued(conn, conv_id, prompt_seq)
            except NotFound:
                _cursor_of(conn, conv_id)  # NotFound for no such conversation, as it is
                raise Conflict(f"no queued message {prompt_seq} in {conv_id}") from None
            head_seq, head_body = conn.execute(
                "SELECT q.seq, coalesce(q.body, e.body) FROM queue AS q JOIN events AS e "
                "ON e.conversation_id = q.conversation_id AND e.seq = q.seq "
                "WHERE q.conversation_id = ? ORDER BY q.position, q.seq LIMIT 1",
                (conv_id,),
            ).fetchone()
            if head_seq != prompt_seq:
                raise Conflict(
                    f"message {prompt_seq} in {conv_id} is not next in line ({head_seq} is)"
                )
            if as_read is not None and head_body != as_read:
                raise Conflict(f"message {prompt_seq} in {conv_id} was edited since it was read")
            conn.execute(
                "DELETE FROM queue WHERE conversation_id = ? AND seq = ?", (conv_id, prompt_seq)
            )
            now = now_or(now)
            conn.execute(
                "UPDATE conversations SET cursor = ?2, taken = max(taken, ?2), "
                "status = 'running', updated_at = max(updated_at, ?3) WHERE id = ?1",
                (conv_id, prompt_seq, now),
            )
            return _append(conn, conv_id, [("turn_started", body)], now)[0]
