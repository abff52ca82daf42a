"""The unix-socket front-end over a real socket in tmp_path (real time, real hang guards)."""

from __future__ import annotations

import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from daemon.server import unix
from daemon.server.dispatch import DaemonInfo, Dispatcher
from daemon.server.unix import ListenError, serve_unix
from protocol.jsonrpc import BUSY
from tests.fakes.engine import FakeEngine, LineClient

STATUS = b'{"jsonrpc": "2.0", "id": 1, "method": "conversations/count"}\n'


Connect = Callable[[Path], Awaitable[LineClient]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    clients: list[LineClient] = []

    async def connect(path: Path) -> LineClient:
        with trio.fail_after(5):
            clients.append(LineClient(await trio.open_unix_socket(str(path))))
        return clients[-1]

    yield connect
    for client in clients:
        await client.stream.aclose()


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "acpd.sock"


@pytest.fixture
def dispatcher(engine: FakeEngine) -> Dispatcher:
    return Dispatcher(engine, DaemonInfo(Path("/data"), "0", 0.0))


async def start(nursery: trio.Nursery, path: Path, dispatcher: Dispatcher, **kw: Any) -> None:
    with trio.fail_after(5):
        await nursery.start(partial(serve_unix, path, dispatcher, **kw))


async def test_permissions_and_unlink_on_exit(
    sock_path: Path, dispatcher: Dispatcher, connect: Connect
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700
            st = os.stat(sock_path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600
            client = await connect(sock_path)
            await client.send(STATUS)
            assert await client.read() == {"jsonrpc": "2.0", "id": 1, "result": {"count": 2}}
            nursery.cancel_scope.cancel()
    assert not await trio.Path(sock_path).exists()


async def test_replaced_socket_is_not_unlinked(sock_path: Path, dispatcher: Dispatcher) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            os.unlink(sock_path)
            await trio.Path(sock_path).write_text("a successor's file")
            nursery.cancel_scope.cancel()
    assert await trio.Path(sock_path).read_text() == "a successor's file"


async def test_stale_socket_is_replaced(
    sock_path: Path, dispatcher: Dispatcher, connect: Connect
) -> None:
    sock_path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock_path))  # bound, never listening, closed: a dead daemon's leftover
    assert await trio.Path(sock_path).exists()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            client = await connect(sock_path)
            await client.send(STATUS)
            assert await client.read() is not None
            nursery.cancel_scope.cancel()


async def test_live_daemon_is_not_displaced(sock_path: Path, dispatcher: Dispatcher) -> None:
    sock_path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(sock_path))
        live.listen()
        with trio.fail_after(10), pytest.raises(ListenError, match="already serving"):
            await serve_unix(sock_path, dispatcher)
    assert await trio.Path(sock_path).exists()


async def test_refuses_what_is_not_ours(tmp_path: Path, dispatcher: Dispatcher) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ListenError, match="not a socket"):
        await serve_unix(tmp_path / "file", dispatcher)
    with pytest.raises(ListenError, match="not a directory"):
        await serve_unix(tmp_path / "file" / "acpd.sock", dispatcher)
    with pytest.raises(ListenError, match="too long"):
        await serve_unix(tmp_path / ("x" * 120) / "acpd.sock", dispatcher)
    if os.getuid() == 0:  # only root can make a directory someone else's
        other = tmp_path / "other"
        other.mkdir()
        os.chown(other, 4242, 4242)
        with pytest.raises(ListenError, match="belongs to uid 4242"):
            await serve_unix(other / "acpd.sock", dispatcher)


async def test_other_uid_is_refused(
    sock_path: Path, dispatcher: Dispatcher, connect: Connect
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher, allowed_uid=os.getuid() + 1)
            client = await connect(sock_path)
            reply = await client.read()
            assert reply is not None
            assert reply["error"]["code"] == -32004
            assert await client.read() is None  # and closed
            # The injectable check: the peer claims to be the allowed uid.
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher, allowed_uid=4242,
                        get_peer_uid=lambda sock: 4242)  # fmt: skip
            client = await connect(sock_path)
            await client.send(STATUS)
            assert (await client.read() or {}).get("result") == {"count": 2}
            nursery.cancel_scope.cancel()


