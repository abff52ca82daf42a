"""Turns a turn's stream of updates into deltas (fanned out) and durable events (stored).

The agent's read loop hands updates over synchronously (`delta`, `durable`): no await on the
per-chunk path. One recorder task per conversation drains them in order, so a subscriber sees
text, tool calls and text again in the order the agent sent them. Consecutive text chunks are
coalesced into one `conversation/delta` per batch (encoded once for every subscriber), and the
text is persisted as a draft at least every `draft_interval` (and every `DRAFT_CHARS`, so no
one write holds the store's writer long), so a crash loses at most about a second of output.
A message's text becomes a durable `agent_message` when something else durable follows it, the
turn ends, or it reaches `SEGMENT_CHARS` (a longer one is stored in parts, in order).
"""

from __future__ import annotations

import math

import attrs
import msgspec
import trio

from daemon.engine.eventlog import EventLog, LogClosed
from protocol import acp
from protocol import events as ev
from protocol.api import DELTA_METHOD, DeltaParams
from protocol.jsonrpc import Notification, encode_line

__all__ = ["DRAFT_CHARS", "SEGMENT_CHARS", "Recorder"]

# A draft is saved once this much text is unsaved, whatever the time: a flooding agent's
# second of output would otherwise be one multi-megabyte write that every send queues behind.
DRAFT_CHARS = 64 * 1024
# The bound on one stored agent_message (or thought): what one join, one encode and one row
# cost, and the text held in memory for the open message.
SEGMENT_CHARS = 1024 * 1024


@attrs.define(eq=False, slots=True)
class _Delta:
    kind: str  # message | thought | tool
    parts: list[str]  # consecutive chunks of one kind, coalesced as they are handed over
    prompt_seq: int


@attrs.define(eq=False, slots=True)
class _Durable:
    type: str
    body: bytes


@attrs.define(eq=False, slots=True)
class _Flush:
    done: trio.Event


_Item = _Delta | _Durable | _Flush

# Text kinds that accumulate into a stored event; "tool" progress is transient only.
_STORED_KIND = {"message": "agent_message", "thought": "agent_thought"}


