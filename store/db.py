"""`Store`: the one file of durable state, opened for writing or read-only.

Threading: a connection is used by one thread at a time (the daemon's capacity-1 limiters),
not necessarily always the same one. In WAL mode the read-only connection never blocks the
writer and the writer never blocks it; each read statement sees one committed snapshot.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from ._base import _identity
from ._conversations import ConversationOps
from ._events import EventOps
from ._queue import QueueOps
from .checkpoint import BACKSTOP_PAGES, Checkpointer
from .errors import StoreError
from .schema import connect_checkpointer, connect_reader, connect_writer

__all__ = ["STORE_FILE", "Store"]

STORE_FILE = "acpd.sqlite3"  # the store's name in the data dir


class Store(ConversationOps, EventOps, QueueOps):
    """Conversations, their events, the prompt queue and drafts, in one SQLite file.

    Writes on a reader raise StoreError. Every sqlite3 error becomes a StoreError; bad
    arguments raise ValueError; NotFound and Conflict are StoreErrors too.

    Durable writes (fsynced before they return): create_conversation, delete_conversation,
    set_permission_policy, append_user_message(s), edit_pending, move_pending, remove_pending,
    take_steered, start_turn, end_turn, check_writable, and set_status(durable=True). The
    others (append_event(s), drafts, status by default, title, ACP session) survive a crash of the
    process at once and power loss from the next durable write on (the WAL is one file);
    so append_event(s) and end_turn refuse a 'user_message' (ValueError): a queued message
    is acknowledged, hence appended only by append_user_message.

    A write refused because the file cannot take it raises StorageUnavailable (a StoreError)
    saying why: disk full, an I/O error, read-only, or the path no longer naming the file this
    Store opened (deleted, moved or replaced: checked after every commit, before the write
    returns, so what returns is on the file the next start reads). Nothing of such a call is
    on that file; the Store stays usable and the next call tries again.

    Damage (to pages past the schema, which open does not read: that would be O(stored))
    surfaces as a one-line StoreError saying the file is damaged, from whichever call meets it.
    """

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open or create the store at `path` for writing; migrate it to the current schema.

        Raises StoreError, naming the path, for a file that is not ours, is damaged, or was
        written by a newer acpd; such a file is left as it was.
        """
        store = cls(connect_writer(path), path, readonly=False)
        try:
            store._recover_activity()
            store.watch_file()  # the WAL exists now: the write above opened it
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_reader(cls, path: Path) -> Store:
        """A read-only Store on an existing, current file (open the writer first)."""
        return cls(connect_reader(path), path, readonly=True)

    def reader(self) -> Store:
        """A read-only Store on the same file, with its own connection."""
        return self.open_reader(self.path)

    def checkpointer(self) -> Checkpointer:
        """A Checkpointer on this writer's file, to which this connection leaves checkpoints
        from now on: its own commits checkpoint only past BACKSTOP_PAGES (see
        store/checkpoint.py). StoreError if the path no longer names the file it opened."""
        if self.readonly or self._files is None:
            raise StoreError(f"store {self.path}: only the writer hands out checkpoints")
        ours = self._files[0]
        changed = StoreError(f"store {self.path}: the file changed since the writer opened it")
        if ours is None or _identity(self._names[0]) != ours:
            raise changed
        checkpointer = Checkpointer(connect_checkpointer(self.path), self.path)
        try:
            if _identity(self._names[0]) != ours:  # replaced while it connected: not ours
                raise changed
            self._rows(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
        except BaseException:
            checkpointer.close()
            raise
        return checkpointer

    def _recover_activity(self) -> None:
        """Bumps a crash lost are those of messages still queued (Base._activity): re-derive
        them from the queue, O(pending)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE conversations SET updated_at = max(updated_at, ("
                "SELECT max(e.ts) FROM queue AS q JOIN events AS e "
                "ON e.conversation_id = q.conversation_id AND e.seq = q.seq "
                "WHERE q.conversation_id = conversations.id)) "
                "WHERE id IN (SELECT conversation_id FROM queue)"
            )

    def check_writable(self) -> None:
        """A small durable write (the time, in `meta`): raises StorageUnavailable (or another
        StoreError) unless a commit reaches the file the next start will read."""
        with self._transaction(durable=True) as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('checked_at', ?1) "
                "ON CONFLICT (key) DO UPDATE SET value = ?1",
                (int(time.time()),),
            )

    def close(self) -> None:
        """Close the connection (idempotent), after writing pending activity bumps (if that
        fails, opening re-derives them). The last one to close checkpoints the WAL.

        No `PRAGMA optimize` here: it may ANALYZE a whole table, making shutdown O(stored);
        the queries that must stay cheap name their index (INDEXED BY) instead.
        """
        try:
            self.flush_activity()
        except StoreError:
            pass
        finally:
            try:
                self._check_file()  # gone since the last write? then our WAL must not stay
            except StoreError:
                self.empty_wal()  # (again: the first try may have met a reader)
            self._files = None  # closing deletes the WAL: nothing to watch any more
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
