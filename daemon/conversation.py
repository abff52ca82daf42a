"""One supervisor per live conversation: the durable FIFO queue, turns, interrupt-and-drain.

Invariants (DESIGN.md), and where they are kept:
- The store is the queue. `send` commits the user message before it answers, then wakes the
  supervisor; the turn loop takes the oldest unprompted message *from the store*, so a lost or
  coalesced wake-up loses nothing. `start_turn` moves the cursor in the same transaction as the
  `turn_started` event: a message is prompted at most once, even across crashes.
- At most one `session/prompt` is outstanding: the turn loop runs one turn at a time and the
  next prompt is written only after the previous one answered or its agent was killed.
- Interrupt-and-drain: the prompt request runs in the agent's nursery and is never cancelled
  itself; interrupting cancels only the turn's *wait*, sends `session/cancel`, answers open
  permission requests `cancelled`, then waits up to `drain_timeout` for the real reply. No reply
  in time: the agent's process group is killed, so its read loop (and any late update) dies with
  it; the next prompt restarts it with `session/load`/`session/resume`.
- Updates reach a turn only while that turn is current; anything after its end is dropped.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs
import msgspec
import trio

from daemon.agent import AgentConnection, AgentExited, AgentSpec
from daemon.config import Config
from daemon.eventlog import EventLog
from daemon.fanout import Fanout
from daemon.permissions import Permissions
from daemon.recorder import Recorder
from daemon.storeio import StoreIO
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import METHOD_NOT_FOUND, RpcFailure
from store import ConversationRecord, EventRecord

__all__ = ["Conversation", "Launcher"]

log = logging.getLogger("acpd.conversation")

_user_message = msgspec.json.Decoder(ev.UserMessage)
_permission_params = msgspec.json.Decoder(acp.RequestPermissionRequest)


class Launcher(Protocol):
    def __call__(
        self,
        spec: AgentSpec,
        *,
        on_update: Callable[[str, acp.SessionUpdate], None],
        on_request: Callable[[str, msgspec.Raw], collections.abc.Awaitable[object]],
        on_batch_end: Callable[[], None],
    ) -> AbstractAsyncContextManager[AgentConnection]: ...


class _NoAgent(Exception):
    """The agent could not be started; the reason is already recorded as an event."""


class _Retire(Exception):
    """The supervisor has nothing to do and nobody watching: leave the registry."""


@attrs.define(eq=False)
class _Agent:
    conn: AgentConnection | None = None
    nursery: trio.Nursery | None = None
    stop_requested: trio.Event = attrs.field(factory=trio.Event)
    gone: trio.Event = attrs.field(factory=trio.Event)
    stopping_reason: str = ""


@attrs.define(eq=False)
class _Turn:
    prompt_seq: int
    text: str
    done: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    response: acp.PromptResponse | None = None
    error: RpcFailure | None = None
    interrupted: bool = False  # by a person (or a superseding send)
    cancel_sent: bool = False
    updates: int = 0
    conn: AgentConnection | None = None


@attrs.define(eq=False)
class Conversation:
    """A live conversation. Created by the registry; `run()` is its supervisor task."""

    conv_id: str
    io: StoreIO
    config: Config
    launcher: Launcher
    on_exit: Callable[[Conversation], None]
    record: ConversationRecord | None = None
    daemon_started: float = 0.0  # wall-clock time this daemon started
    fanout: Fanout = attrs.field(init=False)
    log_: EventLog = attrs.field(init=False)
    recorder: Recorder = attrs.field(init=False)
    permissions: Permissions = attrs.field(init=False)
    ready: trio.Event = attrs.field(factory=trio.Event)
    finished: trio.Event = attrs.field(factory=trio.Event)
    load_error: BaseException | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    deleting: bool = False
    stopping: bool = False
    paused: bool = False
    failed: bool = False
    queued: int = 0
    turn: _Turn | None = None
    agent: _Agent | None = None
    acp_session_id: str | None = None
    restart_reason: str = ""
    crashes: collections.deque[float] = attrs.field(factory=collections.deque)
    dropped_updates: int = 0
    _wake_send: trio.MemorySendChannel[None] = attrs.field(init=False)
    _wake_recv: trio.MemoryReceiveChannel[None] = attrs.field(init=False)
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        self.fanout = Fanout(self.conv_id, self.config.subscriber_buffer)
        self.log_ = EventLog(self.conv_id, self.io, self.fanout, last_seq=0)
        self.recorder = Recorder(self.log_, self.config.draft_interval)
        self.permissions = Permissions(
            self.recorder,
            policy=self._policy,
            timeout=self.config.permission_timeout,
            default=self.config.permission_default,
        )
        # Capacity 1: a full buffer already means "look at the store again".
        self._wake_send, self._wake_recv = trio.open_memory_channel[None](1)

    # --- queries ------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.agent is not None and self.agent.conn is not None

    @property
    def status(self) -> str:
        if self.turn is not None:
            return "running"
        if self.failed:
            return "failed"
        return "paused" if self.paused else "idle"

    def _policy(self) -> str:
        rec = self.record
        return rec.permission_policy if rec is not None else self.config.permission_policy

    # --- commands (called by the engine from request handlers) --------------------------------

    def wake(self) -> None:
        try:
            self._wake_send.send_nowait(None)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def send(self, text: str, *, run: bool, interrupt: bool) -> tuple[int, int]:
        turn = self.turn
        # Turns that run before this message's: the queue ahead, plus the running turn unless
        # this send supersedes it.
        ahead = self.queued + (1 if turn is not None and not interrupt else 0)
        rec = await self.log_.append_user(text)
        self.queued += 1
        if self.record is not None and not self.record.title:
            # An untitled conversation is named after its first message, for `acpd ls`.
            title = " ".join(text.split())[:80]
            await self.io.write(lambda s: s.set_title(self.conv_id, title))
            self.record = msgspec.structs.replace(self.record, title=title)
        if interrupt and turn is not None:
            self._interrupt_turn(turn)
        if run or interrupt:
            # Sending with run is a person acting: it also lifts a crash-loop `failed`.
            if self.failed:
                self.failed = False
                self.crashes.clear()
            await self._set_paused(False)
        elif turn is None:
            # --no-run stages the message: the queue waits for `resume` or a send with run.
            await self._set_paused(True)
        self.wake()
        return rec.seq, ahead

    async def interrupt(self) -> bool:
        """Cancel the running turn and pause the queue."""
        await self._set_paused(True)
        turn = self.turn
        if turn is None or turn.done.is_set():
            return False
        self._interrupt_turn(turn)
        return True

    async def resume(self) -> None:
        changed = self.paused or self.failed
        self.failed = self.paused = False
        self.crashes.clear()
        if changed and self.turn is None:
            await self.log_.set_status(self.status)
        self.wake()

    def answer_permission(self, request: str, option: str | None, *, cancelled: bool) -> None:
        self.permissions.answer(request, option, cancelled=cancelled)

    async def _set_paused(self, paused: bool) -> None:
        if self.paused == paused:
            return
        self.paused = paused
        if self.turn is None:
            await self.log_.set_status(self.status)

    def _interrupt_turn(self, turn: _Turn) -> None:
        turn.interrupted = True
        turn.scope.cancel()

    # --- the supervisor -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.scope:
                await self._hydrate()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self.recorder.run)
                    self.ready.set()
                    try:
                        await self._turn_loop()
                    except _Retire:
                        pass
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            log.exception("conversation %s: supervisor failed", self.conv_id)
            self.load_error = exc
        finally:
            self.log_.closed = True
            self.fanout.close_all()
            self._wake_recv.close()
            self.ready.set()
            self.finished.set()
            self.on_exit(self)

    async def _hydrate(self) -> None:
        rec = await self.io.read(lambda s: s.get_conversation(self.conv_id))
        if rec is None:
            raise LookupError(self.conv_id)
        self.record = rec
        self.log_.last_seq = rec.last_seq
        self.queued = rec.queued
        self.paused = rec.status == "paused"
        self.failed = rec.status == "failed"
        self.acp_session_id = rec.acp_session_id
        if rec.acp_session_id:
            # Its agent is not running: stopped before this daemon started, or for idleness
            # since (every event bumps updated_at, and idleness follows the last event).
            before = rec.updated_at < self.daemon_started
            self.restart_reason = "daemon_restarted" if before else "idle"

    async def _turn_loop(self) -> None:
        while True:
            msg = await self._next_message()
            try:
                await self._run_turn(msg)
            except _NoAgent:
                continue

    async def _next_message(self) -> EventRecord:
        while True:
            if self.stopping:
                raise _Retire
            if not self.paused and not self.failed:
                pending = await self.io.read(lambda s: s.pending_messages(self.conv_id))
                self.queued = len(pending)
                if pending:
                    return pending[0]
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        idle_since = trio.current_time()
        linger = min(self.config.idle_ttl, 60.0)
        while True:
            agent = self.agent
            if agent is not None:
                wait_until = idle_since + self.config.idle_ttl
            else:
                wait_until = idle_since + linger
            with trio.move_on_at(wait_until):
                try:
                    await self._wake_recv.receive()
                except trio.EndOfChannel:
                    raise _Retire from None
                return
            if agent is not None and self.permissions.waiting == 0:
                log.info("conversation %s: agent idle, stopping it", self.conv_id)
                await self._stop_agent("idle")
                idle_since = trio.current_time()
                continue
            if self.agent is None and self.fanout.subscribers == 0 and self.log_.close_nowait():
                raise _Retire

    # --- a turn -------------------------------------------------------------------------------

    async def _run_turn(self, msg: EventRecord) -> None:
        agent = await self._ensure_agent()
        assert agent.conn is not None
        assert agent.nursery is not None
        assert self.acp_session_id
        text = _user_message.decode(msg.body).text
        await self.log_.start_turn(msg.seq)
        self.queued = max(0, self.queued - 1)
        turn = _Turn(msg.seq, text, conn=agent.conn)
        self.turn = turn
        agent.nursery.start_soon(self._prompt, agent.conn, self.acp_session_id, turn)
        timed_out = False
        try:
            with turn.scope:
                turn.scope.deadline = trio.current_time() + self.config.turn_timeout
                await turn.done.wait()
            if not turn.done.is_set():
                timed_out = not turn.interrupted
                await self._drain(agent, turn)
        finally:
            # A hard cancel (delete, or shutdown past its grace) records nothing here: the turn
            # stays "running" in the store with its drafts, and startup recovery closes it, the
            # same path as after kill -9. A graceful stop goes through `begin_shutdown`.
            if not turn.done.is_set():
                turn.done.set()
        await self._finish_turn(turn, forced="timeout" if timed_out else "")
        if self.stopping:
            raise _Retire

    async def _prompt(self, conn: AgentConnection, session_id: str, turn: _Turn) -> None:
        try:
            turn.response = await conn.prompt(session_id, turn.text)
        except RpcFailure as exc:
            turn.error = exc
        except AgentExited:
            pass
        finally:
            turn.done.set()

    async def _drain(self, agent: _Agent, turn: _Turn) -> None:
        """Cancel the turn at the agent and wait a bounded time for its real reply."""
        if turn.done.is_set():
            return
        turn.cancel_sent = True
        self.permissions.cancel_all()
        if agent.conn is not None and self.acp_session_id:
            try:
                await agent.conn.cancel(self.acp_session_id)
            except AgentExited:
                pass
        with trio.move_on_after(self.config.drain_timeout):
            await turn.done.wait()
        if not turn.done.is_set():
            log.warning(
                "conversation %s: agent did not answer the cancel in %.1fs, restarting it",
                self.conv_id,
                self.config.drain_timeout,
            )
            await self._stop_agent("drain_timeout")
            turn.done.set()

    async def _finish_turn(self, turn: _Turn, *, forced: str = "") -> None:
        self.permissions.cancel_all("turn_ended")
        await self.recorder.flush()
        self.turn = None
        items: list[tuple[str, bytes]] = []
        detail: str | msgspec.UnsetType = msgspec.UNSET
        if turn.response is not None:
            stop = turn.response.stop_reason
        elif turn.error is not None:
            if turn.cancel_sent:
                stop, detail = "cancelled", f"agent error after cancel: {turn.error.message}"
            else:
                stop, detail = "error", turn.error.message
                items.append(_event("error", ev.ErrorEvent(message=f"agent error: {detail}")))
        elif turn.cancel_sent:
            stop = "cancelled"  # no reply in time: the agent was restarted
        else:
            stop = "agent_exited"
            items.append(await self._crash_event(turn.conn))
            self._note_crash()
        if forced:
            if turn.response is not None:
                detail = f"agent replied {turn.response.stop_reason}"
            stop = forced
        items.append(
            _event(
                "turn_ended",
                ev.TurnEnded(prompt_seq=turn.prompt_seq, stop_reason=stop, detail=detail),
            )
        )
        await self.log_.end_turn(items, self.status)

    # --- the agent ----------------------------------------------------------------------------

    async def _ensure_agent(self) -> _Agent:
        agent = self.agent
        if agent is not None and agent.conn is not None and not agent.stop_requested.is_set():
            return agent
        if self.crashes:
            # Exponential backoff after crashes: 0.5 s, 1 s, 2 s, ... capped.
            await trio.sleep(min(0.5 * 2 ** (len(self.crashes) - 1), 10.0))
        assert self._nursery is not None
        try:
            with trio.fail_after(self.config.start_timeout):
                started: _Agent = await self._nursery.start(self._agent_task)
                return started
        except Exception as exc:  # groups too: whatever stopped the start is reported
            reason = _one_line(exc)
            if isinstance(exc, trio.TooSlowError):
                reason = f"no answer within {self.config.start_timeout:g}s"
            await self.log_.append(
                [_event("error", ev.ErrorEvent(message=f"agent failed to start: {reason}"))]
            )
            self._note_crash()
            if self.failed:
                await self.log_.set_status("failed")
            raise _NoAgent from None

    def _note_crash(self) -> None:
        now = trio.current_time()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.config.crash_window:
            self.crashes.popleft()
        if len(self.crashes) >= self.config.max_crashes and not self.failed:
            self.failed = True
            self.recorder.durable(
                "error",
                ev.ErrorEvent(
                    message=f"agent failed {len(self.crashes)} times within "
                    f"{self.config.crash_window:g}s; the conversation is stopped until resumed"
                ),
            )

    async def _crash_event(self, conn: AgentConnection | None) -> tuple[str, bytes]:
        if conn is not None:
            # Let the exit status and the last of stderr arrive (bounded: it is exiting).
            with trio.move_on_after(1.0):
                await conn.wait_exited()
        code = conn.returncode if conn is not None else None
        tail = conn.stderr_tail() if conn is not None else ""
        msg = "agent exited" + (f" with status {code}" if code is not None else "")
        body = ev.ErrorEvent(message=msg, stderr=tail) if tail else ev.ErrorEvent(message=msg)
        return _event("error", body)

    async def _agent_task(self, task_status: trio.TaskStatus[_Agent]) -> None:
        rec = self.record
        assert rec is not None
        spec = self._spec(rec)
        agent = _Agent()
        try:
            async with (
                self.launcher(
                    spec,
                    on_update=self._on_update,
                    on_request=self._on_request,
                    on_batch_end=_noop,
                ) as conn,
                trio.open_nursery() as nursery,
            ):
                agent.conn, agent.nursery = conn, nursery
                await self._setup_session(conn, rec)
                self.agent = agent
                task_status.started(agent)
                nursery.start_soon(_cancel_when, conn.wait_exited, nursery.cancel_scope)
                await agent.stop_requested.wait()
                nursery.cancel_scope.cancel()
        except Exception:
            if self.agent is not agent:
                raise  # still starting: the caller records it
            log.exception("conversation %s: agent task failed", self.conv_id)
        finally:
            if self.agent is agent:
                self.agent = None
                if not agent.stop_requested.is_set():
                    self.restart_reason = "crashed"
            agent.conn = None
            agent.gone.set()

    def _spec(self, rec: ConversationRecord) -> AgentSpec:
        agents = self.config.all_agents()
        env = agents[rec.agent].env if rec.agent in agents else {}
        return AgentSpec(name=rec.agent, argv=tuple(rec.agent_cmd), cwd=rec.cwd, env=env)

    async def _setup_session(self, conn: AgentConnection, rec: ConversationRecord) -> None:
        sid = self.acp_session_id
        if sid is None:
            resp = await conn.new_session(rec.cwd)
            self.acp_session_id = resp.session_id
            await self.log_.set_acp_session(resp.session_id, rec.cwd)
            return
        loaded, why = False, "the agent cannot load sessions"
        try:
            if conn.can_resume:
                await conn.resume_session(sid, rec.cwd)
                loaded = True
            elif conn.can_load:
                await conn.load_session(sid, rec.cwd)
                loaded = True
        except RpcFailure as exc:
            why = exc.message
        items = []
        if not loaded:
            resp = await conn.new_session(rec.cwd)
            self.acp_session_id = resp.session_id
            await self.log_.set_acp_session(resp.session_id, rec.cwd)
            items.append(
                _event(
                    "error",
                    ev.ErrorEvent(
                        message=f"could not resume the agent's session ({why}); "
                        "started a new one: the agent has lost this conversation's context"
                    ),
                )
            )
        reason = self.restart_reason or "restarted"
        items.append(
            _event("agent_restarted", ev.AgentRestarted(reason=reason, session_loaded=loaded))
        )
        self.restart_reason = ""
        await self.log_.append(items)

    async def _stop_agent(self, reason: str) -> None:
        agent = self.agent
        if agent is None:
            return
        self.restart_reason = reason
        agent.stopping_reason = reason
        agent.stop_requested.set()
        with trio.CancelScope(shield=True):
            await agent.gone.wait()

    # --- callbacks from the agent's read loop (synchronous: the per-chunk path) --------------

    def _on_update(self, session_id: str, update: acp.SessionUpdate) -> None:
        turn = self.turn
        if turn is None or turn.done.is_set() or session_id != self.acp_session_id:
            # Replay of a session/load, or a straggler after its turn: never the next turn's.
            self.dropped_updates += 1
            return
        turn.updates += 1
        turn.scope.deadline = trio.current_time() + self.config.turn_timeout
        seq = turn.prompt_seq
        rec = self.recorder
        if isinstance(update, acp.AgentMessageChunk):
            rec.delta("message", acp.content_text(update.content), seq)
        elif isinstance(update, acp.AgentThoughtChunk):
            rec.delta("thought", acp.content_text(update.content), seq)
        elif isinstance(update, acp.ToolCall):
            status = update.status if isinstance(update.status, str) else "pending"
            kind = update.kind if isinstance(update.kind, str) else msgspec.UNSET
            rec.durable(
                "tool_call",
                ev.ToolCallEvent(
                    tool_call_id=update.tool_call_id,
                    title=update.title,
                    status=status,
                    prompt_seq=seq,
                    kind=kind,
                ),
            )
        elif isinstance(update, acp.ToolCallUpdate):
            if isinstance(update.status, str):
                title = update.title if isinstance(update.title, str) else ""
                rec.durable(
                    "tool_call",
                    ev.ToolCallEvent(
                        tool_call_id=update.tool_call_id,
                        title=title,
                        status=update.status,
                        prompt_seq=seq,
                    ),
                )
            if isinstance(update.content, list):
                for item in update.content:
                    if isinstance(item, acp.Content):
                        rec.delta("tool", acp.content_text(item.content), seq)
        elif isinstance(update, acp.Plan):
            entries = [msgspec.to_builtins(e) for e in update.entries]
            rec.durable("plan", ev.PlanEvent(entries=entries, prompt_seq=seq))

    async def _on_request(self, method: str, raw: msgspec.Raw) -> object:
        if method != acp.REQUEST_PERMISSION:
            raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")
        params = _permission_params.decode(raw)
        turn = self.turn
        if turn is None or turn.cancel_sent:
            return acp.RequestPermissionResponse(outcome=acp.CancelledOutcome())
        # A person may take longer than the turn's idle timeout: waiting is not idleness.
        turn.scope.deadline = math.inf
        try:
            return await self.permissions.ask(params, turn.prompt_seq)
        finally:
            if not turn.done.is_set() and self.permissions.waiting == 0:
                turn.scope.deadline = trio.current_time() + self.config.turn_timeout

    # --- lifecycle ------------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Graceful stop: drain the running turn (queue kept for next start), then retire."""
        self.stopping = True
        if self.turn is not None:
            self._interrupt_turn(self.turn)
        self._wake_send.close()

    async def close(self, *, deleting: bool) -> None:
        """Stop the supervisor (and its agent). With `deleting`, nothing of it writes again."""
        self.deleting = deleting
        if deleting:
            await self.log_.close()
        self.scope.cancel()
        await self.finished.wait()


def _event(type_: str, body: ev._Body) -> tuple[str, bytes]:
    return type_, ev.encode_body(body)


def _noop() -> None:
    pass


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _one_line(exc.exceptions[0])
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def _cancel_when(
    wait: Callable[[], collections.abc.Awaitable[None]], scope: trio.CancelScope
) -> None:
    await wait()
    scope.cancel()
