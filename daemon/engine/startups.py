"""Start-up permits: at most `max_starting` agents in start-up at once, the rest in FIFO order.

An agent's start-up (spawn, `initialize`, `session/new` or `session/load`, its mode and options
put back) is the costliest moment of its life for the machine: an interpreter or a node
runtime loading, and a handshake whose every message the daemon answers. Two hundred of them
at once on two cores left the daemon a sliver of the CPU (agents are niced, but two hundred
at weight 335 outweigh one daemon at 1024): measured, `daemon/status` p99 about 94 ms and a
send's p99 about 380 ms, while the start-ups queued for the same cores anyway. Bounding them
keeps the machine, and the daemon on it, responsive (13 ms and 20 ms).

One `StartPermits` per engine:

- **A permit per start-up.** An agent slot (`slot.AgentSlot`) that holds one of the
  `max_agents` tokens takes a permit after any crash backoff and right before the spawn, and
  gives it back once the agent's session is set up, or once the failed start-up is over (its
  process group stopped): a start that fails or hangs holds its permit for at most
  `start_timeout` plus its stop. Permits held <= `max_starting` (a reload that lowers it
  grants nothing until enough start-ups have ended).
- **FIFO.** Start-ups wait in the order they asked (`line.Line`); a permit given back goes to
  the head of the line, never to a newcomer while someone waits. A waiter may leave at any
  time (its conversation interrupted, its queue emptied, deleted, the daemon stopping).

Nothing here awaits but a waiter, as in `slots.py`.
"""

from __future__ import annotations

import attrs

from daemon.engine.line import Line, Waiter

__all__ = ["StartPermit", "StartPermits", "StartPermitsStatistics", "StartWaiter"]


@attrs.frozen
class StartPermitsStatistics:
    starting: int  # permits held: agents in start-up
    limit: int  # max_starting
    waiting: int  # start-ups in line for a permit


@attrs.define(eq=False)
class StartPermit:
    """The right to run one agent's start-up."""

    _permits: StartPermits
    _released: bool = False

    def release(self) -> None:
        """The start-up is over, or never began (idempotent)."""
        if not self._released:
            self._released = True
            self._permits._release()


# One start-up's place in line for a permit (`line.Waiter`: wait, poke, leave).
StartWaiter = Waiter[StartPermit]


@attrs.define(eq=False)
class StartPermits:
    _limit: int
    _held: int = 0
    _line: Line[StartPermit] = attrs.field(factory=Line)

    def statistics(self) -> StartPermitsStatistics:
        return StartPermitsStatistics(
            starting=self._held, limit=self._limit, waiting=len(self._line)
        )

    def set_limit(self, limit: int) -> None:
        """A reload: more permits are granted at once; fewer take effect as start-ups end."""
        self._limit = limit
        self._grant()

    def join(self) -> StartWaiter:
        """A place in line; granted at once if a permit is free and nobody waits."""
        free = not self._line and self._held < self._limit
        return self._line.join(self._new_permit() if free else None)

    def _new_permit(self) -> StartPermit:
        self._held += 1
        return StartPermit(self)

    def _release(self) -> None:
        self._held -= 1
        self._grant()

    def _grant(self) -> None:
        while self._line and self._held < self._limit:
            self._line.grant_next(self._new_permit())
