"""The JSON-RPC dispatcher every front-end shares (unix socket, websocket).

Transport-neutral: a transport opens a `Connection` with an async `send(bytes)` for outgoing
lines and feeds it each incoming message with `handle()`. Per connection:

- requests run concurrently, each in its own task, at most `max_in_flight` at once (past that
  `handle()` waits, so the transport stops reading: backpressure, not buffering);
- every outgoing line goes through one bounded channel and one writer task, so a slow client
  backs up only itself: subscription pumps block, the engine's bounded subscriber buffer fills
  and the engine drops the subscription with `lagged`; no turn ever waits for a client;
- `conversations/subscribe` replies `{through_seq}`, then streams that subscription's lines on
  the same connection while other calls go on; all subscriptions end with the connection.

Error handling: malformed input becomes a JSON-RPC error reply (-32700, -32600, -32601, -32602);
an engine `RpcFailure` is passed through; any other `Exception` from a handler is logged and
becomes -32603. Nothing a client sends ends the connection or the daemon.

`conversations/create` checks that the agent's command exists (-32002 if not), since the agent
itself starts only after a later `messages/send` is acknowledged: a start failure then can only
be an `error` event.
"""

from __future__ import annotations

import builtins
import logging
import os
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import msgspec
import trio
from msgspec import UNSET

from daemon.config import Config
from protocol import api
from protocol.jsonrpc import (
    AGENT_START_FAILED,
    CONFLICT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    ErrorResponse,
    RequestId,
    Response,
    RpcError,
    RpcFailure,
    decode_envelope,
    decode_params,
    encode_line,
)

__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_SUBSCRIPTIONS",
    "ClientGone",
    "Connection",
    "DaemonInfo",
    "Dispatcher",
    "EngineAPI",
    "Send",
    "SubscriptionAPI",
]

log = logging.getLogger(__name__)

MAX_IN_FLIGHT: Final = 64  # concurrent requests per connection
MAX_SUBSCRIPTIONS: Final = 256  # per connection; each holds an engine-side buffer
OUT_BUFFER: Final = 64  # outgoing lines queued per connection before producers wait
CLOSE_FLUSH_S: Final = 10.0  # after the client's EOF: time to flush the last replies
_COALESCE_BYTES: Final = 64 * 1024

Send = Callable[[bytes], Awaitable[None]]


class ClientGone(Exception):
    """Raised by a transport's `send` when the client has gone (as are trio's Broken/Closed)."""


_GONE = (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError)


class SubscriptionAPI(Protocol):
    """What the dispatcher needs of `daemon.engine.fanout.Subscription`. `close()` is idempotent."""

    @property
    def through_seq(self) -> int: ...
    def __aiter__(self) -> SubscriptionAPI: ...
    async def __anext__(self) -> bytes: ...
    def close(self) -> None: ...


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
    ) -> api.ConversationInfo: ...
    async def list(
        self, *, limit: int, before: str | None
    ) -> tuple[builtins.list[api.ConversationInfo], int, str | None]: ...
    async def count(self) -> int: ...
    async def get(self, conv_id: str) -> api.ConversationInfo: ...
    async def delete(self, conv_id: str) -> None: ...
    async def events(
        self, conv_id: str, *, after_seq: int, limit: int
    ) -> tuple[builtins.list[msgspec.Raw], int]: ...
    async def subscribe(self, conv_id: str, *, after_seq: int, deltas: bool) -> SubscriptionAPI: ...
    async def send(
        self, conv_id: str, text: str, *, run: bool, interrupt: bool
    ) -> tuple[int, int]: ...
    async def queue(self, conv_id: str) -> builtins.list[tuple[int, str]]: ...
    async def remove(self, conv_id: str, seq: int) -> None: ...
    async def interrupt(self, conv_id: str) -> bool: ...
    async def resume(self, conv_id: str) -> None: ...
    async def permit(
        self, conv_id: str, *, request: str, option: str | None, cancelled: bool
    ) -> None: ...
    def live_count(self) -> int: ...
    def agents_running(self) -> int: ...
    def agents(self) -> builtins.list[tuple[str, builtins.list[str]]]: ...


@attrs.frozen
class DaemonInfo:
    """Facts for `daemon/status` that the engine does not own."""

    data_dir: Path
    version: str
    started_at: float  # trio.current_time() at start-up


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


def _reply(req_id: RequestId, result: msgspec.Struct) -> bytes:
    return bytes(encode_line(Response(id=req_id, result=result)))


def _error(req_id: RequestId, code: int, message: str) -> bytes:
    return bytes(encode_line(ErrorResponse(id=req_id, error=RpcError(code, message))))


