"""Human rendering of a conversation's events and deltas, and of the CLI's tables.

Following live, an agent message arrives twice: as `conversation/delta` chunks while it
streams, then as the stored `agent_message` event that repeats the whole text. The renderer
prints each message once: it counts the characters streamed per (turn, kind) and prints an
event's text only if the deltas did not already cover it (replay has no deltas; a client that
joined mid-message or fell behind saw only part of it, and then gets the full text once more).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any, TextIO

    from daemon.cli.client import Notice

__all__ = [
    "Renderer",
    "Style",
    "agents",
    "ago",
    "conversation",
    "conversations",
    "kv_lines",
    "one_line",
    "permission_options",
    "queue",
    "status",
    "table",
]

_TEXT_KINDS = {"message": "agent_message", "thought": "agent_thought"}
_PLAN_MARK = {"completed": "x", "in_progress": "~", "pending": " "}


class Style:
    """ANSI styling, on only for a terminal and never with `NO_COLOR` set (no-color.org)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: TextIO) -> Style:
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        return cls(tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb")

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)


def one_line(text: str, width: int = 100) -> str:
    """The first line of `text`, cut to `width` characters, marking what was left out."""
    lines = text.strip().splitlines() or [""]
    first = lines[0]
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    if len(first) > width:
        first = first[: width - 1] + "…"
    return first + more


class Renderer:
    """Writes events and deltas to `out` as a readable transcript.

    `own_seqs` holds the seqs of user messages this client sent itself (the chat already shows
    what was typed), which are not echoed.
    """

    def __init__(self, out: TextIO, style: Style | None = None) -> None:
        self.out = out
        self.style = style or Style(False)
        self.own_seqs: set[int] = set()
        self._streamed: dict[tuple[int, str], int] = {}
        self._mode = ""  # the text kind being streamed inline, "" when at a line start
        self._tool_titles: dict[str, str] = {}

    # --- input -------------------------------------------------------------------------------

    def notice(self, notice: Notice) -> None:
        params = notice.params
        if notice.method == "conversation/event":
            event = params.get("event")
            if isinstance(event, dict):
                self.event(event)
        elif notice.method == "conversation/delta":
            self.delta(params)
        elif notice.method == "conversation/lagged":
            self._line(self.style.yellow("(fell behind the stream; catching up)"))

    def delta(self, params: dict[str, Any]) -> None:
        kind, text = str(params.get("kind", "")), str(params.get("text", ""))
        prompt_seq = params.get("prompt_seq", 0)
        if not text:
            return
        if kind in _TEXT_KINDS:
            key = (prompt_seq, kind)
            self._streamed[key] = self._streamed.get(key, 0) + len(text)
            self._stream(kind, text)
        else:  # tool output: transient progress, one dimmed line per chunk
            self._line(self.style.dim("    | " + one_line(text)))

    def event(self, ev: dict[str, Any]) -> None:
        kind = str(ev.get("type", ""))
        handler = getattr(self, "_ev_" + kind, None)
        if handler is None:
            self._line(self.style.dim(f"({kind or 'unknown event'})"))
        else:
            handler(ev)

    def info(self, text: str) -> None:
        """A dimmed line of our own (not from the conversation)."""
        self._line(self.style.dim(text))

    def close(self) -> None:
        """End a line left open by streamed text."""
        self._end_stream()

    # --- events ------------------------------------------------------------------------------

    def _ev_user_message(self, ev: dict[str, Any]) -> None:
        if ev.get("seq") in self.own_seqs:
            return
        text = str(ev.get("text", "")).rstrip("\n").replace("\n", "\n  ")
        self._line(self.style.bold("> " + text))

    def _ev_turn_started(self, ev: dict[str, Any]) -> None:
        self._end_stream()

    def _ev_agent_message(self, ev: dict[str, Any]) -> None:
        self._text_event("message", ev)

    def _ev_agent_thought(self, ev: dict[str, Any]) -> None:
        self._text_event("thought", ev)

    def _text_event(self, kind: str, ev: dict[str, Any]) -> None:
        text = str(ev.get("text", ""))
        streamed = self._streamed.pop((ev.get("prompt_seq", 0), kind), 0)
        if streamed >= len(text):
            self._end_stream()  # every character was shown as it streamed
            return
        if streamed:
            self._end_stream()
            self._line(self.style.dim("(missed part of the stream; in full:)"))
        self._stream(kind, text)
        if ev.get("partial"):
            self._stream(kind, " [partial: recovered after a crash]")
        self._end_stream()

    def _ev_tool_call(self, ev: dict[str, Any]) -> None:
        call_id = str(ev.get("tool_call_id", ""))
        title = str(ev.get("title") or self._tool_titles.get(call_id) or call_id)
        self._tool_titles[call_id] = title
        self._line(self.style.dim(f"  - tool: {one_line(title)} [{ev.get('status', '?')}]"))

    def _ev_plan(self, ev: dict[str, Any]) -> None:
        entries = ev.get("entries") or []
        parts = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                mark = _PLAN_MARK.get(str(entry.get("status")), "?")
                parts.append(f"[{mark}] {one_line(str(entry.get('content', '')), 40)}")
        self._line(self.style.dim("  - plan: " + one_line(" | ".join(parts) or "(empty)", 160)))

    def _ev_permission_requested(self, ev: dict[str, Any]) -> None:
        title = ev.get("title") or "the agent asks for permission"
        self._line(self.style.yellow(f"? permission {ev.get('request')}: {one_line(title)}"))
        for n, opt in enumerate(permission_options(ev), 1):
            self._line(f"    {n}) {opt['name']}  [{opt['option_id']}]")

    def _ev_permission_resolved(self, ev: dict[str, Any]) -> None:
        outcome = ev.get("outcome", "?")
        chosen = f" {ev['option']}" if ev.get("option") else ""
        by = f" by {ev['by']}" if ev.get("by") else ""
        line = f"  - permission {ev.get('request')}: {outcome}{chosen}{by}"
        self._line(self.style.dim(line))

    def _ev_turn_ended(self, ev: dict[str, Any]) -> None:
        self._end_stream()
        reason = ev.get("stop_reason", "?")
        if reason != "end_turn":
            detail = f": {ev['detail']}" if ev.get("detail") else ""
            self._line(self.style.yellow(f"(turn ended: {reason}{detail})"))

    def _ev_agent_restarted(self, ev: dict[str, Any]) -> None:
        session = "session resumed" if ev.get("session_loaded") else "new session, context lost"
        self._line(self.style.yellow(f"(agent restarted: {ev.get('reason', '?')}; {session})"))

    def _ev_error(self, ev: dict[str, Any]) -> None:
        self._line(self.style.red(f"error: {ev.get('message', '?')}"))

    # --- output ------------------------------------------------------------------------------

    def _stream(self, kind: str, text: str) -> None:
        if self._mode != kind:
            self._end_stream()
            self._mode = kind
            if kind == "thought":
                self.out.write(self.style.dim("(thinking) "))
        self.out.write(self.style.dim(text) if kind == "thought" else text)
        self.out.flush()

    def _end_stream(self) -> None:
        if self._mode:
            self.out.write("\n")
            self.out.flush()
            self._mode = ""

    def _line(self, text: str) -> None:
        self._end_stream()
        self.out.write(text + "\n")
        self.out.flush()


