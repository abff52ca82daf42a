"""An in-memory fake of the engine's public API, for the front-end tests.

`FakeEngine` implements what `daemon.server.dispatch.EngineAPI` asks for, records every call, and
has hooks to block (`gates`) or fail (`failures`) a method, so dispatcher and socket tests
need no store or agent. Its subscriptions replay stored events, then stream live ones from a
bounded buffer, and are dropped with one `lagged` line when the buffer is full, as the real
fan-out does. `LineClient` reads JSON lines from a real socket.

"""

from __future__ import annotations

import builtins
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import attrs
import msgspec
import trio

from daemon.config import Config
from daemon.engine.storagehealth import StorageHealth
from protocol import acp
from protocol import events as ev
from protocol.api import (
    CAUGHT_UP_METHOD,
    EVENT_METHOD,
    LAGGED_METHOD,
    CaughtUpParams,
    ConversationInfo,
    EventParams,
    LaggedParams,
    PendingMessage,
    ResumeResult,
    SendResult,
)
from protocol.framing import LineSplitter
from protocol.jsonrpc import INVALID_PARAMS, NOT_FOUND, Notification, RpcFailure, encode_line


def _line(method: str, params: msgspec.Struct) -> bytes:
    return bytes(encode_line(Notification(method=method, params=params)))


@attrs.define(eq=False)
class FakeSubscription:
    conv_id: str
    through_seq: int
    replay: list[bytes]
    recv: trio.MemoryReceiveChannel[bytes]
    send: trio.MemorySendChannel[bytes]
    last_seq: int
    lagged: bool = False
    closed: bool = False
    closed_event: trio.Event = attrs.field(factory=trio.Event)

    def __aiter__(self) -> FakeSubscription:
        return self

    async def __anext__(self) -> bytes:
        if self.replay:
            return self.replay.pop(0)
        try:
            return await self.recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.lagged and not self.closed:
                self.closed = True
                return _line(LAGGED_METHOD, LaggedParams(id=self.conv_id, last_seq=self.last_seq))
            raise StopAsyncIteration from None

    def close(self) -> None:
        self.closed = True
        self.closed_event.set()
        self.send.close()
        self.recv.close()


