"""The queue's verbs besides send: steer, edit, move and remove.

Steering (DESIGN.md "Steering is a send first", ACP.md §20). A steer is stored before anything
else: its `user_message` (with `steer: true`) is committed first in line, durably, so no text
is ever lost. Then, if a turn's prompt is out and the agent advertised steering, the text goes
to the agent as `_session/steering`. Any answer but `promptRequired` means the agent owns the
text: the message is taken off the queue with a `user_message_steered` event (`take_steered`)
and the reply says `steered: true`. Anything else (no turn running, an agent that cannot steer,
`promptRequired`, an error, no answer within `steer_timeout`, the agent gone) leaves the
message where it is, first in line, and the reply says `steered: false`.

Invariants, and where they are kept:
- A message acknowledged `steered: true` is never prompted, even after kill -9: that reply is
  sent only once `take_steered` has committed (fsynced), and the store's queue is the only
  thing a message is ever prompted from. The other order (the agent took it, then acpd died
  before that commit) prompts it after the restart; its steer was never acknowledged.
- What the agent may be reading is what is stored: while a steer is in flight its message can
  be neither edited, moved nor removed (Conflict), and no turn starts (`busy`: the supervisor
  waits), so one message never becomes both a prompt and a steer. The checks run with the
  event log locked (`EventLog.*_queued`), and a steer's message is held from inside the log
  lock of its own append (`on_commit`): no edit, move or turn start can come in between.
- `_session/steering` goes only to an agent that advertised it, only while the turn's prompt
  is written and not yet answered or cancelled (`Turn.steer_target`), at most once per message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from daemon.agents.connection import AgentConnection, AgentExited
from daemon.engine.eventlog import EventLog, LogClosed
from daemon.engine.turn import Turn
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import RpcFailure
from store import Conflict, EventRecord

__all__ = ["QueueControl", "StoredThenClosed"]

log = logging.getLogger("acpd.steering")


class StoredThenClosed(Exception):
    """The log closed (a delete, a stop) after the steer's message was stored: it must not be
    sent again, as a `LogClosed` would have the engine do."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"message {seq} was stored, then the conversation stopped")
        self.seq = seq


@attrs.define(eq=False)
class QueueControl:
    """One per supervisor. `running()` is the turn that runs now, if any."""

    conv_id: str
    _log: EventLog
    _running: Callable[[], Turn | None]
    _steer_timeout: Callable[[], float]
    _in_flight: int = 0  # steers between their append and their outcome
    _held: set[int] = attrs.field(factory=set)  # the messages of those, once committed
    _settled: trio.Event = attrs.field(factory=trio.Event)
    steers_injected: int = 0

    @property
    def busy(self) -> bool:
        """A steer is in flight: no turn may start until it has its outcome."""
        return self._in_flight > 0

    async def wait_settled(self) -> None:
        """Block until no steer is in flight."""
        while self._in_flight:
            await self._settled.wait()

    # --- steer ----------------------------------------------------------------------------------

    async def steer(self, text: str) -> tuple[EventRecord, int | None]:
        """Queue `text` first in line, then put it into the running turn if the agent takes
        it. Returns the message and the prompt_seq of the turn it went into (None: it waits
        first in line). Raises what the append raises (then nothing was stored), or, once
        stored, `StoredThenClosed` if the conversation went away meanwhile."""
        held: list[int] = []

        def hold(rec: EventRecord) -> None:  # with the log locked: before any edit or start
            held.append(rec.seq)
            self._held.add(rec.seq)

        self._in_flight += 1
        try:
            rec, _ = await self._log.append_user(text, steer=True, on_commit=hold)
            try:
                return rec, await self._inject(rec.seq, text)
            except LogClosed:
                raise StoredThenClosed(rec.seq) from None
        finally:
            self._in_flight -= 1
            self._held.difference_update(held)
            if not self._in_flight:
                self._settled.set()
                self._settled = trio.Event()

    async def _inject(self, seq: int, text: str) -> int | None:
        turn = self._running()
        target = turn.steer_target() if turn is not None else None
        if turn is None or target is None or not target[0].can_steer:
            return None
        conn, session_id = target
        # Once asked, the agent's answer decides, not whether the client is still waiting.
        with trio.CancelScope(shield=True):
            outcome = await self._ask(conn, session_id, text)
            if outcome is None or outcome == acp.STEERING_NOT_TAKEN:
                return None
            steered = ev.UserMessageSteered(
                message_seq=seq, prompt_seq=turn.prompt_seq, outcome=outcome or "unknown"
            )
            await self._log.take_steered(seq, steered)
        self.steers_injected += 1
        return turn.prompt_seq

    async def _ask(self, conn: AgentConnection, session_id: str, text: str) -> str | None:
        """The agent's outcome, or None if it did not answer one (then it did not take it)."""
        timeout = self._steer_timeout()
        with trio.move_on_after(timeout):
            try:
                return (await conn.steer(session_id, text)).outcome
            except RpcFailure as exc:
                log.info("conversation %s: steering refused: %s", self.conv_id, exc.message)
            except AgentExited:
                log.info("conversation %s: the agent exited during a steer", self.conv_id)
            return None
        log.warning(
            "conversation %s: no answer to a steer within %gs; it waits first in line",
            self.conv_id,
            timeout,
        )
        return None

    # --- edit, move, remove ---------------------------------------------------------------------

    async def edit(self, seq: int, text: str) -> None:
        """Queued message `seq` says `text` from now on (its prompt too). Raises
        `store.Conflict` (prompted, steered, or being steered) or `NotFound`."""
        await self._log.edit_queued(seq, text, lambda: self._refuse_held(seq))

    async def move(self, seq: int, before: int | None) -> list[int]:
        """Put queued message `seq` before queued message `before` (None: first in line);
        returns the queue's order. Raises like `edit`."""
        return await self._log.move_queued(seq, before, lambda: self._refuse_held(seq))

    async def remove(self, seq: int) -> None:
        await self._log.remove_queued(seq, lambda: self._refuse_held(seq))

    def _refuse_held(self, seq: int) -> None:
        if seq in self._held:
            raise Conflict(f"message {seq} is being steered into the running turn")
