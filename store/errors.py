"""The store's exceptions: every failure the daemon may see from `store/` is a `StoreError`.

Messages are one line, for people (the daemon prints them as they are), and name the file or
the conversation concerned. `sqlite3` errors never escape: they are wrapped at the boundary.
"""

from __future__ import annotations

__all__ = ["Conflict", "LockedError", "NotFound", "StoreError"]


class StoreError(Exception):
    """The store cannot do what was asked: a bad or newer file, a failed write, a closed store."""


class NotFound(StoreError):
    """No such conversation, or no such message in it."""


class Conflict(StoreError):
    """The request contradicts the stored state, e.g. removing a message already prompted."""


class LockedError(StoreError):
    """Another acpd holds the data dir's lock."""
