"""Newline-delimited framing with a hard cap on line length (sans-IO).

trio has no readline (trio#796), and a peer that never sends a newline must not make us buffer
without bound, so every byte stream we read goes through a `LineSplitter`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["DEFAULT_MAX_LINE", "DroppedLine", "LineSplitter"]

DEFAULT_MAX_LINE = 4 * 1024 * 1024
# What is kept of each end of a dropped line: enough to see what it was (an update, a reply
# and to which request), never the line itself.
KEPT_ENDS: Final = 4096


class DroppedLine(NamedTuple):
    """A line dropped for its length: its size and its two ends."""

    size: int  # bytes, without the newline
    head: bytes  # the first KEPT_ENDS bytes
    tail: bytes  # the last KEPT_ENDS bytes


class LineSplitter:
    """Split a byte stream into lines, dropping (and counting) lines longer than `max_line`.

    Policy at the bound: the oversized line is discarded up to and including its newline,
    `oversized` is incremented and, once its end is seen, a `DroppedLine` with its size and its
    two ends joins `dropped` (the caller takes them: `take_dropped`); the caller decides whether
    that is fatal (clients) or only reported (agents). Memory stays bounded: a line being
    discarded is not held. Empty lines and a trailing ``\\r`` are ignored.
    """

    __slots__ = (
        "_buf",
        "_discarding",
        "_drop_head",
        "_drop_size",
        "_drop_tail",
        "_dropped",
        "max_line",
        "oversized",
    )

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self.oversized = 0
        self._buf = bytearray()
        self._discarding = False
        self._dropped: list[DroppedLine] = []
        self._drop_head = b""
        self._drop_tail = bytearray()
        self._drop_size = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line."""
        return len(self._buf)

    @property
    def has_dropped(self) -> bool:
        """Whether `take_dropped` has something (cheap: asked after every read)."""
        return bool(self._dropped)

    def take_dropped(self) -> list[DroppedLine]:
        """The lines dropped since the last call (only those whose end has been seen)."""
        out, self._dropped = self._dropped, []
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add `data` and return the complete lines it finished, without their newlines."""
        if not data:
            return []
        if self._discarding:
            data = self._discard(data)
            if not data:
                return []
        buf = self._buf
        start = len(buf)
        buf += data
        # Only scan the new bytes for newlines: the held prefix has none.
        if buf.find(b"\n", start) == -1:
            self._cap_tail()
            return []
        # Every finished line at once, split in C: this is the agent read loop's hot path.
        cut = buf.rfind(b"\n") + 1
        block = bytes(buf[:cut])
        del buf[:cut]
        lines = block.split(b"\n")
        lines.pop()  # the empty string after the last newline
        if b"\r" in block:  # tolerate CRLF
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if len(block) > self.max_line:  # else no line in it can be too long
            cap = self.max_line
            kept = []
            for line in lines:
                if len(line) <= cap:
                    kept.append(line)
                else:
                    self.oversized += 1
                    self._dropped.append(
                        DroppedLine(len(line), line[:KEPT_ENDS], line[-KEPT_ENDS:])
                    )
            lines = kept
        self._cap_tail()
        return [line for line in lines if line]

    def _discard(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """Skip the rest of a line being dropped; what follows its newline, if any."""
        end = bytes(data).find(b"\n") if not isinstance(data, bytes) else data.find(b"\n")
        part = data if end == -1 else data[:end]
        if len(self._drop_head) < KEPT_ENDS:
            self._drop_head += bytes(part[: KEPT_ENDS - len(self._drop_head)])
        self._drop_size += len(part)
        self._drop_tail += part
        del self._drop_tail[: -(KEPT_ENDS + 1)]  # +1: a CRLF's CR may be last
        if end == -1:
            return b""
        tail = bytes(self._drop_tail)
        size = self._drop_size
        head = self._drop_head
        if tail.endswith(b"\r"):  # a CRLF's CR is not the line's
            tail, size = tail[:-1], size - 1
            head = head[:size]
        self._dropped.append(DroppedLine(size, head, tail[-KEPT_ENDS:]))
        self._discarding = False
        self._drop_head, self._drop_tail, self._drop_size = b"", bytearray(), 0
        return data[end + 1 :]

    def _cap_tail(self) -> None:
        buf = self._buf
        # +1: the CR of a CRLF may arrive before its LF, and a line's CR does not count.
        if len(buf) > self.max_line + 1 or (len(buf) > self.max_line and buf[-1] != 0x0D):
            # Unterminated and already too long: drop it now rather than keep buffering.
            self.oversized += 1
            self._discarding = True
            self._drop_head = bytes(buf[:KEPT_ENDS])
            self._drop_tail = bytearray(buf[-KEPT_ENDS:])
            self._drop_size = len(buf)
            buf.clear()

    def flush(self) -> bytes | None:
        """At end of stream: the unterminated last line, if any (and not oversized)."""
        rest, self._buf = bytes(self._buf), bytearray()
        discarding, self._discarding = self._discarding, False
        if discarding:
            tail = bytes(self._drop_tail)
            self._dropped.append(DroppedLine(self._drop_size, self._drop_head, tail))
            return None
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if not rest.strip():
            return None
        return rest  # within the cap: `feed` drops anything longer
