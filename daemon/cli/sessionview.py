"""What the agent session says, for people: usage, mode, model, options, commands, tool calls.

Rendering only (standard library; no trio, no msgspec), from the plain JSON the daemon returns:
a conversation's state (`conversations/get`) for `acpd show`, `mode`, `option` and `commands`,
and tool call events for `follow` and `chat`, where a diff is shown as a short unified diff
("+N more lines" beyond that) and tool output as its first lines.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DIFF_LINES",
    "OUTPUT_LINES",
    "commands_table",
    "diff_lines",
    "modes_table",
    "options_table",
    "state_lines",
    "state_rows",
    "tool_lines",
]

DIFF_LINES = 12  # changed lines of one diff shown in a stream
OUTPUT_LINES = 6  # lines of a tool's text output shown in a stream
_STATE_KEYS = ("modes", "config_options", "commands", "usage", "agent_log")


# --- the session's state ----------------------------------------------------------------------


def _num(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def usage_text(usage: object) -> str | None:
    """`12,345 of 200,000 tokens (6%), 0.25 USD` from `{used?, size?, cost?}`."""
    if not isinstance(usage, dict):
        return None
    used, size, cost = usage.get("used"), usage.get("size"), usage.get("cost")
    parts = []
    if isinstance(used, int) and isinstance(size, int) and size > 0:
        parts.append(f"{_num(used)} of {_num(size)} tokens ({used * 100 // size}%)")
    elif isinstance(used, int):
        parts.append(f"{_num(used)} tokens")
    if isinstance(cost, dict) and isinstance(cost.get("amount"), int | float):
        parts.append(f"{cost['amount']:.2f} {cost.get('currency') or ''}".rstrip())
    return ", ".join(parts) or None


def _named(value: object, names: dict[str, str]) -> str:
    name = names.get(str(value))
    return f"{name} ({value})" if name and name != value else str(value)


def mode_text(modes: object) -> str | None:
    if not isinstance(modes, dict) or not isinstance(modes.get("current"), str):
        return None
    names = {m["id"]: str(m.get("name") or m["id"]) for m in _modes(modes)}
    return _named(modes["current"], names)


def _modes(modes: dict[str, Any]) -> list[dict[str, Any]]:
    available = modes.get("available")
    return [m for m in available or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _options(conv: dict[str, Any]) -> list[dict[str, Any]]:
    options = conv.get("config_options")
    if not isinstance(options, list):
        return []
    return [o for o in options if isinstance(o, dict) and isinstance(o.get("id"), str)]


def _choices(option: dict[str, Any]) -> list[dict[str, Any]]:
    """A select's values, groups flattened: `[{value, name}]`."""
    out = []
    for entry in option.get("options") or []:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("value"), str):
            out.append(entry)
        for sub in entry.get("options") or []:
            if isinstance(sub, dict) and isinstance(sub.get("value"), str):
                out.append(sub)
    return out


def option_value_text(option: dict[str, Any]) -> str:
    value = option.get("currentValue")
    if isinstance(value, bool):
        return "on" if value else "off"
    names = {c["value"]: str(c.get("name") or c["value"]) for c in _choices(option)}
    return _named(value, names)


def state_lines(conv: dict[str, Any]) -> list[str]:
    """`state_rows` as `key: value` lines, keys aligned among themselves."""
    rows = state_rows(conv)
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{k + ':':<{width + 1}} {v}" for k, v in rows]


def state_rows(conv: dict[str, Any]) -> list[tuple[str, str]]:
    """`acpd show`'s rows for the session: usage, mode, model, other options, commands, the
    agent log. What the agent has not said yet is left out."""
    rows: list[tuple[str, str]] = []
    if text := usage_text(conv.get("usage")):
        rows.append(("usage", text))
    if text := mode_text(conv.get("modes")):
        rows.append(("mode", text))
    options = _options(conv)
    for option in options:
        if option.get("category") == "model":
            rows.append(("model", option_value_text(option)))
    others = [o for o in options if o.get("category") != "model"]
    if others:
        shown = ", ".join(f"{o['id']}={option_value_text(o)}" for o in others)
        rows.append(("options", shown))
    commands = conv.get("commands")
    if isinstance(commands, list) and commands:
        names = " ".join("/" + str(c.get("name")) for c in commands[:8] if isinstance(c, dict))
        more = f" (+{len(commands) - 8} more)" if len(commands) > 8 else ""
        rows.append(("commands", names + more))
    if isinstance(conv.get("agent_log"), str):
        import os.path

        log = conv["agent_log"]
        rows.append(("agent_log", log if os.path.exists(log) else f"{log} (nothing yet)"))
    return rows


def without_state(conv: dict[str, Any]) -> dict[str, Any]:
    """The conversation minus what `state_lines` shows (the rest is plain `key: value`)."""
    return {k: v for k, v in conv.items() if k not in _STATE_KEYS}


