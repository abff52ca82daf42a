"""The global agent slot table: at most `max_agents` agent processes, FIFO waiters, LRU eviction.

One `SlotTable` per engine is the only owner of who may run an agent:

- **A token per live agent.** An agent slot (`slot.AgentSlot`) takes a token before it spawns
  and releases it once the agent's process group is gone, so tokens held >= agent processes
  alive, and tokens held <= `max_agents` (a reload that lowers the limit grants nothing until
  enough agents have gone). A token whose agent is being stopped is `releasing`.
- **Waiters in FIFO order.** A conversation that needs an agent when no token is free waits in
  line (`join`); a freed token goes to the head of the line, never to a newcomer while someone
  waits. A waiter leaves the line when it no longer needs an agent (interrupted, paused, its
  queue emptied, deleted, the daemon stopping); its place is its `position`, 1 first.
- **Idle agents in least-recently-used order.** An agent with no turn whose supervisor is
  waiting for work is `park`ed here. While someone waits and no token is free or on its way
  back, the least recently used idle agent is asked to stop (`evict`, as `idle_ttl` would), and
  its token, once its group is gone, goes to the head waiter. Tokens already on their way back
  are counted first, so one waiter costs at most one eviction.

Nothing here awaits but a waiter: every other call is synchronous and makes its whole change
with no checkpoint in between, so the counts above hold at every checkpoint.
"""

from __future__ import annotations

import collections
import math
import signal
from typing import Protocol

import attrs
import trio

from daemon.agents._process import signal_group
from daemon.engine.line import Line, Waiter

__all__ = ["Evictable", "SlotTable", "SlotTableStatistics", "SlotToken", "SlotWaiter"]


class Evictable(Protocol):
    def evict(self) -> bool:
        """Stop this idle agent to free its slot; False if it is no longer idle."""
        ...


@attrs.frozen
class SlotTableStatistics:
    used: int  # tokens held: agents starting, running or being stopped
    limit: int  # max_agents
    waiting: int  # conversations in line for a slot
    idle: int  # parked agents a waiter may take the slot of
    evictions: int  # idle agents stopped for a waiter since start-up


@attrs.define(eq=False)
class SlotToken:
    """The right to one agent process, from before its spawn until its process group is gone."""

    _table: SlotTable
    # The agent's process group once it runs (None for an in-process agent): for its RSS.
    pgid: int | None = None
    _releasing: bool = False
    _released: bool = False

    def stopping(self) -> None:
        """Its agent is being stopped: the token is on its way back (idempotent)."""
        if not self._releasing and not self._released:
            self._releasing = True
            self._table._stopping()

    def release(self) -> None:
        """Its agent's process group is gone, or it never started (idempotent)."""
        if not self._released:
            self._released = True
            self._table._release(self)


# One conversation's place in line for a slot, from `SlotTable.join` until it takes a token or
# leaves (`line.Waiter`: wait, poke, leave, position).
SlotWaiter = Waiter[SlotToken]


@attrs.define(eq=False)
class SlotTable:
    _limit: int
    _held: set[SlotToken] = attrs.field(factory=set)
    _releasing: int = 0
    _line: Line[SlotToken] = attrs.field(factory=Line)
    _idle: collections.OrderedDict[Evictable, None] = attrs.field(
        factory=collections.OrderedDict
    )  # least recently used first
    _evictions: int = 0
    _released: trio.Event = attrs.field(factory=trio.Event)  # a token came back
    # Set when the daemon stops: agents stopped from then on are killed by this trio time.
    kill_at: float = math.inf

    # --- asked by the engine ------------------------------------------------------------------

    def statistics(self) -> SlotTableStatistics:
        return SlotTableStatistics(
            used=len(self._held),
            limit=self._limit,
            waiting=len(self._line),
            idle=len(self._idle),
            evictions=self._evictions,
        )

    def agent_groups(self) -> list[int]:
        """Process groups of the agents that hold a token and have spawned."""
        return [t.pgid for t in self._held if t.pgid is not None]

    def set_limit(self, limit: int) -> None:
        """A reload: more slots are granted at once; fewer stop idle agents over the limit."""
        self._limit = limit
        self._grant()
        self._rebalance()

    def stop_by(self, kill_at: float) -> None:
        """The daemon is stopping: agents stopped from now on are killed by `kill_at`."""
        self.kill_at = kill_at

    async def wait_all_released(self) -> None:
        """Until no token is held: every agent's process group is gone."""
        while self._held:
            await self._released.wait()
        await trio.lowlevel.checkpoint()

    def kill_all(self) -> int:
        """SIGKILL to the process group of every agent still holding a token (a stopping
        daemon's last word: one signal per group, no search); returns how many."""
        groups = self.agent_groups()
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        return len(groups)

    # --- asked by agent slots -----------------------------------------------------------------

    def join(self) -> SlotWaiter:
        """A place in line; granted at once if a token is free and nobody waits."""
        free = not self._line and len(self._held) < self._limit
        waiter = self._line.join(self._new_token() if free else None)
        if not free:
            self._rebalance()
        return waiter

    def park(self, agent: Evictable) -> None:
        """`agent` is idle: most recently used now, and a waiter may take its slot."""
        self._idle.pop(agent, None)
        self._idle[agent] = None
        self._rebalance()

    def unpark(self, agent: Evictable) -> None:
        self._idle.pop(agent, None)

    # --- the table ------------------------------------------------------------------------------

    def _new_token(self) -> SlotToken:
        token = SlotToken(self)
        self._held.add(token)
        return token

    def _stopping(self) -> None:
        self._releasing += 1

    def _release(self, token: SlotToken) -> None:
        self._held.discard(token)
        if token._releasing:
            self._releasing -= 1
        self._released.set()
        self._released = trio.Event()
        self._grant()
        self._rebalance()

    def _grant(self) -> None:
        """Free tokens to the head of the line, in order."""
        while self._line and len(self._held) < self._limit:
            self._line.grant_next(self._new_token())

    def _deficit(self) -> int:
        """Slots to free for the line, beyond those on their way back."""
        return len(self._line) + len(self._held) - self._releasing - self._limit

    def _rebalance(self) -> None:
        """Evict least recently used idle agents while the line needs their slots."""
        while self._deficit() > 0 and self._idle:
            agent, _ = self._idle.popitem(last=False)
            if agent.evict():  # synchronous: its token is `releasing` before this returns
                self._evictions += 1
