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
        out: list[bytes] = []
        if not data:
            return out
        buf = self._buf
        start = len(buf)
        buf += data
        pos = 0
        # Only scan the new bytes for newlines: the held prefix has none.
        nl = buf.find(b"\n", start)
        while nl != -1:
            if self._discarding:
                self._discarding = False
            else:
                end = nl
                if end > pos and buf[end - 1] == 0x0D:  # tolerate CRLF
                    end -= 1
                if end - pos > self.max_line:
                    self.oversized += 1
                elif end > pos:
                    out.append(bytes(buf[pos:end]))
            pos = nl + 1
            nl = buf.find(b"\n", pos)
        if pos:
            del buf[:pos]
        # +1: the CR of a CRLF may arrive before its LF, and a line's CR does not count.
        if len(buf) > self.max_line + 1 or (len(buf) > self.max_line and buf[-1] != 0x0D):
            # Unterminated and already too long: drop it now rather than keep buffering.
            if not self._discarding:
                self.oversized += 1
                self._discarding = True
            buf.clear()
        return out

    def flush(self) -> bytes | None:
        """At end of stream: the unterminated last line, if any (and not oversized)."""
        rest, self._buf = bytes(self._buf), bytearray()
        discarding, self._discarding = self._discarding, False
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if discarding or not rest.strip():
            return None
        return rest  # within the cap: `feed` drops anything longer
