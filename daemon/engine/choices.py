"""The session's mode and config options as people (or the agent) last left them, put back
on a new or resumed session.

A new session, and often a resumed one, starts in the agent's defaults. The store holds the
conversation's last known mode and options (folded from `mode` and `config_options` events);
right after an agent's session is set up (still in the slot's STARTING state) the ones that
differ from what the session answered are set again, so every new or restarted agent is put
back in the state the user chose. A choice the agent no longer offers is left alone, said in
an `error` event; so is one the agent refuses.
"""

from __future__ import annotations

from typing import Any

import attrs
import msgspec

from daemon.agents.connection import AgentConnection
from daemon.agents.session import OpenedSession
from protocol import acp
from protocol import events as ev
from protocol.jsonrpc import RpcFailure
from store import ConversationRecord

__all__ = ["Choices", "restore_choices"]


@attrs.frozen
class Choices:
    """What to set again: a mode, and config option values by id (in the agent's order)."""

    mode: str | None = None
    options: tuple[tuple[str, str | bool], ...] = ()

    @classmethod
    def remembered(cls, record: ConversationRecord | None) -> Choices:
        """The last known mode and option values of a conversation's row."""
        if record is None:
            return cls()
        mode = None
        if record.modes is not None:
            current = msgspec.json.decode(record.modes).get("current")
            mode = current if isinstance(current, str) else None
        options: list[tuple[str, str | bool]] = []
        if record.config_options is not None:
            parsed: list[dict[str, Any]] = msgspec.json.decode(record.config_options)
            for option in acp.parse_config_options(parsed):
                options.append((option.id, option.current_value))
        return cls(mode, tuple(options))

    def differing(self, opened: OpenedSession) -> tuple[Choices, list[str]]:
        """The choices `opened` does not have yet and can have, and a note for each one it
        cannot (the agent no longer lists that mode or option)."""
        mode, gone = None, []
        if self.mode is not None and opened.modes is not None:
            offered = {m.id for m in opened.modes.available_modes}
            if self.mode in offered:
                mode = self.mode if self.mode != opened.modes.current_mode_id else None
            else:
                gone.append(f"mode {self.mode!r}")
        options: list[tuple[str, str | bool]] = []
        if opened.config_options is not None and self.options:
            now = {o.id: o.current_value for o in acp.parse_config_options(opened.config_options)}
            options = [(k, v) for k, v in self.options if k in now and now[k] != v]
            gone += [f"option {k!r}" for k, _ in self.options if k not in now]
        return Choices(mode, tuple(options)), gone


async def restore_choices(
    conn: AgentConnection, opened: OpenedSession, before: Choices
) -> list[tuple[str, ev._Body]]:
    """Set on the session what it lacks of `before`; the events that record the outcome (the
    new state, or an error naming what could not be put back)."""
    choices, gone = before.differing(opened)
    session_id = opened.session_id
    out: list[tuple[str, ev._Body]] = []
    for what in gone:
        note = f"the agent's {what} is not offered after its restart; it was left out"
        out.append(("error", ev.ErrorEvent(message=note)))
    if choices.mode is not None:
        try:
            await conn.set_mode(session_id, choices.mode)
        except RpcFailure as exc:
            out.append(_not_restored(f"mode {choices.mode!r}", exc))
        else:
            out.append(("mode", ev.ModeEvent(current=choices.mode)))
    options: acp.ConfigOptions | None = None
    for option_id, value in choices.options:
        try:
            options = await conn.set_config_option(session_id, option_id, value)
        except RpcFailure as exc:
            out.append(_not_restored(f"option {option_id} = {value!r}", exc))
    if options is not None:
        out.append(("config_options", ev.ConfigOptionsEvent(options=options)))
    return out


def _not_restored(what: str, exc: RpcFailure) -> tuple[str, ev._Body]:
    message = f"could not set the agent's {what} again after its restart: {exc.message}"
    return "error", ev.ErrorEvent(message=message)
