"""An engine over a temp store, with in-process fake agents (tests/fakes/agent.py)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

from daemon.agents.connection import AgentConnection, AgentSpec, PeerHandlers
from daemon.agents.launch import connect_agent
from daemon.config import Config
from daemon.engine.fanout import Subscription
from daemon.engine.opening import open_engine
from daemon.engine.registry import Engine
from daemon.engine.supervisor import Conversation
from protocol import acp
from protocol.api import PendingMessage, SendResult
from tests.fakes.agent import FakeAgent, Step

Event = dict[str, Any]


@attrs.define(eq=False)
class Harness:
    tmp: Path
    config: Config
    agent_kwargs: dict[str, Any] = attrs.field(factory=dict)
    # Scripts handed to the next agent started (agents restart; tests script ahead).
    scripts: list[list[Step]] = attrs.field(factory=list)
    agents: list[FakeAgent] = attrs.field(factory=list)
    launches: int = 0
    launch_times: list[float] = attrs.field(factory=list)
    # Agents between their launch and the end of their stop, now and at most at once.
    alive: int = 0
    peak_alive: int = 0
    # Agent start-up before the fake runs (npx...), and the stop after it (a group that ignores
    # SIGTERM: until stop_delay, or the SIGKILL at the connection's stop_grace if sooner), in
    # virtual seconds.
    start_delay: float = 0.0
    stop_delay: float = 0.0
    # Agents' pipes that hold nothing: a write waits until acpd reads it (back-pressure).
    lockstep: bool = False
    # Called with each new agent before it serves: per-agent scripts and settings.
    prepare: Callable[[FakeAgent], None] | None = None
    running: FakeAgent | None = None
    engine: Engine | None = None

    @property
    def e(self) -> Engine:
        assert self.engine is not None
        return self.engine

    @property
    def agent(self) -> FakeAgent:
        return self.agents[-1]

    def script(self, *steps: Step) -> None:
        if self.running is not None:
            self.running.script(*steps)
        else:
            self.scripts.append(list(steps))

    @asynccontextmanager
    async def launch(
        self, spec: AgentSpec, handlers: PeerHandlers
    ) -> AsyncIterator[AgentConnection]:
        self.launches += 1
        self.launch_times.append(trio.current_time())
        self.alive += 1
        self.peak_alive = max(self.peak_alive, self.alive)
        try:
            async with self._launch(spec, handlers) as conn:
                yield conn
        finally:
            self.alive -= 1

    @asynccontextmanager
    async def _launch(
        self, spec: AgentSpec, handlers: PeerHandlers
    ) -> AsyncIterator[AgentConnection]:
        if self.start_delay:
            await trio.sleep(self.start_delay)
        pair = (
            trio.testing.lockstep_stream_pair if self.lockstep else trio.testing.memory_stream_pair
        )
        ours, theirs = pair()
        agent = FakeAgent(theirs, **self.agent_kwargs)
        for steps in self.scripts:
            agent.script(*steps)
        self.scripts.clear()
        if self.prepare is not None:
            self.prepare(agent)
        self.agents.append(agent)
        self.running = agent
        stop_grace = math.inf
        try:
            async with trio.open_nursery() as nursery:
                agent.start(nursery)
                async with connect_agent(ours, handlers) as conn:
                    try:
                        yield conn
                    finally:
                        stop_grace = conn.stop_grace
                nursery.cancel_scope.cancel()
        finally:
            if self.stop_delay:
                with trio.CancelScope(shield=True):
                    await trio.sleep(min(self.stop_delay, stop_grace))
            if self.running is agent:
                self.running = None

    async def agents_wait_prompt(self, n: int) -> None:
        """Block until the running agent has received its `n`-th session/prompt."""
        await trio.testing.wait_all_tasks_blocked()
        assert self.running is not None, "no agent was started"
        await self.running.wait_for("session/prompt", n)

    async def inject(self, update: acp.KnownUpdate, session_id: str = "sess-1") -> None:
        """Have the running agent send `update` now, and let it be handled."""
        assert self.running is not None, "no agent is running"
        await self.running.send_update(session_id, update)
        await trio.testing.wait_all_tasks_blocked()

    def supervisor(self, cid: str) -> Conversation:
        conv = self.e.supervisor(cid)
        assert conv is not None, f"{cid} has no live supervisor"
        return conv

    async def create(self, **kw: Any) -> str:
        info = await self.e.create(
            agent=kw.get("agent"), agent_cmd=None, cwd=str(self.tmp), title=kw.get("title")
        )
        return info.id

    async def events(self, cid: str) -> list[Event]:
        raw, _ = await self.e.events(cid, after_seq=0, limit=10_000)
        return [json.loads(bytes(r)) for r in raw]

    async def types(self, cid: str) -> list[str]:
        return [e["type"] for e in await self.events(cid)]


@asynccontextmanager
async def harness(tmp: Path, **config: Any) -> AsyncIterator[Harness]:
    defaults: dict[str, Any] = {
        "drain_timeout": 5.0,
        "turn_timeout": 60.0,
        "idle_ttl": 600.0,
        "permission_timeout": 120.0,
        "max_agents": 8,  # not the machine's default: the same on every machine
        "max_starting": 8,  # likewise
    }
    defaults.update(config)
    h = Harness(tmp, Config(**defaults))
    async with open_engine(h.config, tmp, launcher=h.launch) as engine:
        h.engine = engine
        yield h


def pair(sent: SendResult) -> tuple[int, int]:
    """A send's (seq, queued)."""
    return sent.seq, sent.queued


def pending(queue: list[PendingMessage]) -> list[tuple[int, str]]:
    """A queue's (seq, text) pairs."""
    return [(m.seq, m.text) for m in queue]


def parse(line: bytes) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(line)
    return msg


async def next_event(sub: Subscription, type_: str | None = None) -> Event:
    """The next `conversation/event` (of `type_`) on `sub`, skipping deltas."""
    async for line in sub:
        msg = parse(line)
        if msg["method"] == "conversation/event":
            event: Event = msg["params"]["event"]
            if type_ is None or event["type"] == type_:
                return event
    raise AssertionError(f"subscription ended before a {type_} event")


async def drain(sub: Subscription) -> list[dict[str, Any]]:
    """Every line `sub` has now (replay included), parsed; then close it. Costs 1 s of the
    (mock) clock: the wait that tells "nothing more" apart."""
    out: list[dict[str, Any]] = []
    try:
        while True:
            with trio.move_on_after(1) as scope:
                line = await sub.__anext__()
            if scope.cancelled_caught:
                return out
            out.append(parse(line))
    except StopAsyncIteration:
        return out
    finally:
        sub.close()


async def wait_turn_ended(h: Harness, cid: str, n: int = 1) -> list[Event]:
    """Block until `n` turns of `cid` have ended; returns the turn_ended events."""
    sub = await h.e.subscribe(cid, after_seq=0, deltas=False)
    ended: list[Event] = []
    try:
        while len(ended) < n:
            ended.append(await next_event(sub, "turn_ended"))
    finally:
        sub.close()
    return ended