def commands_table(conv: dict[str, Any]) -> str:
    commands = conv.get("commands")
    if not isinstance(commands, list) or not commands:
        return "(the agent has not offered any slash commands yet)"
    lines = []
    for c in commands:
        if not isinstance(c, dict):
            continue
        hint = f" <{c['input_hint']}>" if c.get("input_hint") else ""
        lines.append((f"/{c.get('name')}{hint}", str(c.get("description") or "")))
    width = max(len(a) for a, _ in lines)
    return "\n".join(f"{a:<{width}}  {b}".rstrip() for a, b in lines)


def modes_table(conv: dict[str, Any]) -> str:
    modes = conv.get("modes")
    if not isinstance(modes, dict):
        return "(the agent has not said which modes it has yet)"
    available = _modes(modes)
    current = modes.get("current")
    if not available:
        return f"* {current}"
    lines = []
    for m in available:
        mark = "*" if m["id"] == current else " "
        desc = f"  {m['description']}" if m.get("description") else ""
        lines.append(f"{mark} {m['id']}  {m.get('name') or ''}{desc}".rstrip())
    return "\n".join(lines)


def options_table(conv: dict[str, Any]) -> str:
    options = _options(conv)
    if not options:
        return "(the agent has not offered any options yet)"
    lines = []
    for o in options:
        kind = o.get("type")
        choices = "on, off" if kind == "boolean" else ", ".join(c["value"] for c in _choices(o))
        lines.append(f"{o['id']} = {option_value_text(o)}   ({o.get('name') or o['id']})")
        if choices:
            lines.append(f"    choices: {choices}")
    return "\n".join(lines)


def option_value(conv: dict[str, Any], key: str, value: str) -> tuple[str, object]:
    """The option id and value to send for `acpd option ID KEY VALUE`: a boolean option takes
    on/off/true/false, a select its value or a choice's name. Raises ValueError for a value
    the agent did not offer; unknown options go as they are (the agent decides)."""
    option = next((o for o in _options(conv) if o["id"] == key), None)
    if option is None:
        return key, value
    if option.get("type") == "boolean":
        words = {"on": True, "true": True, "yes": True, "off": False, "false": False, "no": False}
        if value.lower() not in words:
            raise ValueError(f"{key} is on or off, not {value!r}")
        return key, words[value.lower()]
    choices = _choices(option)
    if not choices or any(c["value"] == value for c in choices):
        return key, value
    by_name = [c["value"] for c in choices if str(c.get("name", "")).lower() == value.lower()]
    if len(by_name) == 1:
        return key, by_name[0]
    offered = ", ".join(c["value"] for c in choices)
    raise ValueError(f"{key} has no choice {value!r} (choices: {offered})")


# --- tool calls in a stream -------------------------------------------------------------------


def diff_lines(path: str, old: str | None, new: str, limit: int = DIFF_LINES) -> list[str]:
    """A compact unified diff: no headers, context of one line, at most `limit` changed or
    context lines, then how many more."""
    import difflib

    before = (old or "").splitlines()
    after = new.splitlines()
    if old is None:
        body = [f"+{line}" for line in after]
        head = f"{path} (new file, {len(after)} lines)"
    else:
        body = [
            line
            for line in difflib.unified_diff(before, after, lineterm="", n=1)
            if not line.startswith(("---", "+++"))
        ]
        added = sum(1 for line in body if line.startswith("+"))
        removed = sum(1 for line in body if line.startswith("-"))
        head = f"{path} (+{added} -{removed})"
    shown = body[:limit]
    if len(body) > limit:
        shown.append(f"… +{len(body) - limit} more lines")
    return [head, *shown]


def _text_lines(text: str, limit: int = OUTPUT_LINES) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > limit:
        return [*lines[:limit], f"… +{len(lines) - limit} more lines"]
    return lines


def content_lines(items: object) -> list[str]:
    """A tool call's content items: text output, diffs, terminals."""
    out: list[str] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "diff" and isinstance(item.get("new_text"), str):
            old = item.get("old_text")
            out += diff_lines(str(item.get("path")), old if isinstance(old, str) else None,
                              item["new_text"])  # fmt: skip
        elif kind == "terminal":
            out.append(f"[terminal {item.get('terminal_id')}]")
        elif kind == "content":
            block = item.get("content")
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                out += _text_lines(block["text"])
            elif isinstance(block, dict):
                out.append(f"[{block.get('type', 'content')}]")
    return out


def tool_lines(ev: dict[str, Any], title: str) -> list[str]:
    """A `tool_call` or `tool_call_update` event: a head line (title, kind, status, where),
    then its content. An update without content or news shows nothing but the head."""
    status = ev.get("status")
    kind = f" ({ev['kind']})" if ev.get("kind") else ""
    where = ""
    locations = ev.get("locations")
    if isinstance(locations, list) and locations and isinstance(locations[0], dict):
        first = locations[0]
        where = f" {first.get('path')}" + (f":{first['line']}" if first.get("line") else "")
        if len(locations) > 1:
            where += f" (+{len(locations) - 1})"
    state = f" [{status}]" if status else ""
    head = f"tool: {title}{kind}{where}{state}"
    if ev.get("truncated"):
        head += " (too large: stored cut)"
    return [head, *content_lines(ev.get("content"))]
