"""The connection a `Store` wraps: short write transactions, durable commits, wrapped errors."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import NotFound, StoreError

__all__ = ["Base", "now_or", "require"]

# Primary result codes (the low byte of an extended one) worth their own message.
_DAMAGED = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_DISK = frozenset({10, 13})  # SQLITE_IOERR, SQLITE_FULL
_DAMAGED_ADVICE = "stop acpd, then move the file aside or restore a backup"


def now_or(now: float | None) -> float:
    return time.time() if now is None else now


class Base:
    """Holds one sqlite3 connection; the operations live in mixins that share it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly

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

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

        IMMEDIATE takes the write lock up front, so a transaction never fails halfway on a lock
        upgrade. `durable` commits with synchronous=FULL: the WAL is fsynced before COMMIT
        returns, and since the WAL is one file, so is every earlier NORMAL commit.
        """
        if self.readonly:
            raise StoreError(f"store {self.path}: this connection is read-only")
        conn = self._conn
        try:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise self._error(exc) from None

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
