"""`python -m daemon.server serve` as systemd runs it: a fake NOTIFY_SOCKET (a datagram socket
the test reads), a socket passed through LISTEN_FDS, a watchdog, JOURNAL_STREAM naming its
stderr. Real processes and real time, with hang guards; every wait is on a socket or pipe.

LISTEN_PID must be the daemon's own pid, known only once it runs: a tiny Python wrapper moves
the listener to fd 3, sets LISTEN_PID to its pid and execs the daemon (exec keeps the pid).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.fakes.engine import LineClient

pytestmark = pytest.mark.subprocess
REPO = Path(__file__).resolve().parents[2]

_WRAPPER = """\
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                 "WATCHDOG_USEC", "WATCHDOG_PID")  # fmt: skip


@attrs.define(eq=False)
class Notes:
    """Datagrams from the daemon, each with its arrival time."""

    sock: trio.socket.SocketType
    got: list[tuple[float, str]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def pump(self) -> None:
        while True:
            data = await self.sock.recv(65536)
            self.got.append((trio.current_time(), data.decode()))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, field: str, after: int = 0) -> int:
        """The index of the first datagram from `after` on with `field` among its lines."""
        while True:
            for i in range(after, len(self.got)):
                if field in self.got[i][1].split("\n"):
                    return i
            await self._changed.wait()

    def text(self, i: int) -> str:
        return self.got[i][1]


@attrs.define(eq=False)
class Daemon:
    proc: trio.Process
    notes: Notes
    socket: Path
    stderr: bytearray = attrs.field(factory=bytearray)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def drain_stderr(self, stream: trio.lowlevel.FdStream) -> None:
        async with stream:
            async for chunk in stream:
                self.stderr += chunk
                self._changed.set()
                self._changed = trio.Event()
        self._changed.set()

    async def wait_for_log(self, needle: bytes) -> None:
        while needle not in self.stderr:
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited: {self.stderr.decode()}")
            await self._changed.wait()

    async def connect(self) -> LineClient:
        return LineClient(await trio.open_unix_socket(str(self.socket)))


def _request(method: str, id_: int = 1, params: dict[str, Any] | None = None) -> bytes:
    msg = {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}
    return json.dumps(msg).encode() + b"\n"


@asynccontextmanager
async def systemd_daemon(
    tmp_path: Path,
    *,
    listener: socket.socket | None = None,
    watchdog_usec: int | None = None,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> AsyncIterator[Daemon]:
    """The daemon as systemd would start it; SIGTERM on the way out if it still runs."""
    sock_path = tmp_path / "run" / "acpd.sock"
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
    (defaults := tmp_path / "defaults.toml").touch()  # the defaults, whatever the host has
    env.update(ACPD_CONFIG=str(defaults), ACPD_DEMO_DIR=str(tmp_path / "demo"),
               ACPD_DEMO_DELAY="0", NOTIFY_SOCKET=str(tmp_path / "notify"))  # fmt: skip
    env.update(extra_env or {})
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    serve = ["-m", "daemon.server", "serve", "--data-dir", str(tmp_path / "data"),
             "--socket", str(sock_path), "--no-ws", *args]  # fmt: skip
    pass_fds: tuple[int, ...] = ()
    if listener is not None:
        env.update(LISTEN_FDS="1", LISTEN_FDNAMES="api")
        argv = [sys.executable, "-c", _WRAPPER, str(listener.fileno()), *serve]
        pass_fds = (listener.fileno(),)
    else:
        argv = [sys.executable, *serve]
    # stderr is a pipe that JOURNAL_STREAM names, as journald's stream would be.
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    notify_sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify_sock.bind(str(tmp_path / "notify"))
    with notify_sock:
        notes = Notes(notify_sock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notes.pump)
            try:
                proc = await nursery.start(partial(
                    trio.run_process, argv, stderr=write_end, pass_fds=pass_fds, env=env,
                    cwd=REPO, check=False,
                ))  # fmt: skip
            finally:
                os.close(write_end)
            daemon = Daemon(proc, notes, sock_path)
            nursery.start_soon(daemon.drain_stderr, trio.lowlevel.FdStream(read_end))
            try:
                yield daemon
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(20):
                    await proc.wait()
                nursery.cancel_scope.cancel()


@pytest.fixture
def listener(tmp_path: Path) -> socket.socket:
    """What acpd.socket does: bind and listen before the daemon exists."""
    (tmp_path / "run").mkdir(mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "run" / "acpd.sock"))
    sock.listen()
    return sock


