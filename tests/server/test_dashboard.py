"""The dashboard's HTTP + websocket server on a real loopback port, with the fake engine.

Real sockets and real time (short timeouts where a test waits for one), each test under a
`fail_after` hang guard. What must hold: the page is served with its security headers; a
foreign Origin or Host gets 403 before any websocket handshake; and no API call runs before
the client has presented the token as its first message.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

from daemon.config import parse_ws_address
from daemon.server.dashboard import PRE_AUTH_BYTES, serve_dashboard
from daemon.server.dispatch import DaemonInfo, Dispatcher
from daemon.server.tokens import (
    CODE_TTL_S,
    CODES_DIR,
    TOKEN_FILE,
    claim_login_code,
    create_login_code,
    load_or_create_token,
)
from daemon.server.unix import ListenError
from tests.fakes.engine import FakeEngine

UNAUTHORIZED = -32004
INVALID_REQUEST = -32600


@attrs.frozen
class Site:
    url: str
    port: int
    token: str
    engine: FakeEngine
    dispatcher: Dispatcher

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def site(nursery: trio.Nursery, tmp_path: Path) -> Site:
    engine = FakeEngine()
    engine.add("abc123", n_events=2)
    dispatcher = Dispatcher(engine, DaemonInfo(tmp_path, "0", 0.0))
    with trio.fail_after(5):
        serve = partial(serve_dashboard, head_timeout=0.5, auth_timeout=0.5)
        url = await nursery.start(serve, "127.0.0.1:0", dispatcher, tmp_path)
    token = (tmp_path / TOKEN_FILE).read_text().strip()
    port = int(url.rstrip("/").rpartition(":")[2])
    return Site(url, port, token, engine, dispatcher)


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the response's status, headers (lower-case names) and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def get(path: str, port: int, *extra: str, method: str = "GET", host: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade(port: int, *extra: str, host: str | None = None) -> bytes:
    return get("/ws", port, "Upgrade: websocket", "Connection: Upgrade",
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
               *extra, host=host)  # fmt: skip


# --- the page ----------------------------------------------------------------------------------


async def test_page_and_assets_with_security_headers(site: Site) -> None:
    with trio.fail_after(10):
        status, headers, body = await http(site.port, get("/", site.port))
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script type="module" src="/app.js">' in body
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert f"connect-src 'self' ws://127.0.0.1:{site.port}" in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["cache-control"] == "no-cache"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert int(headers["content-length"]) == len(body)
        for path, kind in [("/app.js", "text/javascript"), ("/rpc.js", "text/javascript"),
                           ("/conversation.js", "text/javascript"), ("/style.css", "text/css"),
                           ("/tools.js", "text/javascript"), ("/diff.js", "text/javascript"),
                           ("/session.js", "text/javascript"), ("/complete.js", "text/javascript"),
                           ("/questions.js", "text/javascript"), ("/dom.js", "text/javascript"),
                           ("/permissions.js", "text/javascript"),
                           ("/timeline.js", "text/javascript"), ("/list.js", "text/javascript"),
                           ("/favicon.svg", "image/svg+xml")]:  # fmt: skip
            status, headers, body = await http(site.port, get(path, site.port))
            assert (status, headers["content-type"].split(";")[0]) == (200, kind), path
            assert body
        status, headers, body = await http(site.port, get("/", site.port, method="HEAD"))
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        ("GET /nope", 404),
        ("GET /../../etc/passwd", 404),
        ("POST /", 405),
        ("DELETE /app.js", 405),
        ("POST /ws", 405),
        ("GET /ws", 426),  # a plain GET of the websocket path
    ],
)
async def test_other_requests(site: Site, request_line: str, expected: int) -> None:
    method, path = request_line.split()
    with trio.fail_after(10):
        status, _, _ = await http(site.port, get(path, site.port, method=method))
    assert status == expected


async def test_malformed_and_oversized_heads(site: Site) -> None:
    with trio.fail_after(10):
        status, _, _ = await http(site.port, b"NONSENSE\r\n\r\n")
        assert status == 400
        big = get("/", site.port, f"X-Filler: {'a' * 20_000}")
        status, _, _ = await http(site.port, big)
        assert status == 431


async def test_slow_head_is_cut_off(site: Site) -> None:
    """A client that never finishes its request head is disconnected (head_timeout=0.5s)."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", site.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
            start = trio.current_time()
            assert await stream.receive_some() == b""
            assert trio.current_time() - start < 5


