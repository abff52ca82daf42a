"""One ACP session attached to one daemon conversation: its updates, prompts and questions.

An `Attachment` subscribes to the conversation on a connection of its own (so everything that
arrives on it belongs to that subscription, and a resubscription is a new connection), turns
what arrives into `session/update`s with `protocol.translate`, answers this client's prompts
when their turns end, and offers the agent's questions to the client.

Invariants, and where they are kept:
- Each stored event is handled once, in seq order: `_seen` is the last one handled, and every
  (re)subscription starts after it (`_subscription`); a replayed duplicate is skipped.
- Each character of text reaches the client once (`Translator`), across resubscriptions:
  after a lag or a lost connection the attachment resubscribes from `_seen`, and the
  `conversation/caught_up` snapshot says what was streamed meanwhile.
- A prompt is answered with its own turn's stop reason: the `turn_ended` whose `prompt_seq`
  is its message's seq. The daemon's reply to `messages/send` (on the control connection) and
  the events (on this one) race, so before a `user_message` or `turn_ended` is looked at,
  the sends in flight are waited for: by then every seq of ours is known.
- The client's own messages are not echoed back as `user_message_chunk`s; others' are.
- A question is asked while it is open: asked when requested (or, if still open when a replay
  ends, then), withdrawn with `$/cancel_request` when the daemon records its resolution, and
  forgotten at its turn's end.
- Holding no conversation state: everything here can be rebuilt by subscribing again.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol, TypeVar

import attrs
import msgspec
import trio

from daemon.server.acp.link import Connector, DaemonGone, checked, open_daemon_conn
from protocol import acp, api
from protocol.jsonrpc import CONFLICT, INTERNAL_ERROR, RESOURCE_NOT_FOUND, RpcFailure
from protocol.translate import (
    STOP_REASONS,
    ElicitationRequestedView,
    Event,
    PermissionRequestedView,
    Translator,
    decode_event,
)

__all__ = ["Attachment", "Door", "Gone"]

log = logging.getLogger("acpd.acp")

T = TypeVar("T")

# Daemon lines waiting for this attachment's consumer; past this it resubscribes (its
# `_seen` is exact), as the daemon drops a subscriber that falls behind.
INBOX: Final = 1024
# After the daemon went away: how long to keep trying to subscribe again, and the pauses.
RECONNECT_FOR: Final = 30.0
RECONNECT_PAUSE: Final = (0.05, 2.0)  # first, and the most (doubling in between)

_event_params = msgspec.json.Decoder(api.EventParams)
_delta_params = msgspec.json.Decoder(api.DeltaParams)
_caught_up_params = msgspec.json.Decoder(api.CaughtUpParams)


class Door(Protocol):
    """What an attachment needs of the front door (`daemon.server.acp.door.FrontDoor`)."""

    connect: Connector
    where: str
    notices: bool  # the client takes `notice` updates
    elicitation_form: bool  # the client takes form elicitations
    elicitation_url: bool  # and url ones

    async def call(
        self, method: str, params: msgspec.Struct | dict[str, Any], tp: type[T]
    ) -> T: ...
    async def update(self, session_id: str, update: acp.KnownUpdate) -> None: ...
    async def ask(self, method: str, params: msgspec.Struct | dict[str, Any], tp: type[T]) -> T: ...


class Gone(RpcFailure):
    """The attachment ended: the conversation was deleted or the daemon did not come back."""

    def __init__(self, message: str) -> None:
        super().__init__(RESOURCE_NOT_FOUND, message)


class _Resubscribe(Exception):
    """The subscription fell behind or was ended by the daemon: subscribe again from `_seen`."""


@attrs.define(eq=False)
class _Prompt:
    seq: int = 0  # known once the daemon answered messages/send
    done: trio.Event = attrs.field(factory=trio.Event)
    stop_reason: str = ""
    detail: str | None = None
    error: RpcFailure | None = None
    cancel_requested: bool = False

    def end(self, stop_reason: str, detail: str | None = None) -> None:
        if not self.done.is_set():
            self.stop_reason, self.detail = stop_reason, detail
            self.done.set()

    def fail(self, error: RpcFailure) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


@attrs.define(eq=False)
class Attachment:
    """Start `run` with `nursery.start`: it returns to the caller once the replay (`load`) or
    the running turn's silent read (`resume`) is done, and then follows live until detached.
    """

    door: Door
    conv_id: str
    mode: str  # "new" | "load" | "resume"
    after_seq: int = 0  # where the first subscription starts (resume: the current last seq)
    translator: Translator = attrs.field(factory=Translator)
    finished: trio.Event = attrs.field(factory=trio.Event)
    _seen: int = 0
    _replaying: bool = True  # until the first caught_up
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _nursery: trio.Nursery | None = None
    _own: dict[int, _Prompt] = attrs.field(factory=dict)
    _sending: set[_Prompt] = attrs.field(factory=set)
    _settled: trio.Event = attrs.field(factory=trio.Event)
    _open: dict[str, PermissionRequestedView | ElicitationRequestedView] = attrs.field(factory=dict)
    _asks: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    _gone: RpcFailure | None = None
    _subscriptions: int = 0  # made so far (statistics, and to tell outages apart)

    def __attrs_post_init__(self) -> None:
        self._settled.set()
        self.translator.notices = self.door.notices

    # --- the session's requests -------------------------------------------------------------

    async def prompt(self, text: str) -> acp.PromptResponse:
        """Send `text` as a message and answer with its own turn's stop reason."""
        self._check()
        p = _Prompt()
        if not self._sending:
            self._settled = trio.Event()  # one event for each stretch with sends in flight
        self._sending.add(p)
        try:
            params = checked(api.SendParams, id=self.conv_id, text=text, run=True)
            sent = await self.door.call("messages/send", params, api.SendResult)
            p.seq = sent.seq
            self._own[sent.seq] = p
        finally:
            self._sending.discard(p)
            if not self._sending:
                self._settled.set()
        if p.cancel_requested:
            self._spawn(self._withdraw_now, p)
        await p.done.wait()
        if p.error is not None:
            raise p.error
        if p.stop_reason in STOP_REASONS:
            return acp.PromptResponse(stop_reason=p.stop_reason)
        # acpd's own ends (agent_exited, timeout, error, daemon_restarted) have no ACP name.
        detail = f": {p.detail}" if p.detail else ""
        raise RpcFailure(
            INTERNAL_ERROR,
            f"the turn ended with {p.stop_reason}{detail}",
            {"stopReason": p.stop_reason, "detail": p.detail},
        )

    async def cancel_own(self) -> None:
        """`session/cancel`: withdraw this client's queued messages and interrupt its running
        one (newest first, so none of them starts meanwhile)."""
        for p in self._sending:
            p.cancel_requested = True  # withdrawn as soon as its seq is known
        for seq in sorted(self._own, reverse=True):
            own = self._own.get(seq)  # its turn may have ended while we withdrew a later one
            if own is not None:
                await self._withdraw(own)

    async def _withdraw(self, p: _Prompt) -> None:
        if p.done.is_set():
            return
        try:
            await self.door.call(
                "messages/remove", api.RemoveParams(id=self.conv_id, seq=p.seq), api.EmptyResult
            )
        except RpcFailure as exc:
            if exc.code != CONFLICT:  # not queued any more: it ran and ended, or was removed
                log.debug("withdrawing message %d of %s: %s", p.seq, self.conv_id, exc.message)
                return
            # Prompted already: interrupt its turn if it is still the running one; the
            # turn_ended that follows answers the prompt (`cancelled`).
            params = api.InterruptParams(id=self.conv_id, prompt_seq=p.seq)
            await self.door.call("turns/interrupt", params, api.InterruptResult)
        else:
            self._own.pop(p.seq, None)
            p.end("cancelled", "withdrawn before it started")

    async def _withdraw_now(self, p: _Prompt) -> None:
        """`_withdraw` as a task of its own: a failure is logged (the cancel was a notification:
        nobody waits for its answer)."""
        try:
            await self._withdraw(p)
        except RpcFailure as exc:
            log.warning("withdrawing message %d of %s: %s", p.seq, self.conv_id, exc.message)

    def detach(self, error: RpcFailure | None = None) -> None:
        """Stop following; prompts still waiting are answered `cancelled` (or `error`). The
        conversation is not touched."""
        for p in [*self._own.values(), *self._sending]:
            if error is None:
                p.end("cancelled")
            else:
                p.fail(error)
        self._scope.cancel(reason="detached")

    def _check(self) -> None:
        if self._gone is not None:
            raise self._gone
        if self.finished.is_set():
            raise Gone(f"session {self.conv_id} is closed")

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # --- following the conversation ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        failure: RpcFailure | None = None
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        await self._follow(task_status)
                    except RpcFailure as exc:  # out of the nursery as a value, not a group
                        failure = exc
                    nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure  # the attach fails (_follow raises only before it is done)
        except Exception as exc:
            if self._replaying:
                raise  # the attach fails, and says why
            # A bug must cost this session, not the front door and its other sessions.
            log.exception("session %s failed", self.conv_id)
            self._gone = Gone(f"session {self.conv_id} failed: {type(exc).__name__}: {exc}")
        finally:
            self._nursery = None
            gone = self._gone or Gone(f"session {self.conv_id} is closed")
            for p in [*self._own.values(), *self._sending]:
                p.fail(gone)
            self.finished.set()

    async def _follow(self, task_status: trio.TaskStatus[None]) -> None:
        """Subscribe, and again after a lag or a lost connection, until detached or gone."""
        retry_until = pause = 0.0
        while True:
            subscribed = self._subscriptions
            try:
                await self._subscription(task_status)
            except _Resubscribe:
                retry_until = 0.0
                continue
            except DaemonGone as exc:
                if self._replaying:
                    raise  # the attach itself fails
                now = trio.current_time()
                if self._subscriptions != subscribed:  # it was back: a new outage
                    retry_until = 0.0
                if not retry_until:
                    retry_until, pause = now + RECONNECT_FOR, RECONNECT_PAUSE[0]
                elif now >= retry_until:
                    self._gone = Gone(f"{exc.message}; it did not come back")
                    return
                await trio.sleep(pause)
                pause = min(pause * 2, RECONNECT_PAUSE[1])
                continue
            except RpcFailure as exc:
                if self._replaying:
                    raise
                # The conversation is gone (deleted), or the daemon refuses us: say so to
                # whoever waits, and stop.
                log.warning("session %s ended: %s", self.conv_id, exc.message)
                self._gone = Gone(f"session {self.conv_id} ended: {exc.message}")
                return
            return  # pragma: no cover - _subscription only returns by raising

    async def _subscription(self, task_status: trio.TaskStatus[None]) -> None:
        send, recv = trio.open_memory_channel[tuple[str, msgspec.Raw]](INBOX)
        fell_behind = False

        def on_line(method: str, raw: msgspec.Raw) -> None:
            nonlocal fell_behind
            try:
                send.send_nowait((method, raw))
            except trio.WouldBlock:
                fell_behind = True
                send.close()  # the consumer handles what it has, then resubscribes
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async def close_at_end() -> None:
            await conn.wait_closed()
            send.close()

        async with open_daemon_conn(self.door.connect, self.door.where, on_line) as conn:
            params = api.SubscribeParams(
                id=self.conv_id,
                after_seq=self._seen if self._seen or not self.after_seq else self.after_seq,
                deltas=True,
                from_turn=self._replaying and self.mode == "resume",
                caught_up=True,
            )
            failure: RpcFailure | None = None
            again = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_at_end)
                with recv:
                    # Outcomes leave the nurseries as values, not exceptions (which they
                    # would wrap in groups).
                    try:
                        await conn.call("conversations/subscribe", params, api.SubscribeResult)
                    except RpcFailure as exc:
                        failure = exc
                    else:
                        self._subscriptions += 1
                        async for method, raw in recv:
                            if again := await self._line(method, raw, task_status):
                                break
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if fell_behind or again:
            raise _Resubscribe
        raise DaemonGone("lost the connection to the acpd daemon")

    async def _line(
        self, method: str, raw: msgspec.Raw, task_status: trio.TaskStatus[None]
    ) -> bool:
        """Handle one line; True if the subscription is over (subscribe again)."""
        try:
            if method == api.EVENT_METHOD:
                event = decode_event(_event_params.decode(raw).event)
                if event.seq > self._seen:
                    self._seen = event.seq
                    await self._event(event)
            elif method == api.DELTA_METHOD:
                delta = _delta_params.decode(raw)
                await self._emit(self.translator.delta(delta.prompt_seq, delta.kind, delta.text))
            elif method == api.CAUGHT_UP_METHOD:
                await self._caught_up(_caught_up_params.decode(raw), task_status)
            elif method in (api.LAGGED_METHOD, api.ENDED_METHOD):
                return True
        except msgspec.DecodeError as exc:  # the daemon's own lines: a bug, not the client's
            log.error("undecodable %s from the daemon: %s", method, exc)
        return False

    async def _caught_up(
        self, params: api.CaughtUpParams, task_status: trio.TaskStatus[None]
    ) -> None:
        silent = self._silent
        for s in params.streamed:
            updates = self.translator.streamed(s.prompt_seq, s.kind, s.text)
            if not silent:
                await self._emit(updates)
        if self._replaying:
            self._replaying = False
            for request, view in list(self._open.items()):
                self._ask(request, view)
            task_status.started()

    @property
    def _silent(self) -> bool:
        # `session/resume` attaches without replay: the running turn is read for its state
        # (open questions, text already streamed), not shown.
        return self._replaying and self.mode == "resume"

    async def _event(self, event: Event) -> None:
        kind, body, live = event.type, event.body, not self._replaying
        if kind in ("user_message", "turn_ended", "user_message_removed") and self._sending:
            await self._settled.wait()  # every seq of ours is known after this
        if kind == "user_message" and event.seq in self._own:
            return  # the client shows its own prompt
        if kind == "turn_ended" and body is not None:
            own = self._own.pop(body.prompt_seq, None)
            if own is not None:
                own.end(body.stop_reason, body.detail)
        elif kind == "user_message_removed" and body is not None:
            own = self._own.pop(body.message_seq, None)
            if own is not None:  # taken out of the queue elsewhere: its turn never comes
                own.end("cancelled", "removed from the queue before it started")
            for request in list(self._open):  # every question of a turn ends with it
                self._forget(request)
        elif kind in ("permission_requested", "elicitation_requested") and body is not None:
            self._open[body.request] = body
            if live:
                self._ask(body.request, body)
        elif kind in ("permission_resolved", "elicitation_resolved") and body is not None:
            self._forget(body.request)
        updates = self.translator.event(event, live=live)
        if not self._silent:
            await self._emit(updates)

    async def _emit(self, updates: list[acp.KnownUpdate]) -> None:
        for update in updates:
            await self.door.update(self.conv_id, update)

    # --- questions from the agent -----------------------------------------------------------

    def _ask(self, request: str, view: PermissionRequestedView | ElicitationRequestedView) -> None:
        if request in self._asks or self._nursery is None:
            return
        if isinstance(view, ElicitationRequestedView) and not (
            self.door.elicitation_url if view.mode == "url" else self.door.elicitation_form
        ):
            return  # this client cannot answer it; others may
        scope = trio.CancelScope()
        self._asks[request] = scope
        self._nursery.start_soon(self._ask_task, request, view, scope)

    def _forget(self, request: str) -> None:
        self._open.pop(request, None)
        scope = self._asks.pop(request, None)
        if scope is not None:
            scope.cancel(reason="answered elsewhere")  # the request is withdrawn

    async def _ask_task(
        self,
        request: str,
        view: PermissionRequestedView | ElicitationRequestedView,
        scope: trio.CancelScope,
    ) -> None:
        try:
            with scope:
                if isinstance(view, PermissionRequestedView):
                    await self._ask_permission(view)
                else:
                    await self._ask_elicitation(view)
        except RpcFailure as exc:
            # The client's error, or the daemon's refusal (CONFLICT: another front end
            # answered first): the question stays with the others.
            if exc.code != CONFLICT:
                log.info("question %s of %s: %s", request, self.conv_id, exc.message)
        finally:
            if self._asks.get(request) is scope:
                del self._asks[request]

    async def _ask_permission(self, view: PermissionRequestedView) -> None:
        tool_call: dict[str, Any] = {"toolCallId": view.tool_call_id or view.request}
        if view.title:
            tool_call["title"] = view.title
        options = [o.to_acp() for o in view.options]
        params = acp.RequestPermissionRequest(
            session_id=self.conv_id, tool_call=tool_call, options=options
        )
        answer = await self.door.ask(acp.REQUEST_PERMISSION, params, acp.RequestPermissionResponse)
        outcome = answer.outcome
        permit = (
            api.PermitParams(id=self.conv_id, request=view.request, option=outcome.option_id)
            if isinstance(outcome, acp.SelectedOutcome)
            else api.PermitParams(id=self.conv_id, request=view.request, cancelled=True)
        )
        await self.door.call("permissions/respond", permit, api.EmptyResult)

    async def _ask_elicitation(self, view: ElicitationRequestedView) -> None:
        params: dict[str, Any] = {"sessionId": self.conv_id, "message": view.message}
        if view.mode == "url":
            params.update(mode="url", url=view.url or "", elicitationId=view.request)
        else:
            params.update(
                mode="form", requestedSchema=view.schema or {"type": "object", "properties": {}}
            )
        if view.tool_call_id:
            params["toolCallId"] = view.tool_call_id
        answer = await self.door.ask("elicitation/create", params, dict[str, Any])
        respond: dict[str, Any] = {
            "id": self.conv_id,
            "request": view.request,
            "action": answer.get("action", "cancel"),
        }
        if isinstance(answer.get("content"), dict):
            respond["content"] = answer["content"]
        await self.door.call("elicitations/respond", respond, dict[str, Any])