def _cloexec(pid: int, fd: int) -> bool:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        flags = next(line for line in f if line.startswith("flags:"))
    return bool(int(flags.split()[1], 8) & os.O_CLOEXEC)


async def test_activated_ready_watchdog_and_stop(tmp_path: Path, listener: socket.socket) -> None:
    with trio.fail_after(30), listener:
        # A client that comes before the daemon: the kernel queues it on systemd's socket.
        early = LineClient(await trio.open_unix_socket(str(tmp_path / "run" / "acpd.sock")))
        await early.send(_request("daemon/status"))
        async with systemd_daemon(tmp_path, listener=listener, watchdog_usec=400_000) as daemon:
            ready = await daemon.notes.wait_for("READY=1")
            t_ready = daemon.notes.got[ready][0]
            assert daemon.notes.text(ready) == (
                "READY=1\nSTATUS=0 live conversations, 0 agents running, 0 stored"
            )
            # Serving once READY=1 arrives: the early request is answered, a new one too.
            async with early.stream:
                assert (await early.read())["result"]["pid"] == daemon.proc.pid
            client = await daemon.connect()
            async with client.stream:
                status = (await client.call("daemon/status"))["result"]
            assert status["conversations_stored"] == 0
            # The adopted listener is close-on-exec: no agent can inherit it.
            assert os.readlink(f"/proc/{daemon.proc.pid}/fd/3") == (
                f"socket:[{os.fstat(listener.fileno()).st_ino}]"
            )
            assert _cloexec(daemon.proc.pid, 3)
            # Watchdog: WATCHDOG_USEC=0.4 s means a ping every 0.2 s from the event loop.
            # Wait for the first ping past a 2 s window, then count the window's pings.
            window_end = t_ready + 2.0
            i = ready
            while daemon.notes.got[i][0] <= window_end:
                i = await daemon.notes.wait_for("WATCHDOG=1", i + 1)
            pings = [t for t, text in daemon.notes.got
                     if text == "WATCHDOG=1" and t_ready < t <= window_end]  # fmt: skip
            assert 6 <= len(pings) <= 14, pings
            assert daemon.notes.got[0][1] == "WATCHDOG=1"  # pinging from the start
            # Logs for the journal: a priority prefix, no timestamp (journald adds its own).
            await daemon.wait_for_log(b"<6>acpd: ready: socket ")
            assert b"(from systemd)" in daemon.stderr
            # SIGTERM: STOPPING=1, then a clean exit.
            n = len(daemon.notes.got)
            daemon.proc.send_signal(signal.SIGTERM)
            stopping = await daemon.notes.wait_for("STOPPING=1", n)
            assert daemon.notes.text(stopping).startswith("STOPPING=1\nSTATUS=stopping")
            assert await daemon.proc.wait() == 0
            await daemon.wait_for_log(b"<6>acpd: stopped")
        lines = daemon.stderr.decode().splitlines()
        assert lines
        assert all(re.match(r"<[0-7]>acpd", line) for line in lines), lines
        assert not any(re.search(r"\d\d:\d\d:\d\d", line) for line in lines), lines
        # systemd's socket stays: the daemon did not unlink what it did not bind.
        assert (tmp_path / "run" / "acpd.sock").exists()
        assert not any(t for t, text in daemon.notes.got if text.startswith("READY=1")
                       and t > daemon.notes.got[stopping][0])  # fmt: skip


_INSPECT_AGENT = """\
import json, os, runpy, sys
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
with open(sys.argv[1], "w") as f:
    json.dump({"env": dict(os.environ), "fds": fds}, f)
runpy.run_module("daemon.agents.demo", run_name="__main__")
"""


