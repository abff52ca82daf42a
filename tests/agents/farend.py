"""The agent's end of an AgentPeer under test, driven byte by byte: raw JSON lines out, what the
peer delivered in, and requests running in the background."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import msgspec
import trio
import trio.testing

from daemon.agents.peer import AgentPeer
from protocol import acp
from protocol.framing import LineSplitter


@attrs.define(eq=False)
class Far:
    """The agent's end, speaking raw JSON lines."""

    stream: trio.abc.Stream
    splitter: LineSplitter = attrs.field(factory=LineSplitter)
    lines: list[bytes] = attrs.field(factory=list)

    async def send(self, *msgs: dict[str, Any] | bytes) -> None:
        """Send all `msgs` in one chunk."""
        data = b"".join(m if isinstance(m, bytes) else msgspec.json.encode(m) + b"\n" for m in msgs)
        await self.stream.send_all(data)

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(5):
            while not self.lines:
                data = await self.stream.receive_some(65536)
                assert data, "peer closed the stream"
                self.lines.extend(self.splitter.feed(data))
        msg: dict[str, Any] = msgspec.json.decode(self.lines.pop(0))
        return msg


@attrs.define(eq=False)
class Seen:
    updates: list[tuple[str, acp.SessionUpdate]] = attrs.field(factory=list)
    events: list[str] = attrs.field(factory=list)  # "update" / "batch" in call order

    def on_update(self, sid: str, update: acp.SessionUpdate) -> None:
        self.updates.append((sid, update))
        self.events.append("update")

    def on_batch_end(self) -> None:
        self.events.append("batch")

    def texts(self) -> list[str]:
        return [
            acp.content_text(u.content)
            for _, u in self.updates
            if isinstance(u, acp.AgentMessageChunk)
        ]


Handler = Callable[[str, msgspec.Raw], Any]


async def open_peer(
    nursery: trio.Nursery, seen: Seen, on_request: Handler | None = None, **kw: Any
) -> tuple[AgentPeer, Far]:
    ours, theirs = trio.testing.memory_stream_pair()
    peer = AgentPeer(
        ours, on_update=seen.on_update, on_request=on_request, on_batch_end=seen.on_batch_end, **kw
    )
    await nursery.start(peer.run)
    return peer, Far(theirs)


def chunk(sid: str, text: str) -> dict[str, Any]:
    update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}
    return {
        "jsonrpc": "2.0",
        "method": "session/update",
        "params": {"sessionId": sid, "update": update},
    }


@attrs.define(eq=False)
class Call:
    """A request running in the background; `result` or `error` once it finished."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: object = None
    error: BaseException | None = None

    async def wait(self) -> object:
        with trio.fail_after(5):
            await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


def start_call(nursery: trio.Nursery, fn: Callable[[], Any]) -> Call:
    call = Call()

    async def go() -> None:
        try:
            call.result = await fn()
        except Exception as exc:
            call.error = exc
        finally:
            call.done.set()

    nursery.start_soon(go)
    return call


def new_session(peer: AgentPeer, cwd: str = "/w") -> Callable[[], Any]:
    params = acp.NewSessionRequest(cwd=cwd, mcp_servers=[])
    return lambda: peer.request("session/new", params, acp.NewSessionResponse)


async def split_sends(stream: trio.abc.SendStream, data: bytes, sizes: list[int]) -> None:
    for n in sizes:
        piece, data = data[:n], data[n:]
        await stream.send_all(piece)
        await trio.testing.wait_all_tasks_blocked()
