"""A real daemon in a child process, for the tests that kill, stop and restart it.

`python -m daemon.server serve` runs as a child (tests/server/test_serve.py's `running_daemon`),
the built-in demo agent behind it, and a test speaks JSON-RPC on the daemon's socket. Real
time, with a `fail_after` hang guard around each test; waits read the subscription or poll
state in bounded loops, never a blind sleep.

Most conversations run the demo agent under `sh -c 'sleep 300 & exec demo'`: a process group
whose leader (the demo, which exits at stdin EOF) has a child that outlives it, as a real
agent's tool subprocess would. That makes "the whole group is gone" checkable, and it makes a
SIGKILLed daemon leave a live orphan group behind, whatever the demo does on its own. The
hung-agent tests use a variant that also ignores SIGTERM, so stopping it takes the SIGKILL
after `stop_grace`.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon.agents._process import group_alive
from daemon.agents.orphans import read_records
from protocol import events as ev
from store import Store
from tests.fakes.engine import LineClient
from tests.server.test_serve import Daemon

Json = dict[str, Any]
DELAY = 0.05  # ACPD_DEMO_DELAY: `/slow 200` streams for 10 s
GUARD = 45  # per-test hang guard (s); each takes a few seconds
DEMO = f"{shlex.quote(sys.executable)} -m daemon.agents.demo"
ORPHANING_DEMO = ["sh", "-c", f"sleep 300 & exec {DEMO}"]
# The same, deaf to SIGTERM (an ignored signal stays ignored across fork and exec): stopping
# its group takes SIGKILL after stop_grace.
STUBBORN_DEMO = ["sh", "-c", f"trap '' TERM; sleep 300 & exec {DEMO}"]
CRASH_LINE = "acpd-demo: crashing on request (/crash)"


def config(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return "--config", str(path)


def agent_groups(daemon: Daemon) -> list[int]:
    """Agent process groups the daemon has recorded in data_dir/run (orphans.AgentTracker)."""
    records = read_records(daemon.data_dir / "run")
    return sorted(rec.pid for _, rec in records if rec is not None and rec.pid)


async def wait_group_gone(pgid: int, within: float) -> None:
    """Poll (bounded) until no live process is left in group `pgid`: SIGKILL is asynchronous."""
    with trio.move_on_after(within):
        while group_alive(pgid):
            await trio.sleep(0.02)
    assert not group_alive(pgid), f"agent process group {pgid} still alive"


def stored(daemon: Daemon) -> Store:
    """A read-only view of the data dir's store (for a stopped daemon, or a read beside it)."""
    return Store.open_reader(daemon.data_dir / "acpd.sqlite3")


def stored_events(daemon: Daemon, conv_id: str) -> list[Json]:
    with stored(daemon) as s:
        recs = s.read_events(conv_id, 0, 10_000)
    return [json.loads(ev.render_event(r.seq, r.type, r.ts, r.body)) for r in recs]


@attrs.define(eq=False)
class Conv:
    """One conversation followed on one connection: calls, and its subscription's stream."""

    client: LineClient
    id: str
    events: list[Json] = attrs.field(factory=list)
    deltas: list[Json] = attrs.field(factory=list)

    async def call(self, method: str, **params: Any) -> Json:
        return await call(self.client, method, {"id": self.id, **params})

    async def send(self, text: str) -> int:
        seq: int = (await self.call("messages/send", text=text))["seq"]
        return seq

    async def next_note(self) -> Json:
        if self.client.notes:
            note: Json = self.client.notes.pop(0)
        else:
            read = await self.client.read()
            assert read is not None, "the daemon closed the connection"
            note = read
        if note["method"] == "conversation/event":
            self.events.append(note["params"]["event"])
        elif note["method"] == "conversation/delta":
            self.deltas.append(note["params"])
        else:
            raise AssertionError(f"unexpected notification {note}")
        return note

    async def until(self, pred: Callable[[Json], bool]) -> Json:
        """Read the stream until an event matches (events already read count too)."""
        seen = len(self.events)
        for event in self.events:
            if pred(event):
                return event
        while True:
            await self.next_note()
            if len(self.events) > seen:
                seen = len(self.events)
                if pred(self.events[-1]):
                    return self.events[-1]

    async def turn_ended(self, prompt_seq: int) -> Json:
        return await self.until(ended(prompt_seq))

    async def turn_started(self, prompt_seq: int) -> Json:
        return await self.until(started(prompt_seq))

    async def delta(self) -> Json:
        """Read the stream until the next delta."""
        while (await self.next_note())["method"] != "conversation/delta":
            pass
        return self.deltas[-1]

    def of_type(self, type_: str) -> list[Json]:
        return [e for e in self.events if e["type"] == type_]

    def index(self, pred: Callable[[Json], bool]) -> int:
        return next(i for i, e in enumerate(self.events) if pred(e))


@asynccontextmanager
async def created(daemon: Daemon, cwd: Path, agent_cmd: list[str] | None) -> AsyncIterator[Conv]:
    """A new conversation (the built-in demo, or `agent_cmd`), subscribed from the start."""
    params: Json = {"cwd": str(cwd)}
    params.update({"agent_cmd": agent_cmd} if agent_cmd else {"agent": "demo"})
    client = await daemon.connect()
    async with client.stream:
        conv_id = (await call(client, "conversations/create", params))["conversation"]["id"]
        conv = Conv(client, conv_id)
        await conv.call("conversations/subscribe", after_seq=0)
        yield conv


@asynccontextmanager
async def attached(daemon: Daemon, conv_id: str) -> AsyncIterator[Conv]:
    """A stored conversation, subscribed from its first event."""
    client = await daemon.connect()
    async with client.stream:
        conv = Conv(client, conv_id)
        await conv.call("conversations/subscribe", after_seq=0)
        yield conv


async def call(client: LineClient, method: str, params: Json) -> Json:
    reply = await client.call(method, params)
    assert "result" in reply, f"{method}: {reply}"
    result: Json = reply["result"]
    return result


def ended(prompt_seq: int) -> Callable[[Json], bool]:
    return lambda e: e["type"] == "turn_ended" and e["prompt_seq"] == prompt_seq


def started(prompt_seq: int) -> Callable[[Json], bool]:
    return lambda e: e["type"] == "turn_started" and e["prompt_seq"] == prompt_seq


def counted(text: str) -> bool:
    """`/slow` output so far: "1 2 3 ... k " for some k >= 1."""
    numbers = text.split()
    return (
        bool(numbers)
        and text.endswith(" ")
        and numbers == [str(i + 1) for i in range(len(numbers))]
    )


async def sigterm_and_time(daemon: Daemon) -> float:
    t0 = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    code = await daemon.proc.wait()
    took = time.monotonic() - t0
    assert code == 0, daemon.stderr.decode()[-2000:]
    return took
