"""A real third-party agent: the ACP TypeScript SDK's example agent (ACP.md §19).

npm installs the SDK once into the tests' cache (`tests/fakes/npm.py`); on a fresh npm cache
that takes about 2 s. Skipped, with the reason, if node/npm are missing or the install fails
(no network), except where real agents are required (`CI=1` or `ACPD_REQUIRE_REAL_AGENTS=1`):
there it fails. Its turn takes ~5 s of real time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from daemon.agents.connection import AgentSpec
from daemon.agents.launch import open_agent
from protocol import acp
from tests.fakes.client import RecordingClient
from tests.fakes.npm import REQUIRE_VARS, Unavailable, npm_install, skip_or_fail
from tests.fakes.wiretap import WireTap
from tests.protocol._schema import assert_valid_traffic

SDK = "@agentclientprotocol/sdk@1.9.0"
AGENT_JS = "node_modules/@agentclientprotocol/sdk/dist/examples/agent.js"


@pytest.fixture(scope="session")
def sdk_agent() -> Path:
    try:
        return npm_install(SDK, AGENT_JS)
    except Unavailable as exc:
        why = str(exc)
    skip_or_fail(why)


def test_unavailable_agent_skips_unless_required(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in REQUIRE_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no npm"):
        skip_or_fail("no npm")
    monkeypatch.setenv("CI", "0")
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("no npm")
    for var in REQUIRE_VARS:
        with monkeypatch.context() as m:
            m.setenv(var, "1")
            with pytest.raises(pytest.fail.Exception, match=r"no npm.*real agents required"):
                skip_or_fail("no npm")


@pytest.mark.subprocess
async def test_sdk_example_agent_full_turn(
    sdk_agent: Path, tmp_path: Path, wire_taps: list[WireTap]
) -> None:
    client = RecordingClient(answer="allow")
    # Agents write under HOME and TMPDIR: keep them in the scratch directory.
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    spec = AgentSpec("sdk-example", ("node", str(sdk_agent)), str(tmp_path), env)
    with trio.fail_after(30):
        async with open_agent(spec, client.handlers()) as conn:
            assert conn.init.protocol_version == 1
            assert not conn.can_load
            sid = (await conn.new_session(str(tmp_path))).session_id
            resp = await conn.prompt(sid, "Hello, agent!")
            assert resp.stop_reason == "end_turn"
            assert conn.peer.stats.malformed == 0
            assert conn.peer.stats.requests_in == 1
    (asked,) = client.asked
    assert asked.session_id == sid
    assert [o.option_id for o in asked.options] == ["allow", "reject"]
    assert asked.tool_call["toolCallId"] == "call_2"
    assert client.tags() == [
        "AgentMessageChunk",
        "ToolCall",
        "ToolCallUpdate",
        "AgentMessageChunk",
        "ToolCall",
        "ToolCallUpdate",
        "AgentMessageChunk",
    ]
    tools = [u for u in client.of_type(acp.ToolCallUpdate) if isinstance(u, acp.ToolCallUpdate)]
    assert [(t.tool_call_id, t.status) for t in tools] == [
        ("call_1", "completed"),
        ("call_2", "completed"),
    ]
    assert "successfully updated the configuration" in client.text()
    # Each message either way against the def for its method: what acpd wrote to the agent's
    # stdin, and (a check of the checker, on a third party's traffic) what the agent wrote.
    (tap,) = wire_taps
    assert assert_valid_traffic(bytes(tap.received), bytes(tap.sent), sender="agent")[-1] == (
        "session/prompt result"
    )
    assert assert_valid_traffic(bytes(tap.sent), bytes(tap.received)) == [
        "initialize",
        "session/new",
        "session/prompt",
        "session/request_permission result",
    ]
