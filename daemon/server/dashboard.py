"""The dashboard: a static page and a JSON-RPC websocket on one port (loopback by default).

```
serve_dashboard(address, dispatcher, data_dir)
└─ serve_listeners: one task per TCP connection, admitted by `_admission.Admission`:
   │  unauthenticated ones have their own small pool and a few seconds in all (head,
   │  handshake, `auth`); a new one takes the place of the stalest when the pool is full
   ├─ read the request head with h11 (bounded in size and time: slowloris)
   ├─ GET /, /app.js, ...       → the file, with CSP and friends; then close
   └─ GET /ws + Upgrade         → Host and Origin checked (403 before any handshake), then
                                  trio-websocket over a stream that replays the bytes read;
                                  first message must be `auth` with the token (or a single-use
                                  code, answered with the token), at most 8 KiB until then;
                                  then the dispatcher serves the connection, one message per
                                  text frame (a binary frame gets -32600)
```

Who may talk to it: anyone on this machine can connect to a loopback port, and any web page in
the user's browser can try. So the websocket needs both the `Origin` of the page we serve
(other pages cannot forge it; DNS rebinding is caught by the `Host` check) and the secret in
`dashboard.token` (0600 in the data dir, readable only by the user who may use the daemon),
presented as the first message. Until then no API call runs. The token never travels in a URL
query: `acpd dashboard` prints a link with it in the fragment, which browsers never send; and
`acpd dashboard --open` hands the browser a single-use code instead (`create_login_code`), since
a browser's command line is visible to every local user.

On a network (a non-loopback address, e.g. for a phone) the same checks hold, and the user must
have chosen how it is served (`check_ws_exposure`): HTTPS with their certificate (`ws_tls_cert`,
`ws_tls_key`: trio's TLS listener over the stdlib `ssl` module), or plain HTTP on purpose
(`ws_plain_http_on_network`, inside a VPN that encrypts already). `Host` may be the address the
client connected to, or a name from `ws_hosts` (e.g. the one in the certificate).
"""

from __future__ import annotations

import hmac
import importlib.resources
import ipaddress
import logging
import os
import ssl
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import msgspec
import trio
from msgspec import UNSET

from daemon.config import DashboardExposure, check_ws_exposure, parse_ws_address
from daemon.server._admission import Admission, Ticket
from daemon.server._http import (
    ClientClosed,
    HttpError,
    HttpExchange,
    ReplayStream,
    RequestHead,
)
from daemon.server._linger import linger
from daemon.server.connection import ClientGone
from daemon.server.dispatch import Dispatcher
from daemon.server.tokens import (
    TOKEN_FILE,
    claim_login_code,
    load_or_create_token,
)
from daemon.server.unix import ListenError
from protocol.jsonrpc import (
    BUSY,
    INVALID_REQUEST,
    UNAUTHORIZED,
    ErrorResponse,
    RequestId,
    Response,
    RpcError,
    RpcFailure,
    decode_envelope,
    decode_params,
    encode,
)

if TYPE_CHECKING:
    import trio_websocket

__all__ = [
    "AUTH_METHOD",
    "PRE_AUTH_BYTES",
    "serve_dashboard",
]

log = logging.getLogger("acpd.dashboard")

AUTH_METHOD: Final = "auth"
PRE_AUTH_BYTES: Final = 8 * 1024  # websocket bytes a client may send before `auth` is answered
# Within the admission's deadline for all of it (PENDING_TIMEOUT_S, from accept to `auth`):
HEAD_TIMEOUT_S: Final = 5.0  # to send a request head, and to finish the websocket handshake
AUTH_TIMEOUT_S: Final = 5.0  # from the handshake to the `auth` message
CLOSE_TIMEOUT_S: Final = 2.0  # for the websocket closing handshake
_WS_PATH: Final = "/ws"
# What the page is made of; anything else in static/ is not served.
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


_LOOPBACK_ONLY: Final = DashboardExposure()

# --- the site ----------------------------------------------------------------------------------


@attrs.frozen
class _File:
    body: bytes
    content_type: str


def _load_files() -> dict[str, _File]:
    files: dict[str, _File] = {}
    for entry in importlib.resources.files("daemon").joinpath("static").iterdir():
        content_type = _TYPES.get(os.path.splitext(entry.name)[1])
        if content_type is not None and entry.is_file():
            files[f"/{entry.name}"] = _File(entry.read_bytes(), content_type)
    if "/index.html" not in files:
        raise ListenError("the dashboard page is missing from the installation (daemon/static)")
    files["/"] = files["/index.html"]
    return files


