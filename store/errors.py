"""The store's exceptions: every failure the daemon may see from `store/` is a `StoreError`.

Messages are one line, for people (the daemon prints them as they are), and name the file or
the conversation concerned. `sqlite3` errors never escape: they are wrapped at the boundary.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DELETED",
    "DISK_FULL",
    "IO_ERROR",
    "READ_ONLY",
    "Conflict",
    "LockedError",
    "NotFound",
    "StorageUnavailable",
    "StoreError",
]

# Why storage is unavailable (`StorageUnavailable.cause`), as clients and `daemon/status` say it.
DELETED: Final = "deleted or replaced"
DISK_FULL: Final = "disk full"
IO_ERROR: Final = "I/O error"
READ_ONLY: Final = "read-only"
_SAYS: Final = {DELETED: "the database file was deleted or replaced"}


class StoreError(Exception):
    """The store cannot do what was asked: a bad or newer file, a failed write, a closed store."""


class NotFound(StoreError):
    """No such conversation, or no such message in it."""


class Conflict(StoreError):
    """The request contradicts the stored state, e.g. removing a message already prompted."""


class LockedError(StoreError):
    """Another acpd holds the data dir's lock."""


class StorageUnavailable(StoreError):
    """The file cannot take (or give) what was asked: nothing of the call was committed to the
    file the next start will read, so nothing of it may be acknowledged.

    `cause` is one of DELETED, DISK_FULL, IO_ERROR, READ_ONLY; `str()` is the line for clients
    ("storage unavailable: disk full"); `detail` adds what SQLite or the OS said, and the path,
    for the log. Disk full, I/O errors and read-only are retried by the next call as it comes;
    DELETED is found again by every write until the path names the file we opened.
    """

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"storage unavailable: {_SAYS.get(cause, cause)}")
        self.cause = cause
        self.detail = detail
