"""Turns left "running" by a daemon that died (kill -9, power loss) or by a supervisor that was
cancelled mid-turn: closed the same way at start-up and at hydration, their drafts kept as
partial messages, so no conversation stays "running" with nobody running it.
"""

from __future__ import annotations

import functools

import msgspec

from daemon.engine.eventlog import text_events
from daemon.engine.storeio import StoreIO
from protocol import events as ev
from store import ConversationRecord, Store

__all__ = ["close_dead_turn", "close_dead_turns", "load_conversation"]


def close_dead_turn(
    s: Store,
    *,
    rec: ConversationRecord,
    stop_reason: str = "daemon_restarted",
    detail: str | msgspec.UnsetType = msgspec.UNSET,
) -> None:
    """End the turn a dead supervisor left "running": its drafts become partial messages."""
    items: list[tuple[str, bytes]] = []
    for prompt_seq, kind, text in s.drafts(rec.id):
        items.extend(text_events(kind, text, prompt_seq, partial=True))
    ended = ev.TurnEnded(prompt_seq=rec.cursor, stop_reason=stop_reason, detail=detail)
    items.append(("turn_ended", ev.encode_body(ended)))
    s.end_turn(rec.id, items, "idle")


async def close_dead_turns(io: StoreIO) -> list[ConversationRecord]:
    """At start-up: close every turn the dead daemon left open. Returns the conversations
    that needed recovery (open turns or queued messages): O(pending), not O(stored)."""
    recs = await io.read(lambda s: s.conversations_needing_recovery())
    for rec in recs:
        if rec.status == "running":
            await io.write(functools.partial(close_dead_turn, rec=rec))
    return recs


async def load_conversation(io: StoreIO, conv_id: str) -> ConversationRecord:
    """A conversation's row for its new supervisor, a turn the one before left open closed
    first. LookupError: no such conversation."""
    rec = await io.read(lambda s: s.get_conversation(conv_id))
    if rec is None:
        raise LookupError(conv_id)
    if rec.status == "running":
        # A supervisor before us stopped mid-turn without closing it (a hard cancel, or a
        # failure): close it as startup recovery does, or it stays "running" forever.
        close = functools.partial(
            close_dead_turn,
            rec=rec,
            stop_reason="agent_exited",
            detail="its supervisor stopped mid-turn",
        )
        await io.write(close)
        rec = await io.read(lambda s: s.get_conversation(conv_id))
        if rec is None:
            raise LookupError(conv_id)
    return rec
