"""An agent's session updates as stored event bodies: tool calls whole, and the session's state.

Pure functions: no I/O, no trio; the recorder calls them from the agent's read loop (never for
text chunks, whose path does not come here).

Bounds. One stored event is one row and one line to every subscriber, so a tool call whose
content, diff or raw values are huge (a whole file rewritten, a build log) is cut to
`TOOL_BYTES`, visibly: long texts end with a note saying how much was left out, raw values and
binary blocks too big to cut are replaced by a string saying what they were, and the event says
`truncated: true`. The bound is 1 MiB, four message parts (`eventlog.SEGMENT_CHARS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs
import msgspec
from msgspec import UNSET

from daemon.agents.session import OpenedSession
from protocol import acp
from protocol import events as ev

__all__ = [
    "TOOL_BYTES",
    "merge_tool_updates",
    "opened_events",
    "setup_state",
    "state_event",
    "tool_call_body",
    "tool_update_body",
]

TOOL_BYTES: Final = 1024 * 1024
# What a cut text keeps at least, so even a tool call with thousands of items says something.
_MIN_KEEP: Final = 256

_encoder = msgspec.json.Encoder()
Body = ev._Body
_T = TypeVar("_T", ev.ToolCallEvent, ev.ToolCallUpdateEvent)


def tool_call_body(update: acp.ToolCall, prompt_seq: int) -> ev.ToolCallEvent:
    status = update.status if isinstance(update.status, str) else "pending"
    fields = _fields(update, prompt_seq)
    return _bounded(ev.ToolCallEvent(title=update.title, status=status, **fields))


def tool_update_body(update: acp.ToolCallFields, prompt_seq: int) -> ev.ToolCallUpdateEvent:
    fields = _fields(update, prompt_seq)
    return _bounded(
        ev.ToolCallUpdateEvent(title=_str(update.title), status=_str(update.status), **fields)
    )


def _fields(update: acp.ToolCall | acp.ToolCallFields, prompt_seq: int) -> dict[str, Any]:
    """What a tool call and its update have in common, as event fields."""
    return {
        "tool_call_id": update.tool_call_id,
        "prompt_seq": prompt_seq,
        "kind": _str(update.kind),
        "content": _items(update.content),
        "locations": _locations(update.locations),
        "raw_input": update.raw_input,
        "raw_output": update.raw_output,
    }


def merge_tool_updates(
    first: ev.ToolCallUpdateEvent, then: ev.ToolCallUpdateEvent
) -> ev.ToolCallUpdateEvent:
    """Two updates of one tool call as one: `then`'s present fields win (ACP's patch
    semantics, `content` and `locations` replaced whole). Both are already bounded, and the
    result holds at most one of each field: bounded again only if the two together are over."""
    fields: dict[str, Any] = {}
    for name in ("title", "status", "kind", "content", "locations"):
        value = getattr(then, name)
        fields[name] = value if value is not UNSET else getattr(first, name)
    for name in ("raw_input", "raw_output"):
        value = getattr(then, name)
        fields[name] = value if value else getattr(first, name)
    merged = msgspec.structs.replace(then, **fields, truncated=first.truncated or then.truncated)
    return _bounded(merged)


def state_event(update: acp.SessionUpdate) -> tuple[str, Body] | None:
    """The `usage`, `commands`, `mode`, `config_options` or `title` event for a session-state
    update; None for any other update (and for a `session_info_update` without a title)."""
    if isinstance(update, acp.UsageUpdate):
        cost = update.cost
        return "usage", ev.UsageEvent(
            used=update.used,
            size=update.size,
            cost=ev.CostView(amount=cost.amount, currency=cost.currency)
            if isinstance(cost, acp.Cost)
            else UNSET,
        )
    if isinstance(update, acp.AvailableCommandsUpdate):
        commands = [
            ev.CommandView(
                name=c.name,
                description=c.description,
                input_hint=c.input.hint
                if isinstance(c.input, acp.AvailableCommandInput)
                else UNSET,
            )
            for c in update.available_commands
        ]
        return "commands", ev.CommandsEvent(commands=commands)
    if isinstance(update, acp.CurrentModeUpdate):
        return "mode", ev.ModeEvent(current=update.mode)
    if isinstance(update, acp.ConfigOptionUpdate):
        return "config_options", ev.ConfigOptionsEvent(options=update.config_options)
    if isinstance(update, acp.SessionInfoUpdate) and update.title is not UNSET:
        return "title", ev.TitleEvent(title=update.title)
    return None


def setup_state(
    modes: acp.SessionModeState | None, config_options: acp.ConfigOptions | None
) -> list[tuple[str, Body]]:
    """The `mode` (with the modes available) and `config_options` events for what a session
    set-up (`session/new`, `load`, `resume`) answered; nothing for what it left out."""
    out: list[tuple[str, Body]] = []
    if modes is not None:
        available = [
            ev.ModeView(id=m.id, name=m.name, description=_str(m.description))
            for m in modes.available_modes
        ]
        out.append(("mode", ev.ModeEvent(current=modes.current_mode_id, available=available)))
    if config_options is not None:
        out.append(("config_options", ev.ConfigOptionsEvent(options=config_options)))
    return out


def opened_events(
    opened: OpenedSession, *, had_session: bool, reason: str
) -> list[tuple[str, Body]]:
    """What an agent's session set-up records, in order: a note for each MCP server left out;
    for a restarted agent (`had_session`), a visible note if its session did not come back (the
    agent lost the conversation's context) and `agent_restarted`; then the session's modes and
    config options as it answered them."""
    out: list[tuple[str, Body]] = [("error", ev.ErrorEvent(message=n)) for n in opened.left_out]
    if had_session:
        if not opened.loaded:
            note = (
                f"could not resume the agent's session ({opened.why_not}); started a new "
                "one: the agent has lost this conversation's context"
            )
            out.append(("error", ev.ErrorEvent(message=note)))
        out.append(
            ("agent_restarted", ev.AgentRestarted(reason=reason, session_loaded=opened.loaded))
        )
    return out + setup_state(opened.modes, opened.config_options)


# --- conversion -----------------------------------------------------------------------------


def _str(value: str | None | msgspec.UnsetType) -> str | msgspec.UnsetType:
    return value if isinstance(value, str) else UNSET


def _items(
    content: list[acp.ToolCallContent] | None | msgspec.UnsetType,
) -> list[ev.ToolItem] | msgspec.UnsetType:
    if content is UNSET:
        return UNSET
    out: list[ev.ToolItem] = []
    for item in content or ():
        if isinstance(item, acp.Diff):
            out.append(
                ev.ToolDiffItem(path=item.path, new_text=item.new_text, old_text=item.old_text)
            )
        elif isinstance(item, acp.Terminal):
            out.append(ev.ToolTerminalItem(terminal_id=item.terminal_id))
        else:
            out.append(ev.ToolContentItem(content=msgspec.to_builtins(item.content)))
    return out


def _locations(
    locations: list[acp.ToolCallLocation] | None | msgspec.UnsetType,
) -> list[ev.ToolLocation] | msgspec.UnsetType:
    if locations is UNSET:
        return UNSET
    return [ev.ToolLocation(path=loc.path, line=loc.line) for loc in locations or ()]


# --- the bound --------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Slot:
    """One value that may be cut: its encoded size and how to put back a smaller one."""

    size: int  # bytes, as encoded
    cut: Callable[[float], None]  # keep about this fraction of it (too little: a note instead)


def _bounded(body: _T) -> _T:
    size = len(_encoder.encode(body))
    if size <= TOOL_BYTES:
        return body  # nearly always: one encode, nothing copied
    budget = TOOL_BYTES - TOOL_BYTES // 16  # room for the notes
    for _ in range(8):  # always cut from the original, tighter each time, until it fits
        shrunk = _shrink(body, size, budget)
        if len(_encoder.encode(shrunk)) <= TOOL_BYTES:
            return shrunk
        budget = budget * 3 // 4
    return shrunk


def _shrink(body: _T, size: int, budget: int) -> _T:
    content = [_mutable(item) for item in body.content] if body.content is not UNSET else None
    raws: dict[str, msgspec.Raw | str] = {
        "raw_input": body.raw_input,
        "raw_output": body.raw_output,
    }
    slots: list[_Slot] = []
    for item in content or ():
        slots.extend(_item_slots(item))
    for name, raw in raws.items():
        if raw:
            slots.append(_Slot(len(raw), _raw_cutter(raws, name)))
    if not slots:
        return body
    fixed = max(0, size - sum(s.size for s in slots))
    for slot, keep in zip(slots, _shares([s.size for s in slots], budget - fixed), strict=True):
        if keep < slot.size:
            slot.cut(keep / slot.size)
    new_content: Any = UNSET
    if content is not None:
        new_content = [msgspec.convert(item, ev.ToolItem) for item in content]
    new_raws = {
        name: value if isinstance(value, msgspec.Raw) else msgspec.Raw(_encoder.encode(value))
        for name, value in raws.items()
    }
    return msgspec.structs.replace(body, content=new_content, truncated=True, **new_raws)


def _shares(sizes: list[int], budget: int) -> list[int]:
    """Water-filling: small values are kept whole, the big ones share what is left equally."""
    budget = max(budget, _MIN_KEEP * len(sizes))
    keep = [0] * len(sizes)
    left = sorted(range(len(sizes)), key=lambda i: sizes[i])
    remaining = budget
    while left:
        share = remaining // len(left)
        i = left[0]
        if sizes[i] <= share:
            keep[i] = sizes[i]
            remaining -= sizes[i]
            left.pop(0)
        else:
            for j in left:
                keep[j] = share
            break
    return keep


def _mutable(item: ev.ToolItem) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(item)
    return out


def _item_slots(item: dict[str, Any]) -> list[_Slot]:
    if item.get("type") == "diff":
        return [
            _Slot(_size(item[key]), _text_cutter(item, key))
            for key in ("old_text", "new_text")
            if isinstance(item.get(key), str)
        ]
    if item.get("type") != "content":
        return []
    block = item.get("content")
    if not isinstance(block, dict):
        return []
    if isinstance(block.get("text"), str):
        return [_Slot(_size(block["text"]), _text_cutter(block, "text"))]
    resource = block.get("resource")
    if isinstance(resource, dict) and isinstance(resource.get("text"), str):
        return [_Slot(_size(resource["text"]), _text_cutter(resource, "text"))]
    # Binary (image, audio, blob): cannot be cut, only left out, with a note in its place.
    data = block.get("data") or (resource.get("blob") if isinstance(resource, dict) else None)
    if isinstance(data, str):
        return [_Slot(_size(data), _block_dropper(item, block))]
    return []


def _size(text: str) -> int:
    return len(_encoder.encode(text))


def _text_cutter(holder: dict[str, Any], key: str) -> Callable[[float], None]:
    def cut(fraction: float) -> None:
        text: str = holder[key]
        keep = max(int(len(text) * fraction), _MIN_KEEP)
        if keep < len(text):
            holder[key] = text[:keep] + f"\n… [{len(text) - keep} more characters not stored]"

    return cut


def _block_dropper(item: dict[str, Any], block: dict[str, Any]) -> Callable[[float], None]:
    def cut(fraction: float) -> None:
        what = block.get("type", "content")
        size = len(block.get("data") or block.get("resource", {}).get("blob") or "")
        item["content"] = {"type": "text", "text": f"[{what} of {size} characters not stored]"}

    return cut


def _raw_cutter(raws: dict[str, msgspec.Raw | str], name: str) -> Callable[[float], None]:
    def cut(fraction: float) -> None:
        # JSON cannot be cut and stay JSON: the value becomes a string saying what it was.
        raws[name] = f"[{name} of {len(raws[name])} bytes not stored]"

    return cut
