"""The conversation engine: a lazy registry of supervisors over the store.

Stored conversations cost nothing until used: `list`, `get`, `count`, `events` and `queue` read
the store and spawn nothing (reads.py). The first `send`, `interrupt`, `resume` or `subscribe`
hydrates a conversation; the registry's check-and-insert has no checkpoint in between (trio is
single-threaded), so racing callers share one supervisor and wait on its `ready` event. An
entry leaves the map in the supervisor's `finally`. A new conversation is stored without one
(creation.py); at the end, shutdown.py stops every supervisor and agent by one deadline.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import msgspec
import trio

from daemon.agents.agentlog import remove_agent_log
from daemon.agents.memory import RssGauge
from daemon.config import Config
from daemon.engine.apierrors import check_text, no_such, queue_errors, unstored
from daemon.engine.creation import create_conversation
from daemon.engine.eventlog import LogClosed, removed_event
from daemon.engine.fanout import Subscription, encode_caught_up
from daemon.engine.reads import SHORT_ID_MIN, Reads
from daemon.engine.recovery import close_dead_turns
from daemon.engine.shutdown import stop_everything
from daemon.engine.slots import SlotTable, SlotTableStatistics
from daemon.engine.startups import StartPermits, StartPermitsStatistics
from daemon.engine.storagehealth import StorageHealth
from daemon.engine.stored import StoredCount
from daemon.engine.storeio import StoreIO, StoreIOStatistics
from daemon.paths import agent_log_path
from protocol import acp, api
from protocol.api import ConversationInfo
from protocol.jsonrpc import (
    CONFLICT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    RpcFailure,
)
from store import StorageUnavailable

if TYPE_CHECKING:
    from daemon.agents.connection import Launcher
    from daemon.engine.supervisor import Conversation

__all__ = ["Engine", "EngineStatistics"]

log = logging.getLogger("acpd.engine")

T = TypeVar("T")


def _supervisor_class() -> type[Conversation]:
    """The supervisor, imported when the first conversation goes live rather than at start-up:
    with it come the turn, the agent slot, the agents' connection and the ACP peer, a third of
    the code a running daemon has loaded, which `acpd serve` need not load to be ready (reads
    never use it). `acpd serve` loads it in a worker thread once ready (serve._load_the_rest);
    a hydration before that pays it once: some 17 ms (35 ms where no bytecode is cached)."""
    from daemon.engine.supervisor import Conversation

    return Conversation


@attrs.frozen
class EngineStatistics:
    conversations_live: int  # supervisors in the registry
    agents_running: int
    hydrations: int  # supervisors started since start-up
    updates_dropped: int  # agent updates outside their turn (load replays, stragglers)
    subscribers_lagged: int  # subscriptions dropped for falling behind
    store: StoreIOStatistics
    slots: SlotTableStatistics
    start_permits: StartPermitsStatistics


@attrs.define(eq=False)
class Engine:
    config: Config
    io: StoreIO
    launcher: Launcher
    data_dir: Path
    _nursery: trio.Nursery
    _live: dict[str, Conversation] = attrs.field(factory=dict)
    _deleting: set[str] = attrs.field(factory=set)
    # Why the agent of a retired supervisor went away (idle, crashed, drain_timeout), for the
    # next one's `agent_restarted`. A conversation not in here last ran under an older daemon.
    # One small entry per conversation used since startup, dropped when it is deleted.
    _restart_reasons: dict[str, str] = attrs.field(factory=dict)
    started_at: float = attrs.field(factory=time.monotonic)
    hydrations: int = 0
    _updates_dropped: int = 0  # by supervisors that have retired
    _lagged: int = 0  # likewise
    # The max_agents slots every conversation's agent takes one of, and their agents' memory.
    slots: SlotTable = attrs.field(init=False)
    # The max_starting permits an agent's start-up takes one of (a start storm stays bounded).
    start_permits: StartPermits = attrs.field(init=False)
    _rss: RssGauge = attrs.field(init=False)
    _reads: Reads = attrs.field(init=False)
    _stored: StoredCount = attrs.field(init=False)  # for `daemon/status`: off the store

    def __attrs_post_init__(self) -> None:
        self.slots = SlotTable(self.config.max_agents)
        self.start_permits = StartPermits(self.config.max_starting)
        self._rss = RssGauge(self.slots.agent_groups, self._nursery)
        self._reads = Reads(self.io, self.data_dir, self.supervisor, self._deleting.__contains__)
        self._stored = StoredCount(self._reads.count)

    # --- the registry ---------------------------------------------------------------------------

    async def _conversation(self, conv_id: str) -> Conversation:
        while True:
            if conv_id in self._deleting:
                raise no_such(conv_id)
            conv = self._live.get(conv_id)
            if conv is None:
                # No checkpoint between the lookup above and this insert: one supervisor.
                reason = self._restart_reasons.pop(conv_id, "daemon_restarted")
                conv = _supervisor_class()(
                    conv_id,
                    self.io,
                    self.config,
                    self.launcher,
                    self._exited,
                    reason,
                    agent_log_path(self.data_dir, conv_id),
                    slots=self.slots,
                    permits=self.start_permits,
                )
                self._live[conv_id] = conv
                self.hydrations += 1
                self._nursery.start_soon(conv.run, name=f"conversation {conv_id}")
            await conv.ready.wait()
            if isinstance(conv.load_error, LookupError):
                raise no_such(conv_id)
            if isinstance(conv.load_error, StorageUnavailable):
                raise unstored(conv.load_error, f"conversation {conv_id} could not be loaded")
            if conv.load_error is not None:
                raise RpcFailure(
                    INTERNAL_ERROR, f"conversation {conv_id} failed: {conv.load_error}"
                )
            if conv.retiring and not conv.finished.is_set():
                # Retiring (or being deleted): it would end a subscription at once and refuse
                # writes. Wait until it has left the registry, then look again.
                await conv.finished.wait()
                continue
            if not conv.finished.is_set():
                return conv
            # It retired while we waited: hydrate again.

    async def _with(self, conv_id: str, fn: Callable[[Conversation], Awaitable[T]]) -> T:
        while True:
            conv = await self._conversation(conv_id)
            try:
                return await fn(conv)
            except LogClosed:
                if conv.deleting:
                    raise no_such(conv_id) from None
                # Retired between lookup and use: the next lookup hydrates a fresh one.

    def _exited(self, conv: Conversation) -> None:
        self._updates_dropped += conv.dropped_updates
        self._lagged += conv.fanout.statistics().lagged
        if self._live.get(conv.conv_id) is conv:
            del self._live[conv.conv_id]
            if not conv.deleting and conv.has_session:
                self._restart_reasons[conv.conv_id] = conv.restart_reason

    def supervisor(self, conv_id: str) -> Conversation | None:
        """The live supervisor of `conv_id`, if any (for introspection: status, tests)."""
        return self._live.get(conv_id)

    def statistics(self) -> EngineStatistics:
        live = list(self._live.values())
        return EngineStatistics(
            conversations_live=len(live),
            agents_running=sum(1 for c in live if c.live),
            hydrations=self.hydrations,
            updates_dropped=self._updates_dropped + sum(c.dropped_updates for c in live),
            subscribers_lagged=self._lagged + sum(c.fanout.statistics().lagged for c in live),
            store=self.io.statistics(),
            slots=self.slots.statistics(),
            start_permits=self.start_permits.statistics(),
        )

    def counters(self) -> tuple[int, int, int]:
        """(hydrations, updates dropped, subscribers lagged) since start-up."""
        stats = self.statistics()
        return stats.hydrations, stats.updates_dropped, stats.subscribers_lagged

    def live_count(self) -> int:
        return len(self._live)

    def storage(self) -> StorageHealth:
        return self.io.health()

    @contextlib.contextmanager
    def person_waiting(self) -> Iterator[None]:
        """For the block: a request a person waits for is being answered, so the agents'
        bulk work holds off between steps (bounded: `storeio.CONTROL_PAUSE` each time), from
        the moment it is read, not only while its write is on its way to the store."""
        self.io.control_begins()
        try:
            yield
        finally:
            self.io.control_ends()

    def agents_running(self) -> int:
        return sum(1 for c in self._live.values() if c.live)

    def slot_counts(self) -> tuple[int, int, int]:
        """Agent slots (used, max_agents, conversations waiting for one)."""
        stats = self.slots.statistics()
        return stats.used, stats.limit, stats.waiting

    def start_counts(self) -> tuple[int, int, int]:
        """Agent start-ups (under way, max_starting, waiting for a permit)."""
        stats = self.start_permits.statistics()
        return stats.starting, stats.limit, stats.waiting

    async def agents_rss(self) -> int:
        """Resident memory of every agent's process group, in bytes (at most a second old)."""
        return await self._rss.read()

    # --- read side: never hydrates (reads.py) ---------------------------------------------------

    async def resolve_id(self, id_or_prefix: str) -> str:
        return await self._reads.resolve_id(id_or_prefix)

    async def get(self, conv_id: str) -> ConversationInfo:
        return await self._reads.get(conv_id)

    async def list(
        self, *, limit: int, before: str | None, cwd: str | None = None
    ) -> tuple[builtins.list[ConversationInfo], int, str | None]:
        return await self._reads.list(limit=limit, before=before, cwd=cwd)

    async def count(self) -> int:
        return await self._stored.get()

    async def events(
        self, conv_id: str, *, after_seq: int, limit: int
    ) -> tuple[builtins.list[msgspec.Raw], int]:
        return await self._reads.events(conv_id, after_seq=after_seq, limit=limit)

    async def queue(self, conv_id: str) -> builtins.list[api.PendingMessage]:
        return await self._reads.queue(conv_id)

    # --- write side ---------------------------------------------------------------------------

    async def create(
        self,
        *,
        agent: str | None,
        agent_cmd: builtins.list[str] | None,
        cwd: str,
        title: str | None,
        mcp_servers: builtins.list[acp.McpServer] | None = None,
    ) -> ConversationInfo:
        rec = await create_conversation(
            self.io,
            self.config,
            self._stored,
            agent=agent,
            agent_cmd=agent_cmd,
            cwd=cwd,
            title=title,
            mcp_servers=mcp_servers,
        )
        short = await self.io.read(lambda s: s.short_ids([rec.id], SHORT_ID_MIN))
        return self._reads.info(rec, short[rec.id])

    async def delete(self, conv_id: str) -> None:
        await self._reads.record(conv_id)
        self._deleting.add(conv_id)
        try:
            conv = self._live.get(conv_id)
            if conv is not None:
                await conv.close(deleting=True)
            try:
                with self._stored.changing() as counted:
                    deleted = await self.io.write_bulk(lambda s: s.delete_conversation(conv_id))
                    counted(-1 if deleted else 0)
            except StorageUnavailable as exc:
                raise unstored(exc, "the conversation was not deleted") from None
            await trio.to_thread.run_sync(remove_agent_log, agent_log_path(self.data_dir, conv_id))
        finally:
            self._deleting.discard(conv_id)
            self._restart_reasons.pop(conv_id, None)

    async def send(self, conv_id: str, text: str, *, run: bool, interrupt: bool) -> api.SendResult:
        check_text(text)

        async def send(c: Conversation) -> api.SendResult:
            # A send that runs lifts a pause or `failed` (queued messages first, then this one).
            # Read as the send arrives: a pause another client makes while it is being stored
            # is lifted too, but not reported.
            held = c.held
            try:
                seq, queued = await c.send(text, run=run, interrupt=interrupt)
            except StorageUnavailable as exc:
                raise unstored(exc, "the message was not queued") from None
            number = await c.log.take_number(seq)
            resumed = held and (run or interrupt)
            return api.SendResult(seq=seq, queued=queued, number=number, resumed=resumed)

        return await self._with(conv_id, send)

    async def steer(self, conv_id: str, text: str) -> api.SendResult:
        """`send`, into the running turn if the agent takes it (steering.py); `steered` says
        whether it did."""
        check_text(text)
        # Raised by a live supervisor only: loaded with it (`_supervisor_class`).
        from daemon.engine.steering import StoredThenClosed

        async def steer(c: Conversation) -> api.SendResult:
            held = c.held  # a steer runs: it lifts a pause, as a send does
            try:
                seq, queued, steered = await c.steer(text)
            except StorageUnavailable as exc:  # only its append fails at once: not stored
                raise unstored(exc, "the message was not queued") from None
            number = await c.log.take_number(seq)
            return api.SendResult(
                seq=seq, queued=queued, number=number, resumed=held, steered=steered
            )

        try:
            return await self._with(conv_id, steer)
        except StoredThenClosed as exc:
            # Stored, so never sent again (as `_with` would): say what happened instead.
            if conv_id in self._deleting or await self.io.read(
                lambda s: s.get_conversation(conv_id) is None
            ):
                raise no_such(conv_id) from None
            raise RpcFailure(INTERNAL_ERROR, f"{exc}; it stays queued") from None

    async def remove(self, conv_id: str, seq: int) -> None:
        await self._reads.record(conv_id)
        conv = self._live.get(conv_id)
        with queue_errors(conv_id, "the message was not removed"):
            if conv is not None:
                try:
                    # Through its log: a message being steered is refused (steering.py).
                    await conv.queue.remove(seq)
                    conv.queue_changed()  # in line for a slot with nothing left: it leaves
                    return
                except LogClosed:
                    if conv.deleting:
                        raise no_such(conv_id) from None
            # No supervisor (or it just retired): no steer can be in flight.
            await self.io.write(lambda s: s.remove_pending(conv_id, seq, removed_event(seq)))

    async def edit(self, conv_id: str, seq: int, text: str) -> None:
        check_text(text)
        with queue_errors(conv_id, "the message was not edited"):
            await self._with(conv_id, lambda c: c.queue.edit(seq, text))

    async def move(self, conv_id: str, seq: int, before: int | None) -> builtins.list[int]:
        if before == seq:
            raise RpcFailure(INVALID_PARAMS, f"message {seq} cannot move before itself")
        with queue_errors(conv_id, "the queue was not reordered"):
            return await self._with(conv_id, lambda c: c.queue.move(seq, before))

    async def interrupt(self, conv_id: str, *, prompt_seq: int | None = None) -> bool:
        """Interrupt the running turn (and pause the queue); with `prompt_seq`, only if the
        running turn is that message's, and otherwise change nothing."""

        async def interrupt(c: Conversation) -> bool:
            # No checkpoint between this look and the interrupt: it hits that turn or none.
            if prompt_seq is not None and c.running_prompt_seq != prompt_seq:
                return False
            return await c.interrupt()

        return await self._with(conv_id, interrupt)

    async def resume(self, conv_id: str) -> api.ResumeResult:
        async def resume(c: Conversation) -> bool:
            held = c.held
            await c.resume()
            return held

        held = await self._with(conv_id, resume)
        queued = await self.io.read(lambda s: s.queued_count(conv_id))
        return api.ResumeResult(resumed=held, queued=queued)

    async def set_mode(self, conv_id: str, mode: str) -> ConversationInfo:
        await self._with(conv_id, lambda c: c.set_mode(mode))
        return await self.get(conv_id)

    async def set_option(self, conv_id: str, option: str, value: str | bool) -> ConversationInfo:
        await self._with(conv_id, lambda c: c.set_option(option, value))
        return await self.get(conv_id)

    async def permit(
        self, conv_id: str, *, request: str, option: str | None, cancelled: bool
    ) -> None:
        await self._reads.record(conv_id)
        conv = self._live.get(conv_id)
        if conv is None:
            raise RpcFailure(CONFLICT, f"no pending permission request {request!r}")
        conv.permissions.answer(request, option, cancelled=cancelled)

    async def answer(
        self, conv_id: str, *, request: str, action: str, content: dict[str, Any] | None
    ) -> None:
        await self._reads.record(conv_id)
        conv = self._live.get(conv_id)
        if conv is None:
            raise RpcFailure(CONFLICT, f"no open question {request!r}")
        conv.questions.answer(request, action, content)

    async def subscribe(
        self,
        conv_id: str,
        *,
        after_seq: int,
        deltas: bool,
        from_turn: bool = False,
        caught_up: bool = False,
    ) -> Subscription:
        """Replay after `after_seq`, then live. `from_turn`: start the replay at the running
        turn's message if that is earlier. `caught_up`: a `conversation/caught_up` line
        between replay and live, with the text streamed before this subscription that no
        stored event holds yet (exact: taken with the registration, no checkpoint between)."""
        conv = await self._conversation(conv_id)
        through = conv.last_seq
        running = conv.running_prompt_seq
        if from_turn and running is not None:
            after_seq = min(after_seq, running - 1)
        line = None
        if caught_up:
            line = encode_caught_up(conv_id, through, conv.recorder.streamed())
        # The last subscriber leaving wakes the supervisor: it may retire now.
        return conv.fanout.open(
            after_seq=after_seq,
            through_seq=through,
            deltas=deltas,
            replay=functools.partial(self._reads.replay, conv_id),
            on_close=conv.wake,
            caught_up=line,
        )

    def agents(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        return [(n, list(a.command)) for n, a in sorted(self.config.all_agents().items())]

    def reload(self, config: Config) -> None:
        self.config = config
        self.slots.set_limit(config.max_agents)
        self.start_permits.set_limit(config.max_starting)
        for conv in self._live.values():
            conv.config = config

    # --- startup and shutdown -------------------------------------------------------------------

    async def recover(self) -> None:
        """Close turns a dead daemon left open and restart queues: O(pending), not O(stored)."""
        recs = await close_dead_turns(self.io)
        for rec in recs:
            if rec.queued > 0 and rec.status not in ("paused", "failed"):
                await self._conversation(rec.id)
        if recs:
            log.info("recovered %d conversation(s)", len(recs))

    async def shutdown(self) -> None:
        """Stop every conversation and agent within `shutdown_grace`, however many run
        (shutdown.py)."""
        convs = list(self._live.values())
        await stop_everything(convs, self.slots, self.config, self._nursery.cancel_scope)
