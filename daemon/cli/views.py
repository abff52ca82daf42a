"""What one-shot commands print for people: tables, records, and the one line that says
what a command did. Streams are `render.py`'s. Standard library only, like the CLI.
"""

from __future__ import annotations

from daemon.cli.render import Style, one_line, permission_options, permission_request

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "agents",
    "ago",
    "answered",
    "conversation",
    "conversations",
    "kv_lines",
    "paused_until",
    "queue",
    "resumed",
    "sent",
    "size",
    "status",
    "steered",
    "table",
    "turns",
]


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


def conversations(
    convs: list[dict[str, Any]], width: int | None = None, style: Style | None = None
) -> str:
    """`acpd ls`: one row per conversation; titles cut to fit `width` columns if given. The
    ID column shows at least 8 characters of each id; with a terminal's `style`, the shortest
    unique prefix (`short_id`) is highlighted and the rest dimmed."""
    style = style or Style(False)
    shown = [_id_shown(c) for c in convs]
    id_width = max(len("ID"), *(len(full) for full, _ in shown))
    rows = [
        [full.ljust(id_width), _status(c), str(c["queued"]), ago(c["updated_at"]), c["agent"],
         c["title"]]
        for c, (full, _) in zip(convs, shown, strict=True)
    ]  # fmt: skip
    headers = ["ID", "STATUS", "QUEUED", "UPDATED", "AGENT", "TITLE"]
    last = None
    if width is not None:
        used = sum(max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(headers[:-1]))
        last = width - used
    lines = table(headers, rows, last_width=last).split("\n")
    if not style.enabled:
        return "\n".join(lines)
    for i, (full, short) in enumerate(shown, 1):  # styled after the widths are measured
        lines[i] = style.id_prefix(short) + style.dim(full[len(short) :]) + lines[i][len(full) :]
    return "\n".join(lines)


def _id_shown(conv: dict[str, Any]) -> tuple[str, str]:
    """(what the ID column shows, its unique prefix): at least 8 characters, as git shows 7."""
    full = str(conv["id"])
    short = str(conv.get("short_id") or full)
    return full[: max(8, len(short))], short


def _status(conv: dict[str, Any]) -> str:
    """`waiting #2` for the second in line for an agent slot; else the status as it is."""
    position = conv.get("slot_position")
    return f"{conv['status']} #{position}" if isinstance(position, int) else str(conv["status"])


def size(n: int) -> str:
    """Bytes for people: 512 B, 3.4 MiB, 1.2 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def conversation(result: dict[str, Any]) -> str:
    """`acpd show`: the details, what the agent session said (usage, mode, model...), then
    each open permission request with its options."""
    from daemon.cli import questions, sessionview

    conv = {k: v for k, v in result["conversation"].items() if v is not None}
    asking = conv.pop("permissions", None) or []
    asked = conv.pop("questions", None) or []
    state = sessionview.state_rows(conv)
    conv = sessionview.without_state(conv)
    for key in ("created_at", "updated_at"):
        if isinstance(conv.get(key), str):
            conv[key] = f"{conv[key]} ({ago(conv[key])} ago)"
    out = [kv_lines(conv | dict(state))]  # one column of values, the session's rows last
    short = conv.get("short_id") or conv.get("id")
    out += [permission_request(ev, Style(False), deadline=True) for ev in asking]
    if len(asking) == 1:
        out.append(f"answer with: acpd permit {short} OPTION (a number above, or --cancel)")
    elif asking:
        out.append(f"answer with: acpd permit {short} REQUEST OPTION (or --cancel)")
    for q in asked:
        request = "" if len(asked) == 1 else f" {q.get('request')}"
        how = f"answer with: acpd answer {short}{request} FIELD=VALUE... (or --decline, --cancel)"
        out += questions.question_lines(q, how)
    return "\n".join(out)


def queue(result: dict[str, Any]) -> str:
    """`acpd queue`: each pending message's number and first line."""
    pending = result.get("pending") or []
    lines = [f"{_number(m):>5}  {one_line(str(m['text']))}" for m in pending]
    return "\n".join(lines) or "(nothing queued)"


def _number(message: dict[str, Any]) -> str:
    """A message as people name it: `#3` (an older daemon gives only its seq)."""
    number = message.get("number")
    return f"#{number}" if isinstance(number, int) else f"seq {message.get('seq')}"


