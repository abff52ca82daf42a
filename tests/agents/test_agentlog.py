"""The agent log (stderr to a bounded, rotated file) and the details of a failure."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import msgspec
import pytest
import trio

from daemon.agents.agentlog import AgentLog, remove_agent_log
from daemon.agents.connection import AgentStartError, PeerHandlers
from daemon.agents.detail import DETAIL_CHARS, error_detail, failure_detail
from daemon.agents.launch import open_agent
from daemon.paths import agent_log_path
from protocol.jsonrpc import RpcFailure
from tests.fakes.client import demo_spec


def test_the_log_strips_escapes_and_rotates_at_its_bound(tmp_path: Path) -> None:
    path = agent_log_path(tmp_path, "c1")
    log = AgentLog.open(path, limit=100)
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    log.note("agent x started")
    log.write(b"\x1b[31mred\x1b[0m line\r\n")
    first = path.read_text()
    assert first.startswith("--- ")
    assert first.endswith(" agent x started ---\nred line\n")
    log.write(b"y" * 90)  # over the bound: the file so far becomes .1
    older = path.with_name("c1.log.1")
    assert older.read_text() == first
    assert path.read_bytes() == b"y" * 90
    log.write(b"z" * 250)  # one chunk bigger than the bound: its end is kept
    assert path.read_bytes() == b"z" * 100
    assert older.read_bytes() == b"y" * 90
    log.close()
    log.close()  # idempotent
    log.write(b"after close")  # ignored, never raises
    remove_agent_log(path)
    assert not path.exists()
    assert not older.exists()
    remove_agent_log(path)  # missing files are fine


def test_error_detail_prefers_the_agents_own_words() -> None:
    assert error_detail(RpcFailure(-32603, "x")) == ""
    assert error_detail(RpcFailure(-32603, "x", {"details": "Session not found"})) == (
        "Session not found"
    )
    assert error_detail(RpcFailure(-32603, "x", "plain")) == "plain"
    data = {"message": "bad", "codex_error_info": {"kind": "quota"}}
    assert error_detail(RpcFailure(-32603, "x", data)) == msgspec.json.encode(data).decode()
    long = error_detail(RpcFailure(-32603, "x", "a" * 5000 + "END"))
    assert len(long) == DETAIL_CHARS
    assert long.endswith("END")


def test_failure_detail_keeps_the_last_lines_and_the_bad_line() -> None:
    tail = "\n".join(f"line {i}" for i in range(50))
    detail = failure_detail(tail, b"\x1b[1mnot json\x1b[0m")
    lines = detail.splitlines()
    assert lines[0] == "line 30"
    assert lines[-2] == "line 49"
    assert lines[-1] == "its last malformed line: not json"
    assert failure_detail("", b"") == ""


@pytest.mark.subprocess
async def test_open_agent_writes_stderr_to_the_conversations_log(tmp_path: Path) -> None:
    log_path = agent_log_path(tmp_path / "data", "c2")
    code = (
        "import sys; sys.stderr.write('\\x1b[33mwarming up\\x1b[0m\\nfatal: no key\\n'); "
        "sys.stderr.flush(); print('{not json', flush=True); sys.exit(3)"
    )
    spec = attrs.evolve(
        demo_spec(tmp_path, tmp_path), argv=(sys.executable, "-c", code), log_path=log_path
    )
    with trio.fail_after(10), pytest.raises(AgentStartError) as info:
        async with open_agent(spec, PeerHandlers(on_update=lambda s, u: None)):
            pytest.fail("must not start")
    assert "fatal: no key" in str(info.value)
    assert info.value.detail == ("warming up\nfatal: no key\nits last malformed line: {not json")
    text = log_path.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("--- ")
    assert "agent demo started (pid " in lines[0]
    assert lines[1:3] == ["warming up", "fatal: no key"]
    assert lines[3].endswith(" agent exited with status 3 ---")


@pytest.mark.subprocess
async def test_an_unwritable_log_does_not_stop_the_agent(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the logs dir would go")
    spec = attrs.evolve(demo_spec(tmp_path, tmp_path), log_path=agent_log_path(blocker, "c3"))
    with trio.fail_after(20):
        async with open_agent(spec, PeerHandlers(on_update=lambda s, u: None)) as conn:
            assert conn.init.protocol_version == 1
            assert conn.log_file is None