# --- who may open the websocket ------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["Origin: http://evil.example", "Origin: http://localhost:{port}", "Origin: null", None],
)
async def test_foreign_origin_gets_403_before_any_handshake(site: Site, origin: str | None) -> None:
    extra = [origin.format(port=site.port)] if origin else []
    with trio.fail_after(10):
        status, headers, _ = await http(site.port, upgrade(site.port, *extra))
    assert status == 403
    assert "sec-websocket-accept" not in headers
    assert site.dispatcher.statistics().connections == 0
    assert site.engine.calls == []


async def test_foreign_host_gets_403(site: Site) -> None:
    """DNS rebinding: another name that resolves to us is refused, page and websocket alike."""
    with trio.fail_after(10):
        status, _, body = await http(site.port, get("/", site.port, host=f"evil.test:{site.port}"))
        assert status == 403
        assert site.url.encode() in body
        origin = f"Origin: http://evil.test:{site.port}"
        status, _, _ = await http(site.port, upgrade(site.port, origin, host="evil.test"))
        assert status == 403


async def test_foreign_origin_refused_for_a_real_websocket_client(site: Site) -> None:
    rejected = pytest.RaisesExc(trio_websocket.ConnectionRejected,
                                check=lambda e: e.status_code == 403)  # fmt: skip
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", site.port)
        async with stream:
            with pytest.RaisesGroup(rejected):
                async with trio.open_nursery() as nursery:
                    await trio_websocket.wrap_client_stream(
                        nursery, stream, f"127.0.0.1:{site.port}", "/ws",
                        extra_headers=[(b"Origin", b"http://evil.example")],
                    )  # fmt: skip


def auth(token: object, req_id: object = 0) -> str:
    msg = {"jsonrpc": "2.0", "id": req_id, "method": "auth", "params": {"token": token}}
    return json.dumps(msg)


@asynccontextmanager
async def connect(site: Site) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client websocket from the dashboard's own origin (the caller holds the hang guard)."""
    # Our own TCP stream: trio-websocket's client leaves it open when the server closes.
    stream = await trio.open_tcp_stream("127.0.0.1", site.port)
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, f"127.0.0.1:{site.port}", "/ws",
            extra_headers=[(b"Origin", site.origin.encode())],
        )  # fmt: skip
        try:
            yield ws
        finally:
            await ws.aclose()


@pytest.mark.parametrize(
    "first",
    [
        pytest.param('{"jsonrpc":"2.0","id":5,"method":"conversations/count"}', id="api-call"),
        pytest.param(auth("x" * 43, req_id=5), id="wrong-token"),
        pytest.param(auth("", req_id=5), id="empty-token"),
        pytest.param(auth(None, req_id=5), id="token-not-a-string"),
        pytest.param('{"jsonrpc":"2.0","id":5,"method":"auth"}', id="no-params"),
        pytest.param(
            '{"jsonrpc":"2.0","id":5,"method":"auth","params":{"token":"x","code":"y"}}',
            id="token-and-code",
        ),
        pytest.param(
            '{"jsonrpc":"2.0","id":5,"method":"auth","params":{"code":"../dashboard.token"}}',
            id="code-is-a-path",
        ),
        pytest.param(auth("x" * 43, req_id=5).encode(), id="binary-frame"),
        pytest.param("not json", id="garbage"),
    ],
)
async def test_no_api_call_before_a_good_token(site: Site, first: str | bytes) -> None:
    with trio.fail_after(10):
        async with connect(site) as ws:
            await ws.send_message(first)
            reply = json.loads(await ws.get_message())
            assert reply["error"]["code"] == UNAUTHORIZED
            assert reply["id"] == (5 if isinstance(first, str) and first != "not json" else None)
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None
            assert info.value.reason.code == 1008
    assert site.engine.calls == []
    assert site.dispatcher.statistics().connections == 0
    assert site.dispatcher.statistics().requests == 0


async def test_silent_client_is_closed(site: Site) -> None:
    with trio.fail_after(10):
        async with connect(site) as ws:
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()  # auth_timeout=0.5s
            assert info.value.reason is not None
            assert info.value.reason.code == 1008
    assert site.engine.calls == []