def find_command(command: str, cwd: str, path: str | None) -> str | None:
    """Where `command` would be run from (as `subprocess` resolves it: relative to `cwd` if it
    has a slash, else on `path`); None if nowhere."""
    if "/" in command:
        full = os.path.join(cwd, command)
        return full if os.path.isfile(full) and os.access(full, os.X_OK) else None
    return shutil.which(command, path=path)


def error_line(code: int, message: str) -> bytes:
    """An error reply to no request in particular (id null): for transports' own refusals."""
    return _error(None, code, message)


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
            "turns/interrupt": self._interrupt,
            "conversations/resume": self._resume,
            "permissions/respond": self._permit,
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
        """Serve one client for the duration of the block.

        `send` writes one outgoing chunk; with `coalesce` (byte streams) queued lines are joined
        into one chunk, without it (message transports) each call carries one line. When `send`
        raises `ClientGone` or trio's Broken/ClosedResourceError the whole block is cancelled.

        Resource handling: leaving the block normally (the client's EOF) waits for the requests
        in flight, ends the subscriptions and flushes the replies (bounded by CLOSE_FLUSH_S);
        leaving it by an exception cancels all of it.
        """
        out_send, out_recv = trio.open_memory_channel[bytes](OUT_BUFFER)
        self._connections += 1
        try:
            async with trio.open_nursery() as conn_nursery:
                conn_nursery.start_soon(
                    _write_loop, out_recv, send, coalesce, conn_nursery.cancel_scope
                )
                with out_send:
                    async with trio.open_nursery() as streams:
                        async with trio.open_nursery() as requests:
                            yield Connection(self, out_send, requests, streams)
                        streams.cancel_scope.cancel(reason="client closed the connection")
                conn_nursery.cancel_scope.deadline = trio.current_time() + CLOSE_FLUSH_S
        finally:
            self._connections -= 1

    async def serve(self, messages: AsyncIterable[bytes], send: Send) -> None:
        """Serve a message transport (one JSON-RPC message per item, one line per `send`)."""
        async with self.open_connection(send) as conn:
            async for message in messages:
                await conn.handle(message)

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
        try:
            if decoder is None:
                raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method[:100]}")
            params = decode_params(decoder, env.params)
            outcome = await self._handlers[method](conn, params)
        except RpcFailure as exc:
            return None if is_notification else self._fail(req_id, exc.code, exc.message)
        except Exception:
            log.exception("internal error handling %s", method)
            return None if is_notification else self._fail(req_id, INTERNAL_ERROR, "internal error")
        if isinstance(outcome, _Streaming):
            await conn._start_stream(outcome, req_id, reply=not is_notification)
            return None
        return None if is_notification else _reply(req_id, outcome)

    def _fail(self, req_id: RequestId, code: int, message: str) -> bytes:
        self._errors += 1
        log.debug("error reply %d to id %r: %s", code, req_id, message)
        return _error(req_id, code, message)

    # --- handlers -----------------------------------------------------------------------------

    async def _resolve(self, id_or_prefix: str) -> str:
        return await self._engine.resolve_id(id_or_prefix)

    async def _status(self, conn: Connection, p: api.NoParams) -> api.StatusResult:
        return api.StatusResult(
            version=self._info.version,
            pid=os.getpid(),
            uptime_s=round(trio.current_time() - self._info.started_at, 3),
            data_dir=str(self._info.data_dir),
            conversations_stored=await self._engine.count(),
            conversations_live=self._engine.live_count(),
            agents_running=self._engine.agents_running(),
            dashboard_url=self.dashboard_url,
        )

    async def _agents(self, conn: Connection, p: api.NoParams) -> api.AgentsResult:
        agents = [api.AgentInfo(name=n, command=list(c)) for n, c in self._engine.agents()]
        return api.AgentsResult(agents=agents)

    async def _create(self, conn: Connection, p: api.CreateParams) -> api.ConversationResult:
        # No cwd: the daemon's home, not its working directory (`/` under systemd).
        cwd = p.cwd if p.cwd is not None else str(Path.home())
        await self._check_command(p, cwd)
        info = await self._engine.create(agent=p.agent, agent_cmd=p.agent_cmd, cwd=cwd,
                                         title=p.title)  # fmt: skip
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
        page, total, nxt = await self._engine.list(limit=p.limit, before=p.before)
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
        sub = await self._engine.subscribe(cid, after_seq=p.after_seq, deltas=p.deltas)
        return _Streaming(api.SubscribeResult(through_seq=sub.through_seq), cid, sub)

    async def _unsubscribe(self, conn: Connection, p: api.IdParams) -> api.EmptyResult:
        # Matched against this connection's own subscriptions, so it works for a conversation
        # deleted meanwhile; unknown ids are a no-op (idempotent).
        conn._unsubscribe(p.id)
        return api.EmptyResult()

    async def _send(self, conn: Connection, p: api.SendParams) -> api.SendResult:
        cid = await self._resolve(p.id)
        seq, queued = await self._engine.send(cid, p.text, run=p.run, interrupt=p.interrupt)
        return api.SendResult(seq=seq, queued=queued)

    async def _queue(self, conn: Connection, p: api.IdParams) -> api.QueueResult:
        pending = await self._engine.queue(await self._resolve(p.id))
        return api.QueueResult(pending=[api.PendingMessage(seq=s, text=t) for s, t in pending])

    async def _remove(self, conn: Connection, p: api.RemoveParams) -> api.EmptyResult:
        await self._engine.remove(await self._resolve(p.id), p.seq)
        return api.EmptyResult()

    async def _interrupt(self, conn: Connection, p: api.IdParams) -> api.InterruptResult:
        done = await self._engine.interrupt(await self._resolve(p.id))
        return api.InterruptResult(interrupted=done)

    async def _resume(self, conn: Connection, p: api.IdParams) -> api.EmptyResult:
        await self._engine.resume(await self._resolve(p.id))
        return api.EmptyResult()

    async def _permit(self, conn: Connection, p: api.PermitParams) -> api.EmptyResult:
        cid = await self._resolve(p.id)
        await self._engine.permit(cid, request=p.request, option=p.option, cancelled=p.cancelled)
        return api.EmptyResult()


