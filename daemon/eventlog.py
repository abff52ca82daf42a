"""A conversation's event log: every durable write, in seq order, then its fan-out.

All appends for one conversation go through one FIFO lock, so the order subscribers see is the
store's seq order even when a `send` and the turn's recorder write at the same moment. The
in-memory `last_seq` moves only after a commit, which is what makes subscribe's "replay up to
`last_seq`, then live" gap-free.
"""

from __future__ import annotations

import attrs
import trio

from daemon.fanout import Fanout
from daemon.storeio import StoreIO
from protocol import events as ev
from store import ConversationRecord, EventRecord, Store

__all__ = ["EventLog", "LogClosed"]


class LogClosed(Exception):
    """The conversation was retired or deleted: this log writes nothing any more."""


def _line(conv_id: str, rec: EventRecord) -> bytes:
    return ev.event_notification(conv_id, ev.render_event(rec.seq, rec.type, rec.ts, rec.body))


@attrs.define(eq=False)
class EventLog:
    conv_id: str
    io: StoreIO
    fanout: Fanout
    last_seq: int
    _lock: trio.StrictFIFOLock = attrs.field(factory=trio.StrictFIFOLock)
    closed: bool = False

    def _publish(self, recs: list[EventRecord]) -> None:
        for rec in recs:
            self.last_seq = max(self.last_seq, rec.seq)
            self.fanout.publish_event(rec.seq, _line(self.conv_id, rec))

    async def append_user(self, text: str) -> EventRecord:
        body = ev.encode_body(ev.UserMessage(text=text))
        async with self._lock:
            self._check()
            rec = await self.io.write(lambda s: s.append_user_message(self.conv_id, body))
            self._publish([rec])
        return rec

    async def append(self, items: list[tuple[str, bytes]], *, clear_drafts: bool = False) -> None:
        if not items and not clear_drafts:
            return

        def write(s: Store) -> list[EventRecord]:
            recs = s.append_events(self.conv_id, items) if items else []
            if clear_drafts:
                s.clear_drafts(self.conv_id)
            return recs

        async with self._lock:
            self._check()
            self._publish(await self.io.write(write))

    async def start_turn(self, prompt_seq: int) -> EventRecord:
        body = ev.encode_body(ev.TurnStarted(prompt_seq=prompt_seq))
        async with self._lock:
            self._check()
            rec = await self.io.write(lambda s: s.start_turn(self.conv_id, prompt_seq, body))
            self._publish([rec])
        return rec

    async def end_turn(self, items: list[tuple[str, bytes]], status: str) -> None:
        async with self._lock:
            self._check()
            recs = await self.io.write(lambda s: s.end_turn(self.conv_id, items, status))
            self._publish(recs)

    async def set_status(self, status: str) -> None:
        async with self._lock:
            self._check()
            await self.io.write(lambda s: s.set_status(self.conv_id, status))

    async def save_draft(self, prompt_seq: int, kind: str, text: str) -> None:
        async with self._lock:
            self._check()
            await self.io.write(lambda s: s.save_draft(self.conv_id, prompt_seq, kind, text))

    async def set_acp_session(self, session_id: str, cwd: str) -> None:
        async with self._lock:
            self._check()
            await self.io.write(lambda s: s.set_acp_session(self.conv_id, session_id, cwd))

    async def record(self) -> ConversationRecord | None:
        return await self.io.read(lambda s: s.get_conversation(self.conv_id))

    async def close(self) -> None:
        """No write starts after this returns (one in flight finishes first)."""
        async with self._lock:
            self.closed = True

    def close_nowait(self) -> bool:
        """Close only if no write is in flight or waiting: used by a supervisor retiring itself."""
        if self._lock.locked():
            return False
        self.closed = True
        return True

    def _check(self) -> None:
        if self.closed:
            raise LogClosed(self.conv_id)
