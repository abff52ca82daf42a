"""Closing a byte stream without losing our last reply to a reset.

Closing a socket with unread input makes the kernel send RST, which can destroy our last
output (an error reply, a 431) before the client reads it. So: half-close, then discard what
the client still sends until it closes too, or a bound is reached.
"""

from __future__ import annotations

from typing import Final

import trio

__all__ = ["LINGER_BYTES", "LINGER_S", "linger"]

LINGER_S: Final = 1.0
LINGER_BYTES: Final = 64 * 1024
_READ_SIZE: Final = 64 * 1024


async def linger(
    stream: trio.abc.HalfCloseableStream, *, seconds: float = LINGER_S, limit: int = LINGER_BYTES
) -> None:
    """Half-close `stream` (our reply is its last output), then discard what the client still
    sends until it closes, `seconds` pass or `limit` bytes were read; the caller closes it."""
    try:
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    discarded = 0
    with trio.move_on_after(seconds):
        while discarded < limit:
            try:
                data = await stream.receive_some(min(_READ_SIZE, limit - discarded))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            discarded += len(data)
