"""`daemon.server.systemd`'s runtime parts in-process: sd_notify, the watchdog, the status reporter,
and adopting LISTEN_FDS sockets (on fds moved to a free range, as `first_fd` allows)."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.server import serve as daemon_main
from daemon.server.systemd import (
    ActivationError,
    Notifier,
    ServiceStatus,
    figures,
    keep_alive,
    take_activated_socket,
    watchdog_interval,
)


class Datagrams:
    """The receiving end of a fake NOTIFY_SOCKET; datagrams arrive synchronously."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.notifier = Notifier(str(path))

    def take(self) -> list[str]:
        got = []
        while True:
            try:
                got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return got


@pytest.fixture
def dgrams(tmp_path: Path) -> Iterator[Datagrams]:
    d = Datagrams(tmp_path / "notify")
    yield d
    d.sock.close()


def test_notifier_from_environ_takes_the_variable(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": "/run/user/1/systemd/notify", "OTHER": "x"}
    assert Notifier.from_environ(env).address == "/run/user/1/systemd/notify"
    assert env == {"OTHER": "x"}  # nothing we start can inherit it
    assert not Notifier.from_environ(env).enabled
    assert Notifier().send("READY=1") is False


def test_notifier_failures_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = Notifier(str(tmp_path / "gone"))
    assert gone.send("WATCHDOG=1") is False
    assert gone.send("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "could not notify" in r.message]) == 1
    assert Notifier("relative/path").send("READY=1") is False


def test_notifier_never_blocks(tmp_path: Path) -> None:
    d = Datagrams(tmp_path / "full")
    try:
        # Nobody reads: the queue fills, and further sends fail at once instead of waiting.
        results = [d.notifier.send("WATCHDOG=1") for _ in range(5000)]
        assert results[0] is True
        assert results[-1] is False
    finally:
        d.sock.close()


def test_watchdog_interval() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}
    assert watchdog_interval(dict(env), pid=42) == 15.0
    assert watchdog_interval(dict(env), pid=43) is None  # another process's watchdog
    assert watchdog_interval({"WATCHDOG_USEC": "400000"}, pid=1) == 0.2  # PID unset: ours
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=1) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=1) is None
    assert watchdog_interval({}, pid=1) is None
    watchdog_interval(env, pid=42)
    assert env == {}


async def test_keep_alive_pings_at_the_interval(
    dgrams: Datagrams, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(1.9):
        await keep_alive(dgrams.notifier, 0.2)
    assert dgrams.take() == ["WATCHDOG=1"] * 10  # at 0, 0.2, ... 1.8


def test_figures() -> None:
    assert figures(live=1, agents=1, stored=1) == ("1 live conversation, 1 agent running, 1 stored")
    assert figures(live=0, agents=2, stored=7) == (
        "0 live conversations, 2 agents running, 7 stored"
    )


async def test_service_status_order(
    dgrams: Datagrams, autojump_clock: trio.testing.MockClock
) -> None:
    status = ServiceStatus(dgrams.notifier, interval=5.0)
    live = [0]

    async def current() -> str:
        await trio.lowlevel.checkpoint()
        return figures(live=live[0], agents=0, stored=3)

    # Not ready yet: a SIGHUP must not make systemd think we are (READY=1 before serving),
    # though the failure shows once we are.
    assert status.reloading() is False
    status.reloaded("broken")
    assert dgrams.take() == []
    await status.ready(current)
    assert dgrams.take() == [
        "READY=1\nSTATUS=0 live conversations, 0 agents running, 3 stored; broken"
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(status.report)
        assert status.reloading() is True
        status.reloaded()
        await trio.testing.wait_all_tasks_blocked()
        assert dgrams.take()[1:] == [
            "READY=1\nSTATUS=config reloaded",
            "STATUS=0 live conversations, 0 agents running, 3 stored",
        ]
        await trio.sleep(12)
        assert dgrams.take() == []  # unchanged figures are not sent again
        live[0] = 2
        await trio.sleep(5)
        assert dgrams.take() == ["STATUS=2 live conversations, 0 agents running, 3 stored"]
        # A failed reload: RELOADING=1 (with the monotonic time), READY=1 naming the error,
        # then at once the figures with the error still shown.
        assert status.reloading() is True
        status.reloaded("config not reloaded: x.toml: drain_timeout: must be positive\nmore")
        await trio.testing.wait_all_tasks_blocked()
        reloading, ready, after = dgrams.take()
        fields = reloading.split("\n")
        assert fields[0] == "RELOADING=1"
        usec = int(fields[1].removeprefix("MONOTONIC_USEC="))
        # CLOCK_MONOTONIC in microseconds (the real clock: the mock one is trio's alone).
        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000
        error = "config not reloaded: x.toml: drain_timeout: must be positive more"
        assert ready == f"READY=1\nSTATUS={error}"  # one line: a newline would end the field
        assert after == f"STATUS=2 live conversations, 0 agents running, 3 stored; {error}"
        status.stopping("draining turns (up to 10s)")
        status.stopping()
        assert status.reloading() is False  # after STOPPING=1, no more READY=1
        live[0] = 1
        await trio.sleep(10)
        assert dgrams.take() == ["STOPPING=1\nSTATUS=stopping: draining turns (up to 10s)"]
        nursery.cancel_scope.cancel()


# --- socket activation --------------------------------------------------------------------------


def _free_fd_range(count: int) -> int:
    for base in range(400, 1000):
        if all(_closed(fd) for fd in range(base, base + count)):
            return base
    raise AssertionError("no free fd range")


def _closed(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return True
    return False


class Passed:
    """Files placed at consecutive fds, as systemd passes them (here from a free range)."""

    def __init__(self, *objs: socket.socket | int) -> None:
        self.base = _free_fd_range(len(objs))
        for i, obj in enumerate(objs):
            fd = obj if isinstance(obj, int) else obj.fileno()
            os.dup2(fd, self.base + i, inheritable=True)
        self.fds = list(range(self.base, self.base + len(objs)))

    def env(self, names: str | None = None, pid: int = 4242) -> dict[str, str]:
        env = {"LISTEN_PID": str(pid), "LISTEN_FDS": str(len(self.fds)), "KEEP": "1"}
        if names is not None:
            env["LISTEN_FDNAMES"] = names
        return env

    def take(self, env: dict[str, str]) -> socket.socket | None:
        return take_activated_socket(env, pid=4242, first_fd=self.base)

    def close(self) -> None:
        for fd in self.fds:
            if not _closed(fd):
                os.close(fd)


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "api.sock"))
    sock.listen()
    yield sock
    sock.close()


def test_activation_takes_the_named_socket(tmp_path: Path, unix_listener: socket.socket) -> None:
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(tmp_path / "other.sock"))
    other.listen()
    passed = Passed(other, unix_listener)
    try:
        env = passed.env("metrics:api")
        sock = passed.take(env)
        assert sock is not None
        with sock:
            assert sock.fileno() == passed.base + 1
            assert sock.getsockname() == str(tmp_path / "api.sock")
            assert not os.get_inheritable(sock.fileno())  # FD_CLOEXEC: agents never get it
            assert _closed(passed.base)  # the one we don't serve is closed
        assert env == {"KEEP": "1"}  # LISTEN_* gone
    finally:
        passed.close()
        other.close()


