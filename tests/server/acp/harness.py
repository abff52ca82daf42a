"""The ACP front door in-process: a real engine (fake agents) behind a real dispatcher, over
in-memory streams, and ACP clients made of our own peer. Deterministic under autojump_clock.

    async with front(tmp_path) as f:
        client = await f.client()                 # a FrontDoor serving a recording ACP client
        await client.initialize()
        sid = (await client.call("session/new", {"cwd": ..., "mcpServers": []}))["sessionId"]

Every line a front door writes to its client is kept (`Client.tap.sent`) and checked against
the ACP schema when the harness closes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import msgspec
import trio
import trio.testing

from daemon.agents.peer import AgentExited, AgentPeer
from daemon.server.acp.door import FrontDoor
from daemon.server.dispatch import DaemonInfo, Dispatcher, EngineAPI
from protocol import acp
from protocol.framing import LineSplitter
from protocol.jsonrpc import RpcFailure
from tests.engine.harness import Harness, harness
from tests.fakes.engine import FakeEngine
from tests.fakes.wiretap import WireTap
from tests.protocol._schema import assert_valid, assert_valid_sent, requests_in

Json = dict[str, Any]
_CHUNKS = (acp.UserMessageChunk, acp.AgentMessageChunk, acp.AgentThoughtChunk)


async def serve_api(dispatcher: Dispatcher, stream: trio.abc.Stream) -> None:
    """What `daemon.server.unix` does for one connection, on any stream."""
    splitter = LineSplitter(dispatcher.max_message_bytes)
    async with stream, dispatcher.open_connection(stream.send_all, coalesce=True) as conn:
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            for line in splitter.feed(data):
                await conn.handle(line)


@attrs.define(eq=False)
class Daemon:
    """Connections to the dispatcher, which a test can cut (`drop`) or refuse (`down`)."""

    dispatcher: Dispatcher
    nursery: trio.Nursery
    down: bool = False
    connections: int = 0
    _scopes: list[trio.CancelScope] = attrs.field(factory=list)

    async def connect(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        ours, theirs = trio.testing.memory_stream_pair()
        scope = trio.CancelScope()
        self._scopes.append(scope)
        self.connections += 1

        async def serve() -> None:
            with scope:
                await serve_api(self.dispatcher, theirs)
            await theirs.aclose()

        self.nursery.start_soon(serve)
        return ours

    def drop(self) -> None:
        """Cut every connection open now, as a daemon that stopped would."""
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


@attrs.define(eq=False)
class Pending:
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Json | None = None
    error: Exception | None = None

    async def wait(self) -> Json:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@attrs.define(eq=False)
class Client:
    """An ACP client (our own peer, client role) talking to one FrontDoor."""

    peer: AgentPeer
    tap: WireTap
    door: FrontDoor
    stream: trio.abc.Stream
    # How to answer session/request_permission: an option id, None for cancelled, or
    # "wait" to keep it open until the front door withdraws it.
    answer: str | None = "allow"
    updates: list[tuple[str, acp.SessionUpdate]] = attrs.field(factory=list)
    asked: list[Json] = attrs.field(factory=list)  # params of its incoming requests
    withdrawn: list[str] = attrs.field(factory=list)  # methods cancelled by $/cancel_request
    elicitation_answer: Json | None = attrs.field(
        factory=lambda: {"action": "accept", "content": {}}
    )
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def on_update(self, sid: str, update: acp.SessionUpdate) -> None:
        self.updates.append((sid, update))
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def on_request(self, method: str, raw: msgspec.Raw) -> object:
        params = msgspec.json.decode(raw)
        self.asked.append({"method": method, **params})
        self._poke()
        try:
            if method == "elicitation/create":
                if self.elicitation_answer is None:  # keep it open
                    await trio.sleep_forever()
                return self.elicitation_answer
            if self.answer == "wait":
                await trio.sleep_forever()
            if self.answer is None:
                return {"outcome": {"outcome": "cancelled"}}
            return {"outcome": {"outcome": "selected", "optionId": self.answer}}
        except trio.Cancelled:
            self.withdrawn.append(method)
            self._poke()
            raise

    async def call(self, method: str, params: Json | None = None) -> Json:
        result: Json = await self.peer.request(method, params or {}, dict[str, Any])
        return result

    async def error(self, method: str, params: Json | None = None) -> RpcFailure:
        try:
            await self.call(method, params)
        except RpcFailure as exc:
            return exc
        raise AssertionError(f"{method} did not fail")

    def prompt_soon(self, nursery: trio.Nursery, sid: str, text: str) -> Pending:
        """`session/prompt` in the background: its answer (or error) lands in the result."""
        pending = Pending()
        params = {"sessionId": sid, "prompt": [{"type": "text", "text": text}]}

        async def go() -> None:
            try:
                pending.result = await self.call("session/prompt", params)
            except (RpcFailure, AgentExited) as exc:
                pending.error = exc
            finally:
                pending.done.set()

        nursery.start_soon(go)
        return pending

    async def prompt(self, sid: str, text: str) -> Json:
        params = {"sessionId": sid, "prompt": [{"type": "text", "text": text}]}
        return await self.call("session/prompt", params)

    async def notify(self, method: str, params: Json) -> None:
        await self.peer.notify(method, params)

    async def initialize(self, **capabilities: Any) -> Json:
        return await self.call(
            "initialize", {"protocolVersion": 1, "clientCapabilities": capabilities}
        )

    async def new(self, cwd: Path) -> str:
        sid: str = (await self.call("session/new", {"cwd": str(cwd), "mcpServers": []}))[
            "sessionId"
        ]
        return sid

    async def wait_for(self, predicate: Any) -> None:
        """Block until `predicate(self)` holds (re-checked at each update or request)."""
        while not predicate(self):
            await self._changed.wait()

    def of(self, tp: type[Any]) -> list[Any]:
        return [u for _, u in self.updates if isinstance(u, tp)]

    def text(self, tp: type[Any] = acp.AgentMessageChunk) -> str:
        return "".join(acp.content_text(u.content) for u in self.of(tp))

    def merged(self) -> list[Any]:
        """The updates with consecutive text chunks of one kind joined: how the text was cut
        into chunks is the stream's business, what it says is not."""
        out: list[Any] = []
        for _, u in self.updates:
            prev = out[-1] if out else None
            if (
                isinstance(u, _CHUNKS)
                and type(prev) is type(u)
                and isinstance(u.content, acp.TextContent)
            ):
                text = acp.content_text(prev.content) + u.content.text
                out[-1] = type(u)(content=acp.TextContent(text=text))
            else:
                out.append(u)
        return out

    def kinds(self) -> list[str]:
        return [type(u).__struct_config__.tag for _, u in self.updates]  # type: ignore[misc]

    async def close(self) -> None:
        """The client goes away: end of its stream."""
        await self.stream.aclose()


