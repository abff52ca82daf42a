"""One client's connection to the dispatcher, whatever its transport.

A transport opens it with an async `send(bytes)` for outgoing lines and feeds it each incoming
message with `handle()`:

- requests run concurrently, each in its own task, at most `max_in_flight` at once (past that
  `handle()` waits, so the transport stops reading: backpressure, not buffering);
- every outgoing line goes through one bounded channel and one writer task, so a slow client
  backs up only itself: subscription pumps block, the engine's bounded subscriber buffer fills
  and the engine drops the subscription with `lagged`; no turn ever waits for a client;
- a subscription streams its lines on the same connection while other calls go on; all
  subscriptions end with the connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, Protocol

import attrs
import trio

from protocol.jsonrpc import INVALID_PARAMS, ErrorResponse, RpcError, RpcFailure, encode_line

__all__ = [
    "ClientGone",
    "Connection",
    "Send",
    "SubscriptionAPI",
    "error_line",
    "open_connection",
]

log = logging.getLogger(__name__)

OUT_BUFFER: Final = 64  # outgoing lines queued per connection before producers wait
CLOSE_FLUSH_S: Final = 10.0  # after the client's EOF: time to flush the last replies
_COALESCE_BYTES: Final = 64 * 1024

Send = Callable[[bytes], Awaitable[None]]
# Handles one incoming message for a connection: the reply line, or None when none is due.
Respond = Callable[["Connection", bytes], Awaitable[bytes | None]]


class ClientGone(Exception):
    """Raised by a transport's `send` when the client has gone (as are trio's Broken/Closed)."""


_GONE = (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError)


class SubscriptionAPI(Protocol):
    """What a connection needs of `daemon.engine.fanout.Subscription`. `close()` is
    idempotent."""

    @property
    def through_seq(self) -> int: ...
    def __aiter__(self) -> SubscriptionAPI: ...
    async def __anext__(self) -> bytes: ...
    def close(self) -> None: ...


def error_line(code: int, message: str, req_id: int | str | None = None) -> bytes:
    """An error reply line (id null by default: for transports' own refusals)."""
    return bytes(encode_line(ErrorResponse(id=req_id, error=RpcError(code, message))))


@asynccontextmanager
async def open_connection(
    send: Send,
    respond: Respond,
    *,
    max_in_flight: int,
    coalesce: bool = False,
    on_error_reply: Callable[[], None] = lambda: None,
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
    async with trio.open_nursery() as conn_nursery:
        conn_nursery.start_soon(_write_loop, out_recv, send, coalesce, conn_nursery.cancel_scope)
        with out_send:
            async with trio.open_nursery() as streams:
                async with trio.open_nursery() as requests:
                    yield Connection(
                        respond, out_send, requests, streams, max_in_flight, on_error_reply
                    )
                streams.cancel_scope.cancel(reason="client closed the connection")
        conn_nursery.cancel_scope.deadline = trio.current_time() + CLOSE_FLUSH_S


@attrs.define(eq=False)
class _Stream:
    conv_id: str
    sub: SubscriptionAPI
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.define(eq=False)
class Connection:
    """One client's side of the dispatcher; made by `open_connection`."""

    _respond: Respond
    _out: trio.MemorySendChannel[bytes]
    _requests: trio.Nursery
    _streams: trio.Nursery
    _max_in_flight: int
    _on_error_reply: Callable[[], None]
    _slots: trio.Semaphore = attrs.field(init=False)
    _subs: set[_Stream] = attrs.field(init=False, factory=set)

    def __attrs_post_init__(self) -> None:
        self._slots = trio.Semaphore(self._max_in_flight)

    @property
    def subscription_count(self) -> int:
        return len(self._subs)

    async def handle(self, message: bytes) -> None:
        """Take one incoming message; waits while `max_in_flight` requests are running."""
        await self._slots.acquire()
        self._requests.start_soon(self._run_one, message)

    async def send_error(self, code: int, message: str) -> None:
        """Queue an error reply with id null (e.g. the transport's "line too long")."""
        self._on_error_reply()
        await self._out.send(error_line(code, message))

    async def _run_one(self, message: bytes) -> None:
        try:
            line = await self._respond(self, message)
            if line is not None:
                await self._out.send(line)
        finally:
            self._slots.release()

    async def start_stream(self, conv_id: str, sub: SubscriptionAPI, reply: bytes | None) -> None:
        """Stream `sub`'s lines to the client after `reply` (the subscribe's own answer)."""
        stream = _Stream(conv_id, sub)
        self._subs.add(stream)
        try:
            if reply is not None:  # the reply goes out before the first streamed line
                await self._out.send(reply)
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

    def unsubscribe(self, id_or_prefix: str) -> None:
        """End this connection's subscriptions to a conversation (matched by id prefix)."""
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