def test_activation_takes_the_single_unix_listener(
    tmp_path: Path, unix_listener: socket.socket
) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    passed = Passed(udp, unix_listener)
    try:
        sock = passed.take(passed.env())  # no names at all
        assert sock is not None
        with sock:
            assert sock.fileno() == passed.base + 1
    finally:
        passed.close()
        udp.close()


def test_activation_for_another_process_is_ignored(unix_listener: socket.socket) -> None:
    passed = Passed(unix_listener)
    try:
        env = passed.env("api", pid=1)
        assert passed.take(env) is None
        assert env == {"KEEP": "1"}
        assert not _closed(passed.base)  # not ours to close
        assert take_activated_socket({}, pid=4242) is None
        assert take_activated_socket({"LISTEN_PID": "4242", "LISTEN_FDS": "0"}, pid=4242) is None
    finally:
        passed.close()


@pytest.mark.parametrize("named", [True, False])
@pytest.mark.parametrize("kind", ["tcp", "not listening", "file"])
def test_activation_refuses_what_it_cannot_serve(tmp_path: Path, kind: str, named: bool) -> None:
    obj: socket.socket | int
    if kind == "tcp":
        obj = tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
    elif kind == "not listening":
        obj = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        obj = os.open(tmp_path / "file", os.O_CREAT | os.O_RDWR)
    passed = Passed(obj)
    try:
        env = passed.env("api" if named else None)
        message = "fd named 'api' is not a listening unix" if named else "none is named 'api'"
        with pytest.raises(ActivationError, match=message):
            passed.take(env)
        assert env == {"KEEP": "1"}
        assert _closed(passed.base)
    finally:
        passed.close()
        if isinstance(obj, socket.socket):
            obj.close()
        else:
            os.close(obj)


def test_activation_error_is_one_line_from_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "three")
    code = daemon_main.serve_main(data_dir=tmp_path / "d", socket=tmp_path / "s.sock", ws=None,
                                  no_ws=True, config_path=tmp_path / "absent.toml")  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err == "acpd: error: LISTEN_FDS='three' is not a number\n"
    assert "LISTEN_PID" not in os.environ
    assert not (tmp_path / "d").exists()  # refused before touching anything


async def test_status_survives_failing_figures(
    dgrams: Datagrams, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    status = ServiceStatus(dgrams.notifier, interval=1.0)

    async def broken() -> str:
        await trio.lowlevel.checkpoint()
        raise OSError("disk I/O error")

    await status.ready(broken)
    with trio.move_on_after(10):
        await status.report()
    assert dgrams.take() == ["READY=1\nSTATUS=figures unavailable"]
    assert len([r for r in caplog.records if "no figures" in r.message]) == 1
