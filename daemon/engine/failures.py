"""An agent's failures: how each is said (the `error` event of a failed start, or of an agent
that exited by itself), and the history of them that paces restarts (exponential backoff
within `crash_window`) and fails the queue when they come too often (`gate.QueueGate`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Final

import attrs
import msgspec
import trio

from daemon.agents.connection import AgentConnection, AgentStartError
from protocol import events as ev

__all__ = ["CrashHistory", "crash_event", "start_failure"]

# After its stdout ends, how long a crashed agent gets to report its exit status and the last
# of its stderr before the error event is written without them.
_EXIT_REPORT_S: Final = 1.0


@attrs.define(eq=False)
class CrashHistory:
    """Failures (crashes and failed starts) within the last `crash_window` seconds."""

    _window: Callable[[], float]  # crash_window, as configured now
    _times: collections.deque[float] = attrs.field(factory=collections.deque)

    def count(self) -> int:
        self._prune()
        return len(self._times)

    def note(self) -> int:
        """Count a failure; returns the failures within the window."""
        self._prune()
        self._times.append(trio.current_time())
        return len(self._times)

    def forget(self) -> None:
        """A person lifted `failed` (or resumed): count afresh."""
        self._times.clear()

    def backoff(self) -> float:
        """Exponential backoff after recent failures: 0.5 s, 1 s, 2 s, ... capped."""
        self._prune()
        return min(0.5 * 2 ** (len(self._times) - 1), 10.0) if self._times else 0.0

    def _prune(self) -> None:
        cutoff = trio.current_time() - self._window()
        while self._times and self._times[0] < cutoff:
            self._times.popleft()


def start_failure(failure: Exception, start_timeout: float) -> tuple[tuple[str, bytes], bool]:
    """The `error` event for an agent that could not be started, and whether retrying cannot
    help until a person acts (no such command or cwd)."""
    reason = _one_line(failure)
    if isinstance(failure, trio.TooSlowError):
        reason = f"no answer within {start_timeout:g}s"
    message = f"agent failed to start: {reason}"
    detail = _detail(failure)
    body = ev.ErrorEvent(message=message, detail=detail or msgspec.UNSET)
    return _event("error", body), _permanent(failure)


async def crash_event(conn: AgentConnection, *, idle: bool = False) -> tuple[str, bytes]:
    """The `error` event for an agent that exited by itself: its status and stderr's tail."""
    # Let the exit status and the last of stderr arrive (bounded: it is exiting).
    with trio.move_on_after(_EXIT_REPORT_S):
        await conn.wait_exited()
    code = conn.returncode
    msg = "agent exited" + (" while idle" if idle else "")
    msg += f" with status {code}" if code is not None else ""
    body = ev.ErrorEvent(message=msg, detail=conn.failure_detail() or msgspec.UNSET)
    return _event("error", body)


def _event(type_: str, body: ev._Body) -> tuple[str, bytes]:
    return type_, ev.encode_body(body)


def _detail(exc: BaseException) -> str:
    """The `detail` of the first `AgentStartError` in `exc` (a group or not), if any."""
    if isinstance(exc, BaseExceptionGroup):
        return next((d for e in exc.exceptions if (d := _detail(e))), "")
    return exc.detail if isinstance(exc, AgentStartError) else ""


def _permanent(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_permanent(e) for e in exc.exceptions)
    return isinstance(exc, AgentStartError) and exc.permanent


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _one_line(exc.exceptions[0])
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
