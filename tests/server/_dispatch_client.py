"""An in-memory client of the dispatcher for tests: raw lines in, parsed messages out."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from daemon.server.dispatch import DaemonInfo, Dispatcher
from tests.fakes.engine import FakeEngine

Json = dict[str, Any]
CONV = "abc123"  # a conversation the fake engine holds
_AUTO = object()


class Client:
    """One in-memory connection: every line the dispatcher sends lands in `inbox`."""

    def __init__(self, conn: Any, inbox: trio.MemoryReceiveChannel[bytes]) -> None:
        self.conn = conn
        self.inbox = inbox
        self.notes: list[Json] = []  # notifications seen while waiting for responses
        self.responses: dict[object, Json] = {}
        self._next_id = 0

    async def raw(self, message: bytes | str) -> None:
        await self.conn.handle(message.encode() if isinstance(message, str) else message)

    async def request(
        self, method: str, params: Json | None = None, *, id: object = _AUTO
    ) -> object:
        if id is _AUTO:
            self._next_id += 1
            id = self._next_id
        msg: Json = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.raw(json.dumps(msg))
        return id

    async def read(self) -> Json:
        with trio.fail_after(5):
            line = await self.inbox.receive()
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        msg: Json = json.loads(line)
        assert msg["jsonrpc"] == "2.0"
        return msg

    async def response(self, id: object) -> Json:
        while id not in self.responses:
            msg = await self.read()
            if "method" in msg:
                self.notes.append(msg)
            else:
                self.responses[msg["id"]] = msg
        return self.responses.pop(id)

    async def call(self, method: str, params: Json | None = None) -> Json:
        resp = await self.response(await self.request(method, params))
        assert "error" not in resp, resp
        result: Json = resp["result"]
        return result

    async def error(self, method: str, params: Json | None = None) -> Json:
        resp = await self.response(await self.request(method, params))
        assert "result" not in resp, resp
        err: Json = resp["error"]
        return err


def make_dispatcher(engine: FakeEngine, **kw: Any) -> Dispatcher:
    return Dispatcher(engine, DaemonInfo(Path("/data"), "9.9", trio.current_time()), **kw)


@asynccontextmanager
async def open_client(
    dispatcher: Dispatcher, send: Callable[[bytes], Awaitable[None]] | None = None
) -> AsyncIterator[Client]:
    out, inbox = trio.open_memory_channel[bytes](math.inf)
    async with dispatcher.open_connection(send or out.send) as conn:
        yield Client(conn, inbox)
