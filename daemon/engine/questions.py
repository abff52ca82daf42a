"""Questions from an agent (`elicitation/create`): durable, offered to people, answered once,
with a deadline, routed like permission requests.

Each question becomes an `elicitation_requested` event (its message, its form's schema or its
URL, its deadline); the first valid answer (a person through `elicitations/respond`, the
deadline's default, the turn being cancelled or ending, the agent going away) wins and is
recorded as `elicitation_resolved`. A form answer is checked against the form's schema first,
so the agent gets what it asked for and a person a clear error when it is not.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import attrs
import msgspec
import trio

from daemon.engine.recorder import Recorder
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, RpcFailure

__all__ = ["ACTIONS", "Questions", "check_content"]

ACTIONS = ("accept", "decline", "cancel")
MODES = ("form", "url")  # what acpd advertises, and people can be shown


@attrs.define(eq=False)
class _Pending:
    request: str
    schema: dict[str, Any] | None  # a form's, to check answers against
    prompt_seq: int | None  # the turn it came in, if any
    shown: ev.ElicitationRequested
    answered: trio.Event = attrs.field(factory=trio.Event)
    answer: acp.CreateElicitationResponse | None = None


@attrs.define(eq=False)
class Questions:
    recorder: Recorder
    timeout: float
    default: str  # cancel | decline
    _pending: dict[str, _Pending] = attrs.field(factory=dict)
    _ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1))

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def open_questions(self) -> tuple[ev.ElicitationRequested, ...]:
        """The questions waiting for a person, oldest first, as their events showed them."""
        return tuple(p.shown for p in self._pending.values() if p.answer is None)

    async def ask(
        self, params: acp.CreateElicitationRequest, prompt_seq: int | None
    ) -> acp.CreateElicitationResponse:
        """Show the question to people and wait for the first answer (or the deadline)."""
        if params.mode not in MODES:
            raise RpcFailure(INVALID_PARAMS, f"elicitation mode {params.mode[:40]!r} not supported")
        schema = params.requested_schema if isinstance(params.requested_schema, dict) else None
        if params.mode == "url" and not isinstance(params.url, str):
            raise RpcFailure(INVALID_PARAMS, "a url-mode elicitation needs a `url`")
        request = f"e{prompt_seq or 0}-{next(self._ids)}"
        tool = params.tool_call_id if isinstance(params.tool_call_id, str) else msgspec.UNSET
        shown = ev.ElicitationRequested(
            request=request,
            message=params.message,
            mode=params.mode,
            schema=schema if schema is not None else msgspec.UNSET,
            url=params.url,
            tool_call_id=tool,
            prompt_seq=prompt_seq if prompt_seq is not None else msgspec.UNSET,
            deadline=ev.rfc3339(time.time() + self.timeout),
        )
        self.recorder.durable("elicitation_requested", shown)
        pending = _Pending(request, schema, prompt_seq, shown)
        self._pending[request] = pending
        try:
            with trio.move_on_after(self.timeout):
                await pending.answered.wait()
            if pending.answer is None:
                self._resolve(
                    pending, acp.CreateElicitationResponse(action=self.default), "timeout"
                )
        finally:
            if pending.answer is None:  # the agent went away meanwhile: over either way
                self._resolve(
                    pending, acp.CreateElicitationResponse(action="cancel"), "agent_stopped"
                )
            self._pending.pop(request, None)
        assert pending.answer is not None
        return pending.answer

    def answer(self, request: str, action: str, content: dict[str, Any] | None) -> None:
        """A person's answer; -32003 if it is not (or no longer) open, -32602 if it does not
        fit (an unknown action, content with anything but accept, a form not filled in)."""
        pending = self._pending.get(request)
        if pending is None or pending.answer is not None:
            raise RpcFailure(CONFLICT, f"no open question {request!r} (answered already?)")
        if action not in ACTIONS:
            raise RpcFailure(INVALID_PARAMS, f"action must be one of: {', '.join(ACTIONS)}")
        if action != "accept":
            if content is not None:
                raise RpcFailure(INVALID_PARAMS, "only an `accept` answer carries content")
            self._resolve(pending, acp.CreateElicitationResponse(action=action), "user")
            return
        if pending.schema is not None:
            problems = check_content(pending.schema, content or {})
            if problems:
                raise RpcFailure(INVALID_PARAMS, "the answer does not fit: " + "; ".join(problems))
        answer = acp.CreateElicitationResponse(
            action="accept", content=content if content is not None else msgspec.UNSET
        )
        self._resolve(pending, answer, "user")

    def cancel_all(self, by: str = "cancel", *, prompt_seq: int | None = None) -> None:
        """Answer `cancel` to every open question (of the turn of `prompt_seq`, if given): a
        cancelled or ended turn takes its questions with it."""
        for pending in list(self._pending.values()):
            if pending.answer is None and (prompt_seq is None or pending.prompt_seq == prompt_seq):
                self._resolve(pending, acp.CreateElicitationResponse(action="cancel"), by)

    def _resolve(self, pending: _Pending, answer: acp.CreateElicitationResponse, by: str) -> None:
        pending.answer = answer
        pending.answered.set()
        content = answer.content if isinstance(answer.content, dict) else msgspec.UNSET
        body = ev.ElicitationResolved(
            request=pending.request, action=answer.action, content=content, by=by
        )
        self.recorder.durable("elicitation_resolved", body)


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
}


def check_content(schema: dict[str, Any], content: dict[str, Any]) -> list[str]:
    """What is wrong with a form's answer: required fields missing, values of the wrong type
    or not among a field's choices, fields the form does not have. [] if it fits."""
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    problems = [
        f"{name}: required"
        for name in (required if isinstance(required, list) else [])
        if isinstance(name, str) and name not in content
    ]
    for name, value in content.items():
        field = props.get(name)
        if not isinstance(field, dict):
            problems.append(f"{name}: not a field of this form")
            continue
        kind = field.get("type")
        wanted = _TYPES.get(kind) if isinstance(kind, str) else None
        wrong_bool = isinstance(value, bool) and kind in ("number", "integer")
        if wanted is not None and (not isinstance(value, wanted) or wrong_bool):
            problems.append(f"{name}: expected {kind}")
            continue
        choices = field.get("enum")
        if isinstance(choices, list) and value not in choices:
            problems.append(f"{name}: one of {', '.join(map(str, choices))}")
    return problems
