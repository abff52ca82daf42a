"""`python -m daemon.server serve` as a real process: JSON-RPC over its socket, signals, refusals.

Real time (no autojump_clock: the daemon is another process) with real hang guards.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from daemon.server.serve import serve_main
from tests.fakes.cgroup import enter_cgroup
from tests.fakes.engine import LineClient

pytestmark = pytest.mark.subprocess
REPO = Path(__file__).resolve().parents[2]


def serve_cmd(data_dir: Path, sock: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "daemon.server", "serve", "--data-dir", str(data_dir),
            "--socket", str(sock), "--no-ws", *extra]  # fmt: skip


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    config = tmp_path / "empty.toml"  # the defaults, whatever the host has
    config.touch()
    env["ACPD_CONFIG"] = str(config)
    return env


@attrs.define(eq=False)
class Daemon:
    proc: trio.Process
    data_dir: Path
    socket: Path
    stderr: bytearray = attrs.field(factory=bytearray)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for chunk in self.proc.stderr:
            self.stderr += chunk
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, needle: bytes) -> None:
        while needle not in self.stderr:
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited: {self.stderr.decode()}")
            await self._changed.wait()

    async def connect(self) -> LineClient:
        return LineClient(await trio.open_unix_socket(str(self.socket)))


@asynccontextmanager
async def running_daemon(
    tmp_path: Path, *extra: str, cgroup: Path | None = None
) -> AsyncIterator[Daemon]:
    """`acpd serve` as a child (in `cgroup`, if given: as systemd would start it)."""
    data_dir, sock = tmp_path / "data", tmp_path / "run" / "acpd.sock"
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(partial(
            trio.run_process, serve_cmd(data_dir, sock, *extra), stderr=subprocess.PIPE,
            check=False, env=child_env(tmp_path), cwd=REPO,
            preexec_fn=None if cgroup is None else partial(enter_cgroup, cgroup),
        ))  # fmt: skip
        daemon = Daemon(proc, data_dir, sock)
        nursery.start_soon(daemon.drain_stderr)
        await daemon.wait_for(b"ready")
        yield daemon
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def test_conversation_end_to_end(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(tmp_path) as daemon:
            assert (daemon.data_dir.stat().st_mode & 0o777) == 0o700
            client = await daemon.connect()
            async with client.stream:
                reply = await client.call("conversations/create",
                                          {"agent": "demo", "cwd": str(tmp_path)})  # fmt: skip
                conv = reply["result"]["conversation"]
                assert conv["agent"] == "demo"
                prefix = conv["id"][:6]
                reply = await client.call("messages/send", {"id": prefix, "text": "hello"})
                assert reply["result"] == {"seq": 1, "queued": 0, "number": 1, "resumed": False}
                reply = await client.call("conversations/subscribe", {"id": prefix})
                assert reply["result"]["through_seq"] >= 1
                types = [n["params"]["event"]["type"] for n in client.notes
                         if n["method"] == "conversation/event"]  # fmt: skip
                while "turn_ended" not in types:
                    note = await client.read()
                    assert note is not None
                    if note["method"] == "conversation/event":
                        types.append(note["params"]["event"]["type"])
                for expected in ("user_message", "turn_started", "agent_message", "turn_ended"):
                    assert expected in types, types
                assert types.index("turn_started") < types.index("turn_ended")
                status = (await client.call("daemon/status"))["result"]
                assert status["conversations_stored"] == 1
                assert status["pid"] == daemon.proc.pid
                assert status["socket"] == str(daemon.socket)
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.proc.wait() == 0
            await daemon.wait_for(b"stopped")
        assert not await trio.Path(daemon.socket).exists()


async def test_data_dir_and_files_are_ours_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)  # as a user's `mkdir` leaves it: no one else may write
    with trio.fail_after(60):
        async with running_daemon(tmp_path) as daemon:
            client = await daemon.connect()
            async with client.stream:  # a write, so the WAL exists
                assert "result" in await client.call("conversations/create", {"cwd": "/"})
            assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755  # used as it is
            assert stat.S_IMODE((data_dir / "logs").stat().st_mode) == 0o700  # made by acpd
            files = [p for p in data_dir.rglob("*") if p.is_file()]
            assert {p.name for p in files} >= {"acpd.sqlite3", "acpd.sqlite3-wal", "acpd.log"}
            for path in files:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.proc.wait() == 0


async def test_second_daemon_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with running_daemon(tmp_path) as first:
            # Same data dir, another socket: the data-dir lock refuses it.
            other_sock = tmp_path / "run2" / "acpd.sock"
            second = await trio.run_process(
                serve_cmd(first.data_dir, other_sock), capture_stderr=True, check=False,
                env=child_env(tmp_path), cwd=REPO,
            )  # fmt: skip
            assert second.returncode == 1
            lines = second.stderr.decode().splitlines()
            assert len(lines) == 1, lines
            assert str(first.data_dir) in lines[0] or "lock" in lines[0], lines
            # Another data dir, the same socket: the live daemon is not displaced.
            third = await trio.run_process(
                serve_cmd(tmp_path / "data3", first.socket), capture_stderr=True, check=False,
                env=child_env(tmp_path), cwd=REPO,
            )  # fmt: skip
            assert third.returncode == 1
            assert third.stderr.startswith(b"acpd: error: another acpd is already serving"), (
                third.stderr
            )
            assert third.stderr.count(b"\n") == 1, third.stderr
            # The first one never noticed.
            client = await first.connect()
            async with client.stream:
                assert (await client.call("conversations/count"))["result"] == {"count": 0}
            first.proc.send_signal(signal.SIGINT)
            assert await first.proc.wait() == 0


async def test_sighup_reloads_and_keeps_a_good_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("drain_timeout = 3.0\n")
    with trio.fail_after(60):
        async with running_daemon(tmp_path, "--config", str(config)) as daemon:
            daemon.proc.send_signal(signal.SIGHUP)
            await daemon.wait_for(b"config reloaded")
            await trio.Path(config).write_text("drain_timeout = -1\n")
            daemon.proc.send_signal(signal.SIGHUP)
            await daemon.wait_for(b"config not reloaded")
            assert b"drain_timeout" in daemon.stderr
            client = await daemon.connect()
            async with client.stream:
                assert "result" in await client.call("daemon/status")
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.proc.wait() == 0


def test_broken_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("shutdown_grace = 'soon'\n")
    code = serve_main(data_dir=tmp_path / "d", socket=tmp_path / "s.sock", ws=None, no_ws=True,
                      config_path=config)  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("acpd: error: ")
    assert "shutdown_grace" in err


def test_bad_ws_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = serve_main(data_dir=tmp_path / "d", socket=None, ws="nope", no_ws=False,
                      config_path=None)  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.startswith("acpd: error: --ws:")


# Modules `acpd serve` must not load before it is ready, for its start-up time: the supervisor
# and the agents' side come with the first live conversation, the dashboard only when it is
# served, trio-websocket with the first websocket; the version is not read from the metadata.
_LATER = (
    "daemon.engine.supervisor",
    "daemon.agents.connection",
    "daemon.agents.launch",
    "daemon.server.dashboard",
    "trio_websocket",
    "importlib.metadata",
)
# `acpd serve` (argv[2:]) that, once ready, prints which of argv[1]'s modules it has loaded
# (of those not loaded when the interpreter started), then stops itself.
_LOADED_AT_READY = """
import os, signal, sys
watched = [m for m in sys.argv[1].split(",") if m not in sys.modules]
from daemon.server import serve, systemd
ready = systemd.ServiceStatus.ready
async def ready_then_look(self, figures):
    await ready(self, figures)
    print(",".join(m for m in watched if m in sys.modules), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
systemd.ServiceStatus.ready = ready_then_look
sys.exit(serve.main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("ws", "loaded"),
    [(["--no-ws"], ""), (["--ws", "127.0.0.1:0"], "daemon.server.dashboard")],
)
def test_what_serve_loads_before_it_is_ready(tmp_path: Path, ws: list[str], loaded: str) -> None:
    argv = ["serve", "--data-dir", str(tmp_path / "data"), "--socket", str(tmp_path / "s.sock")]
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED_AT_READY, ",".join(_LATER), *argv, *ws],
        capture_output=True, text=True, env=child_env(tmp_path), cwd=REPO, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{loaded}\n"
