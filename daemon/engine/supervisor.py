"""One supervisor per live conversation: the durable FIFO queue and the commands on it.

It hydrates the conversation, runs its queue loop (`queueloop.QueueLoop`: turns, one at a
time), takes the engine's commands (send, steer, interrupt, resume, mode and options), and
retires. Invariants (DESIGN.md), and where they are kept:
- The store is the queue. `send` commits the user message before it answers, then wakes the
  supervisor; the queue loop takes the oldest unprompted message *from the store*, so a lost
  or coalesced wake-up loses nothing. `EventLog.start_turn` moves the cursor in the same
  transaction as the `turn_started` event: a message is prompted at most once, even across
  crashes.
- At most one `session/prompt` is outstanding: one turn at a time (`turn.Turn`), and the next
  prompt is written only after the previous one answered or its agent was stopped.
- Nothing is decided early: between taking a message and moving the cursor (agent start-up,
  crash backoff) the queue loop reads the head again, and stop/pause/supersede are checked
  with the log locked, right before the commit (its `may_start`).
- An agent whose process ended is never handed a prompt (`slot.AgentSlot` knows its state).
- A prompt carries its message's text as committed when the turn started (edits included):
  the turn starts only if the head read is still first in line and unchanged (`as_read`),
  and not while a steer is in flight (steering.py), whose message may yet join the turn.
- The queue's gate (open, paused, failed) is `gate.QueueGate`'s alone; the agent's lifecycle is
  the slot's, its ACP session `agentsession.AgentSession`'s; a turn's progress is the turn's.
  What the agent says comes in through `agentinput.AgentInput`; the wake-ups and the idle
  policy are `wakeups.Wakeups`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import attrs
import msgspec
import trio

from daemon.agents.connection import AgentConnection, Launcher
from daemon.config import Config
from daemon.engine.agentinput import AgentInput
from daemon.engine.agentsession import AgentSession
from daemon.engine.asks import Asks
from daemon.engine.eventlog import EventLog, LogClosed
from daemon.engine.failures import CrashHistory
from daemon.engine.fanout import Fanout
from daemon.engine.gate import Gate, QueueGate
from daemon.engine.permissions import Permissions
from daemon.engine.questions import Questions
from daemon.engine.queueloop import QueueLoop
from daemon.engine.recorder import Recorder
from daemon.engine.recovery import load_conversation
from daemon.engine.slot import AgentSlot, StartFailed
from daemon.engine.slots import SlotTable
from daemon.engine.startups import StartPermits
from daemon.engine.steering import QueueControl, StoredThenClosed
from daemon.engine.storeio import StoreIO
from daemon.engine.wakeups import Wakeups
from protocol import events as ev
from protocol.jsonrpc import (
    AGENT_START_FAILED,
    RpcFailure,
)
from store import ConversationRecord, StorageUnavailable

__all__ = ["Conversation"]

log = logging.getLogger("acpd.conversation")


@attrs.define(eq=False)
class Conversation:
    """A live conversation. Created by the registry; `run()` is its supervisor task."""

    conv_id: str
    _io: StoreIO
    config: Config
    _launcher: Launcher
    _on_exit: Callable[[Conversation], None]
    # The `agent_restarted` reason if the agent's session is resumed: what the previous
    # supervisor of this conversation left ("daemon_restarted" if none did).
    _initial_restart_reason: str = "daemon_restarted"
    # Where its agents' stderr is kept (`paths.agent_log_path`); None: only in memory.
    _agent_log: Path | None = None
    _slots: SlotTable = attrs.field(kw_only=True)  # the engine's max_agents slots
    _permits: StartPermits = attrs.field(kw_only=True)  # and its max_starting permits
    fanout: Fanout = attrs.field(init=False)
    log: EventLog = attrs.field(init=False)
    permissions: Permissions = attrs.field(init=False)
    questions: Questions = attrs.field(init=False)
    _asks: Asks = attrs.field(init=False)
    agent_input: AgentInput = attrs.field(init=False)  # the agent's read loop calls it
    queue: QueueControl = attrs.field(init=False)  # steer, edit, move, remove
    ready: trio.Event = attrs.field(factory=trio.Event)
    finished: trio.Event = attrs.field(factory=trio.Event)
    load_error: BaseException | None = None
    deleting: bool = False
    _recorder: Recorder = attrs.field(init=False)
    _session: AgentSession = attrs.field(init=False)
    _crashes: CrashHistory = attrs.field(init=False)  # the gate counts, the slot paces restarts
    _slot: AgentSlot = attrs.field(init=False)
    _record: ConversationRecord | None = None
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _gate: QueueGate = attrs.field(init=False)
    _wakeups: Wakeups = attrs.field(init=False)
    _loop: QueueLoop = attrs.field(init=False)  # it holds the running turn
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        self.fanout = Fanout(self.conv_id, self.config.subscriber_buffer)
        self.log = EventLog(self.conv_id, self._io, self.fanout, 0)
        self._recorder = Recorder(self.log, self.config.draft_interval)
        self.permissions = Permissions(
            self._recorder,
            policy=self._policy,
            timeout=self.config.permission_timeout,
            default=self.config.permission_default,
        )
        self.questions = Questions(
            self._recorder,
            timeout=self.config.elicitation_timeout,
            default=self.config.elicitation_default,
        )
        self._session = AgentSession(
            self.conv_id,
            self.log,
            lambda: self.config,
            self._initial_restart_reason,
            log_path=self._agent_log,
        )
        self._crashes = CrashHistory(lambda: self.config.crash_window)
        # `loop`, the queue loop, is made last, of the parts below: it holds the running turn.
        self._asks = Asks(
            self.permissions, self.questions, lambda: self._session.session_id, lambda: loop.turn
        )
        self.agent_input = AgentInput(self._recorder, self.log, self._asks, lambda: loop.turn)
        self._slot = AgentSlot(
            self.conv_id,
            self.log,
            self._launcher,
            lambda: self.config,
            self._session,
            self._crashes,
            self.agent_input.handlers(),
            lambda: loop.agent_crashed_idle(),
            slots=self._slots,
            permits=self._permits,
        )
        self.queue = QueueControl(
            self.conv_id, self.log, lambda: loop.turn, lambda: self.config.steer_timeout
        )
        self._gate = QueueGate(self._slot, self._crashes, self._recorder, lambda: self.config)
        self._wakeups = Wakeups(
            self.conv_id, self.fanout, self._slot, self.log, lambda: self.config
        )
        self._loop = loop = QueueLoop(
            self.conv_id,
            self._io,
            self.log,
            self._recorder,
            self._session,
            self._slot,
            self._gate,
            self.queue,
            self._asks,
            self._wakeups,
            lambda: self.config,
        )

    # --- queries ------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """An agent process runs for it."""
        return self._slot.live

    @property
    def status(self) -> str:
        return self._gate.status(running=self._loop.turn is not None)

    @property
    def slot_position(self) -> int | None:
        """While `waiting`: its place in the line for an agent slot, 1 first."""
        return self._slot.slot_position

    @property
    def held(self) -> bool:
        """The queue waits for a person (paused or failed), even while a turn still runs."""
        return not self._gate.is_open

    @property
    def restart_reason(self) -> str:
        """Why its agent last went away, for the next supervisor's `agent_restarted`."""
        return self._session.restart_reason

    @property
    def has_session(self) -> bool:
        return self._session.session_id is not None

    @property
    def last_seq(self) -> int:
        return self.log.last_seq

    @property
    def running_prompt_seq(self) -> int | None:
        """The seq of the message whose turn runs now, if one does."""
        turn = self._loop.turn
        return turn.prompt_seq if turn is not None else None

    @property
    def retiring(self) -> bool:
        """It writes nothing more: retiring or deleted (not yet out of the registry)."""
        return self.log.closed

    @property
    def dropped_updates(self) -> int:
        """Updates that arrived outside their turn (a load's replay, stragglers)."""
        return self.agent_input.dropped_updates

    @property
    def slot(self) -> AgentSlot:
        return self._slot

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def _policy(self) -> str:
        rec = self._record
        return rec.permission_policy if rec is not None else self.config.permission_policy

    # --- commands (called by the engine from request handlers) --------------------------------

    def wake(self) -> None:
        self._wakeups.wake()

    async def send(self, text: str, *, run: bool, interrupt: bool) -> tuple[int, int]:
        rec, queued = await self.log.append_user(text)
        # Turns that run before this message's, as of its commit (no checkpoint since): the
        # messages queued ahead of it, plus the running turn unless this send supersedes it.
        ahead = queued - 1
        turn = self._loop.turn
        if turn is not None:
            if interrupt:
                turn.interrupt()
            else:
                ahead += 1
        elif interrupt and self._loop.supersede_next():  # recorded cancelled, not run
            ahead -= 1
        await self._sent(text, run=run or interrupt)
        return rec.seq, max(0, ahead)

    async def steer(self, text: str) -> tuple[int, int, bool]:
        """Send `text` into the running turn if the agent takes it, else first in line
        (steering.py): (seq, turns before its own, whether the agent took it). LogClosed:
        nothing was stored; StoredThenClosed: it was (so it must not be sent again)."""
        rec, into = await self.queue.steer(text)
        try:
            await self._sent(text, run=True)
        except LogClosed:
            raise StoredThenClosed(rec.seq) from None
        if into is not None:
            return rec.seq, 0, True
        return rec.seq, int(self._loop.turn is not None), False

    async def _sent(self, text: str, *, run: bool) -> None:
        """After a message is queued: name an untitled conversation, set the gate, wake."""
        if self._record is not None and not self._record.title:
            # An untitled conversation is named after its first message, for `acpd ls`.
            title = " ".join(text.split())[:80]
            await self.log.set_title(title)
            self._record = msgspec.structs.replace(self._record, title=title)
        if run:
            # Sending with run is a person acting: it also lifts a crash-loop `failed`.
            await self._set_gate(Gate.OPEN)
        else:
            # run=false stages the message: the queue waits for `resume` or a send with run,
            # even behind a running turn (whose end writes the status).
            await self._set_gate(Gate.PAUSED)
        self.wake()

    async def interrupt(self) -> bool:
        """Cancel the running turn and pause the queue."""
        turn = self._loop.turn
        if turn is not None and not turn.done:
            turn.interrupt()
            hit = True
        else:
            # A turn about to start (its agent starting, or backing off after a crash): the
            # user means "not that one", so it counts. The pause keeps the message queued,
            # visible and editable, and the queue loop looks at the gate before prompting.
            hit = turn is None and self._loop.starting
        await self._set_gate(Gate.PAUSED)
        return hit

    async def resume(self) -> None:
        self._crashes.forget()
        await self._set_gate(Gate.OPEN)
        self.wake()

    async def set_mode(self, mode: str) -> None:
        """Switch the agent's session to `mode` (starting the agent if none runs); the new
        state is stored before this returns, and put back on a restarted agent's session."""
        conn, session_id = await self._agent_for_request()
        await conn.set_mode(session_id, mode)  # the agent's refusal goes back as it is
        self._recorder.durable("mode", ev.ModeEvent(current=mode))
        await self._recorder.flush()

    async def set_option(self, option: str, value: str | bool) -> None:
        """Set one of the session's config options (as `set_mode`); the agent answers with
        every option's value, which is stored as the session's state."""
        conn, session_id = await self._agent_for_request()
        options = await conn.set_config_option(session_id, option, value)
        self._recorder.durable("config_options", ev.ConfigOptionsEvent(options=options))
        await self._recorder.flush()

    async def _agent_for_request(self) -> tuple[AgentConnection, str]:
        """The running agent and its session, or one started now (as for a turn)."""
        conn = self._slot.conn
        if conn is None:
            assert self._nursery is not None
            assert self._record is not None
            got = await self._slot.acquire_now(self._nursery, self._record)
            if isinstance(got, StartFailed):
                raise RpcFailure(
                    AGENT_START_FAILED,
                    "the agent could not be started (the conversation's events say why)",
                )
            conn = got
            self.wake()  # the queue loop measures idleness from now, with an agent
        session_id = self._session.session_id
        assert session_id is not None
        return conn, session_id

    def queue_changed(self) -> None:
        """Queued messages were removed: a conversation in line for a slot looks again."""
        self._slot.queue_changed()

    async def _set_gate(self, gate: Gate) -> None:
        """Set the queue's gate now (gate.py); store the status unless a turn runs (its end
        will)."""
        before = self.status
        self._gate.set(gate)
        if self._loop.turn is None and self.status != before:
            await self.log.set_status(self._loop.stored_status())

    # --- the supervisor -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self._scope:
                record = await self._hydrate()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._recorder.run)
                    self.ready.set()
                    await self._loop.serve(nursery, record)
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            # The log closed under a write (a delete): the end we were asked for, not a fault.
            if _only(exc, StorageUnavailable):
                # Not a bug: the store is refusing writes (said once, by the store bridge).
                log.warning("conversation %s: stopped: %s", self.conv_id, exc)
                self.load_error = exc
            elif not (self.log.closed and _only(exc, LogClosed)):
                log.exception("conversation %s: supervisor failed", self.conv_id)
                self.load_error = exc
        finally:
            self.log.close_now()
            self.fanout.close_all()
            self._wakeups.close()
            self.ready.set()
            self.finished.set()
            self._on_exit(self)

    async def _hydrate(self) -> ConversationRecord:
        rec = await load_conversation(self._io, self.conv_id)
        self._record = rec
        self.log.start_at(rec.last_seq)
        self._gate.restore(rec.status)
        self._session.session_id = rec.acp_session_id
        return rec

    # --- lifecycle ------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Graceful stop: drain the running turn (queue kept for next start), then retire."""
        self._loop.stop()

    async def close(self, *, deleting: bool) -> None:
        """Stop the supervisor (and its agent). With `deleting`, nothing of it writes again."""
        self.deleting = deleting
        if deleting:
            await self.log.close()
        self._scope.cancel()
        await self.finished.wait()


def _only(exc: BaseException, tp: type[BaseException]) -> bool:
    """Whether `exc` is `tp`, or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(tp)[1] is None
    return isinstance(exc, tp)
