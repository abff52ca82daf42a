"""A conversation's ACP session across the agents it runs: which session a new agent takes
back, the spec each agent is launched with, and the session's set-up once one runs.

The agent slot (`slot.AgentSlot`) sets the session up inside its STARTING state: the agent
logs in, then the stored session is resumed or loaded when the agent can take it back, and a
new one is opened otherwise, visibly (for a restarted agent, `agent_restarted` says why the
previous one went away, `restart_reason`, and an error says if its context was lost). Then the
mode and options the conversation had are put back (choices.py). The supervisor reads the
session's id for its turns and for what the agent asks people.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import msgspec

from daemon.agents.connection import AgentConnection, AgentSpec
from daemon.agents.session import agent_spec, open_session
from daemon.config import Config
from daemon.engine import updates
from daemon.engine.choices import Choices, restore_choices
from daemon.engine.eventlog import EventLog
from protocol import acp
from protocol import events as ev
from store import ConversationRecord

__all__ = ["AgentSession"]

_mcp_servers = msgspec.json.Decoder(list[acp.McpServer])


@attrs.define(eq=False)
class AgentSession:
    conv_id: str
    _log: EventLog
    _config: Callable[[], Config]
    # The `agent_restarted` reason if a stored session is resumed: what the previous
    # supervisor of this conversation left ("daemon_restarted" if none did), then why this
    # one's last agent went away (the slot's).
    restart_reason: str = "daemon_restarted"
    session_id: str | None = None
    _log_path: Path | None = attrs.field(default=None, kw_only=True)  # its agents' stderr

    def spec(self, record: ConversationRecord) -> AgentSpec:
        spec = agent_spec(
            record.agent,
            record.agent_cmd,
            record.cwd,
            self._config().all_agents().get(record.agent),
            conversation=self.conv_id,
            log_path=self._log_path,
        )
        if record.mcp_servers is None:
            return spec
        own = _mcp_servers.decode(record.mcp_servers)  # the conversation's, after the agent's
        return attrs.evolve(spec, mcp_servers=(*spec.mcp_servers, *own))

    async def set_up(
        self, conn: AgentConnection, record: ConversationRecord, spec: AgentSpec
    ) -> None:
        """Log in, open the session (the stored one when the agent can take it back, visibly
        a new one otherwise), and put back the mode and options the conversation had."""
        had_session = self.session_id is not None
        before = Choices.remembered(await self._log.current())
        opened = await open_session(
            conn,
            session_id=self.session_id,
            cwd=record.cwd,
            mcp_servers=spec.mcp_servers,
            auth=spec.auth,
        )
        if opened.session_id != self.session_id:
            self.session_id = opened.session_id
            await self._log.set_acp_session(opened.session_id, record.cwd)
        reason = self.restart_reason or "restarted"
        items = updates.opened_events(opened, had_session=had_session, reason=reason)
        if had_session:
            self.restart_reason = ""
        items += await restore_choices(conn, opened, before)
        await self._log.append([(type_, ev.encode_body(body)) for type_, body in items])
