"""The queue's gate: whether a conversation's queue runs, and the failure policy that stops it.

A person pauses it (an interrupt, a staged send); the agent fails it, at once when it cannot
start at all (no such command or cwd: retrying would only repeat the error) or when it crashed
`max_crashes` times within `crash_window`. Only a person lifts it again (a send with run, or
resume). The gate names the conversation's status (`status`), which the supervisor stores;
the gate itself writes nothing but the error that says why it failed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from daemon.config import Config
from daemon.engine.failures import CrashHistory
from daemon.engine.recorder import Recorder
from daemon.engine.slot import AgentSlot, SlotState
from protocol import events as ev

__all__ = ["Gate", "QueueGate"]

# A conversation's status while its next turn waits for an agent.
_SLOT_STATUS = {SlotState.WAITING: "waiting", SlotState.STARTING: "starting"}


class Gate(enum.Enum):
    """Whether the queue runs. FAILED outranks PAUSED: both are lifted by a resume."""

    OPEN = "idle"
    PAUSED = "paused"  # by an interrupt or a staged (`run: false`) send
    FAILED = "failed"  # the agent failed for good, or too often: until a person acts


@attrs.define(eq=False)
class QueueGate:
    """The one owner of a conversation's gate; its agents' crash history counts the crashes."""

    _slot: AgentSlot
    _crashes: CrashHistory  # shared with the agent slot, whose restarts it paces
    _recorder: Recorder
    _config: Callable[[], Config]
    _state: Gate = Gate.OPEN

    @property
    def state(self) -> Gate:
        return self._state

    @property
    def is_open(self) -> bool:
        return self._state is Gate.OPEN

    def status(self, *, running: bool) -> str:
        """The conversation's status, `running` if a turn runs."""
        if running:
            return "running"
        if self._state is not Gate.OPEN:
            return str(self._state.value)
        return _SLOT_STATUS.get(self._slot.state, "idle")

    def restore(self, stored_status: str) -> None:
        """The gate a conversation was left with, from its stored status."""
        self._state = {"paused": Gate.PAUSED, "failed": Gate.FAILED}.get(stored_status, Gate.OPEN)

    def set(self, gate: Gate) -> None:
        """PAUSED never hides FAILED; OPEN lifts either."""
        if gate is Gate.PAUSED and self._state is Gate.FAILED:
            return
        if self._state is Gate.FAILED and gate is Gate.OPEN:
            self._crashes.forget()  # a person lifted it: count crashes afresh
        self._state = gate
        if gate is not Gate.OPEN:
            self._slot.withdraw()  # a paused queue needs no agent: out of the line for one

    def start_failed(self, *, permanent: bool) -> None:
        """The agent could not be started for a turn."""
        if permanent and self._state is not Gate.FAILED:
            # No such command or cwd: retrying would only repeat the error until someone
            # fixes it, so stop now (a send with run, or resume, tries again).
            self._fail("the conversation is stopped until resumed")
        else:
            self.note_failure()

    def note_failure(self) -> None:
        """The agent crashed (in a turn, or idle) or failed to start: fail when too often."""
        config = self._config()
        crashes = self._crashes.note()
        if crashes >= config.max_crashes and self._state is not Gate.FAILED:
            self._fail(
                f"agent failed {crashes} times within {config.crash_window:g}s; "
                "the conversation is stopped until resumed"
            )

    def _fail(self, message: str) -> None:
        self._state = Gate.FAILED
        self._recorder.durable("error", ev.ErrorEvent(message=message))
