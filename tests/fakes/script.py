"""The steps of a FakeAgent's scripted turn (see tests/fakes/agent.py).

Scripts: `script(*steps)` queues one turn; each prompt takes the oldest queued script, or
without one echoes the prompt's text in one chunk and ends the turn (`end_turn`). Steps:

* `Chunk(text)`, `Thought(text)`: an agent_message_chunk / agent_thought_chunk.
* `Tool(id, title, status)`: a `tool_call` the first time `id` is seen, `tool_call_update`
  after.
* `Update(update)`: any `acp.SessionUpdate`-like Struct, sent as is.
* `Sleep(seconds)`: virtual time under autojump_clock.
* `AskPermission(options, then_text, tool_call_id)`: sends `session/request_permission` and
  waits for the answer, appended to `permission_answers` (the response, or the `RpcFailure`;
  nothing if a cancel ended the turn first); then, if `then_text` is set, a chunk with it.
* `WaitForCancel()`: blocks until `session/cancel` arrives for the session (returns at once if
  it already has), then goes on with the next step.
* `IgnoreCancel()`: from here on, `session/cancel` no longer interrupts this turn.
* `Reply(stop_reason, then)`: answers the prompt; then, right after the reply is written,
  runs the `Chunk`/`Thought`/`Tool`/`Update`/`Sleep` steps in `then` (stragglers).
  `ReplyError(code, message)`: answers an error.
* `Request(method, params)`: sends a request of its own to the client and appends the answer
  (the decoded result, or the `RpcFailure`) to `client_answers`.
* `Exit()`: closes its end of the stream (the agent "crashed"): our side sees EOF.
* `Hang()`: never answers (cancel ignored) until the connection ends.

A cancel that lands while a turn is running (outside `WaitForCancel`, before
`IgnoreCancel`) aborts the remaining steps and the prompt answers `cancelled`; a script that
runs out of steps answers `cancelled` if a cancel arrived during the turn, else `end_turn`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

from protocol import acp
from protocol.jsonrpc import RpcFailure

DEFAULT_OPTIONS = (
    acp.PermissionOption(option_id="allow", name="Allow", kind="allow_once"),
    acp.PermissionOption(option_id="reject", name="Reject", kind="reject_once"),
)


@attrs.frozen
class Chunk:
    text: str


@attrs.frozen
class Thought:
    text: str


@attrs.frozen
class Tool:
    id: str
    title: str = "a tool"
    status: str = "completed"


@attrs.frozen
class Update:
    update: acp.KnownUpdate


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class AskPermission:
    options: tuple[acp.PermissionOption, ...] = DEFAULT_OPTIONS
    then_text: str | None = None
    tool_call_id: str = "perm-1"


@attrs.frozen
class WaitForCancel:
    pass


@attrs.frozen
class IgnoreCancel:
    pass


@attrs.frozen
class Reply:
    stop_reason: str = "end_turn"
    then: tuple[Chunk | Thought | Tool | Update | Sleep, ...] = ()


@attrs.frozen
class Request:
    method: str
    params: Any = None


@attrs.frozen
class ReplyError:
    code: int
    message: str


@attrs.frozen
class Exit:
    pass


@attrs.frozen
class SteerReply:
    """How the fake answers one `_session/steering`: after `delay` (virtual) seconds, with
    `outcome` (None: a bare `{}`), or the error `error`; with `hang`, never; with `exit`, it
    closes its end of the stream instead."""

    outcome: str | None = "injected"
    delay: float = 0.0
    error: RpcFailure | None = None
    hang: bool = False
    exit: bool = False


@attrs.frozen
class Hang:
    pass


Step: TypeAlias = (
    Chunk
    | Thought
    | Tool
    | Update
    | Sleep
    | AskPermission
    | WaitForCancel
    | IgnoreCancel
    | Reply
    | ReplyError
    | Request
    | Exit
    | Hang
)
