"""Opening an agent's session: authentication, MCP servers, and resume, load or new.

`open_session` is what every (re)started agent goes through before its first prompt:
1. Authenticate (`auth.choose_method`) before the first session call, if a method is usable.
2. With a stored session id: `session/resume` when the agent advertises it (no replay), else
   or if that fails `session/load` (the agent replays the history, which the caller drops).
   Neither, or both failed: `session/new`, and the caller records that the agent has lost the
   conversation's context (`OpenedSession.loaded` False, `why_not` says why).
3. A session call answered -32000 (auth required): authenticate once more with the method
   chosen and repeat the call; -32000 again, or no method chosen, is permanent.

Authentication problems raise `AgentStartError(permanent=True)` whose one-line message says
what a person must do (variables to set, a login to run, a method to choose): retrying cannot
help until they act. MCP servers the agent cannot take (http or sse without its
`mcpCapabilities`) are left out and named in `OpenedSession.left_out`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import attrs

from daemon.agents.auth import AuthProblem, AuthSettings, choose_method, needs_message
from daemon.agents.connection import AgentConnection, AgentSpec, AgentStartError, SessionSetUp
from daemon.agents.detail import error_detail
from protocol import acp
from protocol.jsonrpc import AUTH_REQUIRED, RpcFailure

__all__ = ["AgentSettings", "OpenedSession", "agent_spec", "open_session", "usable_mcp_servers"]

T = TypeVar("T")


class AgentSettings(Protocol):
    """What a spec takes from an agent's config (`daemon.config.AgentConfig`)."""

    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def auth(self) -> str: ...
    @property
    def auth_vars(self) -> Mapping[str, tuple[str, ...]]: ...
    @property
    def mcp_servers(self) -> tuple[acp.McpServer, ...]: ...


def agent_spec(
    name: str,
    argv: Sequence[str],
    cwd: str,
    settings: AgentSettings | None,
    *,
    conversation: str = "",
    log_path: Path | None = None,
) -> AgentSpec:
    """The spec of agent `name` run as `argv` in `cwd`, with its config's environment,
    authentication and MCP servers (none for an agent without config, e.g. `--agent-cmd`)."""
    if settings is None:
        return AgentSpec(
            name=name, argv=tuple(argv), cwd=cwd, conversation=conversation, log_path=log_path
        )
    return AgentSpec(
        name=name,
        argv=tuple(argv),
        cwd=cwd,
        env=settings.env,
        conversation=conversation,
        auth=AuthSettings(method=settings.auth, method_vars=settings.auth_vars),
        mcp_servers=settings.mcp_servers,
        log_path=log_path,
    )


@attrs.frozen
class OpenedSession:
    session_id: str
    # How: "new", "resume" or "load"; `loaded`: the stored session came back (resume, load).
    how: str
    why_not: str  # a stored session was asked for and did not come back: the agent's reason
    # What the set-up answered (None: left out): the caller records them as the session's
    # state (`updates.setup_state`).
    modes: acp.SessionModeState | None
    config_options: acp.ConfigOptions | None
    auth_method: str | None  # the method `authenticate` succeeded with, if any
    left_out: tuple[str, ...] = ()  # one line per MCP server the agent cannot take

    @property
    def loaded(self) -> bool:
        return self.how != "new"


def usable_mcp_servers(
    conn: AgentConnection, servers: Sequence[acp.McpServer]
) -> tuple[list[acp.McpServer], list[str]]:
    """The servers this agent can take, and a note for each one it cannot (ACP.md §5: http
    and sse only if its `mcpCapabilities` say so; stdio always)."""
    caps = conn.init.agent_capabilities.mcp_capabilities
    usable: list[acp.McpServer] = []
    notes: list[str] = []
    for server in servers:
        kind = server.type if isinstance(server.type, str) else "stdio"
        if kind == "stdio" or (kind == "http" and caps.http) or (kind == "sse" and caps.sse):
            usable.append(server)
        else:
            notes.append(
                f"MCP server {server.name!r} left out: agent {conn.name!r} does not take "
                f"{kind} MCP servers"
            )
    return usable, notes


