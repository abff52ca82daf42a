"""acpd's own socket/websocket API (CONTRACT.md): params, results and notifications.

Our own formats: params forbid unknown fields so a typo in a script is an error, not a no-op.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "DELTA_METHOD",
    "EVENT_METHOD",
    "LAGGED_METHOD",
    "ConversationInfo",
    "DeltaParams",
    "LaggedParams",
]

EVENT_METHOD: Final = "conversation/event"
DELTA_METHOD: Final = "conversation/delta"
LAGGED_METHOD: Final = "conversation/lagged"


class ConversationInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str
    agent: str
    cwd: str
    status: str  # idle | running | paused | failed
    created_at: str  # RFC 3339 UTC
    updated_at: str
    last_seq: int
    queued: int
    live: bool


class DeltaParams(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    prompt_seq: int
    kind: str  # message | thought | tool
    text: str


class LaggedParams(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    last_seq: int