async def test_agents_inherit_neither_variables_nor_fds(
    tmp_path: Path, listener: socket.socket
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(_INSPECT_AGENT)
    info = tmp_path / "agent.json"
    env = {"WATCHDOG_PID": "1"}  # another process's watchdog: not ours to ping
    listener_inode = os.fstat(listener.fileno()).st_ino
    with trio.fail_after(30), listener:
        async with systemd_daemon(tmp_path, listener=listener, watchdog_usec=10_000_000,
                                  extra_env=env) as daemon:  # fmt: skip
            await daemon.notes.wait_for("READY=1")
            client = await daemon.connect()
            async with client.stream:
                created = await client.call("conversations/create", {
                    "agent_cmd": [sys.executable, str(script), str(info)], "cwd": str(tmp_path),
                })  # fmt: skip
                conv = created["result"]["conversation"]["id"]
                await client.call("conversations/subscribe", {"id": conv})
                assert "result" in await client.call("messages/send", {"id": conv, "text": "hi"})
                while not any(n["method"] == "conversation/event"
                              and n["params"]["event"]["type"] == "turn_ended"
                              for n in client.notes):  # fmt: skip
                    client.notes.append(await client.read())
        assert not any(text == "WATCHDOG=1" for _, text in daemon.notes.got)
    agent = json.loads(info.read_text())
    names = set(agent["env"])
    assert names.isdisjoint(_SYSTEMD_VARS), names
    assert not any(k.startswith(("LISTEN_", "WATCHDOG_", "NOTIFY_")) for k in names), names
    # Only stdin, stdout, stderr (plus the directory fd the listing itself used).
    fds = {fd: target for fd, target in agent["fds"].items() if not target.startswith("/proc/")}
    assert sorted(fds) == ["0", "1", "2"], fds
    assert f"socket:[{listener_inode}]" not in agent["fds"].values()


_GOOD_RELOAD = """\
drain_timeout = 3.0
[agents.reloaded]
command = ["python3", "-m", "daemon.agents.demo"]
"""


async def _agent_names(client: LineClient) -> list[str]:
    reply = await client.call("agents/list")
    return [agent["name"] for agent in reply["result"]["agents"]]


async def test_own_socket_and_reload(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("drain_timeout = 3.0\n")
    # LISTEN_* meant for another process (the pid is not ours): ignored, we bind our own.
    stray = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "api"}
    with trio.fail_after(30):
        async with systemd_daemon(tmp_path, extra_env=stray,
                                  args=("--config", str(config))) as daemon:  # fmt: skip
            notes = daemon.notes
            await notes.wait_for("READY=1")
            client = await daemon.connect()  # the socket exists and serves once READY=1 came
            async with client.stream:
                assert "result" in await client.call("daemon/status")
                assert "reloaded" not in await _agent_names(client)
            # A good config: RELOADING=1 with MONOTONIC_USEC=, then READY=1; it is in force.
            await trio.Path(config).write_text(_GOOD_RELOAD)
            daemon.proc.send_signal(signal.SIGHUP)
            reloading = await notes.wait_for("RELOADING=1")
            usec = re.search(r"^MONOTONIC_USEC=(\d+)$", notes.text(reloading), re.M)
            assert usec is not None
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert 0 <= now - int(usec[1]) < 10_000_000
            ready = await notes.wait_for("READY=1", reloading + 1)
            assert "STATUS=config reloaded" in notes.text(ready)
            client = await daemon.connect()
            async with client.stream:
                assert "reloaded" in await _agent_names(client)
            # A broken one (it also drops the agent): the old config stays, status and log
            # name the error.
            await trio.Path(config).write_text("drain_timeout = -1\n")
            daemon.proc.send_signal(signal.SIGHUP)
            reloading = await notes.wait_for("RELOADING=1", ready + 1)
            ready = await notes.wait_for("READY=1", reloading + 1)
            assert "drain_timeout: must be positive" in notes.text(ready), notes.text(ready)
            assert notes.text(ready).split("\n")[1].startswith("STATUS=config not reloaded")
            await daemon.wait_for_log(b"<3>acpd: config not reloaded, keeping the old one")
            # The figures follow, with the error kept in view.
            figures = await notes.wait_for("STATUS=0 live conversations, 0 agents running, 0 "
                                           "stored; config not reloaded, keeping the old one: "
                                           f"{config}: drain_timeout: must be positive",
                                           ready + 1)  # fmt: skip
            assert figures > ready
            client = await daemon.connect()
            async with client.stream:
                assert "result" in await client.call("daemon/status")
                # Still the good reload's config: its agent is there.
                assert "reloaded" in await _agent_names(client)
            daemon.proc.send_signal(signal.SIGTERM)
            await notes.wait_for("STOPPING=1")
            assert await daemon.proc.wait() == 0
        assert not daemon.socket.exists()  # ours, so removed
