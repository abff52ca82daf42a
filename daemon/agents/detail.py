"""What a person needs to act on an agent's failure: an `error` event's `detail`.

The agent's JSON-RPC error `data`, the last lines of its stderr (escapes stripped), the last
malformed line it wrote: bounded, so an event stays small however much the agent said.
"""

from __future__ import annotations

from typing import Final

import msgspec

from daemon.agents._process import strip_ansi
from protocol.jsonrpc import RpcFailure

__all__ = ["DETAIL_CHARS", "DETAIL_LINES", "bounded", "error_detail", "failure_detail"]

DETAIL_CHARS: Final = 2000
DETAIL_LINES: Final = 20


def bounded(text: str) -> str:
    """At most DETAIL_CHARS characters: the end is kept (the last of a log says most)."""
    return text if len(text) <= DETAIL_CHARS else "…" + text[-(DETAIL_CHARS - 1) :]


def error_detail(exc: RpcFailure) -> str:
    """An agent's JSON-RPC error `data` for a person: its `details`/`message` text when that is
    all it has (ACP.md §16: `{details: "Session not found"}`), else the data as one line of
    JSON; bounded; "" without data."""
    data = exc.data
    if data is msgspec.UNSET or data is None:
        return ""
    if isinstance(data, str):
        return bounded(data)
    if isinstance(data, dict):
        texts = [data[k] for k in ("details", "message") if isinstance(data.get(k), str)]
        if texts and len(data) == len(texts):
            return bounded("; ".join(texts))
    try:
        return bounded(msgspec.json.encode(data).decode())
    except (TypeError, msgspec.EncodeError):
        return bounded(repr(data))


def failure_detail(stderr_tail: str, last_malformed: bytes) -> str:
    """The last DETAIL_LINES lines of stderr and the last malformed line, bounded."""
    parts = []
    if stderr_tail:
        parts.append("\n".join(stderr_tail.splitlines()[-DETAIL_LINES:]))
    if last_malformed:
        line = strip_ansi(last_malformed).decode("utf-8", "replace")
        parts.append(f"its last malformed line: {line[:500]}")
    return bounded("\n".join(parts))