async def test_good_token_then_the_api_one_message_per_frame(site: Site) -> None:
    with trio.fail_after(10):
        async with connect(site) as ws:
            await ws.send_message(auth(site.token, req_id="a"))
            assert json.loads(await ws.get_message()) == {"jsonrpc": "2.0", "id": "a", "result": {}}

            async def call(req_id: int, method: str, **params: Any) -> Any:
                msg = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
                await ws.send_message(json.dumps(msg))
                return json.loads(await ws.get_message())

            reply = await call(1, "conversations/count")
            assert reply == {"jsonrpc": "2.0", "id": 1, "result": {"count": 1}}
            reply = await call(2, "conversations/subscribe", id="abc")
            assert reply["result"] == {"through_seq": 2}
            frames = [await ws.get_message() for _ in range(2)]
            site.engine.publish("abc123", "agent_message")
            frames.append(await ws.get_message())
            for frame in frames:
                assert isinstance(frame, str)
                assert not frame.endswith("\n")  # exactly one JSON message per frame
            seqs = [json.loads(f)["params"]["event"]["seq"] for f in frames]
            assert seqs == [1, 2, 3]
            reply = await call(3, "auth", token=site.token)  # only as the first message
            assert reply["error"]["code"] == -32601
            await ws.aclose()
    assert [c[0] for c in site.engine.calls] == ["count", "subscribe"]


async def test_little_is_read_before_authentication(site: Site) -> None:
    """Up to `auth`'s answer a client may send a few KiB, not the 4 MiB a frame may carry
    later: past that the connection is dropped, unanswered."""
    with trio.fail_after(10):
        async with connect(site) as ws:
            await ws.send_message(auth(site.token) + " " * (4 * PRE_AUTH_BYTES))
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
    assert site.engine.calls == []
    assert site.dispatcher.statistics().connections == 0


async def test_after_authentication_big_frames_and_binary_refused(site: Site) -> None:
    with trio.fail_after(10):
        async with connect(site) as ws:
            await ws.send_message(auth(site.token))
            assert json.loads(await ws.get_message())["result"] == {}
            big = "x" * (16 * PRE_AUTH_BYTES)  # well within the frame cap, once authenticated
            msg = {"jsonrpc": "2.0", "id": 1, "method": "messages/send",
                   "params": {"id": "abc", "text": big}}  # fmt: skip
            await ws.send_message(json.dumps(msg))
            reply = json.loads(await ws.get_message())
            assert reply.get("result", {}).get("seq") == 3, reply
            # CONTRACT.md: JSON-RPC goes in text frames. A binary one gets an error, and the
            # connection lives on.
            await ws.send_message(b'{"jsonrpc":"2.0","id":2,"method":"conversations/count"}')
            reply = json.loads(await ws.get_message())
            assert reply["id"] is None
            assert reply["error"]["code"] == INVALID_REQUEST
            assert "text frame" in reply["error"]["message"]
            await ws.send_message('{"jsonrpc":"2.0","id":3,"method":"conversations/count"}')
            assert json.loads(await ws.get_message())["result"] == {"count": 1}
    assert [c[0] for c in site.engine.calls] == ["send", "count"]
    assert site.engine.calls[0][2] == big


def auth_code(code: str, req_id: object = 0) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": req_id, "method": "auth", "params": {"code": code}})


async def test_a_login_code_is_exchanged_for_the_token_once(site: Site, tmp_path: Path) -> None:
    """`acpd dashboard --open` hands the browser a code, not the token (command lines are
    visible to other users): the page trades it for the token, and it never works again."""
    code = create_login_code(tmp_path)
    assert code != site.token
    with trio.fail_after(10):
        async with connect(site) as ws:
            await ws.send_message(auth_code(code, req_id=7))
            reply = json.loads(await ws.get_message())
            assert reply == {"jsonrpc": "2.0", "id": 7, "result": {"token": site.token}}
            await ws.send_message('{"jsonrpc":"2.0","id":1,"method":"conversations/count"}')
            assert json.loads(await ws.get_message())["result"] == {"count": 1}
        async with connect(site) as ws:  # used: refused, like a wrong token
            await ws.send_message(auth_code(code))
            reply = json.loads(await ws.get_message())
            assert reply["error"]["code"] == UNAUTHORIZED
            assert "used already or has expired" in reply["error"]["message"]
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
    assert [c[0] for c in site.engine.calls] == ["count"]


