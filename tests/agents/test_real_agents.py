"""codex-acp and gemini-cli, the real packages, through acpd's session set-up (`open_session`).

Offline, with a fake key: each starts with only its API-key variable set, the way acpd's presets
run it (`Config().all_agents()`: the preset's `auth_vars` pick the method). gemini-cli also
finishes a turn against a stand-in Gemini API on localhost (`tests/fakes/gemini_api.py`), so it
has a session to keep, and takes it back after a restart (`session/load` after `authenticate`).

Versions pinned as ACP.md §19 lists them; npm installs each once into the tests' cache
(`tests/fakes/npm.py`: ~20 s on a cold npm cache, nothing later). Skipped, with the reason,
without node/npm or a registry; required where `CI=1` or `ACPD_REQUIRE_REAL_AGENTS=1`.
Marked `real_agents` (`-m "not real_agents"` leaves them out). Cost, warm: ~15 s, most of it
codex-acp 2.6's own `session/new` (~9 s offline).
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
import trio

from daemon.agents.connection import AgentSpec, AgentStartError
from daemon.agents.launch import open_agent
from daemon.agents.session import OpenedSession, agent_spec, open_session
from daemon.config import Config
from protocol import acp
from tests.fakes.client import RecordingClient
from tests.fakes.gemini_api import REPLY, gemini_api
from tests.fakes.npm import Unavailable, npm_install, skip_or_fail
from tests.fakes.wiretap import WireTap
from tests.protocol._schema import assert_valid_traffic

pytestmark = [pytest.mark.subprocess, pytest.mark.real_agents]

CODEX = (
    "@agentclientprotocol/codex-acp@2.6.0",
    "node_modules/@agentclientprotocol/codex-acp/dist/index.js",
)
CODEX_ZED = ("@zed-industries/codex-acp@0.16.0", "node_modules/.bin/codex-acp")
GEMINI = ("@google/gemini-cli@0.61.0", "node_modules/@google/gemini-cli/bundle/gemini.js")


def _installed(package: tuple[str, str]) -> Path:
    try:
        return npm_install(*package)
    except Unavailable as exc:
        why = str(exc)
    skip_or_fail(why)


@pytest.fixture(scope="session")
def codex() -> Path:
    return _installed(CODEX)


@pytest.fixture(scope="session")
def codex_zed() -> Path:
    return _installed(CODEX_ZED)


@pytest.fixture(scope="session")
def gemini() -> Path:
    return _installed(GEMINI)


def preset_spec(name: str, argv: tuple[str, ...], tmp_path: Path, **keys: str) -> AgentSpec:
    """Agent `name` as its preset runs it, with `keys` as the daemon's only secrets, and its
    home, temp and config dirs in the scratch directory (agents write credentials there)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    scratch = {"HOME": str(home), "TMPDIR": str(tmp_path)}
    scratch |= {
        f"XDG_{d}_HOME": str(home / d.lower()) for d in ("CONFIG", "DATA", "CACHE", "STATE")
    }
    settings = Config().all_agents(keys)[name]
    spec = agent_spec(name, argv, str(tmp_path), settings)
    return attrs.evolve(spec, env={**spec.env, **scratch})


async def start(
    spec: AgentSpec, client: RecordingClient, session_id: str | None = None
) -> OpenedSession:
    async with open_agent(spec, client.handlers()) as conn:
        return await open_session(
            conn, session_id=session_id, cwd=spec.cwd, mcp_servers=spec.mcp_servers, auth=spec.auth
        )


async def test_codex_starts_with_only_its_api_key(
    codex: Path, tmp_path: Path, wire_taps: list[WireTap]
) -> None:
    spec = preset_spec("codex", ("node", str(codex)), tmp_path, OPENAI_API_KEY="sk-fake")
    with trio.fail_after(60):
        opened = await start(spec, RecordingClient())
    assert opened.auth_method == "api-key"  # the preset's hint: it reads OPENAI_API_KEY
    assert opened.how == "new"
    assert opened.session_id
    (tap,) = wire_taps
    assert assert_valid_traffic(bytes(tap.sent), bytes(tap.received)) == [
        "initialize", "authenticate", "session/new",
    ]  # fmt: skip


