"""One turn: a prompt to the agent, its updates, and interrupt-and-drain.

A `Turn` is made by the queue loop (queueloop.py) once the cursor has moved to its message
(so it is prompted at most once) and lives until its `turn_ended` is written. Its rules:

- The `session/prompt` request runs in the agent's own nursery and is never cancelled: an
  interrupt or the turn timeout cancels only the turn's *wait* (`scope`). Then `drain` sends
  `session/cancel`, answers open permission requests `cancelled`, and waits up to
  `drain_timeout` for the real reply; no reply in time and the agent is stopped, so its read
  loop and any late update die with it.
- Updates reach the turn only while its prompt is out: not before it is sent, not once its
  reply has been read (`answered` is set in the read loop as the reply line arrives, so an
  update read after the reply is dropped even when both came in one read).
- The turn timeout is re-armed once per batch of updates, and is off while a permission
  request waits for a person: waiting is not idleness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import attrs
import msgspec
import trio

from daemon.agents.connection import AgentConnection, AgentExited
from daemon.agents.detail import error_detail
from daemon.engine.slot import AgentSlot
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import RpcFailure

__all__ = ["Turn"]

T = TypeVar("T")


class AskedOfPeople(Protocol):
    """What a turn needs to know of the requests its agent put to people (`asks.Asks`)."""

    @property
    def waiting(self) -> int: ...
    def cancel_turn(self, prompt_seq: int, by: str = "cancel") -> None: ...


log = logging.getLogger("acpd.turn")


@attrs.define(eq=False)
class Turn:
    prompt_seq: int
    text: str
    _conn: AgentConnection
    _session_id: str
    _asks: AskedOfPeople  # what the agent asks people (permission requests, questions)
    _turn_timeout: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _done: trio.Event = attrs.field(factory=trio.Event)  # the prompt's request is over
    _answered: bool = False  # its reply line was read
    _response: acp.PromptResponse | None = None
    _error: RpcFailure | None = None
    interrupted: bool = False  # by a person (or a superseding send)
    _prompted: bool = False  # session/prompt was (to be) sent
    _prompt_written: bool = False  # its line is out: a later request reaches a running turn
    _cancel_sent: bool = False
    _timed_out: bool = False
    _updates: int = 0
    _updates_seen: int = 0  # as of the last batch end: whether the turn timeout moves

    @property
    def conn(self) -> AgentConnection:
        return self._conn

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # --- from the agent's read loop (synchronous) ---------------------------------------------

    def take(self, session_id: str) -> bool:
        """Whether an update of `session_id` belongs to this turn now; counted if it does (one
        call per update: this is the read loop's per-chunk path)."""
        if session_id == self.taking():
            self._updates += 1
            return True
        return False

    def taking(self) -> str | None:
        """The session whose updates belong to this turn now (None: none do); for a run of
        updates checked at once, with `took` (`take` is the one-by-one form)."""
        if self._prompted and not self._answered and not self._done.is_set():
            return self._session_id
        return None

    def took(self, count: int) -> None:
        self._updates += count

    def on_batch_end(self) -> None:
        # Re-armed once per batch of lines, not per update: moving a deadline costs more than
        # the rest of an update's handling (bench_engine's relay).
        if self._updates != self._updates_seen:
            self._updates_seen = self._updates
            if self._asks.waiting == 0 and not self._done.is_set():
                self.scope.deadline = trio.current_time() + self._turn_timeout

    def steer_target(self) -> tuple[AgentConnection, str] | None:
        """The agent and session a steer goes to: only while this turn's prompt is written,
        not answered and not being cancelled (a steer must join this turn, not start one)."""
        if (
            self._prompt_written
            and not self._answered
            and not self._cancel_sent
            and not self.interrupted
            and not self._done.is_set()
        ):
            return self._conn, self._session_id
        return None

    def takes_requests(self) -> bool:
        """Whether a request from the agent (a permission) belongs to this turn."""
        return self._prompted and not self._cancel_sent and not self._done.is_set()

    async def wait_for_person(self, ask: Callable[[int], Awaitable[T]]) -> T:
        """`ask(prompt_seq)`: a request put to people during this turn."""
        # A person may take longer than the turn's idle timeout: waiting is not idleness.
        self.scope.deadline = math.inf
        try:
            return await ask(self.prompt_seq)
        finally:
            if not self._done.is_set() and self._asks.waiting == 0:
                self.scope.deadline = trio.current_time() + self._turn_timeout

    # --- commands -------------------------------------------------------------------------------

    def interrupt(self) -> None:
        self.interrupted = True
        self.scope.cancel()

    def close(self) -> None:
        """The turn is over whatever happened (also after a hard cancel)."""
        self._done.set()

    # --- running it ---------------------------------------------------------------------------

    async def run(self, slot: AgentSlot, *, drain_timeout: float) -> None:
        """Prompt and wait for the reply; on interrupt or timeout, drain (bounded)."""
        self._prompted = True
        if not slot.spawn(self._prompt):  # the agent exited since the turn started
            self._done.set()
            return
        with self.scope:
            self.scope.deadline = trio.current_time() + self._turn_timeout
            await self._done.wait()
        if self._done.is_set():
            return
        self._timed_out = not self.interrupted
        await self._drain(slot, drain_timeout)

    async def _prompt(self) -> None:
        try:
            self._response = await self._conn.prompt(
                self._session_id, self.text, on_answer=self._on_answer, on_sent=self._on_sent
            )
        except RpcFailure as exc:
            self._error = exc
        except AgentExited:
            pass
        finally:
            self._done.set()

    def _on_answer(self) -> None:
        self._answered = True

    def _on_sent(self) -> None:
        self._prompt_written = True

    async def _drain(self, slot: AgentSlot, drain_timeout: float) -> None:
        """Cancel the turn at the agent and wait a bounded time for its real reply."""
        self._cancel_sent = True
        slot.drain()
        self._asks.cancel_turn(self.prompt_seq)
        try:
            await self._conn.cancel(self._session_id)
        except AgentExited:
            pass
        with trio.move_on_after(drain_timeout):
            await self._done.wait()
        if not self._done.is_set():
            log.warning(
                "agent did not answer the cancel in %.1fs, restarting it (session %s)",
                drain_timeout,
                self._session_id,
            )
            await slot.stop("drain_timeout")
            self._done.set()

    # --- how it ended ---------------------------------------------------------------------------

    def outcome(self) -> tuple[str, str | msgspec.UnsetType, list[tuple[str, bytes]], bool]:
        """(stop_reason, detail, events to record before `turn_ended`, whether the agent
        exited by itself), from what happened. The crash's own error event is the caller's."""
        items: list[tuple[str, bytes]] = []
        detail: str | msgspec.UnsetType = msgspec.UNSET
        crashed = False
        if self._response is not None:
            stop = self._response.stop_reason
        elif self._error is not None:
            if self._cancel_sent:
                stop, detail = "cancelled", f"agent error after cancel: {self._error.message}"
            else:
                stop, detail = "error", self._error.message
                more = error_detail(self._error)
                body = ev.ErrorEvent(message=f"agent error: {detail}", detail=more or msgspec.UNSET)
                items.append(("error", ev.encode_body(body)))
        elif not self._prompted:
            stop, detail = "cancelled", "interrupted before it was prompted"
        elif self._cancel_sent:
            stop = "cancelled"  # no reply in time: the agent was restarted
        else:
            stop, crashed = "agent_exited", True
        if self._timed_out:
            if self._response is not None:
                detail = f"agent replied {self._response.stop_reason}"
            stop = "timeout"
        return stop, detail, items, crashed