@attrs.define(eq=False)
class _Site:
    dispatcher: Dispatcher
    data_dir: Path
    token: bytes
    files: dict[str, _File]
    scheme: str  # http | https
    url_host: str  # for the link: a configured name, else the address (loopback if wildcard)
    names: frozenset[str]  # names (not addresses) `Host` may carry: localhost, `ws_hosts`
    port: int
    head_timeout: float
    auth_timeout: float
    admission: Admission = attrs.field(factory=Admission)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.port}/"

    def host_ok(self, host: str | None, local_ip: str | None) -> bool:
        """Whether `Host` names this site: a configured name, or the very address the client
        connected to (what a browser sends when opened by IP). Anything else is a foreign
        name resolving to us: DNS rebinding."""
        if host is None:
            return False
        name, sep, port = host.rpartition(":")
        if not sep or name.endswith(":"):  # no port, or a bare IPv6 address
            name, port = host, ""
        default = "443" if self.scheme == "https" else "80"
        if port != str(self.port) and not (port == "" and str(self.port) == default):
            return False  # a browser leaves out only the scheme's default port
        if name.lower() in self.names:
            return True
        return local_ip is not None and name == local_ip

    def origin_ok(self, origin: str | None, host: str) -> bool:
        """Same origin as the page: this scheme and the `Host` already checked."""
        return origin == f"{self.scheme}://{host}"

    def page_headers(self, host: str) -> tuple[tuple[str, str], ...]:
        ws = "wss" if self.scheme == "https" else "ws"
        csp = (
            f"default-src 'self'; connect-src 'self' {ws}://{host}; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        )
        headers = [
            ("Content-Security-Policy", csp),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
        ]
        if self.scheme == "https":
            headers.append(("Strict-Transport-Security", "max-age=31536000"))
        return tuple(headers)


def _local_ip(stream: trio.abc.Stream) -> str | None:
    """The address this connection was made to, as it appears in a `Host` header."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None
    ip = ipaddress.ip_address(stream.socket.getsockname()[0].partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _tls_context(exposure: DashboardExposure) -> ssl.SSLContext:
    """A server context with the user's certificate and key. Raises ListenError."""
    assert exposure.tls_cert is not None
    assert exposure.tls_key is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(exposure.tls_cert, exposure.tls_key)
    except ssl.SSLError as exc:  # before OSError: it is one
        why = exc.reason or str(exc)
    except OSError as exc:
        why = exc.strerror or str(exc)
    else:
        return context
    raise ListenError(
        f"cannot use the dashboard's certificate {exposure.tls_cert} and key "
        f"{exposure.tls_key} (ws_tls_cert, ws_tls_key): {why}"
    )


async def serve_dashboard(
    address: str,
    dispatcher: Dispatcher,
    data_dir: Path,
    *,
    exposure: DashboardExposure = _LOOPBACK_ONLY,
    head_timeout: float = HEAD_TIMEOUT_S,
    auth_timeout: float = AUTH_TIMEOUT_S,
    admission: Admission | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the dashboard on `address` (`HOST:PORT`; port 0 picks a free one): loopback, or
    a network address if `exposure` says how (HTTPS, or plain HTTP on purpose).

    `task_status.started(url)` reports the page's URL as bound, without the token (e.g.
    `http://127.0.0.1:7421/`), once the port accepts connections.

    Error handling: a bad or unexposable address, a port in use, an unusable certificate or
    token file raise `ListenError` (one line) from `nursery.start`; a failing connection ends
    only itself.
    Resource handling: cancelling this task closes the listener and every connection.
    """
    try:
        bind_ip, url_host, port = parse_ws_address(address)
        check_ws_exposure(address, exposure)
    except ValueError as exc:
        raise ListenError(f"dashboard address: {exc}") from None
    context = _tls_context(exposure) if exposure.tls else None
    try:
        token = await trio.to_thread.run_sync(load_or_create_token, data_dir)
    except OSError as exc:
        raise ListenError(f"cannot use {data_dir / TOKEN_FILE}: {exc.strerror}") from None
    files = await trio.to_thread.run_sync(_load_files)
    try:
        tcp = await trio.open_tcp_listeners(port, host=bind_ip)
    except OSError as exc:
        raise ListenError(f"cannot serve the dashboard on {address}: {exc.strerror}") from None
    port = tcp[0].socket.getsockname()[1]  # the one picked, for port 0
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
    if context is not None:
        # https_compatible: browsers close without TLS's close_notify, as HTTPS allows.
        listeners = [trio.SSLListener(t, context, https_compatible=True) for t in tcp]
    ip = ipaddress.ip_address(bind_ip)
    if exposure.hosts:
        url_host = exposure.hosts[0]
    elif ip.is_unspecified:  # every address: the link is for this host
        url_host = "[::1]" if ip.version == 6 else "127.0.0.1"
    names = {h.lower() for h in exposure.hosts}
    if url_host == "localhost" or ip.is_loopback or ip.is_unspecified:
        names.add("localhost")
    site = _Site(
        dispatcher, data_dir, token.encode(), files, "https" if context else "http", url_host,
        frozenset(names), port, head_timeout, auth_timeout, admission or Admission(),
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, partial(_handle, site), listeners)
        log.info("dashboard at %s", site.url)
        task_status.started(site.url)
        await trio.sleep_forever()
    raise AssertionError("unreachable")


async def _handle(site: _Site, stream: trio.abc.Stream) -> None:
    async with stream:
        with site.admission.admit() as ticket:
            try:
                await _serve_connection(site, stream, ticket)
            except Exception:  # a bug here must cost one connection, not the listener
                log.exception("dashboard connection failed")


async def _serve_connection(site: _Site, stream: trio.abc.Stream, ticket: Ticket) -> None:
    http = HttpExchange(stream)
    upgrade = False
    with trio.move_on_after(site.head_timeout):  # over TLS, the handshake too
        try:
            head = await http.read_head()
            ticket.progress()
            upgrade = await _route(site, http, head, _local_ip(stream))
        except HttpError as exc:
            await http.respond_text(exc.status, "bad request")
        except (ClientClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # also: a failed TLS handshake (plain HTTP to an HTTPS port, say)
    if upgrade:
        await _serve_websocket(site, stream, http, ticket)
    elif isinstance(stream, trio.SocketStream):  # TLS has no half-close; https_compatible
        await linger(stream)


async def _route(site: _Site, http: HttpExchange, head: RequestHead, local_ip: str | None) -> bool:
    """Answer `head`, or return True to hand the connection to the websocket."""
    get_or_head = head.method in ("GET", "HEAD")
    only_head = head.method == "HEAD"
    host = head.header("host")
    if host is None or not site.host_ok(host, local_ip):
        # DNS rebinding: a foreign name resolving to us. Say where the dashboard lives.
        hint = f"open the dashboard at {site.url}"
        if host and site.scheme == "https":
            hint += " (or add the name you used to ws_hosts in the config)"
        await http.respond_text(403, hint, head_only=only_head)
        return False
    if head.path == _WS_PATH:
        if head.method != "GET":
            await http.respond(405, [("Allow", "GET")])
        elif not (
            head.has_token("upgrade", "websocket") and head.has_token("connection", "upgrade")
        ):
            await http.respond(426, [("Upgrade", "websocket")])
        elif not site.origin_ok(head.header("origin"), host):
            # Refused before the handshake: another page in the browser never gets a socket.
            site.admission.warn(f"refused a websocket from origin {head.header('origin')!r}")
            await http.respond_text(403, "origin not allowed")
        elif not head.header("sec-websocket-key") or head.header("sec-websocket-version") != "13":
            await http.respond(400, [("Sec-WebSocket-Version", "13")])
        else:
            return True
        return False
    file = site.files.get(head.path)
    if file is None:
        await http.respond_text(404, "not found", head_only=only_head)
    elif not get_or_head:
        await http.respond(405, [("Allow", "GET, HEAD")])
    else:
        headers = [("Content-Type", file.content_type), *site.page_headers(host)]
        await http.respond(200, headers, file.body, head_only=only_head)
    return False


# --- the websocket -----------------------------------------------------------------------------


async def _serve_websocket(
    site: _Site, stream: trio.abc.Stream, http: HttpExchange, ticket: Ticket
) -> None:
    # Until `auth` is answered the client may send only a little: enough for the handshake's
    # leftovers and one `auth` message, not the 4 MiB a frame may carry afterwards.
    replay = ReplayStream(stream, bytes(http.raw), limit=max(0, PRE_AUTH_BYTES - http.trailing))
    # Imported with the first websocket, not when the dashboard starts: trio-websocket and
    # wsproto (and the importlib.metadata it calls) would add some 16 ms to `acpd serve`'s
    # start-up; the first websocket of a run pays them instead, once.
    import trio_websocket

    async with trio.open_nursery() as nursery:  # holds trio-websocket's reader task
        try:
            ws: trio_websocket.WebSocketConnection | None = None
            with trio.move_on_after(site.head_timeout):
                request = await trio_websocket.wrap_server_stream(
                    nursery, replay, max_message_size=site.dispatcher.max_message_bytes
                )
                ws = await request.accept()
            if ws is not None:
                ticket.progress()
                try:
                    await _session(site, ws, replay, ticket)
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await ws.aclose()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            nursery.cancel_scope.cancel(reason="websocket done")


class _AuthParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str | None = None
    code: str | None = None


class _AuthResult(msgspec.Struct, frozen=True, omit_defaults=True):
    token: str | None = None  # the token, in exchange for a code


_auth_params = msgspec.json.Decoder(_AuthParams)
_FIRST = "unauthorized: send `auth` with the dashboard token first, as a text frame"


def _error(req_id: RequestId, message: str) -> str:
    return encode(ErrorResponse(id=req_id, error=RpcError(UNAUTHORIZED, message))).decode()


async def _authenticate(site: _Site, message: str | bytes) -> tuple[bool, str]:
    """Whether `message` is `auth` with the token or a valid code, and the reply to send."""
    if not isinstance(message, str):
        return False, _error(None, _FIRST)
    try:
        env = decode_envelope(message.encode())
    except RpcFailure:
        return False, _error(None, _FIRST)
    req_id: RequestId = None if env.id is UNSET else env.id
    if env.method != AUTH_METHOD:
        return False, _error(req_id, _FIRST)
    try:
        params = decode_params(_auth_params, env.params)
    except RpcFailure:
        params = _AuthParams()
    if (params.token is None) == (params.code is None):
        return False, _error(req_id, "unauthorized: `auth` takes {token} or {code}")
    if params.token is not None:
        if not hmac.compare_digest(params.token.encode(), site.token):
            return False, _error(req_id, "unauthorized: wrong token")
        result = _AuthResult()
    else:
        assert params.code is not None
        if not await trio.to_thread.run_sync(claim_login_code, site.data_dir, params.code):
            return False, _error(
                req_id, "unauthorized: this link was used already or has expired; "
                "get a new one with `acpd dashboard --open`"
            )  # fmt: skip
        result = _AuthResult(token=site.token.decode())
    return True, encode(Response(id=req_id, result=result)).decode()


async def _session(
    site: _Site, ws: trio_websocket.WebSocketConnection, replay: ReplayStream, ticket: Ticket
) -> None:
    """Authenticate, then relay frames to and from the dispatcher until either side closes."""
    import trio_websocket  # loaded by `_serve_websocket` already

    first: str | bytes | None = None
    with trio.move_on_after(site.auth_timeout):
        first = await ws.get_message()
    if first is None:
        await ws.aclose(1008, "authentication timed out")
        return
    ok, reply = await _authenticate(site, first)
    if ok and not ticket.authenticate():
        limit = site.admission.max_authenticated
        reply = encode(ErrorResponse(id=None, error=RpcError(
            BUSY, f"busy: too many dashboard clients (limit {limit})"))).decode()  # fmt: skip
        await ws.send_message(reply)
        await ws.aclose(1013, "too many clients")  # 1013: try again later
        return
    await ws.send_message(reply)
    if not ok:
        site.admission.warn(f"refused a websocket client: {reply}")
        await ws.aclose(1008, "unauthorized")
        return
    replay.unlimit()

    async def send(line: bytes) -> None:
        try:
            # The dispatcher's lines end in a newline; a frame needs none.
            await ws.send_message(line.rstrip(b"\n").decode())
        except trio_websocket.ConnectionClosed:
            raise ClientGone from None

    async with site.dispatcher.open_connection(send) as conn:
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                break
            if isinstance(message, bytes):  # CONTRACT.md: one JSON-RPC message per text frame
                await conn.send_error(INVALID_REQUEST, "binary frames are not accepted: send "
                                      "each JSON-RPC message as a text frame")  # fmt: skip
                continue
            await conn.handle(message.encode())
