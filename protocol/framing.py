"""Newline-delimited framing with a hard cap on line length (sans-IO).

trio has no readline (trio#796), and a peer that never sends a newline must not make us buffer
without bound, so every byte stream we read goes through a `LineSplitter`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_LINE", "LineSplitter"]

DEFAULT_MAX_LINE = 4 * 1024 * 1024


class LineSplitter:
    """Split a byte stream into lines, dropping (and counting) lines longer than `max_line`.

    Policy at the bound: the oversized line is discarded up to and including its newline and
    `oversized` is incremented; the caller decides whether that is fatal (clients) or only
    logged (agents). Empty lines and a trailing ``\\r`` are ignored.
    """

    __slots__ = ("_buf", "_discarding", "max_line", "oversized")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self.oversized = 0
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add `data` and return the complete lines it finished, without their newlines."""
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
        if self._discarding:  # the rest of a line already dropped as oversized
            self._discarding = False
            del lines[0]
        if b"\r" in block:  # tolerate CRLF
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if len(block) > self.max_line:  # else no line in it can be too long
            cap = self.max_line
            kept = [line for line in lines if len(line) <= cap]
            self.oversized += len(lines) - len(kept)
            lines = kept
        self._cap_tail()
        return [line for line in lines if line]

    def _cap_tail(self) -> None:
        buf = self._buf
        # +1: the CR of a CRLF may arrive before its LF, and a line's CR does not count.
        if len(buf) > self.max_line + 1 or (len(buf) > self.max_line and buf[-1] != 0x0D):
            # Unterminated and already too long: drop it now rather than keep buffering.
            if not self._discarding:
                self.oversized += 1
                self._discarding = True
            buf.clear()

    def flush(self) -> bytes | None:
        """At end of stream: the unterminated last line, if any (and not oversized)."""
        rest, self._buf = bytes(self._buf), bytearray()
        discarding, self._discarding = self._discarding, False
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if discarding or not rest.strip():
            return None
        return rest  # within the cap: `feed` drops anything longer