@attrs.define(eq=False)
class Front:
    h: Harness  # (a FakeEngine's front has none: see `fake_front`)
    daemon: Daemon
    nursery: trio.Nursery
    clients: list[Client] = attrs.field(factory=list)

    @property
    def e(self) -> EngineAPI:
        return self.h.e

    async def client(self, **door: Any) -> Client:
        """A new front door and its client, both running."""
        theirs, ours = trio.testing.memory_stream_pair()
        tap = WireTap(ours)  # what the front door writes, as on its stdout
        fd = FrontDoor(self.daemon.connect, "test socket", **door)
        done = trio.Event()

        async def run_door() -> None:
            try:
                await fd.serve(tap)
            finally:
                done.set()

        client = Client(None, tap, fd, theirs)  # type: ignore[arg-type]
        client.peer = AgentPeer(theirs, on_update=client.on_update, on_request=client.on_request)
        self.nursery.start_soon(run_door)
        await self.nursery.start(client.peer.run)
        self.clients.append(client)
        return client

    def check_schema(self) -> None:
        """Every line each front door wrote is a valid ACP message of the agent's side (an
        error answering a line that was no request (id null, or the id of a line without a
        method): its `error` is checked)."""
        for c in self.clients:
            requests = requests_in(bytes(c.tap.received))
            for line in bytes(c.tap.sent).splitlines():
                msg = json.loads(line)
                if "error" in msg and msg.get("id") not in requests:
                    assert set(msg) == {"jsonrpc", "id", "error"}, msg
                    assert_valid(msg["error"], "Error")
                    continue
                assert_valid_sent(msg, sender="agent", requests=requests)


@asynccontextmanager
async def front(tmp: Path, **config: Any) -> AsyncIterator[Front]:
    async with harness(tmp, **config) as h, trio.open_nursery() as nursery:
        info = DaemonInfo(tmp, "test", trio.current_time())
        dispatcher = Dispatcher(h.e, info)
        f = Front(h, Daemon(dispatcher, nursery), nursery)
        try:
            yield f
            f.check_schema()
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def fake_front(engine: FakeEngine) -> AsyncIterator[Front]:
    """The front door before a `FakeEngine`: events of any shape, published at will."""
    async with trio.open_nursery() as nursery:
        dispatcher = Dispatcher(engine, DaemonInfo(Path("/"), "test", trio.current_time()))
        f = Front(None, Daemon(dispatcher, nursery), nursery)  # type: ignore[arg-type]
        try:
            yield f
            f.check_schema()
        finally:
            nursery.cancel_scope.cancel()