def permission_options(ev: dict[str, Any]) -> list[dict[str, str]]:
    """A permission request's options as `{option_id, name, kind}`, malformed ones skipped."""
    out = []
    for opt in ev.get("options") or []:
        if isinstance(opt, dict) and isinstance(opt.get("option_id"), str):
            name = str(opt.get("name") or opt["option_id"])
            out.append({"option_id": opt["option_id"], "name": name, "kind": str(opt.get("kind"))})
    return out


# --- tables and records ------------------------------------------------------------------------


def ago(rfc3339: str, now: float | None = None) -> str:
    """`2025-01-02T03:04:05.678Z` as a short age for people: `42s`, `5m`, `3h`, `2d`."""
    import time
    from datetime import datetime

    try:
        then = datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return rfc3339
    secs = max(0, int((time.time() if now is None else now) - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def table(headers: list[str], rows: list[list[str]], *, last_width: int | None = None) -> str:
    """Left-aligned columns; the last one is cut to `last_width` so a row fits on a line."""
    if last_width is not None:
        rows = [[*r[:-1], one_line(r[-1], max(10, last_width))] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(out)


def kv_lines(record: dict[str, Any]) -> str:
    """`key: value` lines, keys aligned."""
    width = max((len(k) for k in record), default=0)
    lines = []
    for key, value in record.items():
        shown = " ".join(map(str, value)) if isinstance(value, list) else value
        if isinstance(shown, bool):
            shown = "yes" if shown else "no"
        lines.append(f"{key + ':':<{width + 1}} {shown}")
    return "\n".join(lines)


def conversations(convs: list[dict[str, Any]], width: int | None = None) -> str:
    """`acpd ls`: one row per conversation; titles cut to fit `width` columns if given."""
    rows = [
        [c["id"], c["status"], str(c["queued"]), ago(c["updated_at"]), c["agent"], c["title"]]
        for c in convs
    ]
    headers = ["ID", "STATUS", "QUEUED", "UPDATED", "AGENT", "TITLE"]
    last = None
    if width is not None:
        used = sum(max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(headers[:-1]))
        last = width - used
    return table(headers, rows, last_width=last)


def conversation(result: dict[str, Any]) -> str:
    """`acpd show`."""
    conv = dict(result["conversation"])
    for key in ("created_at", "updated_at"):
        if isinstance(conv.get(key), str):
            conv[key] = f"{conv[key]} ({ago(conv[key])} ago)"
    return kv_lines(conv)


def queue(result: dict[str, Any]) -> str:
    """`acpd queue`: seq and first line of each pending message."""
    pending = result.get("pending") or []
    lines = [f"{m['seq']:>6}  {one_line(str(m['text']))}" for m in pending]
    return "\n".join(lines) or "(nothing queued)"


def status(result: dict[str, Any], socket_path: str) -> str:
    shown = dict(result)
    if isinstance(up := shown.get("uptime_s"), int | float):
        shown["uptime_s"] = f"{up:.0f}s"
    if "dashboard_url" in shown and not shown["dashboard_url"]:
        shown["dashboard_url"] = "off"  # `null`: the daemon runs without a dashboard
    shown["socket"] = socket_path
    return kv_lines(shown)


def agents(result: dict[str, Any]) -> str:
    import shlex

    rows = [
        [str(a.get("name")), shlex.join(map(str, a.get("command") or []))] for a in result["agents"]
    ]
    return table(["AGENT", "COMMAND"], rows)