@attrs.define(eq=False)
class _Authenticator:
    conn: AgentConnection
    settings: AuthSettings
    method: acp.AuthMethod | None = None  # the one authenticated with
    retried: bool = False

    def _problem(self, message: str, *, detail: str = "") -> AgentStartError:
        return AgentStartError(message, permanent=True, detail=detail)

    async def start(self) -> None:
        conn = self.conn
        try:
            method = choose_method(
                conn.init.auth_methods, self.settings, conn.env, agent=conn.name, argv=conn.argv
            )
        except AuthProblem as exc:
            raise self._problem(str(exc)) from None
        if method is not None:
            await self._authenticate(method)

    async def _authenticate(self, method: acp.AuthMethod) -> None:
        try:
            await self.conn.authenticate(method.id)
        except RpcFailure as exc:
            raise self._problem(
                f"agent {self.conn.name!r} refused authentication with method {method.id!r}: "
                f"{exc.message}",
                detail=error_detail(exc),
            ) from None
        self.method = method

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()`, authenticating once more and repeating it if it answers auth required."""
        try:
            return await fn()
        except RpcFailure as exc:
            if exc.code != AUTH_REQUIRED:
                raise
            retry = self.method
            if self.retried or retry is None:
                raise self._demand(exc) from None
            self.retried = True
        await self._authenticate(retry)
        try:
            return await fn()
        except RpcFailure as exc:
            if exc.code == AUTH_REQUIRED:
                raise self._demand(exc) from None
            raise

    def _demand(self, exc: RpcFailure) -> AgentStartError:
        conn = self.conn
        message = needs_message(
            conn.init.auth_methods,
            self.settings,
            agent=conn.name,
            argv=conn.argv,
            tried=self.method.id if self.method is not None else None,
            said=exc.message,
        )
        return self._problem(message, detail=error_detail(exc))


async def open_session(
    conn: AgentConnection,
    *,
    session_id: str | None,
    cwd: str,
    mcp_servers: Sequence[acp.McpServer] = (),
    auth: AuthSettings | None = None,
) -> OpenedSession:
    """Authenticate and open a session: the stored one (`session_id`) if the agent can take it
    back, else a new one. See the module doc.

    Raises `AgentStartError(permanent=True)` when authentication needs a person,
    `RpcFailure` when `session/new` fails otherwise, `AgentExited` if the agent goes away.
    """
    authn = _Authenticator(conn, auth or AuthSettings())
    await authn.start()
    servers, left_out = usable_mcp_servers(conn, mcp_servers)
    why = ""
    if session_id is not None:
        ways: list[tuple[str, Callable[[], Awaitable[SessionSetUp]]]] = []
        if conn.can_resume:
            ways.append(("resume", lambda: conn.resume_session(session_id, cwd, servers)))
        if conn.can_load:
            ways.append(("load", lambda: conn.load_session(session_id, cwd, servers)))
        why = "the agent cannot resume or load sessions"
        for how, way in ways:
            try:
                resp = await authn.call(way)
            except RpcFailure as exc:
                detail = error_detail(exc)
                why = f"{exc.message}: {detail}" if detail else exc.message
                continue
            return OpenedSession(
                session_id=session_id,
                how=how,
                why_not="",
                modes=_modes(resp),
                config_options=_options(resp),
                auth_method=authn.method.id if authn.method is not None else None,
                left_out=tuple(left_out),
            )
    new = await authn.call(lambda: conn.new_session(cwd, servers))
    return OpenedSession(
        session_id=new.session_id,
        how="new",
        why_not=why,
        modes=_modes(new),
        config_options=_options(new),
        auth_method=authn.method.id if authn.method is not None else None,
        left_out=tuple(left_out),
    )


_SetUp = acp.NewSessionResponse | SessionSetUp


def _modes(resp: _SetUp) -> acp.SessionModeState | None:
    return resp.modes if isinstance(resp.modes, acp.SessionModeState) else None


def _options(resp: _SetUp) -> acp.ConfigOptions | None:
    return resp.config_options if isinstance(resp.config_options, list) else None
