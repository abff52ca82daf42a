"""The connection a `Store` wraps: short write transactions, durable commits, wrapped errors."""

from __future__ import annotations

import collections
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import (
    DELETED,
    DISK_FULL,
    IO_ERROR,
    READ_ONLY,
    NotFound,
    StorageUnavailable,
    StoreError,
)

__all__ = ["ACTIVITY_RESOLUTION", "Base", "now_or", "require"]

# Primary result codes (the low byte of an extended one) worth their own message.
_DAMAGED = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_READONLY, _IOERR, _CANTOPEN, _FULL = 8, 10, 14, 13
_READONLY_DBMOVED = _READONLY | (4 << 8)  # SQLite's own "the file was moved or unlinked"
# Free space below which an I/O error is taken for a full disk: with delayed allocation (ext4,
# xfs) ENOSPC can come from fsync, which SQLite can only report as SQLITE_IOERR_FSYNC.
_NEARLY_FULL = 1024 * 1024
_DAMAGED_ADVICE = "stop acpd, then move the file aside or restore a backup"
# How stale `updated_at` may be while events stream in and messages queue (turn starts and
# ends set it exactly): a write to the row, and to the list's index, at most once a second.
ACTIVITY_RESOLUTION = 1.0
ACTIVITY_FLOORS = 4096  # conversations whose `updated_at` floor a connection remembers
_BUMP = "UPDATE conversations SET updated_at = ?1 WHERE id = ?2 AND updated_at < ?1 - ?3"
_UPDATED_AT = "SELECT updated_at FROM conversations WHERE id = ?"
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
        # What this connection knows `updated_at` to be at least, by conversation (the most
        # recently bumped, at most ACTIVITY_FLOORS): a bump it already covers is not kept, so
        # a conversation's sends within ACTIVITY_RESOLUTION of a written bump cost no write.
        self._activity_floor: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._sync_full = False
        # The (st_dev, st_ino) of the file and of its WAL when `watch_file` was called; None
        # until then (readers never write). `_lost`: the last check found them gone.
        self._files: tuple[_Identity | None, _Identity | None] | None = None
        where = path.absolute()  # a later chdir must not look like a deleted file
        self._names = (os.fsencode(where), os.fsencode(_wal_of(where)))  # for stat(2), once
        self._lost = False
        self._empty_due = False  # found lost inside a transaction: empty the WAL after it
        self._io_failed = False  # since the last commit: an I/O error was seen

    def watch_file(self) -> None:
        """Remember which file (and WAL) the path names now. From here on every write checks
        that the path still names them, right before its COMMIT (else it rolls back: nothing
        of it lands anywhere, not even in a file moved aside and put back later), and a
        durable one again after it, before it returns: a durable write that returns is on
        the file the next start will read (see `_check_file`)."""
        self._files = (_identity(self._names[0]), _identity(self._names[1]))

    def _check_file(self) -> None:
        """StorageUnavailable(DELETED) unless the path still names the file we opened.

        Two stat(2) calls by path, about a microsecond each: cheap next to any commit, and
        exact where `st_nlink == 0` on the open file is not (a file moved aside and another
        put in its place). The WAL counts too: deleting it alone loses what is not yet
        checkpointed. SQLite keeps the WAL's inode while any connection is open."""
        if self._files is None:
            return
        main, wal = self._files
        wal_now = _identity(self._names[1]) if wal is not None else None
        if _identity(self._names[0]) == main and wal_now == wal:
            self._lost = False
            return
        if not self._lost:
            self._lost = True
            self._empty_due = True  # after the transaction (see `_end`), or now if none
            if not self._conn.in_transaction:
                self._end()
        raise StorageUnavailable(
            DELETED,
            f"store {self.path}: the path no longer names the file acpd opened "
            "(deleted, moved or replaced)",
        )

    def check_file(self) -> None:
        """StorageUnavailable(DELETED) unless the path still names the file we opened (a
        look, no write: for a caller that wants to know while nothing is written)."""
        self._check_file()

    def empty_wal(self) -> None:
        """Checkpoint the WAL into our file and truncate it (best effort).

        Once our file is gone from the path, our WAL may still be there, beside a file it does
        not belong to (a backup put back, say): the next start would apply its frames to that
        file. Checkpointed into ours (which lives on if it was only moved aside) and emptied,
        it holds nothing to apply. Cannot block on writes: ours are refused from now on."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """One line naming the file. `from None` at the raise: the sqlite3 exception adds
        nothing the message lacks, and a chained traceback is what a person must not get."""
        code: int | None = getattr(exc, "sqlite_errorcode", None)  # None: not from SQLite
        if code is None:
            return StoreError(f"store {self.path}: {exc}")
        detail = f"store {self.path}: {exc} ({getattr(exc, 'sqlite_errorname', code)})"
        primary = code & 0xFF
        if primary in _DAMAGED:
            if self._io_failed:  # a failing disk reads back garbage: not the file's fault
                return StorageUnavailable(IO_ERROR, detail)
            return self._damaged(str(exc))
        if code == _READONLY_DBMOVED:
            self._lost = True
            return StorageUnavailable(DELETED, detail)
        if primary == _FULL:
            return StorageUnavailable(DISK_FULL, detail)
        if primary in (_IOERR, _CANTOPEN):
            self._io_failed = True
            return StorageUnavailable(self._why_io_failed(), detail)
        if primary == _READONLY:
            return StorageUnavailable(READ_ONLY, detail)
        return StoreError(f"store {self.path}: {exc}")

    def _why_io_failed(self) -> str:
        """SQLite says only "I/O error" for a write(2) or fsync(2) that failed; the file
        system may know better. Cheap, and only on this path."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return IO_ERROR
        if st.f_flag & os.ST_RDONLY:
            return READ_ONLY
        # With delayed allocation (ext4, xfs) ENOSPC may come from fsync, as an I/O error.
        # Root may use the blocks reserved for it; anyone else only the available ones.
        free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
        return DISK_FULL if free * st.f_frsize < _NEARLY_FULL else IO_ERROR

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
        if self._lost:
            self._check_file()  # no write to a file nobody will read; unless it is back
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
            if self._empty_due:
                self._empty_due = False
                self.empty_wal()

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction (see `_begin`) committed at the end of the block, rolled back on any
        exception. It first applies the pending activity bumps."""
        conn = self._begin(durable=durable)
        try:
            bumps = list(self._activity.items())
            floors = [self._bump(conn, conv_id, ts) for conv_id, ts in bumps]
            yield conn
            self._check_file()  # gone: roll back, so nothing of it lands anywhere
            conn.execute("COMMIT")
            self._io_failed = False
            if durable:
                self._check_file()  # gone while it committed: not acknowledged, then
            for (conv_id, _), floor in zip(bumps, floors, strict=True):
                del self._activity[conv_id]
                if floor is not None:
                    self._raise_floor(conv_id, floor)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            self._end()

    @staticmethod
    def _bump(conn: sqlite3.Connection, conv_id: str, ts: float) -> float | None:
        """Apply one pending bump; the row's `updated_at` after it (None: no such row)."""
        if conn.execute(_BUMP, (ts, conv_id, ACTIVITY_RESOLUTION)).rowcount:
            return ts
        row = conn.execute(_UPDATED_AT, (conv_id,)).fetchone()  # newer already (a turn's)
        return None if row is None else float(row[0])

    def _note_activity(self, conv_id: str, ts: float) -> None:
        """Activity on `conv_id` at `ts`, for `updated_at` (see `_activity`); not kept if the
        bump would change nothing (it writes only past ACTIVITY_RESOLUTION, and `updated_at`
        never goes back)."""
        floor = self._activity_floor.get(conv_id)
        if floor is not None and floor >= ts - ACTIVITY_RESOLUTION:
            return
        self._activity[conv_id] = max(ts, self._activity.get(conv_id, ts))

    def _raise_floor(self, conv_id: str, at_least: float) -> None:
        floors = self._activity_floor
        floors[conv_id] = max(at_least, floors.pop(conv_id, at_least))
        if len(floors) > ACTIVITY_FLOORS:
            floors.popitem(last=False)  # forgotten: its next bump is kept, and is a no-op

    @property
    def activity_pending(self) -> bool:
        """Whether a bump waits for the next transaction (or `flush_activity`)."""
        return bool(self._activity)

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


_Identity = tuple[int, int]


def _wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _identity(path: bytes) -> _Identity | None:
    """(st_dev, st_ino) of what `path` names now; None if nothing does."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        name = os.fsdecode(path)
        raise StorageUnavailable(IO_ERROR, f"cannot stat {name}: {exc.strerror}") from None
    return st.st_dev, st.st_ino


def require(found: object, conv_id: str) -> None:
    """NotFound unless `found` (a row, or a non-empty list of rows) says the conversation exists."""
    if not found:
        raise NotFound(f"no conversation {conv_id}")
