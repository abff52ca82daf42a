"""What an agent's read loop hands its conversation: updates, oversize lines, batch ends and
the agent's requests.

These are the per-chunk path: synchronous, no await per update. The one wait is
`between_batches`, once per batch: room in the recorder, so a stalled store pushes back on the
agent's pipe (never on a subscriber, never on the send path).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import msgspec

from daemon.agents.connection import PeerHandlers
from daemon.agents.peer import DroppedMessage
from daemon.engine.asks import Asks
from daemon.engine.eventlog import EventLog
from daemon.engine.recorder import Recorder
from daemon.engine.turn import Turn
from protocol import acp
from protocol import events as ev

__all__ = ["AgentInput"]


@attrs.define(eq=False)
class AgentInput:
    """Routes what the agent says: to the running turn, the session's state, or its asks."""

    _recorder: Recorder
    _log: EventLog
    _asks: Asks
    _turn: Callable[[], Turn | None]  # the supervisor's running turn, if any
    _dropped_updates: int = 0

    @property
    def dropped_updates(self) -> int:
        """Updates that arrived outside their turn (a load's replay, stragglers)."""
        return self._dropped_updates

    def handlers(self) -> PeerHandlers:
        return PeerHandlers(
            on_update=self.on_update,
            on_updates=self.on_updates,
            on_request=self.on_request,
            on_batch_end=self.on_batch_end,
            wait_for_space=self.between_batches,
            on_dropped=self.on_dropped,
        )

    def on_update(self, session_id: str, update: acp.SessionUpdate) -> None:
        turn = self._turn()
        if turn is None or not turn.take(session_id):
            # The session's state (commands, usage, mode...) whenever it comes: commands
            # arrive before the session id is known, usage right after a prompt's reply.
            if self._recorder.session_update(update):
                return
            # Replay of a session/load, or a straggler after its turn: never the next turn's.
            self._dropped_updates += 1
            return
        self._recorder.update(update, turn.prompt_seq)

    def on_updates(self, notes: list[acp.SessionNotification]) -> None:
        """`on_update` for a run of them (a flood's batch): the turn is asked once, and its
        updates go to the recorder in one call."""
        turn = self._turn()
        session = turn.taking() if turn is not None else None
        if turn is not None and session is not None:
            updates = [n.update for n in notes if n.session_id == session]
            if len(updates) == len(notes):  # all the turn's: the usual case
                turn.took(len(updates))
                self._recorder.updates(updates, turn.prompt_seq)
                return
        for note in notes:  # mixed sessions, or no turn: one by one
            self.on_update(note.session_id, note.update)

    def on_dropped(self, dropped: DroppedMessage) -> None:
        """The agent wrote a line over the cap: say so, with how big it was."""
        what = dropped.method or {"response": "an answer", "request": "a request"}.get(
            dropped.kind, "output"
        )
        message = (
            f"dropped {what} of {dropped.size / 2**20:.1f} MiB from the agent: over the "
            f"{dropped.limit / 2**20:g} MiB limit of one message"
        )
        if dropped.failed_request:
            message += f" (it answered {dropped.failed_request}, which fails)"
        self._recorder.durable("error", ev.ErrorEvent(message=message))

    def on_batch_end(self) -> None:
        turn = self._turn()
        if turn is not None:
            turn.on_batch_end()

    async def on_request(self, method: str, raw: msgspec.Raw) -> object:
        return await self._asks.serve(method, raw)

    async def between_batches(self) -> None:
        """The agent's reader, after each batch: room in the recorder, then (bounded) no
        person's write on its way: a flood does not hold an acknowledgement up."""
        await self._recorder.wait_for_space()
        await self._log.yield_to_control()
