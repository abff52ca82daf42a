"""The engine's read side: conversations, their events and queues as stored, with what a live
supervisor knows on top. Nothing here hydrates: a stored conversation read costs no supervisor.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import msgspec

from daemon.engine.apierrors import no_such
from daemon.engine.storeio import StoreIO
from daemon.paths import agent_log_path
from protocol import api
from protocol import events as ev
from protocol.api import ConversationInfo
from protocol.jsonrpc import INVALID_PARAMS, RpcFailure
from store import ConversationRecord, Store

if TYPE_CHECKING:
    from daemon.engine.supervisor import Conversation

__all__ = ["PAGE_BYTES", "SHORT_ID_MIN", "Reads"]

_user_message = msgspec.json.Decoder(ev.UserMessage)
# Event bodies per page of `events` and of a subscription's replay: a page of long agent
# messages must not become one reply of hundreds of megabytes (clients read on from its end).
PAGE_BYTES = 8 * 1024 * 1024
SHORT_ID_MIN = 4  # characters of a conversation's `short_id`, at least
# An ambiguous prefix's error names this many candidates, and counts the others up to a cap.
CANDIDATES_SHOWN = 5
CANDIDATES_COUNTED = 1000


def _raw(state: str | None) -> msgspec.Raw | None:
    """A state column (JSON text the store folded from our own event bodies) as is."""
    return None if state is None else msgspec.Raw(state.encode())


@attrs.define(eq=False)
class Reads:
    """The registry's read side: store reads, with a live supervisor's state on top."""

    io: StoreIO
    data_dir: Path
    # The registry's: a conversation's live supervisor, if any, and whether it is being
    # deleted (a conversation being deleted is not found).
    _supervisor: Callable[[str], Conversation | None]
    _deleting: Callable[[str], bool]

    def info(self, rec: ConversationRecord, short_id: str) -> ConversationInfo:
        conv = self._supervisor(rec.id)
        # `queued` is the store's: every write to the queue keeps it exact.
        status, last_seq, live = rec.status, rec.last_seq, False
        asking: tuple[ev.PermissionRequested, ...] = ()
        questions: tuple[ev.ElicitationRequested, ...] = ()
        retry_at: str | None = None
        position: int | None = None
        if conv is not None and conv.ready.is_set() and not conv.finished.is_set():
            status, live = conv.status, conv.live
            last_seq = max(last_seq, conv.last_seq)
            asking = conv.permissions.open_requests()  # only a live conversation is asked
            questions = conv.questions.open_questions()
            if (at := conv.slot.retry_at) is not None and status == "starting":
                retry_at = ev.rfc3339(at)
            if status == "waiting":
                position = conv.slot_position
        return ConversationInfo(
            id=rec.id,
            short_id=short_id,
            title=rec.title,
            agent=rec.agent,
            cwd=rec.cwd,
            status=status,
            created_at=ev.rfc3339(rec.created_at),
            updated_at=ev.rfc3339(rec.updated_at),
            last_seq=last_seq,
            queued=rec.queued,
            live=live,
            open_requests=len(asking) + len(questions),
            retry_at=retry_at,
            permissions=list(asking),
            questions=list(questions),
            modes=_raw(rec.modes),
            config_options=_raw(rec.config_options),
            commands=_raw(rec.commands),
            usage=_raw(rec.usage),
            agent_log=str(agent_log_path(self.data_dir, rec.id)),
            slot_position=position,
        )

    async def record(self, conv_id: str) -> ConversationRecord:
        rec = await self.io.read(lambda s: s.get_conversation(conv_id))
        if rec is None or self._deleting(conv_id):
            raise no_such(conv_id)
        return rec

    async def resolve_id(self, id_or_prefix: str) -> str:
        if not id_or_prefix:
            raise RpcFailure(INVALID_PARAMS, "id must not be empty")
        if self._supervisor(id_or_prefix) is not None:
            return id_or_prefix
        matches = [i for i, _ in await self.io.read(lambda s: s.resolve_id(id_or_prefix))]
        if not matches:
            raise no_such(id_or_prefix)
        if id_or_prefix in matches or len(matches) == 1:
            return id_or_prefix if id_or_prefix in matches else matches[0]
        raise RpcFailure(INVALID_PARAMS, await self._ambiguous(id_or_prefix))

    async def _ambiguous(self, prefix: str) -> str:
        """One line: the first few candidates with their titles, and how many more."""

        def read(s: Store) -> tuple[builtins.list[tuple[str, str]], int]:
            found = s.resolve_id(prefix, limit=CANDIDATES_SHOWN)
            return found, s.count_prefix(prefix, CANDIDATES_COUNTED + 1)

        found, total = await self.io.read(read)
        names = ", ".join(f"{i} ({' '.join(t.split())[:40] or 'untitled'})" for i, t in found)
        more = total - len(found)
        if total > CANDIDATES_COUNTED:
            names += f" and over {CANDIDATES_COUNTED - len(found)} more"
        elif more > 0:
            names += f" and {more} more"
        return f"ambiguous id prefix {prefix!r}: {names}; give more characters"

    async def get(self, conv_id: str) -> ConversationInfo:
        def read(s: Store) -> tuple[ConversationRecord | None, dict[str, str]]:
            return s.get_conversation(conv_id), s.short_ids([conv_id], SHORT_ID_MIN)

        rec, short = await self.io.read(read)
        if rec is None or self._deleting(conv_id):
            raise no_such(conv_id)
        return self.info(rec, short[conv_id])

    async def list(
        self, *, limit: int, before: str | None, cwd: str | None = None
    ) -> tuple[builtins.list[ConversationInfo], int, str | None]:
        def read(s: Store) -> tuple[list[ConversationRecord], str | None, int, dict[str, str]]:
            page, nxt = s.list_conversations(limit=limit, before=before, cwd=cwd)
            short = s.short_ids([r.id for r in page], SHORT_ID_MIN)
            return page, nxt, s.count_conversations(cwd=cwd), short

        try:
            page, nxt, total, short = await self.io.read(read)
        except ValueError as exc:  # a cursor that is not one of ours
            raise RpcFailure(INVALID_PARAMS, f"invalid before cursor: {exc}") from None
        return [self.info(r, short[r.id]) for r in page], total, nxt

    async def count(self) -> int:
        return await self.io.read(lambda s: s.count_conversations())

    async def events(
        self, conv_id: str, *, after_seq: int, limit: int
    ) -> tuple[builtins.list[msgspec.Raw], int]:
        rec = await self.record(conv_id)
        recs = await self.io.read_bulk(
            lambda s: s.read_events(conv_id, after_seq, limit, max_bytes=PAGE_BYTES)
        )
        conv = self._supervisor(conv_id)
        last = max(rec.last_seq, conv.last_seq if conv is not None else 0)
        rendered = [msgspec.Raw(ev.render_event(r.seq, r.type, r.ts, r.body)) for r in recs]
        return rendered, last

    async def queue(self, conv_id: str) -> builtins.list[api.PendingMessage]:
        await self.record(conv_id)

        def read(s: Store) -> builtins.list[api.PendingMessage]:
            out = []
            for r in s.pending_messages(conv_id):  # in line, as edited
                msg = _user_message.decode(r.body)
                number = msg.number
                if isinstance(number, msgspec.UnsetType):
                    # Stored before messages had numbers: numbered by its place among the
                    # user messages (a scan, for those few only).
                    number = s.count_user_messages(conv_id, r.seq)
                out.append(api.PendingMessage(seq=r.seq, text=msg.text, number=number))
            return out

        return await self.io.read(read)

    async def replay(
        self, conv_id: str, after: int, through: int, limit: int
    ) -> tuple[builtins.list[bytes], int]:
        """A page of a subscription's replay: event lines after `after`, up to `through`, and
        the seq it read up to (a subscription reads on from there)."""
        recs = await self.io.read_bulk(
            lambda s: s.read_events(conv_id, after, limit, max_bytes=PAGE_BYTES)
        )
        lines = [
            ev.event_notification(conv_id, ev.render_event(r.seq, r.type, r.ts, r.body))
            for r in recs
            if r.seq <= through
        ]
        # A short page (by count or by bytes) is no proof of the end: read on from its last.
        upto = recs[-1].seq if recs else through
        return lines, min(upto, through)
