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
    "one_line",
    "permission_options",
    "permission_request",
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

    def id_prefix(self, text: str) -> str:
        """The part of an id that picks it out: bold and coloured, as git and jj show it."""
        return self._wrap("1;35", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)


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
        self._numbers: dict[object, int] = {}  # user messages seen: seq -> number

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
        number = ev.get("number")
        if isinstance(number, int):
            self._numbers[ev.get("seq")] = number
        if ev.get("seq") in self.own_seqs:
            return
        text = str(ev.get("text", "")).rstrip("\n").replace("\n", "\n  ")
        mark = self.style.dim(f"#{number} ") if isinstance(number, int) else ""
        steer = self.style.dim(" (steer)") if ev.get("steer") else ""
        self._line(mark + self.style.bold("> " + text) + steer)

    def _named(self, seq: object) -> str:
        number = self._numbers.get(seq)
        return f"message {number}" if number is not None else f"the message at seq {seq}"

    def _ev_user_message_steered(self, ev: dict[str, Any]) -> None:
        what = self._named(ev.get("message_seq"))
        self._line(self.style.dim(f"({what} went into the running turn)"))

    def _ev_user_message_edited(self, ev: dict[str, Any]) -> None:
        what = self._named(ev.get("message_seq"))
        self._line(self.style.dim(f"({what} edited: {one_line(str(ev.get('text', '')))})"))

    def _ev_user_message_removed(self, ev: dict[str, Any]) -> None:
        what = self._named(ev.get("message_seq"))
        self._line(self.style.dim(f"({what} removed from the queue)"))

    def _ev_queue_reordered(self, ev: dict[str, Any]) -> None:
        order = ev.get("order")
        seqs = order if isinstance(order, list) else []
        names = [f"#{self._numbers[s]}" if s in self._numbers else f"seq {s}" for s in seqs]
        self._line(self.style.dim(f"(queue reordered: {' '.join(names) or 'empty'})"))

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
        from daemon.cli.sessionview import tool_lines

        call_id = str(ev.get("tool_call_id", ""))
        title = str(ev.get("title") or self._tool_titles.get(call_id) or call_id)
        self._tool_titles[call_id] = title
        head, *body = tool_lines(ev, one_line(title))
        self._line(self.style.dim(f"  - {head}"))
        for line in body:  # output and diffs, indented under their tool
            if line.startswith("+") and not line.startswith("+++"):
                line = self.style.green(line)
            elif line.startswith("-") and not line.startswith("---"):
                line = self.style.red(line)
            self._line("    | " + line)

    def _ev_tool_call_update(self, ev: dict[str, Any]) -> None:
        self._ev_tool_call(ev)

    def _ev_usage(self, ev: dict[str, Any]) -> None:
        pass  # every turn reports it: `acpd show` has the latest

    def _ev_mode(self, ev: dict[str, Any]) -> None:
        self._line(self.style.dim(f"(mode: {ev.get('current', '?')})"))

    def _ev_title(self, ev: dict[str, Any]) -> None:
        if ev.get("title"):
            self._line(self.style.dim(f"(title: {one_line(str(ev['title']))})"))

    def _ev_commands(self, ev: dict[str, Any]) -> None:
        commands = ev.get("commands") or []
        names = [f"/{c.get('name')}" for c in commands if isinstance(c, dict)]
        shown = " ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")
        self._line(self.style.dim(f"(slash commands: {shown or 'none'})"))

    def _ev_config_options(self, ev: dict[str, Any]) -> None:
        from daemon.cli.sessionview import state_lines

        lines = state_lines({"config_options": ev.get("options")})
        if lines:
            self._line(self.style.dim("(" + "; ".join(" ".join(x.split()) for x in lines) + ")"))

    def _ev_elicitation_requested(self, ev: dict[str, Any]) -> None:
        from daemon.cli import questions

        how = f"answer with: acpd answer ID {ev.get('request')} FIELD=VALUE... (or --decline)"
        lines = questions.question_lines(ev, how)
        self._line(self.style.yellow(lines[0]))
        for line in lines[1:]:
            self._line(self.style.dim(line))

    def _ev_elicitation_resolved(self, ev: dict[str, Any]) -> None:
        by = f" by {ev['by']}" if ev.get("by") else ""
        self._line(self.style.dim(f"  - question {ev.get('request')}: {ev.get('action')}{by}"))

    def _ev_plan(self, ev: dict[str, Any]) -> None:
        entries = ev.get("entries") or []
        parts = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict):
                mark = _PLAN_MARK.get(str(entry.get("status")), "?")
                parts.append(f"[{mark}] {one_line(str(entry.get('content', '')), 40)}")
        self._line(self.style.dim("  - plan: " + one_line(" | ".join(parts) or "(empty)", 160)))

    def _ev_permission_requested(self, ev: dict[str, Any]) -> None:
        self._line(permission_request(ev, self.style))

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
        detail = ev.get("detail") or ev.get("stderr")
        for line in str(detail or "").splitlines()[-10:]:
            self._line(self.style.dim("    " + line))

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


def permission_request(ev: dict[str, Any], style: Style, *, deadline: bool = False) -> str:
    """A permission request (its event, or an open one from `conversations/get`) and its
    numbered options; with `deadline`, when the default answer is given."""
    title = ev.get("title") or "the agent asks for permission"
    until = f" (until {ev['deadline']})" if deadline and ev.get("deadline") else ""
    lines = [style.yellow(f"? permission {ev.get('request')}: {one_line(str(title))}{until}")]
    for n, opt in enumerate(permission_options(ev), 1):
        lines.append(f"    {n}) {opt['name']}  [{opt['option_id']}]")
    return "\n".join(lines)


def permission_options(ev: dict[str, Any]) -> list[dict[str, str]]:
    """A permission request's options as `{option_id, name, kind}`, malformed ones skipped."""
    out = []
    for opt in ev.get("options") or []:
        if isinstance(opt, dict) and isinstance(opt.get("option_id"), str):
            name = str(opt.get("name") or opt["option_id"])
            out.append({"option_id": opt["option_id"], "name": name, "kind": str(opt.get("kind"))})
    return out
