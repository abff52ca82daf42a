"""A real third-party agent: the ACP TypeScript SDK's example agent (ACP.md §19).

Installed with npm into a cache directory shared between runs. Skipped, with the reason, only
if node/npm are missing or the install fails (no network). Its turn takes ~5 s of real time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from daemon.agent import AgentSpec, open_agent
from protocol import acp
from tests.fakes.client import RecordingClient

pytestmark = pytest.mark.subprocess

SDK = "@agentclientprotocol/sdk@1.9.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "acpd-tests"
AGENT_JS = "node_modules/@agentclientprotocol/sdk/dist/examples/agent.js"


@pytest.fixture(scope="session")
def sdk_agent() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the TypeScript SDK example agent")
    prefix = CACHE / "npm-sdk-1.9.0"
    script = prefix / AGENT_JS
    if not script.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", SDK]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        except subprocess.TimeoutExpired:
            pytest.skip(f"npm install {SDK} timed out (no network?)")
        if proc.returncode != 0 or not script.exists():
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"npm install {SDK} failed (no network?): {last}")
    return script


async def test_sdk_example_agent_full_turn(sdk_agent: Path, tmp_path: Path) -> None:
    client = RecordingClient(answer="allow")
    # Agents write under HOME and TMPDIR: keep them in the scratch directory.
    env = {"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    spec = AgentSpec("sdk-example", ("node", str(sdk_agent)), str(tmp_path), env)
    with trio.fail_after(30):
        async with open_agent(
            spec, on_update=client.on_update, on_request=client.on_request
        ) as conn:
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