def turns(n: int) -> str:
    return f"{n} turn{'s' if n != 1 else ''}"


def paused_until(resume: str, send: str) -> str:
    """What is true of the queue after an interrupt (or a pause), in the dashboard's words too:
    a plain send resumes it, so it says so."""
    return (
        f"the queue is paused until {resume} or {send}; either way the queued messages run "
        "first, in order"
    )


def steered(result: dict[str, Any]) -> str:
    """What a `messages/send` with `steer` did, in one line."""
    number, queued = result.get("number"), int(result.get("queued") or 0)
    what = f"message {number}" if isinstance(number, int) else f"seq {result.get('seq')}"
    if result.get("steered"):
        return f"steered ({what} went into the running turn)"
    if queued:
        return f"sent ({what}, next in line: the agent did not take it into the running turn)"
    return f"sent ({what}, starts now: no turn was running to steer)"


def sent(result: dict[str, Any], conv_id: str, *, staged: bool) -> str:
    """What a `messages/send` did, in one line: `sent (message 3, starts now)`."""
    number, queued = result.get("number"), int(result.get("queued") or 0)
    what = f"message {number}" if isinstance(number, int) else f"seq {result.get('seq')}"
    if staged:
        # The queue is paused, so `queued` counts the turns that run before it once resumed
        # (a running turn included), and 0 does not mean "it starts now".
        ahead = f", behind {turns(queued)}" if queued else ""
        return (
            f"queued as {what}{ahead} (paused: `acpd resume {conv_id}` or the next "
            f"`acpd send {conv_id}` runs it)"
        )
    where = f"queued: {turns(queued)} ahead of it" if queued else "starts now"
    again = "; the queue runs again, in order" if result.get("resumed") else ""
    return f"sent ({what}, {where}){again}"


def resumed(result: dict[str, Any]) -> str:
    """What `conversations/resume` did."""
    queued = int(result.get("queued") or 0)
    waiting = f"{queued} queued" if queued else "nothing queued"
    if result.get("resumed", True):
        return f"resumed: {waiting}"
    return f"nothing to resume: the queue was not paused ({waiting})"


def answered(params: dict[str, Any], ev: dict[str, Any] | None) -> str:
    """What `permissions/respond` did."""
    if params.get("cancelled"):
        return f"answered {params['request']}: cancelled"
    option = str(params.get("option"))
    names = {o["option_id"]: o["name"] for o in permission_options(ev or {})}
    named = f" ({names[option]})" if option in names and names[option] != option else ""
    return f"answered {params['request']}: {option}{named}"


def status(result: dict[str, Any], socket_path: str) -> str:
    shown = dict(result)
    if isinstance(up := shown.get("uptime_s"), int | float):
        shown["uptime_s"] = f"{up:.0f}s"
    if "dashboard_url" in shown and not shown["dashboard_url"]:
        shown["dashboard_url"] = "off"  # `null`: the daemon runs without a dashboard
    if shown.get("storage_error") is None:
        shown.pop("storage_error", None)  # `storage: ok` says it all
    if isinstance(slots := shown.get("slots"), dict):
        parts = [f"{slots.get('used')} of {slots.get('max')} agent slots used"]
        if starting := slots.get("starting"):
            parts.append(f"{starting} starting (at most {slots.get('max_starting')} at once)")
        if starts_waiting := slots.get("starts_waiting"):
            parts.append(f"{starts_waiting} waiting to start")
        if waiting := slots.get("waiting"):
            parts.append(f"{waiting} conversation(s) waiting")
        shown["slots"] = ", ".join(parts)
    if isinstance(rss := shown.get("agents_rss"), int):
        shown["agents_rss"] = size(rss)
    if isinstance(counters := shown.get("counters"), dict):
        shown["counters"] = ", ".join(f"{k} {v}" for k, v in counters.items())
    if not shown.get("socket"):  # an older daemon, or a socket it cannot name
        shown["socket"] = socket_path
    return kv_lines(shown)


def agents(result: dict[str, Any]) -> str:
    import shlex

    rows = [
        [str(a.get("name")), shlex.join(map(str, a.get("command") or []))] for a in result["agents"]
    ]
    return table(["AGENT", "COMMAND"], rows)
