"""The ACP requests a client sends within a session, over an agent's peer.

A mixin of `AgentConnection` (its `peer`), apart from the process and lifecycle code so each
module stays one concern: session set-up (`authenticate`, `session/new`, `load`, `resume`),
the user's choices (`set_mode`, `set_config_option`), turns (`prompt`, `cancel`, and `steer`
for an agent that advertised it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from daemon.agents.peer import AgentPeer
from protocol import acp

__all__ = ["SessionRequests", "SessionSetUp"]

# What `session/load` and `session/resume` answer (the same members: modes, config options).
SessionSetUp = acp.LoadSessionResponse | acp.ResumeSessionResponse


class SessionRequests:
    peer: AgentPeer

    async def authenticate(self, method_id: str) -> None:
        params = acp.AuthenticateRequest(method_id=method_id)
        await self.peer.request(acp.AUTHENTICATE, params, acp.EmptyResult)

    async def new_session(
        self, cwd: str, mcp_servers: Sequence[acp.McpServer] = ()
    ) -> acp.NewSessionResponse:
        params = acp.NewSessionRequest(cwd=cwd, mcp_servers=list(mcp_servers))
        return await self.peer.request(acp.SESSION_NEW, params, acp.NewSessionResponse)

    async def load_session(
        self, session_id: str, cwd: str, mcp_servers: Sequence[acp.McpServer] = ()
    ) -> SessionSetUp:
        """The agent replays the history as updates before it answers (ACP.md §6)."""
        params = acp.LoadSessionRequest(
            session_id=session_id, cwd=cwd, mcp_servers=list(mcp_servers)
        )
        return await self.peer.request(acp.SESSION_LOAD, params, acp.LoadSessionResponse)

    async def resume_session(
        self, session_id: str, cwd: str, mcp_servers: Sequence[acp.McpServer] = ()
    ) -> SessionSetUp:
        params = acp.ResumeSessionRequest(
            session_id=session_id, cwd=cwd, mcp_servers=list(mcp_servers)
        )
        return await self.peer.request(acp.SESSION_RESUME, params, acp.ResumeSessionResponse)

    async def set_mode(self, session_id: str, mode_id: str) -> None:
        """`session/set_mode` (only for an agent whose set-up listed `modes`)."""
        params = acp.SetSessionModeRequest(session_id=session_id, mode_id=mode_id)
        await self.peer.request(acp.SESSION_SET_MODE, params, acp.EmptyResult)

    async def set_config_option(
        self, session_id: str, config_id: str, value: bool | str
    ) -> acp.ConfigOptions:
        """`session/set_config_option`; returns the agent's complete options after it (a
        boolean value is sent with `type: "boolean"`, ACP.md §14)."""
        if isinstance(value, bool):
            params = acp.SetSessionConfigOptionRequest.boolean(session_id, config_id, value)
        else:
            params = acp.SetSessionConfigOptionRequest(
                session_id=session_id, config_id=config_id, value=value
            )
        resp = await self.peer.request(
            acp.SESSION_SET_CONFIG_OPTION, params, acp.SetSessionConfigOptionResponse
        )
        return resp.config_options

    async def prompt(
        self,
        session_id: str,
        text: str,
        *,
        on_answer: Callable[[], None] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> acp.PromptResponse:
        """`session/prompt`; `on_answer()` runs in the read loop as the reply arrives, before
        any update read after it (which, by ACP, no longer belongs to this turn); `on_sent()`
        once the request is written (a steer written later reaches a running turn)."""
        params = acp.PromptRequest(session_id=session_id, prompt=[acp.TextContent(text=text)])
        return await self.peer.request(
            acp.SESSION_PROMPT, params, acp.PromptResponse, on_answer=on_answer, on_sent=on_sent
        )

    async def steer(self, session_id: str, text: str) -> acp.SteeringResponse:
        """`_session/steering`: `text` into the running turn, if the agent takes it (any
        `outcome` but `promptRequired`: then never send it again). Only for an agent that
        advertised it (`AgentConnection.can_steer`). RpcFailure or AgentExited: taken as not
        taken (the text is the caller's to send again)."""
        params = acp.SteeringRequest(
            session_id=session_id,
            prompt=[acp.TextContent(text=text)],
            meta=acp.STEERING_PROMPT_REQUIRED,
        )
        # Given up on (no answer in time), it is withdrawn: an agent that honours
        # `$/cancel_request` does not take it after all.
        return await self.peer.request(
            acp.SESSION_STEERING, params, acp.SteeringResponse, withdraw=True
        )

    async def cancel(self, session_id: str) -> None:
        """`session/cancel`: a notification; the prompt's own reply ends the turn."""
        await self.peer.notify(acp.SESSION_CANCEL, acp.CancelNotification(session_id=session_id))