@attrs.define(eq=False)
class FakeEngine:
    config: Config = attrs.field(factory=lambda: Config(subscriber_buffer=8))
    convs: dict[str, ConversationInfo] = attrs.field(factory=dict)
    stored: dict[str, list[bytes]] = attrs.field(factory=dict)  # rendered event objects
    subs: list[FakeSubscription] = attrs.field(factory=list)
    calls: list[tuple[object, ...]] = attrs.field(factory=list)
    gates: dict[str, trio.Event] = attrs.field(factory=dict)  # method -> wait before answering
    failures: dict[str, Exception] = attrs.field(factory=dict)  # method -> raise this
    queues: dict[str, list[tuple[int, str]]] = attrs.field(factory=dict)  # else [(7, "later")]
    health: StorageHealth = attrs.field(factory=lambda: StorageHealth(None, None, None, 0))
    people_waiting: int = 0  # requests being answered inside `person_waiting`
    seen_waiting: dict[str, int] = attrs.field(factory=dict)  # method -> people_waiting then

    def add(self, conv_id: str, n_events: int = 0) -> ConversationInfo:
        t0 = "2025-01-01T00:00:00Z"
        info = ConversationInfo(id=conv_id, short_id=conv_id[:4], title="t", agent="demo",
                                cwd="/", status="idle",
                                created_at=t0, updated_at=t0, last_seq=0, queued=0,
                                live=False)  # fmt: skip
        self.convs[conv_id] = info
        self.stored[conv_id] = []
        for i in range(n_events):
            self.publish(conv_id, "agent_message", text=f"message {i + 1}", prompt_seq=0)
        return info

    def publish(self, conv_id: str, type_: str = "agent_message", **body: Any) -> int:
        """Store an event and offer it to subscribers without ever blocking (drop on full)."""
        seq = len(self.stored[conv_id]) + 1
        event = msgspec.json.encode(
            {"seq": seq, "type": type_, "ts": "2025-01-01T00:00:00Z", **body}
        )
        self.stored[conv_id].append(event)
        self._track_open(conv_id, type_, body)
        line = _line(EVENT_METHOD, EventParams(id=conv_id, event=msgspec.Raw(event)))
        for sub in self.subs:
            if sub.conv_id != conv_id or sub.closed or sub.lagged:
                continue
            try:
                sub.send.send_nowait(line)
                sub.last_seq = seq
            except trio.WouldBlock:
                sub.lagged = True
                sub.send.close()
            except trio.BrokenResourceError:
                pass
        return seq

    def _track_open(self, conv_id: str, type_: str, body: dict[str, Any]) -> None:
        """Keep the conversation's open requests as the engine does: a request is listed
        (`permissions`, `questions`) from its event until its resolution."""
        info = self.convs.get(conv_id)
        if info is None:
            return
        asks, questions = info.permissions, info.questions
        request = body.get("request")
        try:
            if type_ == "permission_requested":
                asks = [*asks, msgspec.convert(body, ev.PermissionRequested)]
            elif type_ == "elicitation_requested":
                questions = [*questions, msgspec.convert(body, ev.ElicitationRequested)]
        except msgspec.ValidationError:
            return  # malformed (a test of bad input): the engine would never have asked
        if type_ == "permission_resolved":
            asks = [p for p in asks if p.request != request]
        elif type_ == "elicitation_resolved":
            questions = [q for q in questions if q.request != request]
        if asks != info.permissions or questions != info.questions:
            self.convs[conv_id] = msgspec.structs.replace(
                info, permissions=asks, questions=questions
            )

    async def _enter(self, method: str, *args: object) -> None:
        self.calls.append((method, *args))
        self.seen_waiting[method] = self.people_waiting
        if (gate := self.gates.get(method)) is not None:
            await gate.wait()
        await trio.lowlevel.checkpoint()
        if (exc := self.failures.get(method)) is not None:
            raise exc

    async def resolve_id(self, id_or_prefix: str) -> str:
        found = [c for c in self.convs if c.startswith(id_or_prefix)]
        if not found:
            raise RpcFailure(NOT_FOUND, f"no such conversation: {id_or_prefix}")
        if len(found) > 1:
            raise RpcFailure(INVALID_PARAMS, f"ambiguous id prefix: {id_or_prefix}")
        return found[0]

    async def create(
        self,
        *,
        agent: str | None,
        agent_cmd: list[str] | None,
        cwd: str,
        title: str | None,
        mcp_servers: list[acp.McpServer] | None = None,
    ) -> ConversationInfo:
        servers = () if mcp_servers is None else ([s.name for s in mcp_servers],)
        await self._enter("create", agent, agent_cmd, cwd, title, *servers)
        return self.add(f"new{len(self.convs):04d}")

    async def list(
        self, *, limit: int, before: str | None, cwd: str | None = None
    ) -> tuple[list[ConversationInfo], int, str | None]:
        await self._enter("list", limit, before, *(() if cwd is None else (cwd,)))
        convs = [c for c in self.convs.values() if cwd is None or c.cwd == cwd]
        return convs[:limit], len(convs), None

    async def count(self) -> int:
        await self._enter("count")
        return len(self.convs)

    async def get(self, conv_id: str) -> ConversationInfo:
        await self._enter("get", conv_id)
        return self.convs[conv_id]

    async def delete(self, conv_id: str) -> None:
        await self._enter("delete", conv_id)

    async def events(
        self, conv_id: str, *, after_seq: int, limit: int
    ) -> tuple[builtins.list[msgspec.Raw], int]:
        await self._enter("events", conv_id, after_seq, limit)
        stored = self.stored[conv_id]
        return [msgspec.Raw(e) for e in stored[after_seq : after_seq + limit]], len(stored)

    async def subscribe(
        self,
        conv_id: str,
        *,
        after_seq: int,
        deltas: bool,
        from_turn: bool = False,
        caught_up: bool = False,
    ) -> FakeSubscription:
        extra = (from_turn, caught_up) if from_turn or caught_up else ()
        await self._enter("subscribe", conv_id, after_seq, deltas, *extra)
        stored = self.stored[conv_id]
        replay = [_line(EVENT_METHOD, EventParams(id=conv_id, event=msgspec.Raw(e)))
                  for e in stored[after_seq:]]  # fmt: skip
        if caught_up:
            params = CaughtUpParams(id=conv_id, through_seq=len(stored), streamed=[])
            replay.append(_line(CAUGHT_UP_METHOD, params))
        send, recv = trio.open_memory_channel[bytes](self.config.subscriber_buffer)
        sub = FakeSubscription(conv_id, len(stored), replay, recv, send, last_seq=len(stored))
        self.subs.append(sub)
        return sub

    async def send(self, conv_id: str, text: str, *, run: bool, interrupt: bool) -> SendResult:
        await self._enter("send", conv_id, text, run, interrupt)
        seq = self.publish(conv_id, "user_message", text=text)
        self.publish(conv_id, "turn_started", prompt_seq=seq)  # it starts now (queued: 0)
        number = sum(b'"user_message"' in e for e in self.stored[conv_id])
        return SendResult(seq=seq, queued=0, number=number)

    async def steer(self, conv_id: str, text: str) -> SendResult:
        await self._enter("steer", conv_id, text)
        seq = self.publish(conv_id, "user_message", text=text, steer=True)
        self.publish(conv_id, "user_message_steered", message_seq=seq, prompt_seq=1,
                     outcome="injected")  # fmt: skip
        number = sum(b'"user_message"' in e for e in self.stored[conv_id])
        return SendResult(seq=seq, queued=0, number=number, steered=True)

    async def queue(self, conv_id: str) -> builtins.list[PendingMessage]:
        await self._enter("queue", conv_id)
        pending = self.queues.get(conv_id, [(7, "later")])
        return [PendingMessage(seq=s, text=t, number=i + 1) for i, (s, t) in enumerate(pending)]

    async def remove(self, conv_id: str, seq: int) -> None:
        await self._enter("remove", conv_id, seq)
        # As the engine does: out of the queue, and an event says so.
        self.queues[conv_id] = [m for m in self.queues.get(conv_id, [(7, "later")]) if m[0] != seq]
        self.publish(conv_id, "user_message_removed", message_seq=seq)

    async def edit(self, conv_id: str, seq: int, text: str) -> None:
        await self._enter("edit", conv_id, seq, text)
        self.publish(conv_id, "user_message_edited", message_seq=seq, text=text)

    async def move(self, conv_id: str, seq: int, before: int | None) -> builtins.list[int]:
        await self._enter("move", conv_id, seq, before)
        order = [s for s, _ in self.queues.get(conv_id, [(7, "later")]) if s != seq]
        order.insert(0 if before is None or before not in order else order.index(before), seq)
        self.publish(conv_id, "queue_reordered", order=order)
        return order

    async def interrupt(self, conv_id: str, *, prompt_seq: int | None = None) -> bool:
        await self._enter("interrupt", conv_id, *(() if prompt_seq is None else (prompt_seq,)))
        return True

    async def resume(self, conv_id: str) -> ResumeResult:
        await self._enter("resume", conv_id)
        return ResumeResult(resumed=True, queued=0)

    async def permit(
        self, conv_id: str, *, request: str, option: str | None, cancelled: bool
    ) -> None:
        await self._enter("permit", conv_id, request, option, cancelled)

    async def answer(
        self, conv_id: str, *, request: str, action: str, content: dict[str, Any] | None
    ) -> None:
        await self._enter("answer", conv_id, request, action, content)

    async def set_mode(self, conv_id: str, mode: str) -> ConversationInfo:
        await self._enter("set_mode", conv_id, mode)
        # As the engine does once the agent agrees: a `mode` event, which is also the state.
        modes = _decoded(self.convs[conv_id].modes) or {"available": []}
        self.publish(conv_id, "mode", current=mode)
        return self._with_state(conv_id, modes={**modes, "current": mode})

    async def set_option(self, conv_id: str, option: str, value: str | bool) -> ConversationInfo:
        await self._enter("set_option", conv_id, option, value)
        options = [o if o.get("id") != option else {**o, "currentValue": value}
                   for o in _decoded(self.convs[conv_id].config_options) or []]  # fmt: skip
        self.publish(conv_id, "config_options", options=options)
        return self._with_state(conv_id, config_options=options)

    def _with_state(self, conv_id: str, **state: Any) -> ConversationInfo:
        """The conversation with `state` (modes, config_options...) as of its newest event."""
        raw = {name: msgspec.Raw(msgspec.json.encode(value)) for name, value in state.items()}
        info = msgspec.structs.replace(
            self.convs[conv_id], last_seq=len(self.stored[conv_id]), **raw
        )
        self.convs[conv_id] = info
        return info

    def counters(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    def storage(self) -> StorageHealth:
        return self.health

    @contextlib.contextmanager
    def person_waiting(self) -> Iterator[None]:
        self.people_waiting += 1
        try:
            yield
        finally:
            self.people_waiting -= 1

    def live_count(self) -> int:
        return 1

    def agents_running(self) -> int:
        return 2

    def slot_counts(self) -> tuple[int, int, int]:
        return (2, 8, 1)

    def start_counts(self) -> tuple[int, int, int]:
        return (1, 2, 0)

    async def agents_rss(self) -> int:
        await trio.lowlevel.checkpoint()
        return 3 * 2**20

    def agents(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        return [("demo", ["python", "-m", "daemon.agents.demo"])]


def _decoded(raw: msgspec.Raw | None) -> Any:
    return None if raw is None else msgspec.json.decode(raw)


class LineClient:
    """A client on a real socket stream: writes bytes, reads JSON lines (None at EOF)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.notes: builtins.list[Any] = []  # notifications read while waiting for a reply
        self._splitter = LineSplitter()
        self._lines: builtins.list[bytes] = []
        self._next_id = 0

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read(self) -> Any:
        """The next line as JSON, or None at EOF. (Callers hold the hang guard.)"""
        while not self._lines:
            data = await self.stream.receive_some()
            if not data:
                return None
            self._lines.extend(self._splitter.feed(data))
        return json.loads(self._lines.pop(0))

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request; its response (with `result` or `error`)."""
        self._next_id += 1
        msg = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params or {}}
        await self.send(json.dumps(msg).encode() + b"\n")
        while (reply := await self.read()) is not None:
            if reply.get("id") == self._next_id and "method" not in reply:
                return reply
            self.notes.append(reply)
        raise EOFError(f"connection closed before the reply to {method}")
