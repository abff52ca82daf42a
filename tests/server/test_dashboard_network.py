"""The dashboard beyond loopback: HTTPS with the user's certificate, plain HTTP only when asked
for by name, and a refusal otherwise; the token and the Host/Origin checks hold either way.

Certificates are made in the test (trustme: a throwaway CA and a leaf for `box.test`,
`localhost` and 127.0.0.1); real sockets, real time, a `fail_after` hang guard on each test.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket
import trustme

from daemon.config import ConfigError, DashboardExposure, parse_config
from daemon.server.dashboard import serve_dashboard
from daemon.server.dispatch import DaemonInfo, Dispatcher
from daemon.server.serve import serve_main
from daemon.server.tokens import TOKEN_FILE
from daemon.server.unix import ListenError
from tests.fakes.engine import FakeEngine
from tests.server.test_dashboard import auth, get, http, upgrade


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def exposure(ca: trustme.CA, tmp_path: Path) -> DashboardExposure:
    leaf = ca.issue_cert("box.test", "localhost", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return DashboardExposure(tls_cert=cert, tls_key=key, hosts=("box.test",))


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def start(nursery: trio.Nursery, tmp_path: Path, address: str,
                exposure: DashboardExposure) -> tuple[str, int, FakeEngine]:  # fmt: skip
    engine = FakeEngine()
    engine.add("abc123", n_events=1)
    dispatcher = Dispatcher(engine, DaemonInfo(tmp_path, "0", 0.0))
    serve = partial(serve_dashboard, exposure=exposure, head_timeout=2, auth_timeout=2)
    url = await nursery.start(serve, address, dispatcher, tmp_path)
    return url, int(url.rstrip("/").rpartition(":")[2]), engine


async def https(port: int, request: bytes, context: ssl.SSLContext, name: str = "box.test"
                ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    # SNI, and the name checked against the certificate.
    stream = trio.SSLStream(tcp, context, server_hostname=name, https_compatible=True)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        try:
            while chunk := await stream.receive_some():
                data += chunk
        except trio.BrokenResourceError:  # https_compatible: no close_notify
            pass
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@asynccontextmanager
async def wss(port: int, context: ssl.SSLContext, host: str, origin: str
              ) -> AsyncIterator[trio_websocket.WebSocketConnection]:  # fmt: skip
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname=host.rpartition(":")[0])
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, host, "/ws", extra_headers=[(b"Origin", origin.encode())]
        )
        try:
            yield ws
        finally:
            await ws.aclose()


async def test_https_with_the_users_certificate(
    nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA, exposure: DashboardExposure
) -> None:
    """On every address (0.0.0.0) with a certificate: the link names the configured host; the
    page comes over HTTPS with a CSP allowing wss:// to itself; the websocket is wss:// and
    still wants the token first; plain HTTP to the port gets nothing and harms nothing."""
    context = client_context(ca)
    with trio.fail_after(10):
        url, port, engine = await start(nursery, tmp_path, "0.0.0.0:0", exposure)
        assert url == f"https://box.test:{port}/"
        host = f"box.test:{port}"
        status, headers, body = await https(port, get("/", port, host=host), context)
        assert status == 200
        assert b'<script type="module" src="/app.js">' in body
        assert f"connect-src 'self' wss://{host};" in headers["content-security-policy"]
        assert headers["strict-transport-security"].startswith("max-age=")
        # The address the client connected to is accepted too (a phone opening it by IP).
        status, _, _ = await https(port, get("/", port), context, name="127.0.0.1")
        assert status == 200
        # A foreign name is not, certificate or not: the 403 says where to go.
        status, _, body = await https(port, get("/", port, host=f"evil.test:{port}"), context)
        assert status == 403
        assert url.encode() in body

        # Plain HTTP to the TLS port: no answer (a failed handshake), and the server lives on.
        plain = await trio.open_tcp_stream("127.0.0.1", port)
        async with plain:
            await plain.send_all(get("/", port))
            assert b"HTTP/1.1 200" not in await plain.receive_some()

        token = (tmp_path / TOKEN_FILE).read_text().strip()
        async with wss(port, context, host, f"https://{host}") as ws:
            await ws.send_message(auth("x" * 43))
            assert json.loads(await ws.get_message())["error"]["code"] == -32004
        async with wss(port, context, host, f"https://{host}") as ws:
            await ws.send_message(auth(token))
            assert json.loads(await ws.get_message())["result"] == {}
            await ws.send_message('{"jsonrpc":"2.0","id":1,"method":"conversations/count"}')
            assert json.loads(await ws.get_message())["result"] == {"count": 1}
        # An http:// origin is not the page's origin any more.
        rejected = pytest.RaisesExc(trio_websocket.ConnectionRejected,
                                    check=lambda e: e.status_code == 403)  # fmt: skip
        with pytest.RaisesGroup(rejected):
            async with wss(port, context, host, f"http://{host}"):
                pass
    assert [c[0] for c in engine.calls] == ["count"]


async def test_plain_http_on_a_network_only_when_named(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """`ws_plain_http_on_network` serves HTTP on every address; the Host is the address the
    client connected to (or a configured name); the token is still required."""
    exposure = DashboardExposure(plain_http_on_network=True, hosts=("box.test",))
    with trio.fail_after(10):
        url, port, engine = await start(nursery, tmp_path, "0.0.0.0:0", exposure)
        assert url == f"http://box.test:{port}/"
        for host in (f"127.0.0.1:{port}", f"box.test:{port}", f"localhost:{port}"):
            status, headers, _ = await http(port, get("/", port, host=host))
            assert status == 200, host
            assert f"connect-src 'self' ws://{host};" in headers["content-security-policy"]
        status, _, _ = await http(port, get("/", port, host=f"10.9.9.9:{port}"))
        assert status == 403  # an address, but not the one this connection reached
        status, _, _ = await http(port, upgrade(port, f"Origin: https://box.test:{port}",
                                                host=f"box.test:{port}"))  # fmt: skip
        assert status == 403  # not the page's scheme
        token = (tmp_path / TOKEN_FILE).read_text().strip()
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp, trio.open_nursery() as inner:
            ws = await trio_websocket.wrap_client_stream(
                inner, tcp, f"box.test:{port}", "/ws",
                extra_headers=[(b"Origin", f"http://box.test:{port}".encode())],
            )  # fmt: skip
            await ws.send_message(auth(token))
            assert json.loads(await ws.get_message())["result"] == {}
            await ws.aclose()
    assert engine.calls == []


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.7:7421"])
async def test_a_network_address_is_refused_without_tls_or_the_plain_option(
    nursery: trio.Nursery, tmp_path: Path, address: str
) -> None:
    dispatcher = Dispatcher(FakeEngine(), DaemonInfo(tmp_path, "0", 0.0))
    with trio.fail_after(5), pytest.raises(ListenError) as info:
        await nursery.start(serve_dashboard, address, dispatcher, tmp_path)
    message = str(info.value)
    assert "is not a loopback address" in message
    assert "ws_tls_cert and ws_tls_key" in message
    assert "ws_plain_http_on_network = true" in message
    assert not (tmp_path / TOKEN_FILE).exists()  # refused before anything was made


async def test_an_unusable_certificate_is_a_listen_error(
    nursery: trio.Nursery, tmp_path: Path, exposure: DashboardExposure
) -> None:
    assert exposure.tls_cert is not None
    dispatcher = Dispatcher(FakeEngine(), DaemonInfo(tmp_path, "0", 0.0))
    broken = DashboardExposure(tls_cert=exposure.tls_cert, tls_key=exposure.tls_cert)
    missing = DashboardExposure(tls_cert=tmp_path / "nope.pem", tls_key=tmp_path / "nope.key")
    for bad in (broken, missing):
        with trio.fail_after(5), pytest.raises(ListenError, match="ws_tls_cert, ws_tls_key"):
            await nursery.start(partial(serve_dashboard, exposure=bad), "0.0.0.0:0",
                                dispatcher, tmp_path)  # fmt: skip


def test_serve_refuses_a_network_address_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    code = serve_main(data_dir=tmp_path / "d", socket=tmp_path / "s.sock", ws="0.0.0.0:0",
                      no_ws=False, config_path=config)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "0.0.0.0:0 is not a loopback address" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('ws = "0.0.0.0:7421"', "ws: 0.0.0.0:7421 is not a loopback address: serving the "
         "dashboard on a network needs ws_tls_cert and ws_tls_key (HTTPS), or "
         "ws_plain_http_on_network = true"),
        ('ws_tls_cert = "/c.pem"', "give both (a certificate and its key) or neither"),
        ('ws_tls_cert = "c.pem"\nws_tls_key = "k.pem"', "ws_tls_cert: must be an absolute path"),
        ('ws_tls_cert = "/c"\nws_tls_key = "/k"\nws_plain_http_on_network = true',
         "ws_plain_http_on_network: not with ws_tls_cert"),
        ('ws_plain_http_on_network = "yes"', "expected a boolean, got string 'yes'"),
        ('ws_hosts = ["https://box.test"]', "'https://box.test' is not a host name"),
        ('ws_hosts = ["box.test:7421"]', "'box.test:7421' is not a host name"),
    ],
)  # fmt: skip
def test_config_checks(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text + "\n", source="c.toml")
    assert message in str(info.value)


def test_config_for_a_network() -> None:
    cfg = parse_config('ws = "0.0.0.0:7421"\nws_tls_cert = "~/c.pem"\nws_tls_key = "/k.pem"\n'
                       'ws_hosts = ["box.tail1234.ts.net"]\n')  # fmt: skip
    exposure = cfg.dashboard_exposure()
    assert exposure.tls
    assert exposure.tls_cert == Path("~/c.pem").expanduser()
    assert exposure.hosts == ("box.tail1234.ts.net",)
    plain = parse_config('ws = "100.64.0.5:7421"\nws_plain_http_on_network = true\n')
    assert plain.dashboard_exposure().plain_http_on_network
