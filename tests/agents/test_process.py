"""open_agent with real child processes: spawn errors, the environment, the process group.

Real time only (never autojump_clock): each test has a real `fail_after` hang guard.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from daemon.agents import _process as _agentproc
from daemon.agents._process import group_alive
from daemon.agents.connection import AgentExited, AgentSpec, AgentStartError, PeerHandlers
from daemon.agents.launch import open_agent
from tests.fakes.client import RecordingClient, demo_spec

pytestmark = pytest.mark.subprocess

_IGNORE = PeerHandlers(on_update=lambda s, u: None)  # these tests look at processes


def _alive(pid: int) -> bool:
    """Running, that is: a zombie (an orphan that init has not reaped yet) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def test_missing_binary(tmp_path: Path) -> None:
    spec = AgentSpec("nope", ("/nonexistent/agent-binary", "--acp"), str(tmp_path))
    with trio.fail_after(10), pytest.raises(AgentStartError) as info:
        async with open_agent(spec, _IGNORE):
            pytest.fail("must not start")
    msg = str(info.value)
    assert msg == "cannot start agent 'nope': command not found: /nonexistent/agent-binary"
    spec = AgentSpec("nope", (sys.executable,), str(tmp_path / "missing"))
    with trio.fail_after(10), pytest.raises(AgentStartError, match="no such working directory"):
        async with open_agent(spec, _IGNORE):
            pytest.fail("must not start")
    spec = AgentSpec("nope", (str(tmp_path),), str(tmp_path))  # a directory: not executable
    with trio.fail_after(10), pytest.raises(AgentStartError, match="permission denied"):
        async with open_agent(spec, _IGNORE):
            pytest.fail("must not start")


async def test_exit_during_initialize(tmp_path: Path) -> None:
    code = "import sys; sys.stderr.write('starting\\nboom: bad config\\n'); sys.exit(5)"
    spec = AgentSpec("bad", (sys.executable, "-c", code), str(tmp_path))
    with trio.fail_after(10), pytest.raises(AgentStartError) as info:
        async with open_agent(spec, _IGNORE):
            pytest.fail("must not start")
    assert str(info.value) == "agent 'bad' exited during initialize (status 5): boom: bad config"
    assert info.value.stderr == "starting\nboom: bad config"


async def test_not_an_acp_agent(tmp_path: Path) -> None:
    # Answers initialize with garbage and then an error: a start error, not a hang.
    code = textwrap.dedent("""
        import sys
        sys.stdin.readline()
        print("hello, I am not JSON", flush=True)
        print('{"jsonrpc":"2.0","id":0,"error":{"code":-32600,"message":"what?"}}', flush=True)
        sys.stdin.read()
    """)
    spec = AgentSpec("odd", (sys.executable, "-c", code), str(tmp_path))
    with trio.fail_after(10), pytest.raises(AgentStartError, match="failed to initialize: what"):
        async with open_agent(spec, _IGNORE):
            pytest.fail("must not start")


_GROUP_AGENT = textwrap.dedent("""
    import json, os, runpy, subprocess, sys
    # A grandchild that ignores SIGTERM (and holds our stderr open), as wrappers leave behind.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(600)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\\n"
    with open(sys.argv[1], "w") as f:
        json.dump({"pid": os.getpid(), "grandchild": child.pid, "env": dict(os.environ)}, f)
    runpy.run_module("daemon.agents.demo", run_name="__main__")
""")


