"""open_session against in-process fake agents: authentication, resume/load/new, MCP servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from daemon.agents.auth import AuthSettings
from daemon.agents.connection import AgentConnection, AgentStartError
from daemon.agents.launch import connect_agent
from daemon.agents.session import open_session
from protocol import acp
from protocol.jsonrpc import RpcFailure
from tests.fakes.agent import FakeAgent
from tests.fakes.client import RecordingClient
from tests.fakes.wiretap import tap_agent_connections
from tests.protocol._schema import assert_valid_traffic

CWD = "/work/project"
ENV_VAR_METHODS = [
    acp.AuthMethod(id="chatgpt", name="Login with ChatGPT"),
    acp.AuthMethod(
        id="openai-api-key", name="Use OPENAI_API_KEY", type="env_var",
        vars=[{"name": "OPENAI_API_KEY"}],
    ),
]  # fmt: skip
GEMINI_LIKE = [
    acp.AuthMethod(id="oauth-personal", name="Log in with Google"),
    acp.AuthMethod(id="gemini-api-key", name="Gemini API key"),
]
GEMINI_HINTS = AuthSettings(method_vars={"gemini-api-key": ("GEMINI_API_KEY",)})
MODES = acp.SessionModeState(
    current_mode_id="ask", available_modes=[acp.SessionMode(id="ask", name="Ask")]
)
OPTIONS = [{"id": "model", "name": "Model", "type": "select", "currentValue": "m1",
            "category": "model", "options": [{"value": "m1", "name": "M1"}]}]  # fmt: skip


def wire(value: object) -> Any:
    return msgspec.to_builtins(value)


@asynccontextmanager
async def connected(
    nursery: trio.Nursery, env: Mapping[str, str] | None = None, **fake: Any
) -> AsyncIterator[tuple[AgentConnection, FakeAgent]]:
    ours, theirs = trio.testing.memory_stream_pair()
    agent = FakeAgent(theirs, **fake)
    agent.start(nursery)
    client = RecordingClient()
    with trio.fail_after(100):
        async with connect_agent(
            ours,
            client.handlers(),
            name="fake",
            argv=("fake-agent", "--acp"),
            env=dict(env or {}),
        ) as conn:
            yield conn, agent


async def test_an_env_var_method_authenticates_before_the_first_session_call(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    env = {"OPENAI_API_KEY": "sk-test"}
    fake = {"auth_methods": ENV_VAR_METHODS, "auth_required": True}
    async with connected(nursery, env, **fake) as (conn, agent):
        opened = await open_session(conn, session_id=None, cwd=CWD)
    assert agent.methods == ["initialize", "authenticate", "session/new"]
    assert opened.auth_method == "openai-api-key"
    assert (opened.session_id, opened.how, opened.loaded, opened.why_not) == (
        "sess-1", "new", False, "",
    )  # fmt: skip


async def test_no_variables_and_auth_required_fails_at_once_naming_them(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake = {"auth_methods": ENV_VAR_METHODS[1:], "auth_required": True}
    async with connected(nursery, {}, **fake) as (conn, agent):
        with pytest.raises(AgentStartError) as caught:
            await open_session(conn, session_id=None, cwd=CWD)
    err = caught.value
    assert err.permanent
    assert str(err) == (
        "agent 'fake' requires authentication (Authentication required): "
        "set OPENAI_API_KEY (method openai-api-key)"
    )
    assert err.detail == "log in first"  # the agent's error data
    assert agent.methods == ["initialize", "session/new"]  # nothing to try: no retry


async def test_auth_required_on_load_authenticates_and_loads(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # gemini-cli: every method is ACP's `agent` type, and session/load answers -32000 until
    # `authenticate` (ACP.md §19). The preset's hint picks gemini-api-key from the variable.
    env = {"GEMINI_API_KEY": "k"}
    fake = {"auth_methods": GEMINI_LIKE, "auth_required": True, "modes": MODES}
    async with connected(nursery, env, **fake) as (conn, agent):
        opened = await open_session(conn, session_id="old", cwd=CWD, auth=GEMINI_HINTS)
    assert agent.methods == ["initialize", "authenticate", "session/load"]
    assert agent.authenticated == "gemini-api-key"
    assert (opened.session_id, opened.how, opened.loaded) == ("old", "load", True)
    assert opened.modes == MODES


async def test_an_undescribed_agent_method_is_tried_only_when_configured(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # Which one the user has set up cannot be known, and some open a browser (codex-acp's
    # chat-gpt): never tried on acpd's own initiative; the message says how to choose it.
    methods = [acp.AuthMethod(id="agent-login", name="Log in")]
    fake = {"auth_methods": methods, "auth_required": True}
    async with connected(nursery, {}, **fake) as (conn, agent):
        with pytest.raises(AgentStartError) as caught:
            await open_session(conn, session_id="old", cwd=CWD)
    assert agent.methods == ["initialize", "session/load"]
    assert caught.value.permanent
    assert str(caught.value).endswith(
        'choose a method with auth = "ID" under [agents.fake]: agent-login (Log in)'
    )
    async with connected(nursery, {}, **fake) as (conn, agent):
        opened = await open_session(
            conn, session_id="old", cwd=CWD, auth=AuthSettings(method="agent-login")
        )
    assert agent.methods == ["initialize", "authenticate", "session/load"]
    assert opened.loaded
    assert opened.auth_method == "agent-login"


async def test_auth_required_again_after_authenticating_once_more_is_permanent(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    env = {"OPENAI_API_KEY": "sk"}
    fake = {"auth_methods": ENV_VAR_METHODS, "auth_required": True, "auth_lost": 5}
    async with connected(nursery, env, **fake) as (conn, agent):
        with pytest.raises(AgentStartError) as caught:
            await open_session(conn, session_id=None, cwd=CWD)
    assert caught.value.permanent
    assert "did not accept method 'openai-api-key'" in str(caught.value)
    assert agent.methods == [
        "initialize", "authenticate", "session/new", "authenticate", "session/new",
    ]  # fmt: skip


async def test_a_login_that_holds_on_the_second_try_goes_on(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    env = {"OPENAI_API_KEY": "sk"}
    fake = {"auth_methods": ENV_VAR_METHODS, "auth_required": True, "auth_lost": 1}
    async with connected(nursery, env, **fake) as (conn, agent):
        opened = await open_session(conn, session_id=None, cwd=CWD)
    assert opened.session_id == "sess-1"
    assert agent.count("authenticate") == 2


async def test_a_terminal_login_is_permanent_and_names_the_command(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    methods = [acp.AuthMethod(id="login", name="Log in", type="terminal", args=["--login"])]
    fake = {"auth_methods": methods, "auth_required": True}
    async with connected(nursery, {}, **fake) as (conn, agent):
        with pytest.raises(AgentStartError) as caught:
            await open_session(conn, session_id=None, cwd=CWD)
    assert caught.value.permanent
    assert str(caught.value).endswith(
        "log in by running `fake-agent --acp --login` in a terminal (method login)"
    )
    assert agent.count("authenticate") == 0  # ACP: never for a terminal method


async def test_a_refused_authenticate_is_permanent(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    refusal = RpcFailure(-32603, "bad key", {"envVars": ["OPENAI_API_KEY"]})
    fake = {"auth_methods": ENV_VAR_METHODS, "auth_accepts": frozenset(), "auth_error": refusal}
    async with connected(nursery, {"OPENAI_API_KEY": "x"}, **fake) as (conn, _):
        with pytest.raises(AgentStartError) as caught:
            await open_session(conn, session_id=None, cwd=CWD)
    assert caught.value.permanent
    assert str(caught.value) == (
        "agent 'fake' refused authentication with method 'openai-api-key': bad key"
    )
    assert caught.value.detail == '{"envVars":["OPENAI_API_KEY"]}'


async def test_a_configured_method_is_authenticated_even_when_not_asked(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    async with connected(nursery, {}, auth_methods=GEMINI_LIKE) as (conn, agent):
        opened = await open_session(
            conn, session_id=None, cwd=CWD, auth=AuthSettings(method="oauth-personal")
        )
    assert agent.authenticated == "oauth-personal"
    assert opened.auth_method == "oauth-personal"


async def test_no_methods_no_auth(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    async with connected(nursery, {"OPENAI_API_KEY": "x"}) as (conn, agent):
        opened = await open_session(conn, session_id=None, cwd=CWD)
    assert agent.methods == ["initialize", "session/new"]
    assert opened.auth_method is None


async def test_resume_first_then_load_then_new_with_the_reason(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    fake: dict[str, Any] = {"resume": True, "config_options": OPTIONS}
    async with connected(nursery, **fake) as (conn, agent):
        opened = await open_session(conn, session_id="s0", cwd=CWD)
    assert agent.methods[1:] == ["session/resume"]
    assert (opened.how, opened.session_id, opened.config_options) == ("resume", "s0", OPTIONS)

    fake["resume_error"] = RpcFailure(-32603, "no such thread")
    async with connected(nursery, **fake) as (conn, agent):
        opened = await open_session(conn, session_id="s0", cwd=CWD)
    assert agent.methods[1:] == ["session/resume", "session/load"]
    assert opened.how == "load"

    fake["load_error"] = RpcFailure(-32603, "Internal error", {"details": "Session not found"})
    async with connected(nursery, **fake) as (conn, agent):
        opened = await open_session(conn, session_id="s0", cwd=CWD)
    assert agent.methods[1:] == ["session/resume", "session/load", "session/new"]
    assert (opened.how, opened.loaded, opened.session_id) == ("new", False, "sess-1")
    assert opened.why_not == "Internal error: Session not found"

    async with connected(nursery, load_session=False) as (conn, agent):
        opened = await open_session(conn, session_id="s0", cwd=CWD)
    assert opened.why_not == "the agent cannot resume or load sessions"


async def test_mcp_servers_go_on_every_set_up_call_gated_by_capabilities(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdio = acp.McpServerStdio(
        name="fs", command="mcp-fs", args=["/"], env=[acp.EnvVariable(name="A", value="1")]
    )
    http = acp.McpServerHttp(name="web", url="https://example.com/mcp")
    sse = acp.McpServerSse(name="old", url="https://example.com/sse")
    servers = [stdio, http, sse]
    taps = tap_agent_connections(monkeypatch)
    async with connected(nursery, resume=True, mcp_http=True) as (conn, agent):
        opened = await open_session(conn, session_id=None, cwd=CWD, mcp_servers=servers)
        await open_session(conn, session_id="s0", cwd=CWD, mcp_servers=servers)
        conn_resume = agent.params("session/resume")
    (new,) = agent.params("session/new")
    assert isinstance(new, acp.NewSessionRequest)
    assert wire(new.mcp_servers) == wire([stdio, http])
    assert opened.left_out == (
        "MCP server 'old' left out: agent 'fake' does not take sse MCP servers",
    )
    (resumed,) = conn_resume
    assert isinstance(resumed, acp.ResumeSessionRequest)
    assert wire(resumed.mcp_servers) == wire([stdio, http])
    async with connected(nursery, load_session=True) as (conn, agent):
        await open_session(conn, session_id="s0", cwd=CWD, mcp_servers=servers)
    (load,) = agent.params("session/load")
    assert isinstance(load, acp.LoadSessionRequest)
    assert wire(load.mcp_servers) == wire([stdio])  # http too is left out without the capability
    for tap in taps:
        assert_valid_traffic(bytes(tap.sent), bytes(tap.received))


async def test_everything_sent_while_authenticating_is_schema_valid(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    taps = tap_agent_connections(monkeypatch)
    fake = {"auth_methods": GEMINI_LIKE, "auth_required": True}
    async with connected(nursery, {"GEMINI_API_KEY": "k"}, **fake) as (conn, _):
        await open_session(conn, session_id="old", cwd=CWD, auth=GEMINI_HINTS)
    (tap,) = taps
    assert b'"method":"authenticate"' in tap.sent
    assert_valid_traffic(bytes(tap.sent), bytes(tap.received))


async def test_modes_and_options_are_set_at_the_agent(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    taps = tap_agent_connections(monkeypatch)
    modes = acp.SessionModeState(
        current_mode_id="ask",
        available_modes=[
            acp.SessionMode(id="ask", name="Ask"),
            acp.SessionMode(id="code", name="Code"),
        ],
    )
    options = [*OPTIONS, {"id": "web", "name": "Web", "type": "boolean", "currentValue": False}]
    async with connected(nursery, modes=modes, config_options=options) as (conn, agent):
        opened = await open_session(conn, session_id=None, cwd=CWD)
        await conn.set_mode(opened.session_id, "code")
        assert agent.modes is not None
        assert agent.modes.current_mode_id == "code"
        after = await conn.set_config_option(opened.session_id, "web", True)
        assert after[1]["currentValue"] is True
        after = await conn.set_config_option(opened.session_id, "model", "m1")
        assert after[0]["currentValue"] == "m1"
        with pytest.raises(RpcFailure) as caught:
            await conn.set_mode(opened.session_id, "nope")
        assert caught.value.code == -32602
    (web, model) = agent.params("session/set_config_option")
    assert isinstance(web, acp.SetSessionConfigOptionRequest)
    assert (web.config_id, web.value, web.type) == ("web", True, "boolean")
    assert isinstance(model, acp.SetSessionConfigOptionRequest)
    assert model.type is msgspec.UNSET
    (tap,) = taps
    assert assert_valid_traffic(bytes(tap.sent), bytes(tap.received))[1:] == [
        "session/new", "session/set_mode", "session/set_config_option",
        "session/set_config_option", "session/set_mode",
    ]  # fmt: skip
