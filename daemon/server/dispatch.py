"""The JSON-RPC dispatcher every front-end shares (unix socket, websocket): one handler per
method of the socket API, each turning params into an engine call and its result into a reply.

Transports open a connection (`Dispatcher.open_connection`, see `connection.py` for what a
connection guarantees) and feed it messages. `conversations/subscribe` replies
`{through_seq}`, then streams that subscription's lines on the same connection.

Error handling: malformed input becomes a JSON-RPC error reply (-32700, -32600, -32601, -32602);
an engine `RpcFailure` is passed through; any other `Exception` from a handler is logged and
becomes -32603. Nothing a client sends ends the connection or the daemon.

`conversations/create` checks that the agent's command exists (-32002 if not), since the agent
itself starts only after a later `messages/send` is acknowledged: a start failure then can only
be an `error` event.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import msgspec
import trio
from msgspec import UNSET

from daemon.config import Config
from daemon.engine.storagehealth import StorageHealth
from daemon.logs import dropped_records
from daemon.server.connection import (
    Connection,
    Send,
    SubscriptionAPI,
    error_line,
    open_connection,
)
from protocol import acp, api
from protocol.jsonrpc import (
    AGENT_START_FAILED,
    CONFLICT,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    STORAGE_UNAVAILABLE,
    RequestId,
    Response,
    RpcFailure,
    decode_envelope,
    decode_params,
    encode_line,
)
from store import StorageUnavailable

__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_SUBSCRIPTIONS",
    "DaemonInfo",
    "Dispatcher",
    "EngineAPI",
]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 64  # concurrent requests per connection
MAX_SUBSCRIPTIONS: Final = 256  # per connection; each holds an engine-side buffer


class EngineAPI(Protocol):
    """What the dispatcher needs of `daemon.engine.registry.Engine` (ids already resolved)."""

    @property
    def config(self) -> Config: ...
    async def resolve_id(self, id_or_prefix: str) -> str: ...
    async def create(
        self,
        *,
        agent: str | None,
        agent_cmd: builtins.list[str] | None,
        cwd: str,
        title: str | None,
        mcp_servers: builtins.list[acp.McpServer] | None = None,
    ) -> api.ConversationInfo: ...
    async def list(
        self, *, limit: int, before: str | None, cwd: str | None = None
    ) -> tuple[builtins.list[api.ConversationInfo], int, str | None]: ...
    async def count(self) -> int: ...
    async def get(self, conv_id: str) -> api.ConversationInfo: ...
    async def delete(self, conv_id: str) -> None: ...
    async def events(
        self, conv_id: str, *, after_seq: int, limit: int
    ) -> tuple[builtins.list[msgspec.Raw], int]: ...
    async def subscribe(
        self,
        conv_id: str,
        *,
        after_seq: int,
        deltas: bool,
        from_turn: bool = False,
        caught_up: bool = False,
    ) -> SubscriptionAPI: ...
    async def send(
        self, conv_id: str, text: str, *, run: bool, interrupt: bool
    ) -> api.SendResult: ...
    async def steer(self, conv_id: str, text: str) -> api.SendResult: ...
    async def queue(self, conv_id: str) -> builtins.list[api.PendingMessage]: ...
    async def remove(self, conv_id: str, seq: int) -> None: ...
    async def edit(self, conv_id: str, seq: int, text: str) -> None: ...
    async def move(self, conv_id: str, seq: int, before: int | None) -> builtins.list[int]: ...
    async def interrupt(self, conv_id: str, *, prompt_seq: int | None = None) -> bool: ...
    async def resume(self, conv_id: str) -> api.ResumeResult: ...
    async def permit(
        self, conv_id: str, *, request: str, option: str | None, cancelled: bool
    ) -> None: ...
    async def set_mode(self, conv_id: str, mode: str) -> api.ConversationInfo: ...
    async def answer(
        self, conv_id: str, *, request: str, action: str, content: dict[str, Any] | None
    ) -> None: ...
    async def set_option(
        self, conv_id: str, option: str, value: str | bool
    ) -> api.ConversationInfo: ...
    def live_count(self) -> int: ...
    def agents_running(self) -> int: ...
    def slot_counts(self) -> tuple[int, int, int]: ...
    def start_counts(self) -> tuple[int, int, int]: ...
    async def agents_rss(self) -> int: ...
    def counters(self) -> tuple[int, int, int]: ...
    def storage(self) -> StorageHealth: ...
    def person_waiting(self) -> contextlib.AbstractContextManager[None]: ...
    def agents(self) -> builtins.list[tuple[str, builtins.list[str]]]: ...


@attrs.frozen
class DaemonInfo:
    """Facts for `daemon/status` that the engine does not own."""

    data_dir: Path
    version: str
    started_at: float  # trio.current_time() at start-up
    socket: str | None = None  # the unix socket served, for `daemon/status`


@attrs.frozen
class DispatcherStatistics:
    connections: int
    requests: int
    errors: int  # error replies of any kind, malformed input included


@attrs.frozen
class _Streaming:
    """A handler's answer that is a reply followed by a stream (subscribe)."""

    result: api.SubscribeResult
    conv_id: str
    sub: SubscriptionAPI


