"""The dashboard under a crowd of idle connections: strangers never lock out a token holder.

In-process over memory streams with the autojump clock: hundreds of connections that send
nothing, and a flood that keeps opening more, cost no real time, and the deadlines they meet
are exact. The real client speaks HTTP, the websocket handshake (trio-websocket's client) and
`auth` as the page does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
import trio_websocket

from daemon.server import dashboard
from daemon.server._admission import Admission
from daemon.server.dispatch import DaemonInfo, Dispatcher
from tests.fakes.engine import FakeEngine

PORT = 7421
TOKEN = "t" * 43
HOST = f"localhost:{PORT}"  # a name the site serves (memory streams have no address)


def make_site(tmp_path: Path, admission: Admission) -> Any:
    engine = FakeEngine()
    engine.add("abc123", n_events=1)
    dispatcher = Dispatcher(engine, DaemonInfo(tmp_path, "0", 0.0))
    return dashboard._Site(
        dispatcher=dispatcher,
        data_dir=tmp_path,
        token=TOKEN.encode(),
        files=dashboard._load_files(),
        scheme="http",
        url_host="127.0.0.1",
        names=frozenset({"localhost"}),
        port=PORT,
        head_timeout=dashboard.HEAD_TIMEOUT_S,
        auth_timeout=dashboard.AUTH_TIMEOUT_S,
        admission=admission,
    )


def open_idle(nursery: trio.Nursery, site: Any) -> trio.abc.Stream:
    """A connection that sends nothing; returns the client's end (kept open)."""
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(dashboard._handle, site, server)
    return client


@asynccontextmanager
async def token_holder(site: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A page's websocket: connected, handshaken and authenticated."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dashboard._handle, site, server)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            _as_socket(client),
            HOST,
            "/ws",
            extra_headers=[(b"Origin", f"http://{HOST}".encode())],
        )
        await ws.send_message(
            json.dumps({"jsonrpc": "2.0", "id": 0, "method": "auth", "params": {"token": TOKEN}})
        )
        reply = json.loads(await ws.get_message())
        assert reply == {"jsonrpc": "2.0", "id": 0, "result": {}}, reply
        try:
            yield ws
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def call(ws: trio_websocket.WebSocketConnection, method: str) -> Any:
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}))
    return json.loads(await ws.get_message())


async def test_idle_connections_never_lock_out_a_token_holder(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    admission = Admission(max_pending=64, max_authenticated=8, pending_timeout=5.0)
    site = make_site(tmp_path, admission)
    async with trio.open_nursery() as nursery:
        idle = [open_idle(nursery, site) for _ in range(600)]
        await trio.testing.wait_all_tasks_blocked()
        stats = admission.statistics()
        assert (stats.pending, stats.evicted) == (64, 600 - 64)

        async def flood() -> None:  # and more keep coming, as fast as the loop lets them
            while True:
                idle.append(open_idle(nursery, site))
                await trio.lowlevel.checkpoint()

        nursery.start_soon(flood)
        t0 = trio.current_time()
        async with token_holder(site) as ws:
            assert trio.current_time() == t0  # in at once: no deadline had to pass first
            status = await call(ws, "daemon/status")
            assert status["result"]["conversations_stored"] == 1
            nursery.cancel_scope.cancel()  # the flood stops
        assert admission.statistics().evicted > 600
    async with trio.open_nursery() as nursery:
        # Without a flood, the idle ones left end at their deadline.
        for _ in range(10):
            idle.append(open_idle(nursery, site))
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
    assert trio.current_time() - t0 == pytest.approx(5.0)
    stats = admission.statistics()
    assert (stats.pending, stats.authenticated, stats.timed_out) == (0, 0, 10)


async def test_head_handshake_and_auth_share_one_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Each step in time is not enough: a stranger has 5 s from accept to `auth` in all."""
    admission = Admission(pending_timeout=5.0)
    site = make_site(tmp_path, admission)
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dashboard._handle, site, server)
        t0 = trio.current_time()
        await trio.sleep(3)  # within the head's own 5 s
        await client.send_all(
            f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nOrigin: http://{HOST}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .encode()
        )  # fmt: skip
        response = b""
        while b"\r\n\r\n" not in response:
            response += await client.receive_some()
        assert response.startswith(b"HTTP/1.1 101 ")
        while await client.receive_some():  # no `auth` follows: closed, at 5 s, not 3 + 5
            pass
        assert trio.current_time() - t0 == pytest.approx(5.0)
    stats = admission.statistics()
    assert (stats.timed_out, stats.pending) == (1, 0)


async def test_authenticated_clients_have_their_own_cap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    admission = Admission(max_pending=4, max_authenticated=2)
    site = make_site(tmp_path, admission)
    async with token_holder(site) as first, token_holder(site) as second:
        assert admission.statistics().authenticated == 2
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dashboard._handle, site, server)
            ws = await trio_websocket.wrap_client_stream(nursery, _as_socket(client), HOST, "/ws",
                extra_headers=[(b"Origin", f"http://{HOST}".encode())],
            )  # fmt: skip
            auth = {"jsonrpc": "2.0", "id": 0, "method": "auth", "params": {"token": TOKEN}}
            await ws.send_message(json.dumps(auth))
            reply = json.loads(await ws.get_message())
            assert reply["error"] == {
                "code": -32006,
                "message": "busy: too many dashboard clients (limit 2)",
            }
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1013
        # Those already in are not disturbed, and have no deadline.
        await trio.sleep(3600)
        assert (await call(first, "conversations/count"))["result"] == {"count": 1}
        assert (await call(second, "conversations/count"))["result"] == {"count": 1}
    stats = admission.statistics()
    assert (stats.authenticated, stats.refused, stats.pending) == (0, 1, 0)


def _as_socket(stream: trio.abc.Stream) -> trio.SocketStream:
    """A memory stream where trio-websocket's hints name only sockets (any stream works)."""
    return cast("trio.SocketStream", stream)
