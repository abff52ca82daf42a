"""Just enough HTTP/1.1 for the dashboard: one request head per connection, parsed with h11.

The dashboard serves a page and a websocket on one port. trio-websocket alone answers a plain
GET with 400, so we read the request head ourselves: a page request gets a complete response
here; a websocket request is handed on to trio-websocket over `ReplayStream`, which replays the
bytes we already read so wsproto can parse the same head again. One request per connection
(`Connection: close`): the page is three small files on loopback, and a connection that never
has a second request is one that can never be upgraded halfway through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import attrs
import h11
import trio

__all__ = [
    "MAX_HEAD_BYTES",
    "ClientClosed",
    "HttpError",
    "HttpExchange",
    "ReplayStream",
    "RequestHead",
]

MAX_HEAD_BYTES: Final = 16 * 1024  # request line + headers; browsers send well under 4 KiB
_READ_SIZE: Final = 4096


class HttpError(Exception):
    """The request cannot be served; `status` says why (400, 431, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientClosed(Exception):
    """The client closed the connection before sending a complete request head."""


@attrs.frozen
class RequestHead:
    method: str
    target: str  # as sent: path plus query, if any
    headers: Mapping[str, str]  # lower-case names; repeated headers joined by ", "

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def has_token(self, name: str, token: str) -> bool:
        """Whether the comma-separated header `name` lists `token` (case-insensitive)."""
        value = self.headers.get(name, "")
        return token.lower() in (part.strip().lower() for part in value.split(","))


@attrs.define(eq=False)
class HttpExchange:
    """One request and its response on `stream`; `raw` keeps every byte read, for handover."""

    stream: trio.abc.Stream
    max_head_bytes: int = MAX_HEAD_BYTES
    raw: bytearray = attrs.field(init=False, factory=bytearray)
    _h11: h11.Connection = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)

    @property
    def trailing(self) -> int:
        """How many of the bytes read follow the request head (e.g. a client's first frame)."""
        data, _closed = self._h11.trailing_data
        return len(data)

    async def read_head(self) -> RequestHead:
        """Read until a complete request head. Raises `HttpError` (malformed, too large) or
        `ClientClosed`; the caller bounds the time it may take."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(exc.error_status_hint, str(exc)) from None
            if event is h11.NEED_DATA:
                # h11 checks its limit only on what is still incomplete after a read: one
                # read could finish a head larger than ours. Count every byte instead.
                if len(self.raw) >= self.max_head_bytes:
                    raise HttpError(431, "request head too large")
                data = bytes(await self.stream.receive_some(_READ_SIZE))
                self.raw += data
                self._h11.receive_data(data)  # b"" tells h11 about EOF
                continue
            if isinstance(event, h11.Request):
                return _head(event)
            raise ClientClosed  # ConnectionClosed: nothing (more) was sent

    async def respond(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        *,
        head_only: bool = False,
    ) -> None:
        """Send a complete response, then the connection is done (`Connection: close`)."""
        all_headers = [*headers, ("Content-Length", str(len(body))), ("Connection", "close")]
        try:
            data = self._h11.send(h11.Response(status_code=status, headers=all_headers))
            if body and not head_only:
                data += self._h11.send(h11.Data(data=body))
            data += self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # E.g. answering a request h11 could not parse: fall back to a bare response.
            reason = _REASONS.get(status, "Error").encode()
            data = b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
                status,
                reason,
            )
        await self.stream.send_all(data)

    async def respond_text(self, status: int, message: str, *, head_only: bool = False) -> None:
        body = message.encode() + b"\n"
        await self.respond(
            status,
            [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")],
            body,
            head_only=head_only,
        )


_REASONS: Final = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
}


def _head(event: h11.Request) -> RequestHead:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")  # h11 lower-cases names
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return RequestHead(
        method=event.method.decode("ascii"),
        target=event.target.decode("latin-1"),
        headers=headers,
    )


class ReplayStream(trio.abc.Stream):
    """`stream`, except that the first reads return `prefix` (bytes already read from it).

    With `limit`, at most that many bytes more are received from `stream` until `unlimit()`;
    a read past it raises `trio.BrokenResourceError` (e.g. the dashboard's websocket before
    the client has authenticated: a stranger may not make us buffer megabytes).
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes, *, limit: int | None = None) -> None:
        self._stream = stream
        self._prefix = prefix
        self._limit = limit

    def unlimit(self) -> None:
        self._limit = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        if self._limit is None:
            return await self._stream.receive_some(max_bytes)
        if self._limit <= 0:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("the peer sent more than it may yet")
        size = self._limit if max_bytes is None else min(max_bytes, self._limit)
        data = await self._stream.receive_some(size)
        if self._limit is not None:  # else lifted while we waited
            self._limit -= len(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._prefix = b""
        await self._stream.aclose()
