"""A scriptable, in-process fake ACP agent for deterministic engine tests.

It speaks ACP over one end of `trio.testing.memory_stream_pair()` with our own codec (the
agent side of an `AgentPeer`), so it runs under `autojump_clock` and tests control every step.

    ours, theirs = trio.testing.memory_stream_pair()
    agent = FakeAgent(theirs, load_session=True)
    agent.script(Chunk("hel"), Chunk("lo"), WaitForCancel())   # the next prompt's turn
    agent.start(nursery)                                        # or: nursery.start_soon(agent.run)
    async with connect_agent(ours, PeerHandlers(on_update=...)) as conn: ...
    await agent.wait_for("session/cancel")

What it answers:
* `initialize`: `protocol_version` (default 1); capabilities from `load_session`, `resume`,
  `close`; or the error `init_error` if set; never, with `init_hang`.
* `session/new`: ids "sess-1", "sess-2", ... (`sessions` lists them); never, with `new_hang`.
* `session/load`: replays `load_replay` (`(role, text)` pairs, role "user" or "agent") as
  message chunks, then answers `{}`; with `load_error` set, answers that error instead.
  Any session id is accepted. `session/resume` likewise, with `resume_error`, no replay.
* `session/close`: `{}`. `session/prompt`: runs the next script (see below).
* Session set-ups (new, load, resume) answer with `modes` and `config_options` when set.
* Authentication: `auth_methods` are offered in `initialize`; `authenticate` answers `{}`
  for a method id in `auth_accepts` (default: every offered one), else `auth_error` (or
  -32603). With `auth_required`, new/load/resume answer -32000 until an `authenticate`
  succeeded; `auth_lost` such answers come even after one (a login that does not hold).
* `mcp_http`, `mcp_sse`: its `mcpCapabilities`.
* `session/set_mode` switches among `modes` (-32602 for another id); `session/set_config_option`
  sets an option of `config_options` and answers them all (-32602 for an unknown id).
* `session/cancel` (a notification): cancels the running turn of that session.
* `_session/steering`, advertised as `steering` says ("meta": `_meta.steering.supported` of
  the initialize result; "capabilities_meta": the same in `agentCapabilities._meta`; "rfd":
  `sessionCapabilities.steering`; None: not at all): the text goes to `steers`; the answer is
  the next of `steer_replies` (a `SteerReply`), else `injected` while a turn of that session
  runs and `promptRequired` otherwise.
* Other requests: -32601 (with `unknown_empty`, a bare `{}`, as codex-acp answers). Other
  notifications: recorded and ignored.

Scripts: `script(*steps)` queues one turn; the steps are in tests/fakes/script.py.

Inspection: `received` lists every request and notification as `(method, params)` (params
decoded to the acp Struct for known methods, else the raw dict), in arrival order;
`count(method)`, `params(method)`, `wait_for(method, n)`; `prompts` the prompt texts;
`cancels` how many `session/cancel` arrived; `turn_running` whether a prompt is in progress.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs
import msgspec
import trio

from daemon.agents.peer import AgentPeer
from protocol import acp
from protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, RpcFailure

from .script import (
    AskPermission,
    Chunk,
    Exit,
    Hang,
    IgnoreCancel,
    Reply,
    ReplyError,
    Request,
    Sleep,
    SteerReply,
    Step,
    Thought,
    Tool,
    Update,
    WaitForCancel,
)

__all__ = [
    "AskPermission",
    "Chunk",
    "Exit",
    "FakeAgent",
    "Hang",
    "IgnoreCancel",
    "Reply",
    "ReplyError",
    "Request",
    "Sleep",
    "SteerReply",
    "Step",
    "Thought",
    "Tool",
    "Update",
    "WaitForCancel",
]

_PARAMS: dict[str, type[msgspec.Struct]] = {
    acp.INITIALIZE: acp.InitializeRequest,
    acp.SESSION_NEW: acp.NewSessionRequest,
    acp.SESSION_LOAD: acp.LoadSessionRequest,
    acp.SESSION_RESUME: acp.ResumeSessionRequest,
    acp.SESSION_CLOSE: acp.CloseSessionRequest,
    acp.SESSION_PROMPT: acp.PromptRequest,
    acp.SESSION_CANCEL: acp.CancelNotification,
    acp.AUTHENTICATE: acp.AuthenticateRequest,
    acp.SESSION_SET_MODE: acp.SetSessionModeRequest,
    acp.SESSION_SET_CONFIG_OPTION: acp.SetSessionConfigOptionRequest,
    acp.SESSION_STEERING: acp.SteeringRequest,
}


@attrs.define(eq=False)
class _Turn:
    session_id: str
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancelled: trio.Event = attrs.field(factory=trio.Event)
    waiting_for_cancel: bool = False
    ignore_cancel: bool = False


@attrs.define(eq=False)
class FakeAgent:
    stream: trio.abc.Stream
    load_session: bool = True
    resume: bool = False
    close: bool = False
    protocol_version: int = 1
    init_error: RpcFailure | None = None
    init_hang: bool = False
    new_hang: bool = False
    load_error: RpcFailure | None = None
    resume_error: RpcFailure | None = None
    load_replay: list[tuple[str, str]] = attrs.field(factory=list)
    modes: acp.SessionModeState | None = None
    config_options: list[dict[str, Any]] | None = None
    auth_methods: list[acp.AuthMethod] = attrs.field(factory=list)
    auth_accepts: frozenset[str] | None = None
    auth_error: RpcFailure | None = None
    auth_required: bool = False
    auth_lost: int = 0
    mcp_http: bool = False
    mcp_sse: bool = False
    authenticated: str | None = attrs.field(default=None, init=False)
    steering: str | None = None  # how it advertises _session/steering (see above)
    steer_replies: collections.deque[SteerReply] = attrs.field(factory=collections.deque)
    unknown_empty: bool = False

    received: list[tuple[str, object]] = attrs.field(factory=list, init=False)
    sessions: list[str] = attrs.field(factory=list, init=False)
    prompts: list[str] = attrs.field(factory=list, init=False)
    permission_answers: list[acp.RequestPermissionResponse | RpcFailure] = attrs.field(
        factory=list, init=False
    )
    client_answers: list[object] = attrs.field(factory=list, init=False)
    cancels: int = attrs.field(default=0, init=False)
    steers: list[str] = attrs.field(factory=list, init=False)
    scripts: collections.deque[list[Step]] = attrs.field(factory=collections.deque, init=False)
    peer: AgentPeer = attrs.field(init=False)
    _turns: dict[str, _Turn] = attrs.field(factory=dict, init=False)
    _tools_seen: set[str] = attrs.field(factory=set, init=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.peer = AgentPeer(
            self.stream,
            on_update=lambda _sid, _update: None,
            on_request=self._on_request,
            on_notification=self._on_notification,
        )

    # --- control --------------------------------------------------------------------------------

    def script(self, *steps: Step) -> None:
        """Queue the steps of one prompt turn."""
        self.scripts.append(list(steps))

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.run)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until the stream ends (our side closed it, or an `Exit` step)."""
        async with trio.open_nursery() as nursery:  # for updates sent after a reply
            self._nursery = nursery
            await self.peer.run(task_status=task_status)
            nursery.cancel_scope.cancel()

    async def send_update(self, session_id: str, update: acp.KnownUpdate) -> None:
        """Send a `session/update` now, outside any script (a straggler, say)."""
        await self._send(session_id, update)

    async def exit(self) -> None:
        """Close the agent's end now, as the `Exit` step does."""
        await self.peer.aclose()

    # --- inspection -----------------------------------------------------------------------------

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.received if m == method)

    def params(self, method: str) -> list[object]:
        return [p for m, p in self.received if m == method]

    @property
    def methods(self) -> list[str]:
        return [m for m, _ in self.received]

    @property
    def turn_running(self) -> bool:
        return bool(self._turns)

    async def wait_for(self, method: str, n: int = 1) -> object:
        """Block until `n` messages of `method` have arrived; returns the n-th one's params."""
        while self.count(method) < n:
            await self._changed.wait()
        return self.params(method)[n - 1]

    # --- serving --------------------------------------------------------------------------------

    def _record(self, method: str, raw: msgspec.Raw) -> object:
        tp = _PARAMS.get(method)
        params: object
        try:
            params = msgspec.json.decode(raw or b"{}", type=tp) if tp else _loose(raw)
        except msgspec.DecodeError as exc:
            params = exc
        self.received.append((method, params))
        self._changed.set()
        self._changed = trio.Event()
        if isinstance(params, msgspec.DecodeError):
            raise RpcFailure(INVALID_PARAMS, f"invalid params: {params}")
        return params

    def _on_notification(self, method: str, raw: msgspec.Raw) -> None:
        try:
            params = self._record(method, raw)
        except RpcFailure:
            return
        if isinstance(params, acp.CancelNotification):
            self.cancels += 1
            turn = self._turns.get(params.session_id)
            if turn is not None:
                turn.cancelled.set()
                if not (turn.waiting_for_cancel or turn.ignore_cancel):
                    turn.scope.cancel(reason="session/cancel")

    async def _on_request(self, method: str, raw: msgspec.Raw) -> object:
        params = self._record(method, raw)
        if isinstance(params, acp.InitializeRequest):
            if self.init_hang:
                await trio.sleep_forever()
            if self.init_error is not None:
                raise self.init_error
            advertised = {"steering": {"supported": True}}
            caps = acp.AgentCapabilities(
                load_session=self.load_session,
                session_capabilities=acp.SessionCapabilities(
                    resume={} if self.resume else msgspec.UNSET,
                    close={} if self.close else msgspec.UNSET,
                    steering={} if self.steering == "rfd" else msgspec.UNSET,
                ),
                mcp_capabilities=acp.McpCapabilities(http=self.mcp_http, sse=self.mcp_sse),
                meta=advertised if self.steering == "capabilities_meta" else msgspec.UNSET,
            )
            return acp.InitializeResponse(
                protocol_version=self.protocol_version,
                agent_capabilities=caps,
                agent_info=acp.Implementation(name="fake-agent", version="0"),
                auth_methods=self.auth_methods,
                meta=advertised if self.steering == "meta" else msgspec.UNSET,
            )
        if isinstance(params, acp.AuthenticateRequest):
            accepts = self.auth_accepts
            if accepts is None:
                accepts = frozenset(m.id for m in self.auth_methods)
            if params.method_id not in accepts:
                raise self.auth_error or RpcFailure(-32603, f"cannot use {params.method_id}")
            self.authenticated = params.method_id
            return acp.EmptyResult()
        if isinstance(
            params, acp.NewSessionRequest | acp.LoadSessionRequest | acp.ResumeSessionRequest
        ):
            self._check_auth()
        setup: dict[str, Any] = {}
        if self.modes is not None:
            setup["modes"] = self.modes
        if self.config_options is not None:
            setup["config_options"] = self.config_options
        if isinstance(params, acp.NewSessionRequest):
            if self.new_hang:
                await trio.sleep_forever()
            self.sessions.append(f"sess-{len(self.sessions) + 1}")
            return acp.NewSessionResponse(session_id=self.sessions[-1], **setup)
        if isinstance(params, acp.LoadSessionRequest):
            if self.load_error is not None:
                raise self.load_error
            for role, text in self.load_replay:
                block = acp.TextContent(text=text)
                update: acp.KnownUpdate = (
                    acp.UserMessageChunk(content=block)
                    if role == "user"
                    else acp.AgentMessageChunk(content=block)
                )
                await self._send(params.session_id, update)
            return acp.LoadSessionResponse(**setup)
        if isinstance(params, acp.ResumeSessionRequest):
            if self.resume_error is not None:
                raise self.resume_error
            return acp.ResumeSessionResponse(**setup)
        if isinstance(params, acp.CloseSessionRequest):
            return acp.EmptyResult()
        if isinstance(params, acp.SetSessionModeRequest):
            known = [m.id for m in self.modes.available_modes] if self.modes else []
            if params.mode_id not in known:
                raise RpcFailure(INVALID_PARAMS, f"no mode {params.mode_id!r}")
            assert self.modes is not None
            self.modes = msgspec.structs.replace(self.modes, current_mode_id=params.mode_id)
            return acp.EmptyResult()
        if isinstance(params, acp.SetSessionConfigOptionRequest):
            options = [dict(o) for o in self.config_options or ()]
            for option in options:
                if option.get("id") == params.config_id:
                    option["currentValue"] = params.value
                    self.config_options = options
                    return acp.SetSessionConfigOptionResponse(config_options=options)
            raise RpcFailure(INVALID_PARAMS, f"no option {params.config_id!r}")
        if isinstance(params, acp.PromptRequest):
            return await self._prompt(params)
        if isinstance(params, acp.SteeringRequest) and self.steering is not None:
            return await self._steer(params)
        if self.unknown_empty:
            return acp.EmptyResult()
        raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")

    def _check_auth(self) -> None:
        if not self.auth_required:
            return
        if self.authenticated is None or self.auth_lost > 0:
            if self.authenticated is not None:
                self.auth_lost -= 1
            raise RpcFailure(-32000, "Authentication required", {"details": "log in first"})

    async def _steer(self, params: acp.SteeringRequest) -> object:
        text = "".join(acp.content_text(block) for block in params.prompt)
        self.steers.append(text)
        if self.steer_replies:
            reply = self.steer_replies.popleft()
        elif params.session_id in self._turns:
            reply = SteerReply("injected")
        else:
            reply = SteerReply("promptRequired")
        await trio.sleep(reply.delay)
        if reply.hang:
            await trio.sleep_forever()
        if reply.exit:
            await self.peer.aclose()
            await trio.sleep_forever()
        if reply.error is not None:
            raise reply.error
        if reply.outcome is None:
            return acp.EmptyResult()
        reason = "noRunningTurn" if reply.outcome == "promptRequired" else msgspec.UNSET
        return acp.SteeringResponse(outcome=reply.outcome, reason=reason)

    async def _send(self, session_id: str, update: acp.KnownUpdate) -> None:
        note = acp.SessionNotification(session_id=session_id, update=update)
        await self.peer.notify(acp.SESSION_UPDATE, note)

    async def _prompt(self, params: acp.PromptRequest) -> acp.PromptResponse:
        text = "".join(acp.content_text(block) for block in params.prompt)
        self.prompts.append(text)
        steps: list[Step] = self.scripts.popleft() if self.scripts else [Chunk(text), Reply()]
        turn = _Turn(params.session_id)
        self._turns[params.session_id] = turn
        try:
            with turn.scope:
                for step in steps:
                    result = await self._step(turn, step)
                    if result is not None:
                        return result
        finally:
            del self._turns[params.session_id]
        cancelled = turn.scope.cancelled_caught or turn.cancelled.is_set()
        return acp.PromptResponse(stop_reason="cancelled" if cancelled else "end_turn")

    async def _step(self, turn: _Turn, step: Step) -> acp.PromptResponse | None:
        sid = turn.session_id
        match step:
            case Chunk(text):
                await self._send(sid, acp.AgentMessageChunk(content=acp.TextContent(text=text)))
            case Thought(text):
                await self._send(sid, acp.AgentThoughtChunk(content=acp.TextContent(text=text)))
            case Tool(tool_id, title, status):
                if tool_id in self._tools_seen:
                    update: acp.KnownUpdate = acp.ToolCallUpdate(
                        tool_call_id=tool_id, title=title, status=status
                    )
                else:
                    self._tools_seen.add(tool_id)
                    update = acp.ToolCall(tool_call_id=tool_id, title=title, status=status)
                await self._send(sid, update)
            case Update(update):
                await self._send(sid, update)
            case Sleep(seconds):
                await trio.sleep(seconds)
            case AskPermission(options, then_text, tool_call_id):
                await self._ask(sid, options, tool_call_id)
                if then_text is not None:
                    await self._send(
                        sid, acp.AgentMessageChunk(content=acp.TextContent(text=then_text))
                    )
            case WaitForCancel():
                turn.waiting_for_cancel = True
                try:
                    await turn.cancelled.wait()
                finally:
                    turn.waiting_for_cancel = False
            case IgnoreCancel():
                turn.ignore_cancel = True
            case Reply(stop_reason, then):
                if then:
                    # Started now, it writes after the reply: the write lock is FIFO and the
                    # reply's write begins before this task first runs.
                    assert self._nursery is not None
                    self._nursery.start_soon(self._stragglers, turn, then)
                return acp.PromptResponse(stop_reason=stop_reason)
            case Request(method, params):
                try:
                    result = await self.peer.request(method, params, object)
                except RpcFailure as exc:
                    self.client_answers.append(exc)
                else:
                    self.client_answers.append(result)
            case ReplyError(code, message):
                raise RpcFailure(code, message)
            case Exit():
                await self.peer.aclose()
                await trio.sleep_forever()  # cancelled as the peer's run() ends
            case Hang():
                turn.ignore_cancel = True
                await trio.sleep_forever()  # until the connection ends
        return None

    async def _stragglers(self, turn: _Turn, steps: tuple[Step, ...]) -> None:
        detached = _Turn(turn.session_id)
        for step in steps:
            await self._step(detached, step)

    async def _ask(
        self, sid: str, options: tuple[acp.PermissionOption, ...], tool_call_id: str
    ) -> None:
        request = acp.RequestPermissionRequest(
            session_id=sid,
            tool_call={"toolCallId": tool_call_id, "title": "May I?", "status": "pending"},
            options=list(options),
        )
        try:
            # The client MUST answer even when the turn is cancelled (ACP.md §9): keep waiting
            # through our own cancel so tests see that answer.
            with trio.CancelScope(shield=True), trio.move_on_after(3600):
                answer = await self.peer.request(
                    acp.REQUEST_PERMISSION, request, acp.RequestPermissionResponse
                )
        except RpcFailure as exc:
            self.permission_answers.append(exc)
        else:
            self.permission_answers.append(answer)
        self._changed.set()
        self._changed = trio.Event()


def _loose(raw: msgspec.Raw) -> Any:
    return msgspec.json.decode(raw) if raw else None
