"""Turns a turn's stream of updates into deltas (fanned out) and durable events (stored).

The agent's read loop hands updates over synchronously (`update`, `delta`, `durable`): no
await on the per-chunk path. One recorder task per conversation drains them in order, so a
subscriber sees text, tool calls and text again in the order the agent sent them.
Consecutive text chunks are coalesced into one `conversation/delta` per batch (encoded once
for every subscriber, at most `DELTA_CHARS` of text per notification), and the text is
persisted as a draft every `draft_interval`, so a crash loses at most about a second of
output. A message's text becomes a durable `agent_message` when something else durable
follows it, the turn ends, or it reaches `SEGMENT_CHARS` (a longer one is stored in parts, in
order, however it was chunked). So no draft holds more than one open segment's text, and
no one write holds the store's writer long; and a flood's text, whose segments fill well
within a draft interval, is written once, in its segments, not first as drafts too.

The hand-off is bounded: once `BUFFER_CHARS` of handed-over text and bodies wait to be
stored, `wait_for_space` blocks the agent's reader (once per read batch), so the agent's
pipe pushes back while the store is slow; subscribers and senders never wait on it. The
recorder works in steps (`STEP_CHARS` of text, then other tasks run), and holds off between
steps (bounded) while a person's write is on its way to the store (`storeio.CONTROL_PAUSE`).

Everything else an agent says is durable: tool calls and their updates whole (content, diffs,
terminals, locations, raw input and output, bounded by `updates.TOOL_BYTES`), plans, and the
session's state (usage, commands, mode, config options, title), which the store also folds
into the conversation's row in the same transaction (`session_update`: in a turn or not).
Under a backlog, consecutive updates of one tool call are merged into one event (ACP's patch
semantics), and consecutive usage reports into the last one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import attrs
import msgspec
import trio

from daemon.engine import updates
from daemon.engine.eventlog import SEGMENT_CHARS, EventLog, LogClosed, text_events
from protocol import acp
from protocol import events as ev
from protocol.api import DELTA_METHOD, DeltaParams
from protocol.jsonrpc import Notification, encode_line

__all__ = ["BUFFER_CHARS", "DELTA_CHARS", "Recorder", "RecorderStatistics"]

# The most text one `conversation/delta` carries: a huge chunk becomes several notifications,
# so no client meets a line longer than it accepts.
DELTA_CHARS = 256 * 1024
# Handed over but not yet stored: past this, the agent's reader waits (`wait_for_space`).
BUFFER_CHARS = 8 * 1024 * 1024
# Text the recorder handles in one step before it lets other tasks run: a backlog of
# megabytes (the store was slow) is worked off in steps, not in one long stall of the loop.
STEP_CHARS = 64 * 1024
# Chunks added to a segment as one piece when there is room: fewer steps, same text.
GROUP_CHARS = 16 * 1024


def _groups(parts: list[str]) -> Iterator[list[str]]:
    """`parts` in runs of about GROUP_CHARS characters (at least one part each)."""
    start, chars = 0, 0
    for i, part in enumerate(parts):
        chars += len(part)
        if chars >= GROUP_CHARS:
            yield parts[start : i + 1]
            start, chars = i + 1, 0
    if start < len(parts):
        yield parts[start:]


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
class _ToolUpdate:
    body: ev.ToolCallUpdateEvent  # kept whole while a later update of the call may merge in
    data: bytes  # its encoding


@attrs.define(eq=False, slots=True)
class _Flush:
    done: trio.Event


_Item = _Delta | _Durable | _ToolUpdate | _Flush


@attrs.frozen
class RecorderStatistics:
    deltas_published: int  # `conversation/delta` notifications sent
    buffered_chars: int  # handed over, not yet stored
    reader_waits: int  # times the agent's reader waited for space


@attrs.define(eq=False)
class Recorder:
    _log: EventLog
    _draft_interval: float
    _items: list[_Item] = attrs.field(factory=list)
    _kick: trio.Event = attrs.field(factory=trio.Event)
    _space: trio.Event = attrs.field(factory=trio.Event)
    _buffered: int = 0  # characters handed over and not yet stored (the batch in hand too)
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
    _deltas_published: int = 0
    _reader_waits: int = 0

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(self._deltas_published, self._buffered, self._reader_waits)

    # --- the synchronous side, called from the agent's read loop ----------------------------

    def delta(self, kind: str, text: str, prompt_seq: int) -> None:
        if text:
            self._deltas(kind, [text], prompt_seq)

    def _deltas(self, kind: str, texts: list[str], prompt_seq: int) -> None:
        """Non-empty `texts` of one kind, in order: joined to the last delta if it is of the
        same kind and turn (no new object, no wake-up), else a new one."""
        self._buffered += sum(map(len, texts))
        items = self._items
        if items:
            last = items[-1]
            if type(last) is _Delta and last.kind == kind and last.prompt_seq == prompt_seq:
                last.parts.extend(texts)
                return
        items.append(_Delta(kind, texts, prompt_seq))
        self._kick.set()

    def durable(self, type_: str, body: ev._Body) -> None:
        """Store an event in order with the turn's text. Never refused, never waits: durable
        items are small and few (tool calls, plans, permission requests)."""
        data = ev.encode_body(body)
        self._buffered += len(data)
        self._items.append(_Durable(type_, data))
        self._kick.set()

    def update(self, update: acp.SessionUpdate, seq: int) -> None:
        """An agent's `session/update` for the turn of prompt `seq`: text is deltas (and the
        message stored as it closes); everything else it says is durable (`session_update`)."""
        if type(update) is acp.AgentMessageChunk:  # the commonest by far: checked first
            content = update.content
            text = content.text if type(content) is acp.TextContent else acp.content_text(content)
            self.delta("message", text, seq)
        elif isinstance(update, acp.AgentThoughtChunk):
            self.delta("thought", acp.content_text(update.content), seq)
        elif isinstance(update, acp.ToolCall):
            self.durable("tool_call", updates.tool_call_body(update, seq))
        elif isinstance(update, acp.ToolCallUpdate):
            self._tool_update(updates.tool_update_body(update, seq))
        elif isinstance(update, acp.Plan):
            entries = [msgspec.to_builtins(e) for e in update.entries]
            self.durable("plan", ev.PlanEvent(entries=entries, prompt_seq=seq))
        else:
            self.session_update(update)

    def updates(self, updates: Sequence[acp.SessionUpdate], seq: int) -> None:
        """`update` for each, in order; a run of message text chunks is added in one go
        (the relay's hot path: a flood's batch is one such run)."""
        texts: list[str] = []
        for update in updates:
            if type(update) is acp.AgentMessageChunk and type(update.content) is acp.TextContent:
                texts.append(update.content.text)
                continue
            if texts:
                self._message_texts(texts, seq)
                texts = []
            self.update(update, seq)
        if texts:
            self._message_texts(texts, seq)

    def _message_texts(self, texts: list[str], seq: int) -> None:
        """`delta("message", text, seq)` for each text, in one step."""
        if "" in texts:
            texts = [t for t in texts if t]
        if texts:
            self._deltas("message", texts, seq)

    def _tool_update(self, body: ev.ToolCallUpdateEvent) -> None:
        items = self._items
        last = items[-1] if items else None
        if (
            type(last) is _ToolUpdate
            and last.body.tool_call_id == body.tool_call_id
            and last.body.prompt_seq == body.prompt_seq
        ):
            # Not stored yet: one event says both (a flood of progress becomes one row).
            body = updates.merge_tool_updates(last.body, body)
            self._buffered -= len(last.data)
            last.body, last.data = body, ev.encode_body(body)
            self._buffered += len(last.data)
            return
        data = ev.encode_body(body)
        self._buffered += len(data)
        items.append(_ToolUpdate(body, data))
        self._kick.set()

    def session_update(self, update: acp.SessionUpdate) -> bool:
        """Store a session-state update (usage, commands, mode, config options, title) as its
        event, which also sets the conversation's current state; whenever it arrives, in a
        turn or not. False (nothing done) for any other update."""
        found = updates.state_event(update)
        if found is None:
            return False
        type_, body = found
        items = self._items
        last = items[-1] if items else None
        if type_ == "usage" and type(last) is _Durable and last.type == "usage":
            data = ev.encode_body(body)  # not stored yet: only the latest count matters
            self._buffered += len(data) - len(last.body)
            last.body = data
            return True
        self.durable(type_, body)
        return True

    def session_opened(
        self, modes: acp.SessionModeState | None, config_options: acp.ConfigOptions | None
    ) -> None:
        """Store what a session set-up answered (its modes and config options) as the
        session's state."""
        for type_, body in updates.setup_state(modes, config_options):
            self.durable(type_, body)

    async def wait_for_space(self) -> None:
        """Block while the hand-off is full (the store is behind): called by the agent's
        reader once per batch, so its pipe, not our memory, takes up the slack."""
        if self._buffered <= BUFFER_CHARS or self._closed:
            return
        self._reader_waits += 1
        while self._buffered > BUFFER_CHARS and not self._closed:
            await self._space.wait()

    def streamed(self) -> list[tuple[int, str, str]]:
        """(prompt_seq, kind, text) of each open message: the text its deltas carried so far
        that no stored event holds yet (the event that closes it will repeat it whole).

        Exact at any checkpoint of this task: text joins an open message and its delta is
        published with no checkpoint in between, and a closed message's event is published
        before any later delta. So a subscriber registered at the same moment (no
        checkpoint in between) gets exactly the rest as deltas.
        """
        return [(self._seg_prompt, kind, "".join(parts)) for kind, parts in self._segments.items()]

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
                await self._log.yield_to_control()  # a person's write first (bounded)
                self._batch, self._items = self._items, []
                await self._process(self._batch)
                self._done_with(self._batch)
                # Drafts are paced by time: that bounds what a crash loses, and each save
                # stores only the text since the last one (at most an open segment's).
                if self._unsaved and trio.current_time() >= self._draft_due:
                    await self._save_drafts()
        except LogClosed:
            # Deleted (or retired) under us: store nothing more, and hold up no flush or reader.
            self._closed = True
            for item in (*self._batch, *self._items):
                if isinstance(item, _Flush):
                    item.done.set()
            self._items.clear()
            self._buffered = 0
            self._space.set()

    def _done_with(self, batch: list[_Item]) -> None:
        for item in batch:
            if type(item) is _Delta:
                self._buffered -= sum(map(len, item.parts))
            elif type(item) is _Durable:
                self._buffered -= len(item.body)
            elif type(item) is _ToolUpdate:
                self._buffered -= len(item.data)
        batch.clear()
        self._space.set()
        self._space = trio.Event()

    async def _process(self, items: list[_Item]) -> None:
        pending: list[tuple[str, bytes]] = []
        run_kind, run_prompt = "", 0
        run_parts: list[str] = []
        run_chars = 0
        step_chars = 0

        def end_run() -> None:
            nonlocal run_kind, run_parts, run_chars
            if run_parts:
                self._publish_delta(run_kind, run_prompt, "".join(run_parts))
            run_kind, run_parts, run_chars = "", [], 0

        for item in items:
            if isinstance(item, _Delta):
                if pending:  # durable events that came first must be out first
                    await self._log.append(pending, clear_drafts=True)
                    pending = []
                if item.kind != run_kind or item.prompt_seq != run_prompt:
                    end_run()
                    run_kind, run_prompt = item.kind, item.prompt_seq
                stored = item.kind in ev.TEXT_EVENT_TYPES
                for group in _groups(item.parts):
                    chars = sum(map(len, group))
                    if run_chars + chars < DELTA_CHARS and (
                        not stored or self._fits(chars, item.prompt_seq)
                    ):
                        # The common case, small chunks with room in the segment and the
                        # delta: one piece per group, as the steps below would add it.
                        text = "".join(group)
                        if stored:
                            self._add_text(item.kind, text, item.prompt_seq)
                        run_parts.append(text)
                        run_chars += chars
                        run_kind, run_prompt = item.kind, item.prompt_seq
                        step_chars += chars
                        if step_chars >= STEP_CHARS:
                            step_chars = 0
                            await trio.lowlevel.checkpoint()
                            await self._log.yield_to_control()
                        continue
                    for part in group:
                        pieces = self._add_text(item.kind, part, item.prompt_seq) if stored else []
                        for piece, closed in pieces or [(part, [])]:
                            run_parts.append(piece)
                            run_chars += len(piece)
                            if closed:
                                # A segment is full: its deltas out, then the event that repeats
                                # them, before any of the next segment's text (a subscriber
                                # counting characters, or `streamed()`, must see them so).
                                end_run()
                                await self._log.append([*pending, *closed], clear_drafts=True)
                                pending = []
                            elif run_chars >= DELTA_CHARS:
                                end_run()
                            run_kind, run_prompt = item.kind, item.prompt_seq
                        step_chars += len(part)
                        if step_chars >= STEP_CHARS:
                            step_chars = 0
                            await trio.lowlevel.checkpoint()
                            await self._log.yield_to_control()
            else:
                end_run()
                pending.extend(self._close_segments())
                if isinstance(item, _Durable):
                    pending.append((item.type, item.body))
                elif isinstance(item, _ToolUpdate):
                    pending.append(("tool_call_update", item.data))
                else:
                    await self._log.append(pending, clear_drafts=True)
                    pending = []
                    item.done.set()
        end_run()
        if pending:
            await self._log.append(pending, clear_drafts=True)

    def _publish_delta(self, kind: str, prompt_seq: int, text: str) -> None:
        # A run over DELTA_CHARS is one huge chunk: cut it into bounded notifications.
        for i in range(0, len(text), DELTA_CHARS):
            params = DeltaParams(
                id=self._log.conv_id,
                prompt_seq=prompt_seq,
                kind=kind,
                text=text[i : i + DELTA_CHARS],
            )
            line = encode_line(Notification(method=DELTA_METHOD, params=params))
            self._log.publish_delta(bytes(line))
            self._deltas_published += 1

    def _fits(self, chars: int, prompt_seq: int) -> bool:
        """Whether `chars` more of `prompt_seq`'s text leave the open segment short of full."""
        same = prompt_seq == self._seg_prompt or not self._segments
        return same and self._seg_chars + chars < SEGMENT_CHARS

    def _add_text(
        self, kind: str, text: str, prompt_seq: int
    ) -> list[tuple[str, list[tuple[str, bytes]]]]:
        """Add a chunk's text to the open segment: its pieces, cut where a segment fills,
        each with the events of the segments it closed (empty for most)."""
        if prompt_seq != self._seg_prompt and self._segments:
            # A new turn's text: the old one was closed by its turn's flush; be safe anyway.
            self._segments.clear()
            self._saved.clear()
            self._seg_chars = 0
        self._seg_prompt = prompt_seq
        out: list[tuple[str, list[tuple[str, bytes]]]] = []
        while text:
            room = SEGMENT_CHARS - self._seg_chars
            piece, text = text[:room], text[room:]
            self._segments.setdefault(kind, []).append(piece)
            if not self._unsaved:
                self._draft_due = trio.current_time() + self._draft_interval
            self._unsaved += len(piece)
            self._seg_chars += len(piece)
            full = self._seg_chars >= SEGMENT_CHARS
            out.append((piece, self._close_segments() if full else []))
        return out

    def _close_segments(self) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for kind, parts in self._segments.items():
            out.extend(text_events(kind, "".join(parts), self._seg_prompt))
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
                await self._log.append_draft(self._seg_prompt, kind, "".join(parts[saved:]))
