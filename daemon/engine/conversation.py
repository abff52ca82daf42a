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
- Nothing is decided early: between taking a message and moving the cursor (agent start-up,
  crash backoff) the queue head is read again, and stop/pause/supersede are checked with the
  log locked, right before the commit (`EventLog.start_turn`'s `may_start`).
- An agent whose process ended is never handed a prompt; the next turn waits until it is gone
  and starts another.
- Updates reach a turn only while its prompt is out; anything before or after is dropped.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import Callable

import attrs
import msgspec
import trio

from daemon.agents.connection import (
    AgentConnection,
    AgentExited,
    AgentSpec,
    AgentStartError,
    Launcher,
)
from daemon.config import Config
from daemon.engine.eventlog import EventLog, LogClosed, close_dead_turn
from daemon.engine.fanout import Fanout
from daemon.engine.permissions import Permissions
from daemon.engine.recorder import Recorder
from daemon.engine.storeio import StoreIO
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import METHOD_NOT_FOUND, RpcFailure, decode_params
from store import Conflict, ConversationRecord, EventRecord

__all__ = ["Conversation"]

log = logging.getLogger("acpd.conversation")

_user_message = msgspec.json.Decoder(ev.UserMessage)
_permission_params = msgspec.json.Decoder(acp.RequestPermissionRequest)
# How long a supervisor with no agent, no work and nobody watching stays before it retires.
_LINGER = 60.0


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
    stopping_reason: str = ""  # why we stopped it; empty if it went away by itself
    closing: bool = False  # its nursery is closing or closed: it takes no new prompt
    exited: bool = False  # its process (or stream) ended without being asked to

    @property
    def usable(self) -> bool:
        conn = self.conn
        return (
            conn is not None
            and conn.alive
            and not self.closing
            and not self.exited
            and not self.stop_requested.is_set()
        )


@attrs.define(eq=False)
class _Starting:
    """The message the turn loop is about to prompt, while its agent starts or backs off."""

    seq: int
    superseded: bool = False  # by `send(interrupt=True)`: record it cancelled, never prompt it


@attrs.define(eq=False)
class _Turn:
    prompt_seq: int
    text: str
    done: trio.Event = attrs.field(factory=trio.Event)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    response: acp.PromptResponse | None = None
    error: RpcFailure | None = None
    interrupted: bool = False  # by a person (or a superseding send)
    prompted: bool = False  # session/prompt was (to be) sent
    cancel_sent: bool = False
    updates: int = 0
    updates_seen: int = 0  # as of the last batch end: whether the turn timeout moves
    conn: AgentConnection | None = None


@attrs.define(eq=False)
class Conversation:
    """A live conversation. Created by the registry; `run()` is its supervisor task."""

    conv_id: str
    io: StoreIO
    config: Config
    launcher: Launcher
    on_exit: Callable[[Conversation], None]
    # The `agent_restarted` reason if the agent's session is resumed: the engine passes what
    # the previous supervisor of this conversation left ("daemon_restarted" if none did).
    restart_reason: str = "daemon_restarted"
    record: ConversationRecord | None = None
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
    turn: _Turn | None = None
    agent: _Agent | None = None
    acp_session_id: str | None = None
    crashes: collections.deque[float] = attrs.field(factory=collections.deque)
    dropped_updates: int = 0
    _starting: _Starting | None = None
    _start_scope: trio.CancelScope | None = None
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
        rec, queued = await self.log_.append_user(text)
        # Turns that run before this message's, as of its commit (no checkpoint since): the
        # messages queued ahead of it, plus the running turn unless this send supersedes it.
        ahead = queued - 1
        turn, starting = self.turn, self._starting
        if turn is not None:
            if interrupt:
                self._interrupt_turn(turn)
            else:
                ahead += 1
        elif interrupt and starting is not None:
            starting.superseded = True  # its turn is recorded cancelled, not run
            ahead -= 1
        if self.record is not None and not self.record.title:
            # An untitled conversation is named after its first message, for `acpd ls`.
            title = " ".join(text.split())[:80]
            await self.log_.set_title(title)
            self.record = msgspec.structs.replace(self.record, title=title)
        if run or interrupt:
            # Sending with run is a person acting: it also lifts a crash-loop `failed`.
            await self._set_flags(paused=False, failed=False)
        else:
            # run=false stages the message: the queue waits for `resume` or a send with run,
            # even behind a running turn (whose end writes the status).
            await self._set_flags(paused=True)
        self.wake()
        return rec.seq, max(0, ahead)

    async def interrupt(self) -> bool:
        """Cancel the running turn and pause the queue."""
        turn = self.turn
        if turn is not None and not turn.done.is_set():
            self._interrupt_turn(turn)
            hit = True
        else:
            # A turn about to start (its agent starting, or backing off after a crash): the
            # user means "not that one", so it counts. The pause keeps the message queued,
            # visible and editable, and the turn loop looks at the flags before prompting.
            hit = turn is None and self._starting is not None
        await self._set_flags(paused=True)
        return hit

    async def resume(self) -> None:
        self.crashes.clear()
        await self._set_flags(paused=False, failed=False)
        self.wake()

    def answer_permission(self, request: str, option: str | None, *, cancelled: bool) -> None:
        self.permissions.answer(request, option, cancelled=cancelled)

    async def _set_flags(self, *, paused: bool, failed: bool | None = None) -> None:
        """Set the queue's flags now; store the status unless a turn runs (its end will)."""
        before = self.status
        self.paused = paused
        if failed is not None:
            if self.failed and not failed:
                self.crashes.clear()  # a person lifted it: count crashes afresh
            self.failed = failed
        if self.turn is None and self.status != before:
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
            # The log closed under a write (a delete): the end we were asked for, not a fault.
            if not (self.log_.closed and _only(exc, LogClosed)):
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
        if rec.status == "running":
            # A supervisor before us stopped mid-turn without closing it (a hard cancel, or a
            # failure): close it as startup recovery does, or it stays "running" forever.
            close = functools.partial(
                close_dead_turn,
                rec=rec,
                stop_reason="agent_exited",
                detail="its supervisor stopped mid-turn",
            )
            await self.io.write(close)
            rec = await self.io.read(lambda s: s.get_conversation(self.conv_id))
            if rec is None:
                raise LookupError(self.conv_id)
        self.record = rec
        self.log_.last_seq = rec.last_seq
        self.paused = rec.status == "paused"
        self.failed = rec.status == "failed"
        self.acp_session_id = rec.acp_session_id

    async def _turn_loop(self) -> None:
        while True:
            head = await self._next_message()
            self._starting = _Starting(head.seq)
            try:
                await self._run_turn(self._starting)
            except _NoAgent:
                pass
            finally:
                self._starting = None
            if self.stopping:
                raise _Retire

    async def _next_message(self) -> EventRecord:
        while True:
            if self.stopping:
                raise _Retire
            if not self.paused and not self.failed:
                pending = await self.io.read(lambda s: s.pending_messages(self.conv_id))
                if pending:
                    return pending[0]
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        """Block until woken; meanwhile stop an idle agent, and retire when nobody needs us."""
        idle_since = trio.current_time()
        while True:
            if self.agent is not None:
                deadline = idle_since + self.config.idle_ttl
            elif self.fanout.subscribers == 0:
                deadline = idle_since + min(self.config.idle_ttl, _LINGER)
            else:
                # Watched: the last subscriber leaving wakes us (engine.subscribe), so there
                # is nothing to look at until then.
                deadline = math.inf
            with trio.move_on_at(deadline):
                try:
                    await self._wake_recv.receive()
                except trio.EndOfChannel:
                    raise _Retire from None
                return
            if self.agent is not None:
                log.info("conversation %s: agent idle, stopping it", self.conv_id)
                await self._stop_agent("idle")
            elif self.fanout.subscribers == 0 and self.log_.close_nowait():
                raise _Retire
            # Stopped the agent, or could not retire (someone subscribed, or a write is in
            # flight): a full wait again, never a busy loop.
            idle_since = trio.current_time()

    # --- a turn -------------------------------------------------------------------------------

    async def _run_turn(self, starting: _Starting) -> None:
        agent = await self._ensure_agent()
        # Start-up and crash backoff take time: re-read the queue; the flags are looked at
        # again with the log locked, right before the cursor moves.
        pending = await self.io.read(lambda s: s.pending_messages(self.conv_id))
        if not pending:
            return
        msg = pending[0]
        turn = _Turn(msg.seq, _user_message.decode(msg.body).text, conn=agent.conn)

        def may_start() -> bool:
            if self.stopping or self.paused or self.failed or not agent.usable:
                return False
            # From here a pause, stop or superseding send finds `self.turn` and cancels it.
            turn.interrupted = starting.superseded and starting.seq == msg.seq
            self.turn, self._starting = turn, None
            return True

        try:
            started = await self.log_.start_turn(msg.seq, may_start)
        except Conflict:  # removed between the read and the write
            self.turn = None
            await self.log_.set_status(self.status)
            return
        if started is None:
            return
        timed_out = False
        try:
            if not turn.interrupted:
                timed_out = await self._prompt_and_wait(agent, turn)
        finally:
            # A hard cancel (delete, or shutdown past its grace) records nothing here: the turn
            # stays "running" in the store with its drafts, and startup recovery (or the next
            # hydration) closes it, the same path as after kill -9. A graceful stop goes
            # through `begin_shutdown`.
            if not turn.done.is_set():
                turn.done.set()
        await self._finish_turn(turn, forced="timeout" if timed_out else "")

    async def _prompt_and_wait(self, agent: _Agent, turn: _Turn) -> bool:
        """Prompt and wait for the reply, draining on interrupt or timeout. True: timed out."""
        assert self.acp_session_id
        turn.prompted = True
        conn, nursery = agent.conn, agent.nursery
        spawned = False
        if conn is not None and nursery is not None:
            try:
                nursery.start_soon(self._prompt, conn, self.acp_session_id, turn)
                spawned = True
            except RuntimeError:  # its nursery closed since may_start
                pass
        if not spawned:  # the agent exited since may_start: the turn ends agent_exited
            turn.done.set()
            return False
        with turn.scope:
            turn.scope.deadline = trio.current_time() + self.config.turn_timeout
            await turn.done.wait()
        if turn.done.is_set():
            return False
        await self._drain(agent, turn)
        return not turn.interrupted

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
        elif not turn.prompted:
            stop, detail = "cancelled", "interrupted before it was prompted"
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
        if agent is not None:
            if agent.usable:
                return agent
            # Exited, or being stopped: its nursery takes no new prompt. Start another once
            # it is gone (its process group stopped), however long that takes.
            await agent.gone.wait()
        assert self._nursery is not None
        if self.stopping:
            raise _NoAgent
        failure: Exception | None = None
        # `begin_shutdown` cancels this: a stopping daemon does not wait for a start-up.
        with trio.CancelScope() as self._start_scope:
            try:
                if backoff := self._backoff():
                    await trio.sleep(backoff)
                with trio.fail_after(self.config.start_timeout):
                    started: _Agent = await self._nursery.start(self._agent_task)
                return started
            except Exception as exc:  # groups too: whatever stopped the start is reported
                failure = exc
            finally:
                self._start_scope = None
        if failure is None:
            raise _NoAgent  # cancelled by a shutdown
        reason = _one_line(failure)
        if isinstance(failure, trio.TooSlowError):
            reason = f"no answer within {self.config.start_timeout:g}s"
        await self.log_.append(
            [_event("error", ev.ErrorEvent(message=f"agent failed to start: {reason}"))]
        )
        if _permanent(failure) and not self.failed:
            # No such command or cwd: retrying would only repeat the error until someone
            # fixes it, so stop now (a send with run, or resume, tries again).
            self.failed = True
            self.recorder.durable(
                "error",
                ev.ErrorEvent(message="the conversation is stopped until resumed"),
            )
        else:
            self._note_crash()
        if self.failed:
            await self.log_.set_status("failed")
        raise _NoAgent

    def _backoff(self) -> float:
        """Exponential backoff after recent crashes: 0.5 s, 1 s, 2 s, ... capped."""
        self._prune_crashes()
        return min(0.5 * 2 ** (len(self.crashes) - 1), 10.0) if self.crashes else 0.0

    def _prune_crashes(self) -> None:
        cutoff = trio.current_time() - self.config.crash_window
        while self.crashes and self.crashes[0] < cutoff:
            self.crashes.popleft()

    def _note_crash(self) -> None:
        self._prune_crashes()
        self.crashes.append(trio.current_time())
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
            async with self.launcher(
                spec,
                on_update=self._on_update,
                on_request=self._on_request,
                on_batch_end=self._on_batch_end,
            ) as conn:
                agent.conn = conn
                try:
                    async with trio.open_nursery() as nursery:
                        agent.nursery = nursery
                        await self._setup_session(conn, rec)
                        self.agent = agent
                        task_status.started(agent)
                        nursery.start_soon(_watch_exit, agent, conn, nursery.cancel_scope)
                        await agent.stop_requested.wait()
                        nursery.cancel_scope.cancel()
                finally:
                    # However long the launcher takes to stop it now, it takes no new prompt.
                    agent.closing = True
        except Exception:
            if self.agent is not agent:
                raise  # still starting: the caller records it
            log.exception("conversation %s: agent task failed", self.conv_id)
        finally:
            agent.closing = True
            if self.agent is agent:
                self.agent = None
                self.restart_reason = (
                    "crashed" if agent.exited else agent.stopping_reason or "stopped"
                )
                self.wake()  # an idle supervisor without an agent may retire sooner
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
        # session/resume when advertised (no replay), else or if it fails session/load (its
        # replay arrives with no turn current, so it is dropped, never shown as live).
        ways = []
        if conn.can_resume:
            ways.append(conn.resume_session)
        if conn.can_load:
            ways.append(conn.load_session)
        loaded, why = False, "the agent cannot load sessions"
        for way in ways:
            try:
                await way(sid, rec.cwd)
            except RpcFailure as exc:
                why = exc.message
            else:
                loaded = True
                break
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
        if not agent.stopping_reason:
            agent.stopping_reason = reason
        agent.stop_requested.set()
        with trio.CancelScope(shield=True):
            await agent.gone.wait()

    # --- callbacks from the agent's read loop (synchronous: the per-chunk path) --------------

    def _on_update(self, session_id: str, update: acp.SessionUpdate) -> None:
        turn = self.turn
        if (
            turn is None
            or not turn.prompted
            or turn.done.is_set()
            or session_id != self.acp_session_id
        ):
            # Replay of a session/load, or a straggler after its turn: never the next turn's.
            self.dropped_updates += 1
            return
        turn.updates += 1
        self.recorder.update(update, turn.prompt_seq)

    def _on_batch_end(self) -> None:
        # The turn timeout is re-armed once per batch of lines, not per update: moving a
        # deadline costs more than the rest of an update's handling (bench_engine's relay).
        turn = self.turn
        if turn is not None and turn.updates != turn.updates_seen:
            turn.updates_seen = turn.updates
            if self.permissions.waiting == 0 and not turn.done.is_set():
                turn.scope.deadline = trio.current_time() + self.config.turn_timeout

    async def _on_request(self, method: str, raw: msgspec.Raw) -> object:
        # fs/* and terminal/*: we advertise neither capability (agent.py), so -32601.
        if method != acp.REQUEST_PERMISSION:
            raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")
        params = decode_params(_permission_params, raw)  # -32602 for bad or absent params
        turn = self.turn
        if turn is None or not turn.prompted or turn.cancel_sent:
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
        if self._start_scope is not None:
            self._start_scope.cancel()
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


def _permanent(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_permanent(e) for e in exc.exceptions)
    return isinstance(exc, AgentStartError) and exc.permanent


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _one_line(exc.exceptions[0])
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _only(exc: BaseException, tp: type[BaseException]) -> bool:
    """Whether `exc` is `tp`, or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(tp)[1] is None
    return isinstance(exc, tp)


async def _watch_exit(agent: _Agent, conn: AgentConnection, scope: trio.CancelScope) -> None:
    await conn.wait_exited()
    agent.exited = True  # by itself: a stop request would have cancelled this first
    scope.cancel()