async def test_stop_kills_the_whole_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("LISTEN_FDS", "3")
    monkeypatch.setenv("ACPD_TEST_SECRET", "must not leak")
    script = tmp_path / "agent.py"
    script.write_text(_GROUP_AGENT)
    info_file = tmp_path / "info.json"
    spec = AgentSpec(
        "group",
        (sys.executable, str(script), str(info_file)),
        str(tmp_path),
        {"ACPD_DEMO_DIR": str(tmp_path / "demo"), "EXTRA": "yes"},
    )
    grace = 0.5
    with trio.fail_after(20):
        async with open_agent(spec, _IGNORE, stop_grace=grace) as conn:
            info = json.loads(info_file.read_text())
            assert conn.process is not None
            assert info["pid"] == conn.process.pid
            assert _alive(info["pid"])
            assert _alive(info["grandchild"])
            assert os.getpgid(info["grandchild"]) == conn.process.pid  # its own group
            pgid = conn.process.pid
            assert group_alive(pgid)
            start = trio.current_time()
        elapsed = trio.current_time() - start
    assert not _alive(info["pid"])
    assert not _alive(info["grandchild"])
    assert not group_alive(pgid)  # nothing else of the group survived either
    # SIGTERM took the agent at once; the grandchild needed the SIGKILL after the grace.
    assert grace <= elapsed < grace + 1.5
    env = info["env"]
    assert env["EXTRA"] == "yes"
    assert env["PATH"] == os.environ["PATH"]
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "ACPD_TEST_SECRET"):
        assert name not in env


async def test_crash_mid_turn(tmp_path: Path) -> None:
    client = RecordingClient()
    spec = demo_spec(tmp_path / "demo", tmp_path)
    with trio.fail_after(20):
        async with open_agent(spec, PeerHandlers(on_update=client.on_update)) as conn:
            sid = (await conn.new_session(str(tmp_path))).session_id
            with pytest.raises(AgentExited):
                await conn.prompt(sid, "/crash")
            await conn.wait_exited()
            assert conn.returncode == 3
            assert conn.stderr_tail() == "acpd-demo: crashing on request (/crash)"
            with pytest.raises(AgentExited):
                await conn.new_session(str(tmp_path))


async def test_stop_is_prompt_for_a_well_behaved_agent(tmp_path: Path) -> None:
    spec = demo_spec(tmp_path / "demo", tmp_path)
    with trio.fail_after(20):
        async with open_agent(spec, _IGNORE, stop_grace=5) as conn:
            start = trio.current_time()
            await conn.stop()
            await conn.stop()  # idempotent
            assert trio.current_time() - start < 2
            assert conn.returncode is not None
            assert conn.process is not None
            assert not _alive(conn.process.pid)
            await conn.wait_exited()


_ESCAPING_AGENT = textwrap.dedent("""
    import os, runpy, subprocess, sys
    # A grandchild in a session of its own (out of our process group) that keeps our stdout.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    with open(sys.argv[1], "w") as f:
        f.write(str(child.pid))
    runpy.run_module("daemon.agents.demo", run_name="__main__")
""")


async def test_exit_noticed_when_an_escaped_process_holds_stdout(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(_ESCAPING_AGENT)
    pid_file = tmp_path / "escaped.pid"
    spec = AgentSpec(
        "escape",
        (sys.executable, str(script), str(pid_file)),
        str(tmp_path),
        {"ACPD_DEMO_DIR": str(tmp_path / "demo")},
    )
    try:
        with trio.fail_after(20):
            async with open_agent(spec, _IGNORE) as conn:
                sid = (await conn.new_session(str(tmp_path))).session_id
                start = trio.current_time()
                with pytest.raises(AgentExited):
                    await conn.prompt(sid, "/crash")
                await conn.wait_exited()
                assert trio.current_time() - start < 3
                assert conn.returncode == 3
        # It left the agent's group, but not its tree: stopping the agent ended it too.
        assert not _alive(int(pid_file.read_text()))
    finally:
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)


async def test_agents_get_the_users_umask_not_the_daemons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_agentproc, "_agent_umask", 0o022)  # what `acpd serve` remembered
    old = os.umask(0o077)  # the daemon's own
    try:
        code = "import os, sys; sys.stderr.write('umask %o\\n' % os.umask(0)); sys.exit(5)"
        spec = AgentSpec("mask", (sys.executable, "-c", code), str(tmp_path))
        with trio.fail_after(10), pytest.raises(AgentStartError) as info:
            async with open_agent(spec, _IGNORE):
                pytest.fail("must not start")
    finally:
        os.umask(old)
    assert str(info.value).endswith("umask 22")