async def test_codex_without_a_key_says_what_to_set_at_once(codex: Path, tmp_path: Path) -> None:
    spec = preset_spec("codex", ("node", str(codex)), tmp_path)
    with trio.fail_after(60), pytest.raises(AgentStartError) as caught:
        await start(spec, RecordingClient())
    assert caught.value.permanent
    said = str(caught.value)
    assert said.startswith(
        "agent 'codex' requires authentication (Authentication required): set CODEX_API_KEY or "
        'OPENAI_API_KEY (method api-key); or choose a method with auth = "ID" under '
        "[agents.codex]: chat-gpt (ChatGPT)"
    )
    # The login methods it offers besides change with the codex it pulls in (a later one
    # added a device-code login): whatever they are, each is named.


async def test_zed_codex_acp_env_var_methods(codex_zed: Path, tmp_path: Path) -> None:
    # The older package (acpd's codex preset before): legacy `env_var` methods, no hint needed.
    spec = preset_spec("codex", (str(codex_zed),), tmp_path, OPENAI_API_KEY="sk-fake")
    with trio.fail_after(60):
        opened = await start(spec, RecordingClient())
    assert opened.auth_method == "openai-api-key"
    assert opened.modes is not None
    assert opened.modes.current_mode_id == "read-only"
    models = [o for o in opened.config_options or () if o.get("category") == "model"]
    assert len(models) == 1


async def test_gemini_keeps_its_session_across_a_restart(
    gemini: Path, tmp_path: Path, wire_taps: list[WireTap]
) -> None:
    with gemini_api() as api:
        argv = ("node", str(gemini), "--acp")
        spec = preset_spec("gemini", argv, tmp_path, GEMINI_API_KEY="fake-key")
        spec = attrs.evolve(spec, env={**spec.env, "GOOGLE_GEMINI_BASE_URL": api.url})
        client = RecordingClient()
        with trio.fail_after(90):
            async with open_agent(spec, client.handlers()) as conn:
                first = await open_session(conn, session_id=None, cwd=spec.cwd, auth=spec.auth)
                reply = await conn.prompt(first.session_id, "hello there")
            assert first.auth_method == "gemini-api-key"
            assert (first.how, reply.stop_reason) == ("new", "end_turn")
            assert REPLY in client.text()
            _as_if_a_minute_passed(tmp_path / "home", first.session_id)
            replay = RecordingClient()
            # The restart: session/load would answer -32000 without authenticate first.
            again = await start(spec, replay, session_id=first.session_id)
    assert (again.how, again.session_id, again.why_not) == ("load", first.session_id, "")
    assert again.modes is not None
    users = [
        acp.content_text(u.content)
        for _, u in replay.updates
        if isinstance(u, acp.UserMessageChunk)
    ]
    assert "hello there" in users
    assert any(":streamGenerateContent" in p for p in api.paths)
    assert [assert_valid_traffic(bytes(t.sent), bytes(t.received))[:3] for t in wire_taps] == [
        ["initialize", "authenticate", "session/new"],
        ["initialize", "authenticate", "session/load"],
    ]


def _as_if_a_minute_passed(home: Path, session_id: str) -> None:
    """gemini-cli 0.61 names a session's file after the minute it was recorded in
    (`session-<YYYY-MM-DDTHH-MM>-<id[:8]>.jsonl`), and `session/load` first starts a new
    recording of that session: within the same minute that is the same file, which it starts
    over, so the session it was asked to load is gone ("No previous sessions found"). A real
    restart comes minutes later (idle timeout, crash backoff); rather than wait for the
    minute to turn, the test gives the file an older minute's name."""
    (chat,) = [
        f for f in home.glob(".gemini/tmp/*/chats/session-*.jsonl") if session_id[:8] in f.name
    ]
    chat.rename(chat.with_name(f"session-2000-01-01T00-00-{session_id[:8]}.jsonl"))


async def test_gemini_without_a_key_says_what_to_set(gemini: Path, tmp_path: Path) -> None:
    spec = preset_spec("gemini", ("node", str(gemini), "--acp"), tmp_path)
    with trio.fail_after(60), pytest.raises(AgentStartError) as caught:
        await start(spec, RecordingClient())
    assert caught.value.permanent
    message = str(caught.value)
    assert message.startswith("agent 'gemini' requires authentication (")
    assert "set GEMINI_API_KEY (method gemini-api-key); or choose a method with auth" in message
    assert "oauth-personal (Log in with Google)" in message


def test_the_stand_in_is_only_for_tests() -> None:
    assert "GOOGLE_GEMINI_BASE_URL" not in Config().all_agents(os.environ)["gemini"].env