@attrs.define(eq=False)
class Recorder:
    log: EventLog
    draft_interval: float
    _items: list[_Item] = attrs.field(factory=list)
    _kick: trio.Event = attrs.field(factory=trio.Event)
    # Open text segments of the current message, in the order they began, and how many of
    # each one's parts are already in its stored draft.
    _segments: dict[str, list[str]] = attrs.field(factory=dict)
    _saved: dict[str, int] = attrs.field(factory=dict)
    _seg_prompt: int = 0
    _unsaved: int = 0  # characters of text not yet in a stored draft
    _seg_chars: int = 0  # characters in the open segments
    _draft_due: float = math.inf
    _batch: list[_Item] = attrs.field(factory=list)
    _closed: bool = False  # the log closed under us: nothing more is stored
    deltas_published: int = 0

    # --- the synchronous side, called from the agent's read loop ----------------------------

    def delta(self, kind: str, text: str, prompt_seq: int) -> None:
        if not text:
            return
        items = self._items
        if items:
            last = items[-1]
            if type(last) is _Delta and last.kind == kind and last.prompt_seq == prompt_seq:
                last.parts.append(text)  # the per-chunk path: no new object, no wake-up
                return
        items.append(_Delta(kind, [text], prompt_seq))
        self._kick.set()

    def durable(self, type_: str, body: ev._Body) -> None:
        self._items.append(_Durable(type_, ev.encode_body(body)))
        self._kick.set()

    def update(self, update: acp.SessionUpdate, seq: int) -> None:
        """An agent's `session/update` for the turn of prompt `seq`: text and tool progress
        are deltas; tool calls, their status changes and plans are durable. Others: dropped."""
        if type(update) is acp.AgentMessageChunk:  # the commonest by far: checked first
            content = update.content
            text = content.text if type(content) is acp.TextContent else acp.content_text(content)
            self.delta("message", text, seq)
        elif isinstance(update, acp.AgentThoughtChunk):
            self.delta("thought", acp.content_text(update.content), seq)
        elif isinstance(update, acp.ToolCall):
            status = update.status if isinstance(update.status, str) else "pending"
            kind = update.kind if isinstance(update.kind, str) else msgspec.UNSET
            self.durable(
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
                self.durable(
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
                        self.delta("tool", acp.content_text(item.content), seq)
        elif isinstance(update, acp.Plan):
            entries = [msgspec.to_builtins(e) for e in update.entries]
            self.durable("plan", ev.PlanEvent(entries=entries, prompt_seq=seq))

    async def flush(self) -> None:
        """Wait until everything handed over so far is stored and published."""
        if self._closed:
            return
        done = trio.Event()
        self._items.append(_Flush(done))
        self._kick.set()
        await done.wait()

    # --- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                with trio.move_on_at(self._draft_due):
                    await self._kick.wait()
                self._kick = trio.Event()
                self._batch, self._items = self._items, []
                await self._process(self._batch)
                # Drafts are paced by time: that bounds what a crash loses, and each save
                # stores only the text since the last one.
                if self._unsaved >= DRAFT_CHARS or (
                    self._unsaved and trio.current_time() >= self._draft_due
                ):
                    await self._save_drafts()
        except LogClosed:
            # Deleted (or retired) under us: store nothing more, and hold up no flush.
            self._closed = True
            for item in (*self._batch, *self._items):
                if isinstance(item, _Flush):
                    item.done.set()
            self._items.clear()

    async def _process(self, items: list[_Item]) -> None:
        pending: list[tuple[str, bytes]] = []
        run_kind, run_prompt = "", 0
        run_parts: list[str] = []

        def end_run() -> None:
            nonlocal run_kind, run_parts
            if run_parts:
                text = "".join(run_parts)
                params = DeltaParams(
                    id=self.log.conv_id, prompt_seq=run_prompt, kind=run_kind, text=text
                )
                line = encode_line(Notification(method=DELTA_METHOD, params=params))
                self.log.fanout.publish_delta(bytes(line))
                self.deltas_published += 1
            run_kind, run_parts = "", []

        for item in items:
            if isinstance(item, _Delta):
                if pending:  # durable events that came first must be out first
                    await self.log.append(pending, clear_drafts=True)
                    pending = []
                if item.kind != run_kind or item.prompt_seq != run_prompt:
                    end_run()
                    run_kind, run_prompt = item.kind, item.prompt_seq
                run_parts.extend(item.parts)
                if item.kind in _STORED_KIND:
                    self._add_text(item.kind, item.parts, item.prompt_seq)
                    if self._seg_chars >= SEGMENT_CHARS:
                        pending.extend(self._close_segments())
            else:
                end_run()
                pending.extend(self._close_segments())
                if isinstance(item, _Durable):
                    pending.append((item.type, item.body))
                else:
                    await self.log.append(pending, clear_drafts=True)
                    pending = []
                    item.done.set()
        end_run()
        if pending:
            await self.log.append(pending, clear_drafts=True)

    def _add_text(self, kind: str, parts: list[str], prompt_seq: int) -> None:
        if prompt_seq != self._seg_prompt and self._segments:
            # A new turn's text: the old one was closed by its turn's flush; be safe anyway.
            self._segments.clear()
            self._saved.clear()
            self._seg_chars = 0
        self._seg_prompt = prompt_seq
        self._segments.setdefault(kind, []).extend(parts)
        if not self._unsaved:
            self._draft_due = trio.current_time() + self.draft_interval
        chars = sum(map(len, parts))
        self._unsaved += chars
        self._seg_chars += chars

    def _close_segments(self) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for kind, parts in self._segments.items():
            text = "".join(parts)
            body: ev._Body
            if kind == "message":
                body = ev.AgentMessage(text=text, prompt_seq=self._seg_prompt)
            else:
                body = ev.AgentThought(text=text, prompt_seq=self._seg_prompt)
            out.append((_STORED_KIND[kind], ev.encode_body(body)))
        self._segments.clear()
        self._saved.clear()
        self._unsaved = self._seg_chars = 0
        self._draft_due = math.inf
        return out

    async def _save_drafts(self) -> None:
        self._unsaved = 0
        self._draft_due = math.inf
        for kind, parts in list(self._segments.items()):
            saved = self._saved.get(kind, 0)
            if saved < len(parts):
                self._saved[kind] = len(parts)
                await self.log.append_draft(self._seg_prompt, kind, "".join(parts[saved:]))