def test_login_codes_are_private_single_use_and_expire(tmp_path: Path) -> None:
    codes = tmp_path / CODES_DIR
    first = create_login_code(tmp_path)
    assert stat.S_IMODE(codes.stat().st_mode) == 0o700
    assert stat.S_IMODE((codes / first).stat().st_mode) == 0o600
    second = create_login_code(tmp_path)
    assert first != second
    old = time.time() - CODE_TTL_S - 1
    os.utime(codes / second, (old, old))
    assert claim_login_code(tmp_path, second) is False  # expired (and now removed)
    assert claim_login_code(tmp_path, first) is True
    assert claim_login_code(tmp_path, first) is False  # single use
    assert claim_login_code(tmp_path, "../" + TOKEN_FILE) is False
    assert claim_login_code(tmp_path, "x" * 43) is False  # never made
    stale = create_login_code(tmp_path)
    os.utime(codes / stale, (old, old))
    fresh = create_login_code(tmp_path)  # minting prunes expired codes
    assert sorted(os.listdir(codes)) == [fresh]
    os.chmod(codes, 0o755)
    with pytest.raises(PermissionError):
        create_login_code(tmp_path)


# --- the token and the address -----------------------------------------------------------------


def test_token_file_is_private_and_reused(tmp_path: Path) -> None:
    token = load_or_create_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert len(token) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token
    os.chmod(path, 0o644)  # others could have read it: not to be trusted any more
    fresh = load_or_create_token(tmp_path)
    assert fresh != token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    assert load_or_create_token(tmp_path) not in (fresh, "short")
    assert sorted(p.name for p in tmp_path.iterdir()) == [TOKEN_FILE]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:7421", ("127.0.0.1", "127.0.0.1", 7421)),
        ("127.0.0.1:0", ("127.0.0.1", "127.0.0.1", 0)),
        ("[::1]:8000", ("::1", "[::1]", 8000)),
        ("localhost:80", ("127.0.0.1", "localhost", 80)),
    ],
)
def test_parse_ws_address(address: str, expected: tuple[str, str, int]) -> None:
    assert parse_ws_address(address) == expected


@pytest.mark.parametrize(
    "address", ["0.0.0.0:7421", "192.168.1.2:7421", "example.com:80", "127.0.0.1", ":80", "[::]:1"]
)
async def test_refuses_non_loopback_and_bad_addresses(
    nursery: trio.Nursery, tmp_path: Path, address: str
) -> None:
    dispatcher = Dispatcher(FakeEngine(), DaemonInfo(tmp_path, "0", 0.0))
    with trio.fail_after(5), pytest.raises(ListenError, match="dashboard address"):
        await nursery.start(serve_dashboard, address, dispatcher, tmp_path)


async def test_port_in_use_is_a_listen_error(
    nursery: trio.Nursery, tmp_path: Path, site: Site
) -> None:
    dispatcher = Dispatcher(FakeEngine(), DaemonInfo(tmp_path, "0", 0.0))
    with trio.fail_after(5), pytest.raises(ListenError, match="cannot serve the dashboard"):
        await nursery.start(serve_dashboard, f"127.0.0.1:{site.port}", dispatcher, tmp_path)


async def test_deep_nesting_after_authentication_is_answered_and_the_socket_lives_on(
    site: Site,
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with trio.fail_after(10):
        async with connect(site) as ws:
            await ws.send_message(auth(site.token))
            assert json.loads(await ws.get_message())["result"] == {}
            await ws.send_message('{"jsonrpc":"2.0","id":1,"method":"conversations/create",'
                                  f'"params":{deep}}}')  # fmt: skip
            reply = json.loads(await ws.get_message())
            assert reply["error"] == {"code": INVALID_REQUEST,
                                      "message": "invalid request: nested too deeply"}  # fmt: skip
            await ws.send_message('{"jsonrpc":"2.0","id":2,"method":"conversations/count"}')
            assert json.loads(await ws.get_message())["result"] == {"count": 1}
    assert [c[0] for c in site.engine.calls] == ["count"]