async def test_oversized_line_gets_an_error_then_close(
    sock_path: Path, dispatcher: Dispatcher, engine: FakeEngine, connect: Connect
) -> None:
    engine.config = engine.config.__class__(max_line_bytes=100)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            client = await connect(sock_path)
            await client.send(STATUS + b'{"jsonrpc": "2.0", "id": 2, "method": "' + b"x" * 200)
            replies = [await client.read(), await client.read()]
            assert {"id": 1, "jsonrpc": "2.0", "result": {"count": 2}} in replies
            assert {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "line too long (limit 100 bytes)"},
            } in replies
            assert await client.read() is None
            nursery.cancel_scope.cancel()


async def test_garbage_then_valid_requests(
    sock_path: Path, dispatcher: Dispatcher, connect: Connect
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            client = await connect(sock_path)
            await client.send(b"\x00\xff garbage\n\r\n\n")
            assert (await client.read() or {})["error"]["code"] == -32700
            # Same connection, split across writes: still served.
            for part in (STATUS[:10], STATUS[10:30], STATUS[30:]):
                await client.send(part)
            assert (await client.read() or {})["result"] == {"count": 2}
            await client.stream.aclose()
            # A new connection; its last line has no newline and arrives just before EOF.
            client = await connect(sock_path)
            await client.send(STATUS.rstrip(b"\n"))
            await client.stream.send_eof()
            assert (await client.read() or {})["result"] == {"count": 2}
            assert await client.read() is None
            nursery.cancel_scope.cancel()


async def test_client_reset_mid_subscription(
    sock_path: Path, dispatcher: Dispatcher, engine: FakeEngine, connect: Connect
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            client = await connect(sock_path)
            await client.send(STATUS.replace(b"conversations/count", b"conversations/subscribe")
                              .replace(b"}", b', "params": {"id": "abc"}}'))  # fmt: skip
            assert (await client.read() or {})["result"] == {"through_seq": 2}
            # Linger 0: close with a reset, as a killed client does.
            linger = struct.pack("ii", 1, 0)
            client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            await client.stream.aclose()
            for _ in range(50):
                engine.publish("abc123")
                await trio.lowlevel.checkpoint()
            await engine.subs[0].closed_event.wait()
            other = await connect(sock_path)
            await other.send(STATUS)
            assert (await other.read() or {})["result"] == {"count": 2}
            nursery.cancel_scope.cancel()


async def test_adopted_socket(tmp_path: Path, dispatcher: Dispatcher, connect: Connect) -> None:
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_unix, None, dispatcher, adopt=listener))
            client = await connect(path)
            await client.send(STATUS)
            assert (await client.read() or {})["result"] == {"count": 2}
            nursery.cancel_scope.cancel()
    assert await trio.Path(path).exists()  # systemd's socket, not ours to remove


# --- the socket directory is ours only --------------------------------------------------------


async def test_an_existing_socket_dir_is_used_as_it_is_if_no_one_else_may_write(
    sock_path: Path, dispatcher: Dispatcher
) -> None:
    sock_path.parent.mkdir()
    os.chmod(sock_path.parent, 0o755)  # e.g. a /tmp/acpd-$UID made by hand
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o755  # not ours to change
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("mode", "writers"),
    [(0o775, "its group"), (0o757, "others"), (0o777, "its group and others")],
)
async def test_a_socket_dir_others_may_write_is_refused_and_left_alone(
    sock_path: Path, dispatcher: Dispatcher, mode: int, writers: str
) -> None:
    sock_path.parent.mkdir()
    os.chmod(sock_path.parent, mode)  # a shared directory
    with trio.fail_after(10), pytest.raises(ListenError) as refused:
        await serve_unix(sock_path, dispatcher)
    assert str(refused.value) == (
        f"socket directory {sock_path.parent} is writable by {writers} (mode {mode:04o}), so "
        "others could replace the socket; acpd does not change the mode of a directory it did "
        f"not create: use a directory of your own (or `chmod go-w {sock_path.parent}`)"
    )
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == mode
    assert os.listdir(sock_path.parent) == []  # no socket made


async def test_a_missing_socket_dir_is_created_0700_with_its_parents(
    tmp_path: Path, dispatcher: Dispatcher
) -> None:
    path = tmp_path / "new" / "deeper" / "s.sock"
    old = os.umask(0o022)  # whatever the umask
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await start(nursery, path, dispatcher)
                for made in (tmp_path / "new", path.parent):
                    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
                nursery.cancel_scope.cancel()
    finally:
        os.umask(old)


