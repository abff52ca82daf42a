"""`acpd acp` end to end, driven by the ACP TypeScript SDK's `ClientSideConnection`
(`@agentclientprotocol/sdk@1.9.0`, which also validates what it receives): the scenario in
`ts_client.mjs` against a real `acpd serve` with the demo agent, every line `acpd acp` wrote
checked against the ACP schema. Skipped (with the reason) without node/npm, unless real agents
are required (see `tests.fakes.npm`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.npm import Unavailable, npm_install, skip_or_fail
from tests.server.acp.live import ROOT, TIMEOUT, LiveDaemon, live

pytestmark = pytest.mark.subprocess
__all__ = ["live"]  # the fixture, imported for this module

SCRIPT = Path(__file__).with_name("ts_client.mjs")


SDK = "@agentclientprotocol/sdk@1.9.0"  # the last with ClientSideConnection (ACP.md §21)


@pytest.fixture(scope="session")
def ts_sdk() -> Path:
    try:
        acp_js = npm_install(SDK, "node_modules/@agentclientprotocol/sdk/dist/acp.js")
    except Unavailable as exc:
        why = str(exc)
    else:
        return acp_js.parents[1]  # the package's directory
    skip_or_fail(why)


def test_typescript_client_side_connection(live: LiveDaemon, ts_sdk: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    config = {
        "sdk": str(ts_sdk),
        "agent": live.acp_argv(),
        "acpd": [sys.executable, "-m", "daemon.cli", "--socket", live.socket],
        "cwd": str(live.work),
        "env": live.env,
    }
    proc = subprocess.run(
        [node, str(SCRIPT), json.dumps(config)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout)
    caps = seen["capabilities"]
    assert caps["loadSession"] is True
    assert caps["sessionCapabilities"] == {"list": {}, "resume": {}, "close": {}}
    # New and prompt: streamed, then end_turn.
    assert seen["first"] == "end_turn"
    assert seen["firstKinds"][:4] == ["agent_thought_chunk", "plan", "tool_call",
                                      "tool_call_update"]  # fmt: skip
    assert seen["firstKinds"].count("agent_message_chunk") > 1
    assert seen["firstText"] == (
        "You said: hello from typescript (3 words). This is acpd's demo agent."
    )
    # A permission answered from this client.
    assert seen["permission"] == "end_turn"
    assert seen["asked"] == [{"title": "Touch a file", "options": ["allow", "reject"]}]
    assert "Permission granted (allow)." in seen["permissionText"]
    assert seen["cancelled"] == "cancelled"
    # A second client lists and loads it: the history, users' messages first.
    assert seen["sessionId"] in seen["listed"]
    assert seen["loadedKinds"][0] == "user_message_chunk"
    assert seen["loadedUser"] == "hello from typescriptask for permission/slow 500"
    assert seen["loadedText"].startswith(seen["firstText"])
    # Live from the socket.
    assert seen["liveUser"] == "typed in a terminal"
    assert seen["liveText"].startswith("You said: typed in a terminal")
    # Detached (exit 0 at end of stdin), attached again without replay, prompted, closed.
    assert seen["detachedExit"] == 0
    assert seen["resumedUpdates"] == 0
    assert (seen["again"], seen["againText"]) == ("end_turn", "back")
    assert seen["closed"] == {}
    assert live.check_traffic() > 0
