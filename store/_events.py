"""The event log and turn drafts of each conversation, and queueing a user message.

A conversation's last seq is the larger of its row's `last_seq` and its newest event's seq,
read in the transaction that appends; so seqs are dense, never go back and are never reused:
removing the newest event (a queued message) first raises `last_seq` to it, leaving a gap.
Appends leave `last_seq` alone; `updated_at` follows them to within ACTIVITY_RESOLUTION.

A user message is queued with its event (`append_user_message`); the queue's order, edits and
the ways off it are `_queue.py`'s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from ._base import ACTIVITY_RESOLUTION, Base, now_or, require
from .errors import StoreError
from .records import KINDS, STATUSES, USER_MESSAGE, EventRecord, check_event

__all__ = ["STATE_FOLDS", "EventOps"]

_INSERT_EVENT = "INSERT INTO events (conversation_id, seq, type, ts, body) VALUES (?, ?, ?, ?, ?)"
# At the end of the line, its seq is its position (see `_queue.py`): no read of the queue.
_QUEUE_LAST = "INSERT INTO queue (conversation_id, seq, position) VALUES (?1, ?2, ?2)"
# First in line: one place before the head (its own seq if the queue is empty).
_QUEUE_FIRST = (
    "INSERT INTO queue (conversation_id, seq, position) VALUES (?1, ?2, ifnull(("
    "SELECT min(position) - 1 FROM queue WHERE conversation_id = ?1), ?2))"
)
_QUEUED_COUNT = "SELECT count(*) FROM queue WHERE conversation_id = ?"
_NEWEST_EVENT = "ifnull((SELECT max(seq) FROM events WHERE conversation_id = ?1), 0)"
_LAST_SEQ = f"SELECT max(last_seq, {_NEWEST_EVENT}) FROM conversations WHERE id = ?1"


# Events that also set the conversation's current state, and how (?1 the id, ?2 the body):
# the agent's latest word is kept on the row, written in the transaction of its event. The
# bodies are `protocol.events`' (usage, commands, mode, config_options, title), JSON objects.
STATE_FOLDS: Final[dict[str, str]] = {
    "usage": "usage = CAST(?2 AS TEXT)",
    "commands": "commands = json_extract(?2, '$.commands')",
    "config_options": "config_options = json_extract(?2, '$.options')",
    # A `mode` with `available` is the whole state (session set-up); without, only `current`
    # changes (current_mode_update), the modes listed before staying.
    "mode": """modes = CASE WHEN json_type(?2, '$.available') = 'array'
        THEN json_object('current', json_extract(?2, '$.current'),
                         'available', json(json_extract(?2, '$.available')))
        ELSE json_set(coalesce(modes, json_object('available', json_array())),
                      '$.current', json_extract(?2, '$.current')) END""",
    # The agent's name for the session replaces a title no person gave; `null` keeps it.
    "title": """title = CASE WHEN title_auto AND json_type(?2, '$.title') = 'text'
        THEN json_extract(?2, '$.title') ELSE title END""",
}
_FOLD_SQL: Final = {
    type_: f"UPDATE conversations SET {assignment} WHERE id = ?1"
    for type_, assignment in STATE_FOLDS.items()
}

_CLEAR_DRAFTS = "DELETE FROM drafts WHERE conversation_id = ?"


def _last_seq(conn: sqlite3.Connection, conv_id: str) -> int:
    rows = conn.execute(_LAST_SEQ, (conv_id,)).fetchall()
    require(rows, conv_id)
    last: int = rows[0][0]
    return last


def _append(
    conn: sqlite3.Connection, conv_id: str, items: Sequence[tuple[str, bytes]], now: float
) -> list[EventRecord]:
    """Insert `items` (no user message) with the next seqs and record the activity on the
    row (to ACTIVITY_RESOLUTION); the caller holds the transaction and checked them."""
    first = _last_seq(conn, conv_id) + 1
    recs = [EventRecord(seq=first + i, type=t, ts=now, body=b) for i, (t, b) in enumerate(items)]
    if len(recs) == 1:
        conn.execute(_INSERT_EVENT, (conv_id, first, recs[0].type, now, recs[0].body))
    else:
        conn.executemany(_INSERT_EVENT, [(conv_id, r.seq, r.type, now, r.body) for r in recs])
    for rec in recs:
        fold = _FOLD_SQL.get(rec.type)
        if fold is not None:
            conn.execute(fold, (conv_id, rec.body))
    # No write when the row already says "active this last second": a streaming turn's group
    # commits then add only their event pages, not the row's and the list index's.
    conn.execute(
        "UPDATE conversations SET updated_at = ?2 WHERE id = ?1 AND updated_at < ?2 - ?3",
        (conv_id, now, ACTIVITY_RESOLUTION),
    )
    return recs


def _check_items(items: Sequence[tuple[str, bytes]]) -> None:
    """Refuse bad events, and user messages: a queued message must be durable before it is
    acknowledged, so it goes through append_user_message (fsynced), never a group commit."""
    for type_, body in items:
        check_event(type_, body)
        if type_ == USER_MESSAGE:
            raise ValueError("a user_message is queued with append_user_message, which fsyncs")


def _cursor_of(conn: sqlite3.Connection, conv_id: str) -> int:
    rows = conn.execute("SELECT cursor FROM conversations WHERE id = ?", (conv_id,)).fetchall()
    require(rows, conv_id)
    cursor: int = rows[0][0]
    return cursor


class EventOps(Base):
    # --- appends -----------------------------------------------------------------------------

    def append_event(
        self, conv_id: str, type: str, body: bytes, *, now: float | None = None
    ) -> EventRecord:
        """Append one event (not a 'user_message'). Not durable on its own: it survives a crash
        of this process, and power loss once any later durable commit has returned."""
        return self.append_events(conv_id, [(type, body)], now=now)[0]

    def append_events(
        self,
        conv_id: str,
        items: Sequence[tuple[str, bytes]],
        *,
        now: float | None = None,
        clear_drafts: bool = False,
    ) -> list[EventRecord]:
        """Append several events in one transaction (group commit), with consecutive seqs;
        with `clear_drafts`, drop the conversation's drafts in the same transaction (the events
        store what the drafts held: apart, a crash between them would store that text twice,
        once more as the partial message recovery makes of the drafts).

        ValueError for a 'user_message': those are durable, see append_user_message."""
        _check_items(items)
        if not items and not clear_drafts:
            return []
        with self._transaction() as conn:
            records = _append(conn, conv_id, items, now_or(now)) if items else []
            if clear_drafts:
                conn.execute(_CLEAR_DRAFTS, (conv_id,))
            return records

    def append_user_message(
        self, conv_id: str, body: bytes, *, first: bool = False, now: float | None = None
    ) -> EventRecord:
        """Queue a user message, at the end of the line (`first`: ahead of every queued one).
        Durable: fsynced before it returns, so it may be acknowledged.

        The fsynced transaction writes the event and its queue row only; the conversation's
        `updated_at` follows with the next other write (see Base._activity)."""
        check_event(USER_MESSAGE, body)
        now = now_or(now)
        # `_transaction` spelled out, without its bumps: through the generator-based context
        # manager this measured ~15 us slower, on the path every acknowledgement waits for.
        conn = self._begin(durable=True)
        try:
            seq = _last_seq(conn, conv_id) + 1
            conn.execute(_INSERT_EVENT, (conv_id, seq, USER_MESSAGE, now, body))
            conn.execute(_QUEUE_FIRST if first else _QUEUE_LAST, (conv_id, seq))
            self._check_file()  # before, or the refused message lands in a file moved aside
            conn.execute("COMMIT")
            self._io_failed = False
            self._check_file()  # committed, but to the file the next start will read?
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            self._end()
        self._note_activity(conv_id, now)
        return EventRecord(seq=seq, type=USER_MESSAGE, ts=now, body=body)

    def newest_user_message_seq(self, conv_id: str) -> int:
        """The seq of the newest user message still stored (0 if none): the newest queued one,
        else the newest taken off the queue (prompted or steered: `taken`). Two index seeks."""
        rows = self._rows(
            "SELECT max(c.taken, ifnull((SELECT max(q.seq) FROM queue AS q "
            "WHERE q.conversation_id = c.id), 0)) FROM conversations AS c WHERE c.id = ?",
            (conv_id,),
        )
        require(rows, conv_id)
        seq: int = rows[0][0]
        return seq

    def event_at(self, conv_id: str, seq: int) -> EventRecord | None:
        rows = self._rows(
            "SELECT seq, type, ts, body FROM events WHERE conversation_id = ? AND seq = ?",
            (conv_id, seq),
        )
        return (
            EventRecord(seq=rows[0][0], type=rows[0][1], ts=rows[0][2], body=rows[0][3])
            if rows
            else None
        )

    def count_user_messages(self, conv_id: str, upto_seq: int) -> int:
        """User messages with seq <= upto_seq: a scan of the conversation's events, for messages
        stored before they carried their number."""
        rows = self._rows(
            "SELECT count(*) FROM events WHERE conversation_id = ? AND seq <= ? AND type = ?",
            (conv_id, upto_seq, USER_MESSAGE),
        )
        count: int = rows[0][0]
        return count

    def append_user_messages(
        self, items: Sequence[tuple[str, Callable[[], bytes], bool]], *, now: float | None = None
    ) -> list[tuple[EventRecord, int] | StoreError]:
        """Queue several user messages in one durable transaction: group commit, one fsync
        for all of them, as acknowledgements that arrive together need. Each item is a
        conversation id, a function making the message's body, called inside the transaction
        (it may read this store: a message's number follows the one before it), and whether
        it goes first in line (a steer) rather than last.
        Each gets its record and the count of messages its conversation has queued with it;
        or, alone, its error (NotFound: no such conversation; a body that fails its check). A
        failure of the transaction itself raises, for all of them."""
        now = now_or(now)
        out: list[tuple[EventRecord, int] | StoreError] = []
        alone = len(items) == 1  # nothing to keep apart from: no savepoints
        conn = self._begin(durable=True)
        try:
            for conv_id, make_body, first in items:
                if not alone:
                    conn.execute("SAVEPOINT message")
                try:
                    seq = _last_seq(conn, conv_id) + 1
                    body = make_body()
                    check_event(USER_MESSAGE, body)
                except (StoreError, ValueError) as exc:
                    if alone:
                        raise
                    conn.execute("ROLLBACK TO message")
                    conn.execute("RELEASE message")
                    out.append(exc if isinstance(exc, StoreError) else StoreError(str(exc)))
                    continue
                conn.execute(_INSERT_EVENT, (conv_id, seq, USER_MESSAGE, now, body))
                conn.execute(_QUEUE_FIRST if first else _QUEUE_LAST, (conv_id, seq))
                queued = conn.execute(_QUEUED_COUNT, (conv_id,)).fetchall()[0][0]
                if not alone:
                    conn.execute("RELEASE message")
                out.append((EventRecord(seq=seq, type=USER_MESSAGE, ts=now, body=body), queued))
            self._check_file()  # before, or refused messages land in a file moved aside
            conn.execute("COMMIT")
            self._io_failed = False
            self._check_file()  # committed, but to the file the next start will read?
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            self._end()
        for conv_id, result in zip((item[0] for item in items), out, strict=True):
            if isinstance(result, tuple):  # its `updated_at` follows with the next other write
                self._note_activity(conv_id, now)
        return out

    # --- reads -------------------------------------------------------------------------------

    def read_events(
        self, conv_id: str, after_seq: int = 0, limit: int = 500, *, max_bytes: int | None = None
    ) -> list[EventRecord]:
        """Events with seq > after_seq, in seq order; [] for an unknown conversation.

        With `max_bytes`, the page stops before the event that would take its bodies past it
        (the first event always comes): a caller wanting more reads on from the last seq.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        upto = None
        if max_bytes is not None:
            # Sizes first (SQLite reads a blob's length without its content), then the rows.
            sizes = self._rows(
                "SELECT seq, length(body) FROM events WHERE conversation_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (conv_id, after_seq, limit),
            )
            total = 0
            for seq, size in sizes:
                if upto is not None and total + size > max_bytes:
                    break
                total, upto = total + size, seq
            if upto is None:
                return []
        rows = self._rows(
            "SELECT seq, type, ts, body FROM events WHERE conversation_id = ? AND seq > ? "
            "AND seq <= ? ORDER BY seq LIMIT ?",
            (conv_id, after_seq, upto if upto is not None else 2**63 - 1, limit),
        )
        return [EventRecord(seq=r[0], type=r[1], ts=r[2], body=r[3]) for r in rows]

    def end_turn(
        self,
        conv_id: str,
        events: Sequence[tuple[str, bytes]],
        status: str,
        *,
        now: float | None = None,
    ) -> list[EventRecord]:
        """Append the turn's final events (no 'user_message'), drop its drafts and set the
        status, atomically. Durable: a finished turn's answer is worth one fsync per turn."""
        _check_items(events)
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(sorted(STATUSES))}, not {status!r}")
        now = now_or(now)
        with self._transaction(durable=True) as conn:
            conn.execute("DELETE FROM drafts WHERE conversation_id = ?", (conv_id,))
            recs = _append(conn, conv_id, events, now) if events else []
            rows = conn.execute(
                "UPDATE conversations SET status = ?, updated_at = max(updated_at, ?) "
                "WHERE id = ? RETURNING 1",
                (status, now, conv_id),
            ).fetchall()
            require(rows, conv_id)
        return recs

    # --- drafts: the running turn's text, saved as it grows ------------------------------------

    def append_draft(self, conv_id: str, prompt_seq: int, kind: str, text: str) -> None:
        """Add `text` to the draft of (prompt_seq, kind); kind is 'message' or 'thought'."""
        if kind not in KINDS:
            raise ValueError(f"draft kind must be 'message' or 'thought', not {kind!r}")
        with self._transaction() as conn:
            _cursor_of(conn, conv_id)  # NotFound, rather than a foreign-key error
            conn.execute(
                "INSERT INTO drafts (conversation_id, prompt_seq, kind, part, text) "
                "SELECT ?1, ?2, ?3, COALESCE(MAX(part) + 1, 0), ?4 FROM drafts "
                "WHERE conversation_id = ?1 AND prompt_seq = ?2 AND kind = ?3",
                (conv_id, prompt_seq, kind, text),
            )

    def drafts(self, conv_id: str) -> list[tuple[int, str, str]]:
        """(prompt_seq, kind, text so far) of every draft, by prompt_seq then kind."""
        rows = self._rows(
            "SELECT prompt_seq, kind, text FROM drafts WHERE conversation_id = ? "
            "ORDER BY prompt_seq, kind, part",
            (conv_id,),
        )
        out: list[tuple[int, str, str]] = []
        parts: list[str] = []
        for i, (prompt_seq, kind, text) in enumerate(rows):
            parts.append(text)
            if i + 1 == len(rows) or rows[i + 1][:2] != (prompt_seq, kind):
                out.append((prompt_seq, kind, "".join(parts)))
                parts = []
        return out

    def clear_drafts(self, conv_id: str) -> None:
        """Drop every draft of the conversation (a no-op if there are none)."""
        with self._transaction() as conn:
            conn.execute(_CLEAR_DRAFTS, (conv_id,))
