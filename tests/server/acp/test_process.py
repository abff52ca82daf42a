"""`acpd acp` as a process on its own: stdout carries ACP only, a daemon that is not running is
said at `initialize`, bad lines get errors, the end of stdin ends it (exit 0), and its options
are checked like the other commands'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.acp.live import ROOT, TIMEOUT

pytestmark = pytest.mark.subprocess


def _acp(tmp_path: Path, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ACPD_SOCKET": str(tmp_path / "nothing-here.sock")}
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "acp", *args],
        input=stdin, capture_output=True, timeout=TIMEOUT, cwd=ROOT, env=env,
    )  # fmt: skip


def test_without_a_daemon_initialize_says_so_and_the_process_serves_on(tmp_path: Path) -> None:
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}},
        "not json",
        {"jsonrpc": "2.0", "id": 2, "method": "no/such", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "session/list", "params": {}},
    ]
    stdin = b"".join(
        (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines
    )
    proc = _acp(tmp_path, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON, and only that
    by_id = {m["id"]: m["error"] for m in out}
    assert set(by_id) == {1, None, 2, 3}
    assert by_id[1]["code"] == -32603
    socket = str(tmp_path / "nothing-here.sock")
    assert by_id[1]["message"].startswith(f"the acpd daemon is not running ({socket}")
    assert "acpd serve" in by_id[1]["message"]
    assert by_id[None]["code"] == -32700
    assert by_id[2]["code"] == -32601
    assert by_id[3]["code"] == -32603  # still no daemon: every call says so
    assert b"Traceback" not in proc.stderr


def test_options_are_checked_like_the_other_commands(tmp_path: Path) -> None:
    proc = _acp(tmp_path, "--agent", "a", "--agent-cmd", "b", stdin=b"")
    assert proc.returncode == 2
    assert b"--agent and --agent-cmd exclude each other" in proc.stderr
    proc = _acp(tmp_path, "--agent-cmd", "'unbalanced", stdin=b"")
    assert proc.returncode == 2
    proc = _acp(tmp_path, "--socket", str(tmp_path / "x.sock"), stdin=b"")
    assert (proc.returncode, proc.stdout) == (0, b"")  # end of stdin at once: done
