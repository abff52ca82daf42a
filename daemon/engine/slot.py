"""A conversation's agent slot: the agent process's lifecycle as an explicit state machine.

```
          acquire()          a slot         session set up
  ABSENT ──────────> WAITING ──────> STARTING ──────────────> READY <──────────┐
    ^ ^  withdrawn      │               │ failed to start      │ begin_turn()   │ end_turn()
    │ └─────────────────┘               │                      v                │
    │<──────────────────────────────────┘                    BUSY ──> DRAINING ─┘
    │            gone (process group stopped)                  │ stop(), evict(), │
    └──────────────────────────────────────────────────── STOPPING <─────────────┘
                                                                or it exited by itself
```

One `AgentSlot` per supervisor owns the state; `_move` is the only place that changes it and
refuses a transition the table does not allow. I/O code asks the state (`usable`, `state`)
rather than keeping flags. The agent runs in a task of the supervisor's nursery
(`_run_agent`); its connection's read loop calls the supervisor's handlers synchronously, and
prompts run in the agent's own nursery, so interrupting a turn never cancels a request.

An agent process needs one of the engine's `max_agents` slots (`slots.SlotTable`): the slot
WAITs in line for one (FIFO across conversations) before STARTING, holds its token until the
process group is gone, and offers its READY agent for eviction while the supervisor waits for
work (`park`): a waiting conversation may take its slot. Its start-up also needs one of the
engine's `max_starting` permits (`startups.StartPermits`): STARTING, it waits in line for one
(after any crash backoff), and holds it from the spawn until the session is set up or the
failed start-up is over. A wait in either line is given up when the queue no longer needs an
agent (`withdraw`, `queue_changed`), and by `cancel_start`.

The agent's ACP session is set up inside STARTING (`agentsession.AgentSession`: resumed,
loaded, or new, visibly); the crash history paces restarts (`failures.CrashHistory`).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import attrs
import trio

from daemon.agents.connection import AgentConnection, Launcher, PeerHandlers
from daemon.config import Config
from daemon.engine.agentsession import AgentSession
from daemon.engine.eventlog import EventLog
from daemon.engine.failures import CrashHistory, crash_event, start_failure
from daemon.engine.line import Grant, Waiter
from daemon.engine.slots import SlotTable, SlotToken
from daemon.engine.startups import StartPermit, StartPermits
from store import ConversationRecord

__all__ = ["AgentSlot", "SlotState", "SlotStatistics", "StartFailed", "Withdrawn"]

log = logging.getLogger("acpd.slot")

G = TypeVar("G", bound=Grant)


class SlotState(enum.Enum):
    ABSENT = "absent"  # no agent process
    WAITING = "waiting"  # in line for one of the max_agents slots
    STARTING = "starting"  # backing off, in line for a start-up permit, spawning, set-up
    READY = "ready"  # an agent with its session, no turn
    BUSY = "busy"  # a turn's prompt is (about to be) out
    DRAINING = "draining"  # the turn was cancelled; waiting a bounded time for its reply
    STOPPING = "stopping"  # being stopped, or exited by itself: its group is being ended


_S = SlotState
_TRANSITIONS: Final = {
    _S.ABSENT: {_S.WAITING},
    _S.WAITING: {_S.STARTING, _S.ABSENT},
    _S.STARTING: {_S.READY, _S.ABSENT},
    _S.READY: {_S.BUSY, _S.STOPPING},
    _S.BUSY: {_S.READY, _S.DRAINING, _S.STOPPING},
    _S.DRAINING: {_S.READY, _S.STOPPING},
    _S.STOPPING: {_S.ABSENT},
}
# States in which the agent's process runs and takes requests.
_LIVE: Final = frozenset({_S.READY, _S.BUSY, _S.DRAINING})


@attrs.frozen
class StartFailed:
    """The agent could not be started; the `error` event is already recorded."""

    permanent: bool  # retrying cannot help until a person acts (no such command or cwd)


@attrs.frozen
class Withdrawn:
    """No agent was started: the wait for a slot or a start-up permit was given up (paused,
    queue emptied, or the daemon stopping)."""


@attrs.frozen
class SlotStatistics:
    state: SlotState
    crashes: int  # failures within crash_window
    starts: int  # agents started by this slot
    idle_since: float  # trio time it last became READY (inf when not READY)


@attrs.define(eq=False)
class _Agent:
    """One running agent: valid from READY until its STOPPING ends."""

    conn: AgentConnection
    nursery: trio.Nursery
    stop_requested: trio.Event = attrs.field(factory=trio.Event)
    gone: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class AgentSlot:
    conv_id: str
    _log: EventLog
    _launcher: Launcher
    _config: Callable[[], Config]
    # The conversation's ACP session: set up on each agent it starts.
    _session: AgentSession
    # Its agents' failures, which pace restarts (the queue's gate counts them in).
    _crashes: CrashHistory
    # The read loop's handlers: the supervisor routes them to the running turn.
    _handlers: PeerHandlers
    # Awaited when the agent exits by itself with no turn running (after its error event).
    _on_idle_crash: Callable[[], Awaitable[None]]
    _state: SlotState = SlotState.ABSENT
    _agent: _Agent | None = None
    _stop_reason: str = ""  # why the agent is STOPPING ("crashed" if it exited by itself)
    _start_scope: trio.CancelScope | None = None
    _closing: bool = False  # the conversation is stopping: start no agent
    _starts: int = 0
    _idle_since: float = float("inf")
    _retry_at: float | None = None  # wall-clock time a backed-off start begins
    # Set when a start-up ends (a caller that found one under way waits for it), and how.
    _start_done: trio.Event = attrs.field(factory=trio.Event)
    _last_start: StartFailed | Withdrawn | None = None
    _slots: SlotTable = attrs.field(kw_only=True)  # the engine's, shared by every slot
    _permits: StartPermits = attrs.field(kw_only=True)  # likewise: start-ups at once
    _place: Waiter[Any] | None = None  # our place in line for a slot (WAITING) or a permit
    _token: SlotToken | None = None  # held from STARTING until the process group is gone
    _withdrawable: bool = False  # the wait in line is the queue's (`withdraw` ends it)

    # --- queries ----------------------------------------------------------------------------

    @property
    def state(self) -> SlotState:
        return self._state

    @property
    def retry_at(self) -> float | None:
        """While STARTING after recent crashes: when (wall clock) the next start begins."""
        return self._retry_at

    @property
    def slot_position(self) -> int | None:
        """While WAITING: our place in the line for a slot, 1 first."""
        if self._state is not _S.WAITING or self._place is None:
            return None
        return self._place.position

    @property
    def live(self) -> bool:
        """An agent process runs (or is being stopped)."""
        return self._agent is not None

    @property
    def conn(self) -> AgentConnection | None:
        """The running agent's connection, while it takes requests."""
        return self._agent.conn if self._agent is not None and self._state in _LIVE else None

    def statistics(self) -> SlotStatistics:
        return SlotStatistics(self._state, self._crashes.count(), self._starts, self._idle_since)

    def _move(self, to: SlotState) -> None:
        if to not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"agent slot of {self.conv_id}: {self._state.name} -> {to.name}")
        self._state = to
        self._idle_since = trio.current_time() if to is _S.READY else float("inf")
        if to is not _S.READY:
            self._slots.unpark(self)  # only a READY agent may give up its slot
        if to is _S.STOPPING and self._token is not None:
            self._token.stopping()  # on its way back: a waiter need not evict another

    # --- the turn's side ----------------------------------------------------------------------

    def begin_turn(self) -> bool:
        """READY -> BUSY; False if the agent is not ready (it exited since it was acquired)."""
        if self._state is not _S.READY:
            return False
        self._move(_S.BUSY)
        return True

    def drain(self) -> None:
        if self._state is _S.BUSY:
            self._move(_S.DRAINING)

    def end_turn(self) -> None:
        if self._state in (_S.BUSY, _S.DRAINING):
            agent = self._agent
            if agent is not None and not agent.conn.alive:
                # It exited during the turn, which reports it: not an idle agent's exit (its
                # watcher may not have seen it yet), and not an agent to give the next turn.
                self._stop_reason = "crashed"
                self._move(_S.STOPPING)
                agent.stop_requested.set()
            else:
                self._move(_S.READY)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run `fn(*args)` in the agent's nursery (a request that must outlive a cancelled
        wait); False if the agent no longer takes requests."""
        if self._state not in _LIVE or self._agent is None:
            return False
        # Live states are left before the agent's nursery closes: no checkpoint since.
        self._agent.nursery.start_soon(fn, *args)
        return True

    # --- starting and stopping ----------------------------------------------------------------

    async def acquire(
        self,
        nursery: trio.Nursery,
        record: ConversationRecord,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
    ) -> AgentConnection | StartFailed | Withdrawn:
        """A READY agent: the running one, or a new one started in `nursery` once a slot is
        free (after any backoff, bounded by `start_timeout`). Waits for an agent being stopped
        to be gone, and shares a start-up (or wait) under way. With `still_wanted` (the
        queue's), it is asked again whenever the queue changed (`queue_changed`) while in
        line, and `withdraw` gives the wait up; `cancel_start` gives up any."""
        while True:
            if self._state is _S.READY and self._agent is not None:
                return self._agent.conn
            if self._state in (_S.WAITING, _S.STARTING):  # another's: share its outcome
                await self._start_done.wait()
                if self._last_start is not None:
                    return self._last_start
                continue
            if self._agent is None:
                break
            await self._agent.gone.wait()
        if self._closing:
            return StartFailed(permanent=False)
        self._start_done, self._last_start = trio.Event(), None
        self._withdrawable = still_wanted is not None
        try:
            got: AgentConnection | StartFailed | Withdrawn = Withdrawn()
            if (token := await self._wait_for_slot(still_wanted)) is not None:
                config = self._config()
                self._token = token
                self._move(_S.STARTING)
                got = await self._start(nursery, record, config, token, still_wanted)
            self._last_start = None if isinstance(got, AgentConnection) else got
        finally:
            self._start_done.set()
        return got

    async def acquire_now(
        self, nursery: trio.Nursery, record: ConversationRecord
    ) -> AgentConnection | StartFailed:
        """As `acquire`, for a person's request: a wait shared with the queue that the queue
        gave up (withdrawn) is joined again, not reported."""
        got = await self.acquire(nursery, record)
        while isinstance(got, Withdrawn):
            got = await self.acquire(nursery, record)
        return got

    async def _start(
        self,
        nursery: trio.Nursery,
        record: ConversationRecord,
        config: Config,
        token: SlotToken,
        still_wanted: Callable[[], Awaitable[bool]] | None,
    ) -> AgentConnection | StartFailed | Withdrawn:
        """STARTING to READY, or to ABSENT: given up in line for a start-up permit, or how it
        failed (recorded). The slot's token goes back however this ends without an agent
        (the conversation deleted under it included)."""
        failure: Exception | None = None
        agent: _Agent | None = None
        permit: StartPermit | None = None
        try:
            # `cancel_start` ends a start-up; `withdraw`, only its wait for a permit.
            with trio.CancelScope() as self._start_scope:
                try:
                    if backoff := self._crashes.backoff():
                        self._retry_at = time.time() + backoff
                        try:
                            await trio.sleep(backoff)
                        finally:
                            self._retry_at = None
                    permit = await self._in_line(self._permits.join(), still_wanted)
                    if permit is not None:
                        # Bounds the start-up itself, not the wait in line before it.
                        with trio.fail_after(config.start_timeout):
                            agent = await nursery.start(self._run_agent, record, token)
                except Exception as exc:  # groups too: whatever stopped the start is reported
                    failure = exc
                finally:
                    if permit is not None:
                        # Over: its session set up, or the failed agent's process group gone.
                        permit.release()
        finally:
            self._start_scope = None
            # Still STARTING: no agent came of it (READY is `_run_agent`'s to reach, and an
            # agent that reached it is `_run_agent`'s to stop, even if `nursery.start` was
            # cancelled right then).
            if self._state is _S.STARTING:
                token.release()  # no-op if `_run_agent` ran: its process group is gone
                self._token = None
                self._move(_S.ABSENT)
        if agent is not None:
            return agent.conn
        if failure is None:
            if permit is None and not self._closing:
                return Withdrawn()  # the queue no longer needs it
            return StartFailed(permanent=False)  # cancelled: the daemon is stopping
        event, permanent = start_failure(failure, config.start_timeout)
        await self._log.append([event])
        return StartFailed(permanent=permanent)

    async def _wait_for_slot(
        self, still_wanted: Callable[[], Awaitable[bool]] | None
    ) -> SlotToken | None:
        """WAITING in line for a slot: its token, or None once given up (ABSENT again)."""
        self._move(_S.WAITING)
        token: SlotToken | None = None
        try:
            with trio.CancelScope() as self._start_scope:  # `withdraw`, `cancel_start`
                token = await self._in_line(self._slots.join(), still_wanted)
        finally:
            self._start_scope = None
            if token is None:
                self._move(_S.ABSENT)
        return token

    async def _in_line(
        self, waiter: Waiter[G], still_wanted: Callable[[], Awaitable[bool]] | None
    ) -> G | None:
        """In `waiter`'s line until granted: the grant, or None once `still_wanted` (asked
        again whenever `queue_changed` pokes) says no. Cancelled, it leaves the line (a grant
        made and not taken goes on to the next)."""
        self._place = waiter
        got: G | None = None
        try:
            while got is None:
                got = await waiter.wait()
                if got is None and still_wanted is not None and not await still_wanted():
                    break
        finally:
            self._place = None
            waiter.leave()  # no-op once the grant is taken
        return got

    def withdraw(self) -> None:
        """Leave the line for a slot or a start-up permit, if the queue is in it: the queue
        paused or stopped."""
        if self._place is not None and self._withdrawable and self._start_scope is not None:
            self._start_scope.cancel()

    def queue_changed(self) -> None:
        """The queue lost messages: while in line, ask `still_wanted` again."""
        if self._place is not None:
            self._place.poke()

    def park(self) -> None:
        """The supervisor waits for work: a READY agent may give its slot to a waiter."""
        if self._state is _S.READY:
            self._slots.park(self)

    def unpark(self) -> None:
        self._slots.unpark(self)

    def evict(self) -> bool:
        """The slot table's: stop this parked agent (as for idle_ttl) so that a waiting
        conversation can have its slot. False if it is not idle any more."""
        if self._state is not _S.READY or self._agent is None:
            return False
        log.info("conversation %s: agent idle, stopping it for a waiting one", self.conv_id)
        self._stop_reason = "evicted"
        self._move(_S.STOPPING)
        self._agent.stop_requested.set()
        return True

    def cancel_start(self) -> None:
        """Give up a start-up (or a wait for a slot) in progress, and start no other (a
        stopping daemon does not wait for one)."""
        self._closing = True
        if self._start_scope is not None:
            self._start_scope.cancel()

    async def stop(self, reason: str) -> None:
        """Stop the agent, if one runs, and wait until its process group is gone."""
        agent = self._agent
        if agent is None:
            return
        if self._state in _LIVE:
            self._stop_reason = reason
            self._move(_S.STOPPING)
        agent.stop_requested.set()
        with trio.CancelScope(shield=True):
            await agent.gone.wait()

    async def _run_agent(
        self, record: ConversationRecord, token: SlotToken, *, task_status: trio.TaskStatus[_Agent]
    ) -> None:
        spec = self._session.spec(record)
        agent: _Agent | None = None
        try:
            async with self._launcher(spec, self._handlers) as conn:
                try:
                    async with trio.open_nursery() as nursery:
                        if conn.process is not None:
                            token.pgid = conn.process.pid  # its leader's pid names the group
                        await self._session.set_up(conn, record, spec)
                        agent = self._agent = _Agent(conn, nursery)
                        self._starts += 1
                        self._move(_S.READY)
                        # (If `nursery.start` was cancelled meanwhile, this returns without
                        # handing us over, and the cancel reaches us at the next checkpoint:
                        # the agent is stopped below, as if it had exited.)
                        task_status.started(agent)
                        nursery.start_soon(self._watch_exit, agent)
                        await agent.stop_requested.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    # A stopping daemon kills every agent by one deadline, however many.
                    left = self._slots.kill_at - trio.current_time()
                    conn.stop_grace = max(0.0, min(conn.stop_grace, left))
        except Exception:
            if agent is None:
                raise  # still starting: `acquire` records it
            log.exception("conversation %s: agent task failed", self.conv_id)
        finally:
            if agent is not None:
                if self._state in _LIVE:  # its launcher failed under it: as if it exited
                    self._stop_reason = "crashed"
                    self._move(_S.STOPPING)
                self._session.restart_reason = self._stop_reason or "stopped"
                self._agent = None
                self._token = None
                self._move(_S.ABSENT)
                agent.gone.set()
            token.release()  # the launcher has stopped its process group

    async def _watch_exit(self, agent: _Agent) -> None:
        await agent.conn.wait_exited()
        # By itself: a stop request would have cancelled this first.
        if self._state in _LIVE:
            idle = self._state is _S.READY
            self._stop_reason = "crashed"
            self._move(_S.STOPPING)
            if idle:
                # No turn will report it: say so now, not at the next message.
                await self._log.append([await crash_event(agent.conn, idle=True)])
                if agent.conn.returncode:  # a clean exit is not a crash to back off from
                    await self._on_idle_crash()
        agent.stop_requested.set()
