"""A conversation's queue loop: its queued messages prompted in order, one turn at a time.

The supervisor (supervisor.py) hydrates the conversation, runs this loop and takes the
commands; the loop holds the running turn (`turn`), which those commands read and interrupt.
For each message it takes from the store it gets an agent (in line for a slot and a start-up
permit, after any crash backoff: `slot.AgentSlot.acquire`), reads the queue's head again,
moves the cursor with the log locked (`may_start`: not if stopped, paused, superseded, the
head changed, or a steer is in flight), runs the turn (`turn.Turn`) and records its end. A
failed start-up or an idle agent's crash goes to the queue's gate (`gate.QueueGate`).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import msgspec
import trio

from daemon.config import Config
from daemon.engine.agentsession import AgentSession
from daemon.engine.asks import Asks
from daemon.engine.eventlog import EventLog
from daemon.engine.failures import crash_event
from daemon.engine.gate import Gate, QueueGate
from daemon.engine.recorder import Recorder
from daemon.engine.slot import AgentSlot, StartFailed, Withdrawn
from daemon.engine.steering import QueueControl
from daemon.engine.storeio import StoreIO
from daemon.engine.turn import Turn
from daemon.engine.wakeups import Wakeups
from protocol import events as ev
from store import Conflict, ConversationRecord, EventRecord

__all__ = ["QueueLoop"]

_user_message = msgspec.json.Decoder(ev.UserMessage)


@attrs.define(eq=False)
class _Starting:
    """The message the queue loop is about to prompt, while its agent starts or backs off."""

    seq: int
    superseded: bool = False  # by `send(interrupt=True)`: record it cancelled, never prompt it


@attrs.define(eq=False)
class QueueLoop:
    conv_id: str
    _io: StoreIO
    _log: EventLog
    _recorder: Recorder
    _session: AgentSession
    _slot: AgentSlot
    _gate: QueueGate
    _queue: QueueControl  # steer, edit, move, remove: a steer decides what is first in line
    _asks: Asks
    _wakeups: Wakeups
    _config: Callable[[], Config]
    # The running turn: set with its cursor move, cleared once its end is recorded.
    turn: Turn | None = None
    _starting: _Starting | None = None
    _stopping: bool = False

    @property
    def starting(self) -> bool:
        """A message's turn is about to start (its agent starting, or backing off)."""
        return self._starting is not None

    def supersede_next(self) -> bool:
        """With no turn running: the message about to be prompted is recorded cancelled, never
        prompted (a send that interrupts supersedes it). False if none is."""
        if self._starting is None:
            return False
        self._starting.superseded = True
        return True

    def stored_status(self) -> str:
        # `waiting` and `starting` live only while the supervisor does: stored, `idle`.
        status = self._gate.status(running=self.turn is not None)
        return "idle" if status in ("waiting", "starting") else status

    def stop(self) -> None:
        """Graceful stop: drain the running turn (queue kept for next start), start no
        other."""
        self._stopping = True
        if self.turn is not None:
            self.turn.interrupt()
        self._slot.cancel_start()
        self._wakeups.stop_waking()

    async def serve(self, nursery: trio.Nursery, record: ConversationRecord) -> None:
        """Prompt queued messages in order until asked to stop, or idle and unwatched.
        `record`: the conversation as hydrated (its agent, command, cwd and MCP servers)."""
        while (head := await self._next_message()) is not None:
            self._starting = _Starting(head.seq)
            try:
                await self._run_turn(nursery, record, self._starting)
            finally:
                self._starting = None
            if self._stopping:
                return

    async def _next_message(self) -> EventRecord | None:
        """The queue's head once the gate is open; None when it is time to retire."""
        while not self._stopping:
            await self._queue.wait_settled()  # a steer decides what is first in line
            if self._gate.is_open:
                pending = await self._io.read(lambda s: s.pending_messages(self.conv_id))
                if pending:
                    return pending[0]
            if not await self._wakeups.wait_for_work():
                return None
        return None

    # --- a turn -------------------------------------------------------------------------------

    async def _run_turn(
        self, nursery: trio.Nursery, record: ConversationRecord, starting: _Starting
    ) -> None:
        if self._stopping:
            return
        got = await self._slot.acquire(nursery, record, self._still_wanted)
        if isinstance(got, Withdrawn):
            return
        if isinstance(got, StartFailed):
            await self._start_failed(got)
            return
        # Start-up and crash backoff take time: re-read the queue; the gate is looked at
        # again with the log locked, right before the cursor moves.
        pending = await self._io.read(lambda s: s.pending_messages(self.conv_id))
        if not pending:
            return
        msg = pending[0]  # its text as edited; the commit checks it is still that
        session_id = self._session.session_id
        assert session_id is not None
        turn = Turn(
            msg.seq,
            _user_message.decode(msg.body).text,
            got,
            session_id,
            self._asks,
            self._config().turn_timeout,
        )

        def may_start() -> bool:
            blocked = self._stopping or not self._gate.is_open or self._queue.busy
            if blocked or not self._slot.begin_turn():
                return False
            # From here a pause, stop or superseding send finds `self.turn` and cancels it.
            turn.interrupted = starting.superseded and starting.seq == msg.seq
            self.turn, self._starting = turn, None
            return True

        try:
            started = await self._log.start_turn(msg.seq, msg.body, may_start)
        except Conflict:  # removed, moved or edited between the read and the write
            self.turn = None
            self._slot.end_turn()
            await self._log.set_status(self.stored_status())
            return
        if started is None:
            return
        try:
            if not turn.interrupted:
                await turn.run(self._slot, drain_timeout=self._config().drain_timeout)
        finally:
            # A hard cancel (delete, or shutdown past its grace) records nothing here: the turn
            # stays "running" in the store with its drafts, and startup recovery (or the next
            # hydration) closes it, the same path as after kill -9. A graceful stop goes
            # through `stop`.
            turn.close()
        await self._finish_turn(turn)

    async def _still_wanted(self) -> bool:
        """Asked while in line for a slot after the queue changed: is an agent still needed?"""
        if self._stopping or not self._gate.is_open:
            return False
        return await self._io.read(lambda s: s.queued_count(self.conv_id)) > 0

    async def _finish_turn(self, turn: Turn) -> None:
        self._asks.cancel_turn(turn.prompt_seq, "turn_ended")
        await self._recorder.flush()
        self.turn = None
        self._slot.end_turn()
        stop, detail, items, crashed = turn.outcome()
        if crashed:
            items.append(await crash_event(turn.conn))
            self._gate.note_failure()
        ended = ev.TurnEnded(prompt_seq=turn.prompt_seq, stop_reason=stop, detail=detail)
        items.append(("turn_ended", ev.encode_body(ended)))
        await self._log.end_turn(items, self.stored_status())

    async def _start_failed(self, failure: StartFailed) -> None:
        if self._stopping:
            return
        self._gate.start_failed(permanent=failure.permanent)
        if self._gate.state is Gate.FAILED:
            await self._log.set_status("failed")

    async def agent_crashed_idle(self) -> None:
        """The agent exited by itself with no turn running (the slot's): count it."""
        self._gate.note_failure()
        if self._gate.state is Gate.FAILED and self.turn is None:
            await self._log.set_status("failed")