@attrs.define(eq=False)
class _Stream:
    conv_id: str
    sub: SubscriptionAPI
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.define(eq=False)
class Connection:
    """One client's side of the dispatcher; made by `Dispatcher.open_connection`."""

    _dispatcher: Dispatcher
    _out: trio.MemorySendChannel[bytes]
    _requests: trio.Nursery
    _streams: trio.Nursery
    _slots: trio.Semaphore = attrs.field(init=False)
    _subs: set[_Stream] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self._slots = trio.Semaphore(self._dispatcher._max_in_flight)

    @property
    def subscription_count(self) -> int:
        return len(self._subs)

    async def handle(self, message: bytes) -> None:
        """Take one incoming message; waits while `max_in_flight` requests are running."""
        await self._slots.acquire()
        self._requests.start_soon(self._run_one, message)

    async def send_error(self, code: int, message: str) -> None:
        """Queue an error reply with id null (e.g. the transport's "line too long")."""
        self._dispatcher._errors += 1
        await self._out.send(_error(None, code, message))

    async def _run_one(self, message: bytes) -> None:
        try:
            line = await self._dispatcher._respond(self, message)
            if line is not None:
                await self._out.send(line)
        finally:
            self._slots.release()

    async def _start_stream(self, outcome: _Streaming, req_id: RequestId, *, reply: bool) -> None:
        stream = _Stream(outcome.conv_id, outcome.sub)
        self._subs.add(stream)
        try:
            if reply:  # the reply goes out before the first streamed line
                await self._out.send(_reply(req_id, outcome.result))
            self._streams.start_soon(self._pump, stream)
        except BaseException:
            self._subs.discard(stream)
            stream.sub.close()
            raise

    async def _pump(self, stream: _Stream) -> None:
        try:
            with stream.scope:
                async for line in stream.sub:
                    await self._out.send(line)
        except Exception:
            log.exception("subscription to %s failed", stream.conv_id)
        finally:
            self._subs.discard(stream)
            stream.sub.close()

    def _unsubscribe(self, id_or_prefix: str) -> None:
        matches = [s for s in self._subs if s.conv_id.startswith(id_or_prefix)]
        if len({s.conv_id for s in matches}) > 1:
            raise RpcFailure(INVALID_PARAMS, f"ambiguous id prefix: {id_or_prefix}")
        for stream in matches:
            # Cancelled before the reply is queued: nothing of it follows the reply.
            stream.scope.cancel(reason="unsubscribed")
            stream.sub.close()
            self._subs.discard(stream)


async def _write_loop(
    lines: trio.MemoryReceiveChannel[bytes], send: Send, coalesce: bool, conn: trio.CancelScope
) -> None:
    with lines:
        async for line in lines:
            chunk = line
            if coalesce:
                parts = [line]
                size = len(line)
                while size < _COALESCE_BYTES:
                    try:
                        more = lines.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    parts.append(more)
                    size += len(more)
                if len(parts) > 1:
                    chunk = b"".join(parts)
            try:
                await send(chunk)
            except _GONE:
                conn.cancel(reason="client gone")
                return
