"""Permission requests from an agent: durable, offered to people, answered once, with a deadline.

`session/request_permission` becomes a `permission_requested` event; the first valid answer
(a person through `permissions/respond`, the conversation's policy, the deadline's default, or
a cancel of the turn) wins and is recorded as `permission_resolved`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import attrs
import msgspec
import trio

from daemon.engine.recorder import Recorder
from protocol import events as ev
from protocol.acp import (
    CancelledOutcome,
    PermissionOption,
    RequestPermissionRequest,
    RequestPermissionResponse,
    SelectedOutcome,
)
from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, RpcFailure

__all__ = ["Permissions"]

_ALLOW = ("allow_once", "allow_always")
_REJECT = ("reject_once", "reject_always")

Outcome = SelectedOutcome | CancelledOutcome


@attrs.define(eq=False)
class _Pending:
    request: str
    options: list[PermissionOption]
    shown: ev.PermissionRequested  # its event, as people saw it (frozen)
    answered: trio.Event = attrs.field(factory=trio.Event)
    outcome: Outcome | None = None


def _pick(options: list[PermissionOption], kinds: tuple[str, ...]) -> Outcome:
    for kind in kinds:
        for opt in options:
            if opt.kind == kind:
                return SelectedOutcome(option_id=opt.option_id)
    return CancelledOutcome()


@attrs.define(eq=False)
class Permissions:
    recorder: Recorder
    policy: Callable[[], str]  # ask | allow | deny, read at request time
    timeout: float
    default: str  # reject | allow | cancelled
    _pending: dict[str, _Pending] = attrs.field(factory=dict)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def open_requests(self) -> tuple[ev.PermissionRequested, ...]:
        """The requests waiting for a person's answer, oldest first, as their events showed
        them: a snapshot (frozen structs) for readers outside the supervisor."""
        return tuple(p.shown for p in self._pending.values() if p.outcome is None)

    async def ask(
        self, params: RequestPermissionRequest, prompt_seq: int
    ) -> RequestPermissionResponse:
        request = f"p{prompt_seq}-{next(self._ids)}"
        tool_call_id = params.tool_call.get("toolCallId")
        title = params.tool_call.get("title") or tool_call_id or "tool call"
        options = params.options
        policy = self.policy()
        deadline = time.time() + (0 if policy != "ask" else self.timeout)
        shown = ev.PermissionRequested(
            request=request,
            options=[
                ev.PermissionOptionView(option_id=o.option_id, name=o.name, kind=o.kind)
                for o in options
            ],
            title=str(title),
            prompt_seq=prompt_seq,
            deadline=ev.rfc3339(deadline),
            tool_call_id=tool_call_id if isinstance(tool_call_id, str) else msgspec.UNSET,
        )
        self.recorder.durable("permission_requested", shown)
        pending = _Pending(request, options, shown)
        if policy in ("allow", "deny"):
            self._resolve(
                pending, _pick(options, _ALLOW if policy == "allow" else _REJECT), "policy"
            )
        else:
            self._pending[request] = pending
            try:
                with trio.move_on_after(self.timeout):
                    await pending.answered.wait()
                if pending.outcome is None:
                    self._resolve(pending, self._default_outcome(options), "timeout")
            finally:
                # Also when the agent goes away mid-wait: the request is over either way.
                if pending.outcome is None:
                    self._resolve(pending, CancelledOutcome(), "agent_stopped")
                self._pending.pop(request, None)
        assert pending.outcome is not None
        return RequestPermissionResponse(outcome=pending.outcome)

    def _default_outcome(self, options: list[PermissionOption]) -> Outcome:
        if self.default == "allow":
            return _pick(options, _ALLOW)
        if self.default == "reject":
            return _pick(options, _REJECT)
        return CancelledOutcome()

    def answer(self, request: str, option: str | None, *, cancelled: bool) -> None:
        pending = self._pending.get(request)
        if pending is None or pending.outcome is not None:
            raise RpcFailure(CONFLICT, f"no pending permission request {request!r}")
        if cancelled:
            self._resolve(pending, CancelledOutcome(), "user")
            return
        if option is None or option not in {o.option_id for o in pending.options}:
            valid = ", ".join(o.option_id for o in pending.options)
            raise RpcFailure(INVALID_PARAMS, f"option must be one of: {valid}")
        self._resolve(pending, SelectedOutcome(option_id=option), "user")

    def cancel_all(self, by: str = "cancel") -> None:
        """A cancelled turn answers every open request `cancelled` (ACP.md §9: MUST)."""
        for pending in list(self._pending.values()):
            if pending.outcome is None:
                self._resolve(pending, CancelledOutcome(), by)

    def _resolve(self, pending: _Pending, outcome: Outcome, by: str) -> None:
        pending.outcome = outcome
        pending.answered.set()
        body = ev.PermissionResolved(
            request=pending.request,
            outcome="selected" if isinstance(outcome, SelectedOutcome) else "cancelled",
            by=by,
        )
        if isinstance(outcome, SelectedOutcome):
            body = ev.PermissionResolved(
                request=pending.request, outcome="selected", option=outcome.option_id, by=by
            )
        self.recorder.durable("permission_resolved", body)
