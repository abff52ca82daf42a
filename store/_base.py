"""The connection a `Store` wraps: short write transactions, durable commits, wrapped errors."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import NotFound, StoreError

__all__ = ["ACTIVITY_RESOLUTION", "Base", "now_or", "require"]

# Primary result codes (the low byte of an extended one) worth their own message.
_DAMAGED = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_DISK = frozenset({10, 13})  # SQLITE_IOERR, SQLITE_FULL
_DAMAGED_ADVICE = "stop acpd, then move the file aside or restore a backup"
# How stale `updated_at` may be while events stream in and messages queue (turn starts and
# ends set it exactly): a write to the row, and to the list's index, at most once a second.
ACTIVITY_RESOLUTION = 1.0
_BUMP = "UPDATE conversations SET updated_at = ?1 WHERE id = ?2 AND updated_at < ?1 - ?3"
_SYNC_FULL = "PRAGMA synchronous = FULL"
_SYNC_NORMAL = "PRAGMA synchronous = NORMAL"  # what schema._configure leaves a connection in


def now_or(now: float | None) -> float:
    return time.time() if now is None else now


class Base:
    """Holds one sqlite3 connection; the operations live in mixins that share it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        # Activity not yet in `updated_at`: queued messages' times, conversation -> newest.
        # The durable append leaves the conversation row alone (its latency is the ack's),
        # so the bump rides on this connection's next other transaction, or flush_activity.
        # A crash loses only bumps of messages still queued (every transaction that takes
        # one off the queue applies them first), and opening re-derives those from the queue.
        self._activity: dict[str, float] = {}
        self._sync_full = False

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """One line naming the file. `from None` at the raise: the sqlite3 exception adds
        nothing the message lacks, and a chained traceback is what a person must not get."""
        code: int | None = getattr(exc, "sqlite_errorcode", None)  # None: not from SQLite
        if code is not None and (code & 0xFF) in _DAMAGED:
            return self._damaged(str(exc))
        if code is not None and (code & 0xFF) in _DISK:
            return StoreError(f"store {self.path}: cannot read or write the disk ({exc})")
        return StoreError(f"store {self.path}: {exc}")

    def _damaged(self, what: str) -> StoreError:
        """Also for a row SQLite read fine but we cannot decode: damage its checks missed."""
        return StoreError(f"store {self.path} is damaged ({what}); {_DAMAGED_ADVICE}")

    def _begin(self, *, durable: bool = False) -> sqlite3.Connection:
        """BEGIN IMMEDIATE, in the synchronous mode the commit needs; pair with `_end`.

        IMMEDIATE takes the write lock up front, so a transaction never fails halfway on a lock
        upgrade. `durable` commits with synchronous=FULL: the WAL is fsynced before COMMIT
        returns, and since the WAL is one file, so is every earlier NORMAL commit.

        FULL is the resting mode (see `_end`): a durable commit, the one an acknowledgement
        waits for, then runs no statement but its own.
        """
        if self.readonly:
            raise StoreError(f"store {self.path}: this connection is read-only")
        conn = self._conn
        try:
            if durable != self._sync_full:
                conn.execute(_SYNC_FULL if durable else _SYNC_NORMAL)
                self._sync_full = durable
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return conn

    def _end(self) -> None:
        """Roll back what did not commit (after an exception, or a missing COMMIT), then go
        back to FULL. That switch is best effort: `_begin` makes sure of the mode anyway."""
        conn = self._conn
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            if not self._sync_full:
                try:
                    conn.execute(_SYNC_FULL)
                    self._sync_full = True
                except sqlite3.Error:
                    pass

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction (see `_begin`) committed at the end of the block, rolled back on any
        exception. It first applies the pending activity bumps."""
        conn = self._begin(durable=durable)
        try:
            bumps = list(self._activity.items())
            if bumps:
                conn.executemany(
                    _BUMP, [(ts, conv_id, ACTIVITY_RESOLUTION) for conv_id, ts in bumps]
                )
            yield conn
            conn.execute("COMMIT")
            for conv_id, _ in bumps:
                del self._activity[conv_id]
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            self._end()

    def flush_activity(self) -> None:
        """Write the pending activity bumps (not durable: see `_activity`)."""
        if self._activity:
            with self._transaction():
                pass

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        """One read statement: atomic on its own (a statement sees one snapshot)."""
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None


def require(found: object, conv_id: str) -> None:
    """NotFound unless `found` (a row, or a non-empty list of rows) says the conversation exists."""
    if not found:
        raise NotFound(f"no conversation {conv_id}")
