"""The event log, the prompt queue and turn drafts of each conversation.

Seqs come from the conversation row's `last_seq`, bumped in the same transaction as the insert,
so they are dense, never reused (a removed message leaves a gap) and never go back. The queue
is the user messages above `cursor`; `queued` counts them and is kept in step by every write
that touches the queue, so reading it is O(1).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ._base import Base, now_or, require
from .errors import Conflict, NotFound
from .records import KINDS, STATUSES, USER_MESSAGE, EventRecord, check_event

__all__ = ["EventOps"]

_INSERT_EVENT = "INSERT INTO events (conversation_id, seq, type, ts, body) VALUES (?, ?, ?, ?, ?)"
_IS_USER_MESSAGE = "SELECT 1 FROM events WHERE conversation_id = ? AND seq = ? AND type = ?"


def _append(
    conn: sqlite3.Connection, conv_id: str, items: Sequence[tuple[str, bytes]], now: float
) -> list[EventRecord]:
    """Insert `items` with the next seqs; the caller holds the transaction and checked them."""
    n_user = sum(1 for type_, _ in items if type_ == USER_MESSAGE)
    rows = conn.execute(
        "UPDATE conversations SET last_seq = last_seq + ?, queued = queued + ?, "
        "updated_at = max(updated_at, ?) WHERE id = ? RETURNING last_seq",
        (len(items), n_user, now, conv_id),
    ).fetchall()
    require(rows, conv_id)
    first = rows[0][0] - len(items) + 1
    recs = [EventRecord(seq=first + i, type=t, ts=now, body=b) for i, (t, b) in enumerate(items)]
    if len(recs) == 1:
        conn.execute(_INSERT_EVENT, (conv_id, first, recs[0].type, now, recs[0].body))
    else:
        conn.executemany(_INSERT_EVENT, [(conv_id, r.seq, r.type, now, r.body) for r in recs])
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
        self, conv_id: str, items: Sequence[tuple[str, bytes]], *, now: float | None = None
    ) -> list[EventRecord]:
        """Append several events in one transaction (group commit), with consecutive seqs.

        ValueError for a 'user_message': those are durable, see append_user_message."""
        _check_items(items)
        if not items:
            return []
        with self._transaction() as conn:
            return _append(conn, conv_id, items, now_or(now))

    def append_user_message(
        self, conv_id: str, body: bytes, *, now: float | None = None
    ) -> EventRecord:
        """Queue a user message. Durable: fsynced before it returns, so it may be acknowledged."""
        check_event(USER_MESSAGE, body)
        with self._transaction(durable=True) as conn:
            return _append(conn, conv_id, [(USER_MESSAGE, body)], now_or(now))[0]

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

    def pending_messages(self, conv_id: str) -> list[EventRecord]:
        """User messages not yet prompted (seq > cursor), oldest first; one snapshot."""
        rows = self._rows(
            "SELECT seq, type, ts, body FROM events INDEXED BY events_user_messages "
            "WHERE conversation_id = ?1 AND type = 'user_message' "
            "AND seq > (SELECT cursor FROM conversations WHERE id = ?1) ORDER BY seq",
            (conv_id,),
        )
        return [EventRecord(seq=r[0], type=r[1], ts=r[2], body=r[3]) for r in rows]

    # --- the queue and turns -----------------------------------------------------------------

    def remove_pending(self, conv_id: str, seq: int) -> None:
        """Delete a queued message; its seq stays a gap. Durable, like the send it undoes.

        Raises NotFound (no such conversation or user message) or Conflict (already prompted).
        """
        with self._transaction(durable=True) as conn:
            cursor = _cursor_of(conn, conv_id)
            if not conn.execute(_IS_USER_MESSAGE, (conv_id, seq, USER_MESSAGE)).fetchall():
                raise NotFound(f"no queued message {seq} in {conv_id}")
            if seq <= cursor:
                raise Conflict(f"message {seq} in {conv_id} was already prompted")
            conn.execute("DELETE FROM events WHERE conversation_id = ? AND seq = ?", (conv_id, seq))
            conn.execute("UPDATE conversations SET queued = queued - 1 WHERE id = ?", (conv_id,))

    def start_turn(
        self, conv_id: str, prompt_seq: int, body: bytes, *, now: float | None = None
    ) -> EventRecord:
        """Move the cursor to `prompt_seq`, mark the conversation running and append
        'turn_started', in one durable transaction, so a message is prompted at most once,
        even across crashes. Skipped messages (seq below prompt_seq) count as prompted.

        Raises Conflict unless `prompt_seq` is a pending user message; NotFound for no
        such conversation.
        """
        check_event("turn_started", body)
        with self._transaction(durable=True) as conn:
            if prompt_seq <= _cursor_of(conn, conv_id):
                raise Conflict(f"message {prompt_seq} in {conv_id} was already prompted")
            if not conn.execute(_IS_USER_MESSAGE, (conv_id, prompt_seq, USER_MESSAGE)).fetchall():
                raise Conflict(f"no queued message {prompt_seq} in {conv_id}")
            conn.execute(
                "UPDATE conversations SET cursor = ?2, status = 'running', queued = ("
                "SELECT count(*) FROM events INDEXED BY events_user_messages "
                "WHERE conversation_id = ?1 AND type = 'user_message' AND seq > ?2) WHERE id = ?1",
                (conv_id, prompt_seq),
            )
            return _append(conn, conv_id, [("turn_started", body)], now_or(now))[0]

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
            conn.execute("DELETE FROM drafts WHERE conversation_id = ?", (conv_id,))