async def test_socket_dir_of_another_uid_is_refused(
    sock_path: Path, dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path.parent.mkdir(mode=0o700)
    owner = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # as if someone else made it
    with trio.fail_after(10), pytest.raises(ListenError, match=f"belongs to uid {owner}"):
        await serve_unix(sock_path, dispatcher)
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o700  # left alone


# --- an error that ends a connection is read, not lost to a reset -----------------------------


async def test_oversized_line_error_then_clean_eof_while_the_client_still_writes(
    sock_path: Path, dispatcher: Dispatcher, engine: FakeEngine, connect: Connect
) -> None:
    engine.config = engine.config.__class__(max_line_bytes=100)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            client = await connect(sock_path)
            await client.send(b"x" * 200)  # a line over the cap, not finished yet
            reply = await client.read()
            assert reply["error"] == {"code": -32600, "message": "line too long (limit 100 bytes)"}
            # The client is still sending the rest of its line. Closed with that unread, the
            # socket would be reset (EPIPE here, or ECONNRESET instead of the reply): the
            # daemon half-closes and discards it instead.
            await client.send(b"x" * 10_000)
            assert await client.read() is None  # a clean EOF
            nursery.cancel_scope.cancel()


async def test_wrong_uid_refusal_is_read_although_the_request_was_never_read(
    sock_path: Path, dispatcher: Dispatcher
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher, allowed_uid=os.getuid() + 1)
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(str(sock_path))
            raw.sendall(STATUS)  # queued before the daemon even looks at the connection
            raw.setblocking(False)
            client = LineClient(trio.SocketStream(trio.socket.from_stdlib_socket(raw)))
            try:
                assert (await client.read())["error"]["code"] == -32004
                assert await client.read() is None  # EOF, not ECONNRESET
            finally:
                await client.stream.aclose()
            nursery.cancel_scope.cancel()


async def test_linger_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    from daemon.server._linger import LINGER_BYTES, LINGER_S, linger

    ours, theirs = trio.testing.memory_stream_pair()
    # A client that never stops and never closes: given up on after LINGER_S.
    await linger(ours)
    assert trio.current_time() == LINGER_S
    assert await theirs.receive_some() == b""  # it was told EOF first
    # One that floods: given up on after LINGER_BYTES.
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.send_all(b"x" * (LINGER_BYTES + 10))
    start = trio.current_time()
    await linger(ours)
    assert trio.current_time() == start


async def test_connections_past_the_cap_are_told_why_and_closed(
    sock_path: Path,
    dispatcher: Dispatcher,
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(unix, "MAX_CONNECTIONS", 2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            first, second = await connect(sock_path), await connect(sock_path)
            assert (await first.call("conversations/count"))["result"] == {"count": 2}
            assert (await second.call("conversations/count"))["result"] == {"count": 2}
            for _ in range(2):
                extra = await connect(sock_path)
                refusal = await extra.read()
                assert refusal["error"]["code"] == BUSY
                assert "2 clients are connected" in refusal["error"]["message"]
                assert await extra.read() is None
            warnings = [r for r in caplog.records if "refused a connection" in r.getMessage()]
            assert [r.levelname for r in warnings if r.levelname != "DEBUG"] == ["WARNING"]
            # The ones in serve on; one leaving makes room.
            assert (await first.call("conversations/count"))["result"] == {"count": 2}
            await second.stream.aclose()
            await trio.testing.wait_all_tasks_blocked()
            third = await connect(sock_path)
            assert (await third.call("conversations/count"))["result"] == {"count": 2}
            nursery.cancel_scope.cancel()


async def test_deep_nesting_is_answered_and_the_connection_lives_on(
    sock_path: Path, dispatcher: Dispatcher, connect: Connect
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await start(nursery, sock_path, dispatcher)
            client = await connect(sock_path)
            line = b'{"jsonrpc":"2.0","id":1,"method":"conversations/create","params":'
            await client.send(line + deep + b"}\n" + STATUS.replace(b'"id": 1', b'"id": 2'))
            replies = [await client.read(), await client.read()]
            assert {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "invalid request: nested too deeply"},
            } in replies
            assert {"jsonrpc": "2.0", "id": 2, "result": {"count": 2}} in replies
            await client.send(STATUS)
            assert (await client.read() or {})["result"] == {"count": 2}
            nursery.cancel_scope.cancel()
