"""A first-come-first-served line for a bounded resource: places, pokes, leaving.

The engine has two: conversations waiting for one of the `max_agents` slots (`slots.py`), and
agents waiting for one of the `max_starting` start-up permits (`startups.py`). Each owner
decides when something is free and hands it to the head of its line (`grant_next`); this
module keeps the order and what a place in line may do meanwhile:

- **Wait** until granted, or until **poked**: the waiter's owner had something change (its
  queue lost messages) and looks whether it still needs the grant; it waits again in the
  same place if so.
- **Leave** at any time, idempotently. A grant handed over but not yet taken by its waiter
  (granted, then cancelled before `wait` returned it) is released, so it goes back to its
  owner and on to the next in line: nothing granted is ever lost.

No method but `wait` has a checkpoint, so a line's order and counts hold at every checkpoint.
"""

from __future__ import annotations

import collections
from typing import Generic, Protocol, TypeVar

import attrs
import trio

__all__ = ["Grant", "Line", "Waiter"]


class Grant(Protocol):
    """What a line hands out: its holder gives it back with `release` (idempotent)."""

    def release(self) -> None: ...


G = TypeVar("G", bound=Grant)


@attrs.define(eq=False)
class Waiter(Generic[G]):
    """One place in a `Line`, from `Line.join` until it takes its grant or leaves."""

    _line: Line[G]
    _granted: G | None = None
    _taken: bool = False
    _poked: bool = False
    _gone: bool = False  # left the line
    _wake: trio.Event = attrs.field(factory=trio.Event)

    @property
    def position(self) -> int | None:
        """1 for the head of the line; None once granted or gone."""
        return self._line._position(self)

    async def wait(self) -> G | None:
        """The grant once made (then it is the caller's to release); None when poked first
        (the caller looks whether it still needs it, and waits again in the same place if
        so)."""
        if self._granted is None and not self._poked:
            self._wake = trio.Event()
            await self._wake.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self._granted is not None:
            self._taken = True
            return self._granted
        self._poked = False
        return None

    def poke(self) -> None:
        """Wake `wait` with None (unless a grant was made already)."""
        self._poked = True
        self._wake.set()

    def leave(self) -> None:
        """Out of the line (idempotent). A grant made and not taken is released."""
        if self._gone:
            return
        self._gone = True
        if self._granted is not None:
            if not self._taken:
                self._granted.release()
        else:
            self._line._leave(self)

    def _grant(self, grant: G) -> None:
        self._granted = grant
        self._wake.set()


@attrs.define(eq=False)
class Line(Generic[G]):
    _waiters: collections.OrderedDict[Waiter[G], None] = attrs.field(
        factory=collections.OrderedDict
    )
    _positions: dict[Waiter[G], int] | None = None  # computed on demand, dropped on change

    def __len__(self) -> int:
        return len(self._waiters)

    def join(self, grant: G | None = None) -> Waiter[G]:
        """A new waiter: granted `grant` at once if one is given (its owner had one free and
        nobody waits), else last in line."""
        waiter = Waiter(self)
        if grant is not None:
            waiter._grant(grant)
        else:
            self._waiters[waiter] = None
            self._positions = None
        return waiter

    def grant_next(self, grant: G) -> None:
        """Hand `grant` to the head of the line (which must not be empty)."""
        waiter, _ = self._waiters.popitem(last=False)
        self._positions = None
        waiter._grant(grant)

    def _position(self, waiter: Waiter[G]) -> int | None:
        if self._positions is None:
            self._positions = {w: i for i, w in enumerate(self._waiters, 1)}
        return self._positions.get(waiter)

    def _leave(self, waiter: Waiter[G]) -> None:
        if waiter in self._waiters:
            del self._waiters[waiter]
            self._positions = None
