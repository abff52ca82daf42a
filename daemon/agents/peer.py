"""JSON-RPC 2.0 over a byte stream: the connection to one ACP agent.

`AgentPeer` knows nothing about processes: it runs over any `trio.abc.Stream` (a child's
stdio in production, one end of `trio.testing.memory_stream_pair()` in tests). It is symmetric
enough that the demo agent and the test fake use it for the agent's side too.

Shape (STYLE.md §5): one read loop feeding a length-capped `LineSplitter`; writes serialised by
one `StrictFIFOLock`; each of our requests waits on a one-shot memory channel keyed by id
(`calls.Calls`). The agent numbers its own requests from 0 just as we do (ACP.md §1), so
incoming (`serving.Serving`) and outgoing requests live in separate tables and never meet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import msgspec
import trio

from daemon.agents.calls import AgentExited, Calls
from daemon.agents.hearing import (
    DroppedHandler,
    DroppedMessage,
    NotificationHandler,
    PeerHandlers,
    PeerStats,
    UpdateHandler,
    UpdatesHandler,
)
from daemon.agents.serving import MAX_SERVING, RequestHandler, Serving
from protocol import acp
from protocol.framing import DroppedLine, LineSplitter
from protocol.jsonrpc import (
    BUSY,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    Envelope,
    ErrorResponse,
    Notification,
    Request,
    RequestId,
    RpcError,
    RpcFailure,
    decode_envelope,
    decode_result,
    encode_line,
)
from protocol.peek import peek_message

__all__ = [
    "DEFAULT_MAX_LINE",
    "MAX_SERVING",
    "AgentExited",
    "AgentPeer",
    "DroppedMessage",
    "PeerHandlers",
    "PeerStats",
]

T = TypeVar("T")

DEFAULT_MAX_LINE: Final = 16 * 1024 * 1024
READ_SIZE: Final = 65536
# How long one write may block on an agent that does not read its input (see `_write`).
WRITE_BOUND: Final = 5.0
# After each batch read, the read loop yields while other tasks are ready to run, at most this
# many times: the other tasks' steps come before the next batch's (an ack needs several).
YIELDS_PER_BATCH: Final = 8
# Bad input is logged at WARNING this many times per peer, then at DEBUG: a broken agent must
# not flood the daemon's log, but the first occurrences are what someone debugging needs.
LOUD_ERRORS: Final = 10


class AgentPeer:
    """A JSON-RPC 2.0 connection over `stream`, one message per line.

    Callbacks run in the read loop, in arrival order: `on_update(session_id, update)` for every
    `session/update` (unknown variants as `acp.UnknownUpdate`); or, with `on_updates`, that
    with a list of the known updates that come one after another in a batch (for a flood's
    lines, one call per batch, not per line; unknown variants still go to `on_update`);
    `on_notification(method, raw)`
    for other notifications (ignored without it), and `on_batch_end()` after the lines of each
    received chunk, so a consumer can coalesce deltas and act once per batch. They are
    synchronous. One that raises is a bug, but one message must not cost the whole
    connection: the exception is logged with its traceback and counted, and the loop goes on.

    `on_request(method, raw_params)` serves each incoming request in its own task (a
    permission request may wait minutes for a person): its return value is the result (a
    Struct, or anything msgspec encodes); raising `RpcFailure` answers with that error (its
    METHOD_NOT_FOUND for methods it does not handle), any other exception with -32603.
    Without `on_request`, every request gets -32601. `$/cancel_request` naming a request still
    being served cancels its task and answers it -32800. At most `MAX_SERVING` are served at
    once; one more is answered -32006 (busy) right away.

    `wait_for_space()`, if given, is awaited after each batch's callbacks: a consumer that
    falls behind makes the read loop wait, so the peer's writes block (back-pressure).

    A line over `max_line` is dropped, but not silently: `on_dropped(DroppedMessage)` says what
    it seemed to be; if it answered one of our requests, that request fails at once (-32603,
    saying so) rather than waiting for ever; if it asked something, it is refused (-32600).

    Resource handling: `run()` owns the nursery of request tasks and returns at end of
    stream; every `request()` still waiting then raises `AgentExited`, and handler tasks are
    cancelled. With `eof_grace`, at end of stream (our input only: the peer may still read)
    `on_eof()` is called and the requests in progress get that many seconds to be answered
    first. `aclose()` closes the stream, which ends `run()`.

    Error handling: malformed and oversized lines are logged and counted in `stats`, never
    fatal; with `answer_malformed` (serving a client, which must hear about its mistakes) a
    malformed line is also answered with a JSON-RPC error, -32700 or -32600, with its id when
    it has one. Each write is shielded from cancellation, so no partial line ever goes out,
    and bounded by `write_bound` seconds; a write that fails or times out makes this and every
    later write raise `AgentExited`.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        on_update: UpdateHandler,
        on_updates: UpdatesHandler | None = None,
        on_request: RequestHandler | None = None,
        on_notification: NotificationHandler | None = None,
        on_batch_end: Callable[[], None] | None = None,
        on_request_received: Callable[[str, msgspec.Raw], None] | None = None,
        wait_for_space: Callable[[], Awaitable[None]] | None = None,
        on_dropped: DroppedHandler | None = None,
        max_line: int = DEFAULT_MAX_LINE,
        log: logging.Logger | None = None,
        write_bound: float = WRITE_BOUND,
        answer_malformed: bool = False,
        eof_grace: float = 0.0,
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self._eof_grace = eof_grace
        self._on_eof = on_eof
        self._write_bound = write_bound
        self._answer_malformed = answer_malformed
        # Called in the read loop, before the request's task starts: what the receiver must
        # know in line order (a notification on the same read is handled before that task).
        self._on_request_received = on_request_received
        self._on_update = on_update
        self._on_updates = on_updates or self._each_update
        self._on_notification = on_notification
        self._on_batch_end = on_batch_end
        self._wait_for_space = wait_for_space
        self._on_dropped = on_dropped
        # Requests refused in the read loop, answered (with these errors) after the batch.
        self._refused: list[tuple[RequestId, RpcError]] = []
        self._splitter = LineSplitter(max_line)
        self._log = log or logging.getLogger("acpd.peer")
        self.stats = PeerStats()
        # The last malformed line (its start), for an error's detail when the agent then dies.
        self.last_malformed = b""
        self._calls = Calls()  # ours, waiting for their answers
        self._serving = Serving(on_request, self._write, self._log)  # the peer's
        self._send_lock = trio.StrictFIFOLock()
        self._write_broken = False
        self._started = False
        self._ended = False  # no response can arrive any more
        self._finished = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        """Whether the read loop has started and not yet ended."""
        return self._started and not self._ended

    async def wait_finished(self) -> None:
        """Block until `run()` has returned."""
        await self._finished.wait()

    # --- outgoing -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: msgspec.Struct | dict[str, object],
        result_type: type[T],
        *,
        on_answer: Callable[[], None] | None = None,
        withdraw: bool = False,
        on_sent: Callable[[], None] | None = None,
    ) -> T:
        """Send a request and wait for its response, decoded as `result_type`.

        `on_answer()` runs in the read loop the moment the response line is read, before the
        lines after it: what arrives later is known to come after the answer. `on_sent()`
        runs once the request's line is written: what is written later comes after it.

        Raises `RpcFailure` if the peer answered with an error (`InvalidResult` if its result
        does not decode), `AgentExited` if the connection ends first. Cancelling this call
        abandons the wait; a late response is then dropped and counted as unknown. With
        `withdraw`, the peer is also told: `$/cancel_request` names the request (ACP.md §1).
        """
        req_id = self._calls.next_id()
        data = encode_line(Request(id=req_id, method=method, params=params))
        if self._ended:
            raise AgentExited(f"agent connection closed; cannot send {method}")
        recv = self._calls.wait_for(req_id, method, on_answer)
        written = answered = False
        try:
            await self._write(data)
            written = True
            if on_sent is not None:
                on_sent()
            try:
                env = await recv.receive()
            except trio.EndOfChannel:
                raise AgentExited(f"agent exited before answering {method}") from None
            answered = True
        finally:
            self._calls.done(req_id)
            recv.close()
            if withdraw and written and not answered and not self._ended:
                with trio.CancelScope(shield=True):  # the write itself is bounded
                    try:
                        await self.notify(
                            acp.CANCEL_REQUEST, acp.CancelRequestNotification(request_id=req_id)
                        )
                    except AgentExited:
                        pass
        if isinstance(env.error, RpcError):
            raise RpcFailure.from_error(env.error)
        return decode_result(result_type, env.result)

    async def notify(self, method: str, params: msgspec.Struct | dict[str, object]) -> None:
        """Send a notification. Raises `AgentExited` if the connection is gone."""
        data = encode_line(Notification(method=method, params=params))
        if self._ended:
            raise AgentExited(f"agent connection closed; cannot send {method}")
        await self._write(data)

    async def aclose(self) -> None:
        """Close the stream: `run()` returns and every waiting `request()` raises `AgentExited`."""
        self._end()
        await self._stream.aclose()

    async def _write(self, data: bytes | bytearray) -> None:
        async with self._send_lock:
            if self._write_broken:
                raise AgentExited("the agent's input is closed or no longer framed")
            await trio.lowlevel.checkpoint_if_cancelled()
            # Shielded, so a cancellation never leaves half a line on the wire (the next line
            # would be garbage too); bounded, so an agent that stops reading its input cannot
            # hold a caller, or a shutdown, for long.
            deadline = trio.current_time() + self._write_bound
            with trio.CancelScope(shield=True, deadline=deadline) as scope:
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._write_broken = True
                    raise AgentExited("the agent's input is closed") from None
            if scope.cancelled_caught:
                self._write_broken = True
                raise AgentExited(f"the peer did not read its input for {self._write_bound:g}s")

    # --- the read loop ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The read loop. Start it with `nursery.start`; it returns at end of stream."""
        if self._started:
            raise RuntimeError("AgentPeer.run() can only be called once")
        self._started = True
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    await self._read_loop()
                    if self._on_eof is not None:
                        self._on_eof()
                    if self._eof_grace > 0:
                        with trio.move_on_after(self._eof_grace):
                            await self._serving.wait_answered()
                finally:
                    self._end()  # wake waiters now, not after handler tasks unwind
                    nursery.cancel_scope.cancel(reason="agent stream ended")
        finally:
            self._nursery = None
            self._end()
            self._finished.set()

    def _end(self) -> None:
        self._ended = True
        self._calls.end()  # the waiters' receive() raises EndOfChannel -> AgentExited

    async def _read_loop(self) -> None:
        splitter = self._splitter
        receive_some = self._stream.receive_some
        while True:
            try:
                data = await receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                last = splitter.flush()
                if last is not None:
                    self._dispatch_batch([last])
                for dropped in splitter.take_dropped():
                    self._dropped(dropped)
                while self._refused:  # the peer may still read: its last errors too
                    await self._refuse(*self._refused.pop(0))
                return
            lines = splitter.feed(data)
            if lines:
                self._dispatch_batch(lines)
            if splitter.has_dropped:
                for dropped in splitter.take_dropped():
                    self._dropped(dropped)
            while self._refused:
                await self._refuse(*self._refused.pop(0))
            if self._wait_for_space is not None:
                await self._wait_for_space()
            # One batch per step, then whatever else is ready runs first (up to a bound), so
            # a flood is read between accepts, acks and status answers, never ahead of them.
            for _ in range(YIELDS_PER_BATCH):
                await trio.lowlevel.checkpoint()
                if trio.lowlevel.current_statistics().tasks_runnable == 0:
                    break

    def _dispatch_batch(self, lines: list[bytes]) -> None:
        self.stats.lines += len(lines)
        # The commonest line by far is a well-formed, known update: a flood's batch is decoded
        # in one pass and handed on in one call (this is the daemon's hot path).
        notes = acp.decode_update_lines(lines)
        if notes is not None:
            self._deliver(notes)
        else:  # line by line: runs of updates still together, anything else the general way
            run: list[acp.SessionNotification] = []
            for line in lines:
                if (note := acp.decode_update_line(line)) is not None:
                    run.append(note)
                    continue
                if run:
                    self._deliver(run)
                    run = []
                self._dispatch(line)
            if run:
                self._deliver(run)
        if self._on_batch_end is not None:
            try:
                self._on_batch_end()
            except Exception:
                self._callback_failed("on_batch_end")

    def _deliver(self, notes: list[acp.SessionNotification]) -> None:
        self.stats.notifications += len(notes)
        try:
            self._on_updates(notes)
        except Exception:
            self._callback_failed("on_updates")

    def _each_update(self, notes: list[acp.SessionNotification]) -> None:
        """`on_updates` for an owner that gave only `on_update`."""
        for note in notes:
            try:
                self._on_update(note.session_id, note.update)
            except Exception:
                self._callback_failed("on_update")

    def _dispatch(self, line: bytes) -> None:
        """Any line but a well-formed known update."""
        try:
            env = decode_envelope(line)
        except RpcFailure as exc:
            self._malformed(exc.message, line)
            if self._answer_malformed:
                self._refused.append((None, RpcError(exc.code, exc.message[:500])))
            return
        if isinstance(env.method, str):
            if isinstance(env.id, msgspec.UnsetType):
                self._notification(env.method, env.params, line)
            else:
                self._request(env.id, env.method, env.params, line)
        elif env.is_response:
            self._response(env)
        else:
            self._malformed("neither a request, a notification nor a response", line)
            if self._answer_malformed:
                req_id = None if isinstance(env.id, msgspec.UnsetType) else env.id
                error = RpcError(INVALID_REQUEST, "invalid request: no `method`")
                self._refused.append((req_id, error))

    def _notification(self, method: str, params: msgspec.Raw, line: bytes) -> None:
        self.stats.notifications += 1
        if method == acp.SESSION_UPDATE:
            try:
                session_id, update = acp.decode_session_notification(params)
            except msgspec.DecodeError as exc:
                self._malformed(f"bad session/update: {exc}", line)
                return
            try:
                self._on_update(session_id, update)
            except Exception:
                self._callback_failed("on_update")
        elif method == acp.CANCEL_REQUEST:
            self._cancel_serving(params, line)
        elif self._on_notification is not None:
            try:
                self._on_notification(method, params)
            except Exception:
                self._callback_failed("on_notification")
        else:
            self._log.debug("ignoring notification %s", method)

    def _response(self, env: Envelope) -> None:
        if not self._calls.answer(env, self._callback_failed):
            # Missing id (codex-acp answers notifications so, ACP.md §16), or a request we
            # stopped waiting for.
            self.stats.unknown_responses += 1
            self._log.debug("dropping a response with unknown id %r", env.id)

    # --- incoming requests --------------------------------------------------------------------

    def _request(self, req_id: RequestId, method: str, params: msgspec.Raw, line: bytes) -> None:
        self.stats.requests_in += 1
        if self._serving.in_progress(req_id):
            # Answering would look like an answer to the first one: drop it.
            self._malformed(f"request id {req_id!r} is already in use", line)
            return
        assert self._nursery is not None  # only called from the read loop, inside run()
        if self._serving.full:
            self.stats.requests_refused += 1
            if self.stats.requests_refused <= LOUD_ERRORS:
                self._log.warning("refused a request: %d already being served", MAX_SERVING)
            error = RpcError(BUSY, f"busy: {MAX_SERVING} requests already being served")
            self._refused.append((req_id, error))
            return
        if self._on_request_received is not None:
            try:
                self._on_request_received(method, params)
            except Exception:
                self._callback_failed("on_request_received")
        self._serving.start(self._nursery, req_id, method, params)

    async def _refuse(self, req_id: RequestId, error: RpcError) -> None:
        try:
            await self._write(encode_line(ErrorResponse(id=req_id, error=error)))
        except AgentExited:
            pass

    def _cancel_serving(self, params: msgspec.Raw, line: bytes) -> None:
        try:
            note = msgspec.json.decode(params or b"null", type=acp.CancelRequestNotification)
        except msgspec.DecodeError as exc:
            self._malformed(f"bad $/cancel_request: {exc}", line)
            return
        self._serving.cancel(note.request_id)

    # --- bad input ----------------------------------------------------------------------------

    def _dropped(self, line: DroppedLine) -> None:
        """A line over the cap: say what it was, and end what waits on it."""
        self.stats.oversized += 1
        peek = peek_message(line.head, line.tail)
        cap = self._splitter.max_line
        self._complain(
            "dropped a %s line of %d bytes (over %d)", peek.method or peek.kind, line.size, cap
        )
        failed = None
        rid = peek.id
        if peek.kind == "response" and (failed := self._calls.waiting_method(rid)) is not None:
            why = f"the agent's answer was {line.size} bytes, over the {cap}-byte limit: dropped"
            self._response(Envelope(jsonrpc="2.0", id=rid, error=RpcError(INTERNAL_ERROR, why)))
        elif peek.kind == "request" and rid is not None and not self._serving.in_progress(rid):
            why = f"request of {line.size} bytes is over the {cap}-byte limit"
            self._refused.append((rid, RpcError(INVALID_REQUEST, why)))
        if self._on_dropped is not None:
            note = DroppedMessage(line.size, cap, peek.kind, peek.method, failed)
            try:
                self._on_dropped(note)
            except Exception:
                self._callback_failed("on_dropped")

    def _malformed(self, why: str, line: bytes) -> None:
        self.stats.malformed += 1
        self.last_malformed = bytes(line[:1000])
        self._complain("malformed line (%s): %.200r", why, line)

    def _callback_failed(self, name: str) -> None:
        self.stats.callback_errors += 1
        level = logging.ERROR if self.stats.callback_errors <= LOUD_ERRORS else logging.DEBUG
        self._log.log(level, "%s raised; the message is dropped", name, exc_info=True)

    def _complain(self, msg: str, *args: object) -> None:
        count = self.stats.malformed + self.stats.oversized
        level = logging.WARNING if count <= LOUD_ERRORS else logging.DEBUG
        self._log.log(level, msg, *args)