Handler = Callable[["Connection", Any], Awaitable[msgspec.Struct | _Streaming]]

# Small writes a person waits for: the agents' bulk work holds off while one is answered
# (`EngineAPI.person_waiting`). Not those that wait for an agent (set_mode), nor big ones.
_PEOPLE_WAIT: Final = frozenset(
    {"messages/send", "messages/remove", "messages/edit", "messages/move", "turns/interrupt"}
)


_NOBODY: Final = contextlib.nullcontext()


def _reply(req_id: RequestId, result: msgspec.Struct) -> bytes:
    return bytes(encode_line(Response(id=req_id, result=result)))


def find_command(command: str, cwd: str, path: str | None) -> str | None:
    """Where `command` would be run from (as `subprocess` resolves it: relative to `cwd` if it
    has a slash, else on `path`); None if nowhere."""
    if "/" in command:
        full = os.path.join(cwd, command)
        return full if os.path.isfile(full) and os.access(full, os.X_OK) else None
    return shutil.which(command, path=path)


class Dispatcher:
    """Routes JSON-RPC requests to the engine; one per daemon, shared by all transports."""

    def __init__(
        self, engine: EngineAPI, info: DaemonInfo, *, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self._engine = engine
        self._info = info
        self._max_in_flight = max_in_flight
        self._connections = self._requests = self._errors = 0
        # Set by main once the dashboard serves (its URL as bound, without the token).
        self.dashboard_url: str | None = None
        self._handlers: dict[str, Handler] = {
            "daemon/status": self._status,
            "agents/list": self._agents,
            "conversations/create": self._create,
            "conversations/list": self._list,
            "conversations/count": self._count,
            "conversations/get": self._get,
            "conversations/delete": self._delete,
            "conversations/events": self._events,
            "conversations/subscribe": self._subscribe,
            "conversations/unsubscribe": self._unsubscribe,
            "messages/send": self._send,
            "messages/queue": self._queue,
            "messages/remove": self._remove,
            "messages/edit": self._edit,
            "messages/move": self._move,
            "turns/interrupt": self._interrupt,
            "conversations/resume": self._resume,
            "permissions/respond": self._permit,
            "elicitations/respond": self._answer,
            "conversations/set_mode": self._set_mode,
            "conversations/set_option": self._set_option,
        }
        assert self._handlers.keys() == api.METHODS.keys(), "handler table out of step"

    @property
    def max_message_bytes(self) -> int:
        """The cap on one incoming line/frame; read per connection, so SIGHUP applies it."""
        return self._engine.config.max_line_bytes

    def statistics(self) -> DispatcherStatistics:
        return DispatcherStatistics(self._connections, self._requests, self._errors)

    @asynccontextmanager
    async def open_connection(
        self, send: Send, *, coalesce: bool = False
    ) -> AsyncIterator[Connection]:
        """Serve one client for the duration of the block (`connection.open_connection`)."""
        self._connections += 1
        try:
            async with open_connection(
                send,
                self._respond,
                max_in_flight=self._max_in_flight,
                coalesce=coalesce,
                on_error_reply=self._count_error,
            ) as conn:
                yield conn
        finally:
            self._connections -= 1

    def _count_error(self) -> None:
        self._errors += 1

    # --- one message --------------------------------------------------------------------------

    async def _respond(self, conn: Connection, message: bytes) -> bytes | None:
        """Handle one incoming message; the reply line, or None when none is due."""
        self._requests += 1
        try:
            env = decode_envelope(message)
        except RpcFailure as exc:
            msg = exc.message
            if message.lstrip()[:1] == b"[":
                msg = "invalid request: batches are not supported"
            return self._fail(None, exc.code, msg)
        req_id: RequestId = None if env.id is UNSET else env.id
        if env.jsonrpc != "2.0":
            return self._fail(req_id, INVALID_REQUEST, 'invalid request: `jsonrpc` must be "2.0"')
        if env.method is UNSET:
            if env.is_response:  # we never ask clients anything; never answer an answer
                log.debug("ignored a response from a client: %r", message[:200])
                return None
            return self._fail(req_id, INVALID_REQUEST, "invalid request: no `method`")
        method = env.method
        is_notification = env.id is UNSET
        decoder = api.params_decoder(method)
        waiting = self._engine.person_waiting() if method in _PEOPLE_WAIT else _NOBODY
        try:
            if decoder is None:
                raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method[:100]}")
            params = decode_params(decoder, env.params)
            with waiting:
                outcome = await self._handlers[method](conn, params)
        except RpcFailure as exc:
            return None if is_notification else self._fail(req_id, exc.code, exc.message)
        except StorageUnavailable as exc:  # the engine says what was not stored where it can
            return None if is_notification else self._fail(req_id, STORAGE_UNAVAILABLE, str(exc))
        except Exception:
            log.exception("internal error handling %s", method)
            return None if is_notification else self._fail(req_id, INTERNAL_ERROR, "internal error")
        if isinstance(outcome, _Streaming):
            reply = None if is_notification else _reply(req_id, outcome.result)
            await conn.start_stream(outcome.conv_id, outcome.sub, reply)
            return None
        return None if is_notification else _reply(req_id, outcome)

    def _fail(self, req_id: RequestId, code: int, message: str) -> bytes:
        self._errors += 1
        log.debug("error reply %d to id %r: %s", code, req_id, message)
        return error_line(code, message, req_id)

    # --- handlers -----------------------------------------------------------------------------

    async def _resolve(self, id_or_prefix: str) -> str:
        return await self._engine.resolve_id(id_or_prefix)

    async def _status(self, conn: Connection, p: api.NoParams) -> api.StatusResult:
        try:
            stored = await self._engine.count()
        except StorageUnavailable:
            stored = -1  # unreadable: the status must still say what is wrong
        storage = self._engine.storage()
        used, limit, waiting = self._engine.slot_counts()
        starting, max_starting, starts_waiting = self._engine.start_counts()
        return api.StatusResult(
            version=self._info.version,
            pid=os.getpid(),
            uptime_s=round(trio.current_time() - self._info.started_at, 3),
            data_dir=str(self._info.data_dir),
            conversations_stored=stored,
            conversations_live=self._engine.live_count(),
            agents_running=self._engine.agents_running(),
            dashboard_url=self.dashboard_url,
            counters=self._counters(storage),
            socket=self._info.socket,
            storage=storage.cause or "ok",
            storage_error=storage.message,
            slots=api.SlotsStatus(
                used=used,
                max=limit,
                waiting=waiting,
                starting=starting,
                max_starting=max_starting,
                starts_waiting=starts_waiting,
            ),
            agents_rss=await self._engine.agents_rss(),
        )

    def _counters(self, storage: StorageHealth) -> api.StatusCounters:
        hydrations, dropped, lagged = self._engine.counters()
        return api.StatusCounters(
            requests=self._requests,
            request_errors=self._errors,
            hydrations=hydrations,
            updates_dropped=dropped,
            subscribers_lagged=lagged,
            writes_refused=storage.refused,
            log_records_dropped=dropped_records(),
        )

    async def _agents(self, conn: Connection, p: api.NoParams) -> api.AgentsResult:
        agents = [api.AgentInfo(name=n, command=list(c)) for n, c in self._engine.agents()]
        return api.AgentsResult(agents=agents)

    async def _create(self, conn: Connection, p: api.CreateParams) -> api.ConversationResult:
        # No cwd: the daemon's home, not its working directory (`/` under systemd).
        cwd = p.cwd if p.cwd is not None else str(Path.home())
        await self._check_command(p, cwd)
        info = await self._engine.create(agent=p.agent, agent_cmd=p.agent_cmd, cwd=cwd,
                                         title=p.title, mcp_servers=p.mcp_servers)  # fmt: skip
        return api.ConversationResult(conversation=info)

    async def _check_command(self, p: api.CreateParams, cwd: str) -> None:
        """-32002 now for an agent command that cannot be found, rather than an `error` event
        (and restarts) at the first send. Unknown agents and bad cwds are the engine's to refuse."""
        config = self._engine.config
        custom = p.agent_cmd is not None
        agent = config.all_agents().get(p.agent or ("custom" if custom else config.default_agent))
        argv = p.agent_cmd if p.agent_cmd is not None else agent.command if agent else ()
        if not argv:
            return
        path = (agent.env if agent is not None else {}).get("PATH", os.environ.get("PATH"))

        # A few stat calls, done inline: a worker thread would cost more than the lookup.
        if os.path.isdir(cwd) and find_command(argv[0], cwd, path) is None:  # noqa: ASYNC240
            raise RpcFailure(
                AGENT_START_FAILED, f"agent failed to start: command not found: {argv[0]}"
            )

    async def _list(self, conn: Connection, p: api.ListParams) -> api.ListResult:
        page, total, nxt = await self._engine.list(limit=p.limit, before=p.before, cwd=p.cwd)
        return api.ListResult(conversations=page, total=total, next=nxt)

    async def _count(self, conn: Connection, p: api.NoParams) -> api.CountResult:
        return api.CountResult(count=await self._engine.count())

    async def _get(self, conn: Connection, p: api.IdParams) -> api.ConversationResult:
        info = await self._engine.get(await self._resolve(p.id))
        return api.ConversationResult(conversation=info)

    async def _delete(self, conn: Connection, p: api.IdParams) -> api.EmptyResult:
        await self._engine.delete(await self._resolve(p.id))
        return api.EmptyResult()

    async def _events(self, conn: Connection, p: api.EventsParams) -> api.EventsResult:
        cid = await self._resolve(p.id)
        events, last_seq = await self._engine.events(cid, after_seq=p.after_seq, limit=p.limit)
        return api.EventsResult(events=events, last_seq=last_seq)

    async def _subscribe(self, conn: Connection, p: api.SubscribeParams) -> _Streaming:
        cid = await self._resolve(p.id)
        if conn.subscription_count >= MAX_SUBSCRIPTIONS:
            raise RpcFailure(CONFLICT, f"too many subscriptions on one connection "
                                       f"(limit {MAX_SUBSCRIPTIONS})")  # fmt: skip
        sub = await self._engine.subscribe(
            cid,
            after_seq=p.after_seq,
            deltas=p.deltas,
            from_turn=p.from_turn,
            caught_up=p.caught_up,
        )
        return _Streaming(api.SubscribeResult(through_seq=sub.through_seq), cid, sub)

    async def _unsubscribe(self, conn: Connection, p: api.IdParams) -> api.EmptyResult:
        # Matched against this connection's own subscriptions, so it works for a conversation
        # deleted meanwhile; unknown ids are a no-op (idempotent).
        conn.unsubscribe(p.id)
        return api.EmptyResult()

    async def _send(self, conn: Connection, p: api.SendParams) -> api.SendResult:
        cid = await self._resolve(p.id)
        if p.steer:
            return await self._engine.steer(cid, p.text)
        return await self._engine.send(cid, p.text, run=p.run, interrupt=p.interrupt)

    async def _queue(self, conn: Connection, p: api.IdParams) -> api.QueueResult:
        return api.QueueResult(pending=await self._engine.queue(await self._resolve(p.id)))

    async def _remove(self, conn: Connection, p: api.RemoveParams) -> api.EmptyResult:
        await self._engine.remove(await self._resolve(p.id), p.seq)
        return api.EmptyResult()

    async def _edit(self, conn: Connection, p: api.EditParams) -> api.EmptyResult:
        await self._engine.edit(await self._resolve(p.id), p.seq, p.text)
        return api.EmptyResult()

    async def _move(self, conn: Connection, p: api.MoveParams) -> api.MoveResult:
        order = await self._engine.move(await self._resolve(p.id), p.seq, p.before)
        return api.MoveResult(order=order)

    async def _interrupt(self, conn: Connection, p: api.InterruptParams) -> api.InterruptResult:
        done = await self._engine.interrupt(await self._resolve(p.id), prompt_seq=p.prompt_seq)
        return api.InterruptResult(interrupted=done)

    async def _resume(self, conn: Connection, p: api.IdParams) -> api.ResumeResult:
        return await self._engine.resume(await self._resolve(p.id))

    async def _answer(self, conn: Connection, p: api.AnswerParams) -> api.EmptyResult:
        cid = await self._resolve(p.id)
        content = dict(p.content) if p.content is not None else None
        await self._engine.answer(cid, request=p.request, action=p.action, content=content)
        return api.EmptyResult()

    async def _set_mode(self, conn: Connection, p: api.SetModeParams) -> api.ConversationResult:
        info = await self._engine.set_mode(await self._resolve(p.id), p.mode)
        return api.ConversationResult(conversation=info)

    async def _set_option(self, conn: Connection, p: api.SetOptionParams) -> api.ConversationResult:
        info = await self._engine.set_option(await self._resolve(p.id), p.option, p.value)
        return api.ConversationResult(conversation=info)

    async def _permit(self, conn: Connection, p: api.PermitParams) -> api.EmptyResult:
        cid = await self._resolve(p.id)
        await self._engine.permit(cid, request=p.request, option=p.option, cancelled=p.cancelled)
        return api.EmptyResult()
