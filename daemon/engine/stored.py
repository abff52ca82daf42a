"""How many conversations the store holds, for `daemon/status`, without a store call each time.

The daemon is the store's only writer (the file lock), and every create and delete goes through
the engine: so the count is read once and then kept by them (`changing`). A status poll then
answers from memory, never queued behind a start storm's reads in the reader's thread.

A read that overlaps a create or delete is not kept (it may or may not have seen it), nor is
a count after a create or delete that raised (it may have committed before the error): the
next `get` reads again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import attrs

__all__ = ["StoredCount"]


@attrs.define(eq=False)
class StoredCount:
    _read: Callable[[], Awaitable[int]]  # the store's count (raises what the store raises)
    _value: int | None = None  # None: not known, read at the next `get`
    _changes: int = 0  # bumped as each create or delete begins and ends
    _changing: int = 0  # creates and deletes under way

    async def get(self) -> int:
        if self._value is not None:
            return self._value
        before = self._changes
        value = await self._read()
        if before == self._changes and not self._changing:
            self._value = value
        return value

    @contextmanager
    def changing(self) -> Iterator[Callable[[int], None]]:
        """Around a create or delete: the body calls the function it gets with how much the
        committed write changed the count (1, -1, or 0: there was nothing to delete)."""
        done: list[int] = []
        self._changes += 1
        self._changing += 1
        try:
            yield done.append
        finally:
            self._changing -= 1
            self._changes += 1
            if len(done) == 1 and self._value is not None:
                self._value += done[0]
            else:  # it raised (or said nothing): the count is not known any more
                self._value = None
