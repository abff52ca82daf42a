"""Checkpoints off the writer's path: the WAL copied into the main file by a connection of its own.

Left to SQLite, a checkpoint runs inside whichever commit brings the WAL past
`wal_autocheckpoint` pages: that commit copies up to 16 MB into the main file and fsyncs it
before it returns, and whatever waits for the writer (a person's send) waits for that too.
A `Checkpointer` does the copying from another connection, in another thread: a PASSIVE
checkpoint never takes the write lock, so commits go on while it runs. The writer keeps a
backstop (`BACKSTOP_PAGES`): should checkpoints stop (a stalled disk, a reader pinning old
frames), the WAL still cannot grow without bound; and what the backstop's checkpoint then
copies is only what the Checkpointer had not.

The connection is writable (a read-only one cannot checkpoint), so it is opened only on the
file the writer opened and checked, and it never migrates anything. It is not the last to
close: the writer, closing after it, checkpoints and deletes the WAL as before.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs

from .errors import StoreError

__all__ = ["BACKSTOP_PAGES", "CheckpointResult", "Checkpointer"]

# The writer's own wal_autocheckpoint while a Checkpointer runs: 64 MB of 4 KiB pages.
BACKSTOP_PAGES = 16_000


@attrs.frozen
class CheckpointResult:
    wal_frames: int  # frames in the WAL when the checkpoint began (-1: none, not WAL)
    copied: int  # frames of them now in the main file (from this and earlier checkpoints)

    @property
    def caught_up(self) -> bool:
        """Every frame copied: the writer's next transaction starts the WAL over."""
        return self.copied >= self.wal_frames


class Checkpointer:
    """Made by `Store.checkpointer()`; used by one thread at a time."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    def checkpoint(self) -> CheckpointResult:
        """Copy what the WAL holds into the main file (PASSIVE: as far as readers allow,
        never waiting for them nor for the writer) and fsync it."""
        try:
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: checkpoint failed: {exc}") from None
        _busy, frames, copied = row
        return CheckpointResult(frames, copied)

    def close(self) -> None:
        self._conn.close()
