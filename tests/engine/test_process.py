"""Behaviours 11-12 with real processes: kill -9 and restart, SIGTERM, hung and crashing agents.

`python -m daemon.server serve` runs as a child (tests/server/test_serve.py's `running_daemon`),
the built-in demo agent behind it, and the test speaks JSON-RPC on the daemon's socket. Real
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

import contextlib
import ctypes
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from daemon.agents._process import group_alive
from daemon.agents.orphans import process_start_time, read_records
from protocol import events as ev
from store import Store
from tests.fakes.engine import LineClient
from tests.server.test_serve import Daemon, running_daemon

pytestmark = pytest.mark.subprocess

Json = dict[str, Any]
DELAY = 0.05  # ACPD_DEMO_DELAY: `/slow 200` streams for 10 s
GUARD = 45  # per-test hang guard (s); each takes a few seconds
DEMO = f"{shlex.quote(sys.executable)} -m daemon.agents.demo"
ORPHANING_DEMO = ["sh", "-c", f"sleep 300 & exec {DEMO}"]
# The same, deaf to SIGTERM (an ignored signal stays ignored across fork and exec): stopping
# its group takes SIGKILL after stop_grace.
STUBBORN_DEMO = ["sh", "-c", f"trap '' TERM; sleep 300 & exec {DEMO}"]
PR_SET_CHILD_SUBREAPER = 36
CRASH_LINE = "acpd-demo: crashing on request (/crash)"


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[int]]:
    """The demo agent's settings for every daemon started here, and a list of agent process
    groups that are SIGKILLed at teardown if a failed test left them running."""
    monkeypatch.setenv("ACPD_DEMO_DELAY", str(DELAY))
    monkeypatch.setenv("ACPD_DEMO_DIR", str(tmp_path / "demo-sessions"))
    seen: list[int] = []
    yield seen
    for pgid in seen:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


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


# --- 1. kill -9 mid-turn --------------------------------------------------------------------


@pytest.fixture
def subreaper() -> Iterator[list[int]]:
    """Make this process the subreaper of orphans (Linux), so a test can reap an orphaned
    agent's leader as promptly as systemd would, whatever the container's init does. Yields a
    list of pids to reap at teardown."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    orphans: list[int] = []
    try:
        yield orphans
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid`, zombies included."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[2]) == pgid:
                members.append(int(name))
    return members


async def reap_leader(pgid: int, within: float) -> None:
    """Wait for the orphaned group leader (now our child) to exit, and reap it."""
    with trio.move_on_after(within):
        while os.waitpid(pgid, os.WNOHANG) == (0, 0):  # noqa: ASYNC222 (WNOHANG)
            await trio.sleep(0.02)
    assert process_start_time(pgid) is None, f"group leader {pgid} still there"


# `sleep` outlives the demo in its group. "exits": the leader is the demo, which exits at stdin
# EOF, so the orphaned group has no leader; "lives": a shell that waits for `sleep` leads it.
LEADERS = {
    "leader-exits": ORPHANING_DEMO,
    "leader-lives": ["sh", "-c", f"sleep 300 & {DEMO}; wait"],
}


@pytest.mark.parametrize("leader", sorted(LEADERS))
async def test_kill_9_mid_turn_then_restart(
    tmp_path: Path, groups: list[int], subreaper: list[int], leader: str
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, LEADERS[leader]) as conv,
        ):
            assert await conv.send("/slow 200") == 1
            second, third = await conv.send("/echo second"), await conv.send("/echo third")
            assert (second, third) == (2, 3)
            # Let text stream for more than draft_interval (1 s), until a draft is stored.
            await conv.delta()
            first_delta = time.monotonic()
            while True:
                await conv.delta()
                if time.monotonic() - first_delta < 1.5 or len(conv.deltas) < 3:
                    continue
                with stored(daemon) as s:
                    if s.drafts(conv.id):
                        break
            streamed = "".join(d["text"] for d in conv.deltas)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            subreaper.extend(group_members(pgid))
            daemon.proc.send_signal(signal.SIGKILL)
            assert await daemon.proc.wait() == -signal.SIGKILL
            if leader == "leader-exits":
                await reap_leader(pgid, 5)
            else:
                assert process_start_time(pgid) is not None
            assert group_alive(pgid), "the agent group should have outlived the daemon"
        # Same data dir, same socket path (the stale socket is replaced).
        async with running_daemon(tmp_path) as daemon, attached(daemon, conv.id) as conv:
            # (a) The orphaned group was killed at startup, and its record removed.
            await wait_group_gone(pgid, 5)
            assert pgid not in agent_groups(daemon)
            await conv.turn_ended(third)
            groups.extend(agent_groups(daemon))
            # (b) The unfinished turn is closed, after the text saved so far.
            closed = conv.index(ended(1))
            assert conv.events[closed]["stop_reason"] == "daemon_restarted"
            partial = conv.events[closed - 1]
            assert partial["type"] == "agent_message", conv.events
            assert partial["partial"] is True
            assert partial["prompt_seq"] == 1
            assert counted(partial["text"]), partial
            assert partial["text"].startswith(streamed) or streamed.startswith(partial["text"])
            # (c) Every acknowledged message kept; the queue continues, each prompted once.
            users = [(e["seq"], e["text"]) for e in conv.of_type("user_message")]
            assert users == [(1, "/slow 200"), (2, "/echo second"), (3, "/echo third")]
            assert [e["prompt_seq"] for e in conv.of_type("turn_started")] == [1, 2, 3]
            endings = [(e["prompt_seq"], e["stop_reason"]) for e in conv.of_type("turn_ended")]
            assert endings == [(1, "daemon_restarted"), (2, "end_turn"), (3, "end_turn")]
            replies = [(e["prompt_seq"], e["text"]) for e in conv.of_type("agent_message")]
            assert replies[1:] == [(2, "second"), (3, "third")]
            # (d) The agent came back with session/load, between the closed turn and the next.
            (restarted,) = conv.of_type("agent_restarted")
            assert restarted["reason"] == "daemon_restarted"
            assert restarted["session_loaded"] is True
            assert closed < conv.events.index(restarted) < conv.index(started(second))
            assert (await conv.call("messages/queue"))["pending"] == []
            info = (await conv.call("conversations/get"))["conversation"]
            assert (info["status"], info["queued"]) == ("idle", 0)
            await sigterm_and_time(daemon)


# --- 2, 3. SIGTERM: a graceful stop within a bound ---------------------------------------------


async def test_sigterm_drains_the_turn_and_keeps_the_queue(
    tmp_path: Path, groups: list[int]
) -> None:
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, ORPHANING_DEMO) as conv,
        ):
            await conv.send("/slow 200")
            queued = await conv.send("/echo kept")
            await conv.delta()  # the turn is streaming
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            took = await sigterm_and_time(daemon)
            print(f"SIGTERM with a turn streaming: exited in {took:.2f}s")
            assert took < 15  # shutdown_grace (10 s) + slack; the demo honours cancel at once
            assert not group_alive(pgid)
            assert agent_groups(daemon) == []
        # What the stopped daemon left: the turn ended `cancelled`, idle, the queue intact.
        events = stored_events(daemon, conv.id)
        (closed,) = [e for e in events if e["type"] == "turn_ended"]
        assert (closed["prompt_seq"], closed["stop_reason"]) == (1, "cancelled")
        with stored(daemon) as s:
            rec = s.get_conversation(conv.id)
            assert rec is not None
            assert (rec.status, rec.queued, rec.cursor) == ("idle", 1, 1)
            assert [r.seq for r in s.pending_messages(conv.id)] == [queued]
        async with running_daemon(tmp_path) as daemon, attached(daemon, conv.id) as conv:
            await conv.turn_ended(queued)
            groups.extend(agent_groups(daemon))
            assert [e["prompt_seq"] for e in conv.of_type("turn_started")] == [1, queued]
            assert conv.of_type("turn_ended")[-1]["stop_reason"] == "end_turn"
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("daemon_restarted", True)
            await sigterm_and_time(daemon)


@pytest.mark.parametrize(
    ("settings", "expect"),
    [
        # Drain first: the hung turn is cut off after drain_timeout and recorded `cancelled`.
        ("drain_timeout = 1.0\nstop_grace = 1.0\n", "cancelled"),
        # Grace first: the turn is abandoned as running; the next start closes it.
        ("drain_timeout = 30.0\nshutdown_grace = 1.0\nstop_grace = 1.0\n", "daemon_restarted"),
    ],
    ids=["drain-timeout", "shutdown-grace"],
)
async def test_sigterm_with_a_hung_agent(
    tmp_path: Path, groups: list[int], settings: str, expect: str
) -> None:
    args = config(tmp_path, settings)
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path, *args) as daemon,
            created(daemon, tmp_path, STUBBORN_DEMO) as conv,
        ):
            await conv.send("/hang")
            await conv.turn_started(1)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            took = await sigterm_and_time(daemon)
            print(f"SIGTERM with a hung agent ({settings.strip()!r}): exited in {took:.2f}s")
            assert took < 1.0 + 1.0 + 5  # the first bound + stop_grace + slack
            assert not group_alive(pgid)
            assert agent_groups(daemon) == []
        if expect == "cancelled":
            events = stored_events(daemon, conv.id)
            endings = [(e["prompt_seq"], e["stop_reason"]) for e in events
                       if e["type"] == "turn_ended"]  # fmt: skip
            assert endings == [(1, "cancelled")]
            with stored(daemon) as s:
                rec = s.get_conversation(conv.id)
                assert rec is not None
                assert rec.status == "idle"
            return
        async with running_daemon(tmp_path, *args) as daemon, attached(daemon, conv.id) as conv:
            assert (await conv.turn_ended(1))["stop_reason"] == "daemon_restarted"
            info = (await conv.call("conversations/get"))["conversation"]
            assert info["status"] == "idle"
            await sigterm_and_time(daemon)


async def test_sigterm_with_many_hung_agents_meets_the_grace(
    tmp_path: Path, groups: list[int]
) -> None:
    # Each agent ignores the cancel (for longer than the grace) and SIGTERM: only SIGKILL ends
    # it. One deadline for all of them, not shutdown_grace and then stop_grace for each.
    n = 8
    settings = f"drain_timeout = 30.0\nshutdown_grace = 3.0\nstop_grace = 2.0\nmax_agents = {n}\n"
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path, *config(tmp_path, settings)) as daemon:
            async with contextlib.AsyncExitStack() as stack:
                convs = [
                    await stack.enter_async_context(created(daemon, tmp_path, STUBBORN_DEMO))
                    for _ in range(n)
                ]
                for conv in convs:
                    await conv.send("/hang")
                for conv in convs:
                    await conv.turn_started(1)
                pgids = agent_groups(daemon)
                groups.extend(pgids)
                assert len(pgids) == n
                status = await call(convs[0].client, "daemon/status", {})
                assert status["slots"] == {"used": n, "max": n, "waiting": 0}
                assert status["agents_rss"] > n * 10 * 2**20  # a Python demo each, and a shell
                took = await sigterm_and_time(daemon)
            print(f"SIGTERM with {n} hung, stubborn agents: exited in {took:.2f}s")
            assert took < 3.0 + 1.0  # shutdown_grace, and the interpreter's exit
            assert not any(group_alive(pgid) for pgid in pgids)
            assert agent_groups(daemon) == []


# --- 4, 5. A hung agent interrupted, a crashing agent -------------------------------------------


async def test_interrupt_a_hung_agent_restarts_it(tmp_path: Path, groups: list[int]) -> None:
    args = config(tmp_path, "drain_timeout = 1.0\nstop_grace = 1.0\n")
    with trio.fail_after(GUARD):
        async with (
            running_daemon(tmp_path, *args) as daemon,
            created(daemon, tmp_path, STUBBORN_DEMO) as conv,
        ):
            await conv.send("/hang")
            await conv.turn_started(1)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            t0 = time.monotonic()
            assert (await conv.call("turns/interrupt")) == {"interrupted": True}
            assert (await conv.turn_ended(1))["stop_reason"] == "cancelled"
            took = time.monotonic() - t0
            print(f"interrupt with a hung agent: turn ended after {took:.2f}s")
            assert 1.0 <= took < 1.0 + 1.0 + 4  # drain_timeout, then stop_grace, SIGKILL
            assert not group_alive(pgid)  # stopped (whole group) before the turn ended
            assert agent_groups(daemon) == []
            info = (await conv.call("conversations/get"))["conversation"]
            assert (info["status"], info["live"]) == ("paused", False)
            assert await conv.call("conversations/resume") == {"resumed": True, "queued": 0}
            after = await conv.send("/echo after")
            assert (await conv.turn_ended(after))["stop_reason"] == "end_turn"
            groups.extend(agent_groups(daemon))
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("drain_timeout", True)
            assert conv.index(ended(1)) < conv.events.index(restarted) < conv.index(started(after))
            assert conv.of_type("agent_message")[-1]["text"] == "after"
            await sigterm_and_time(daemon)


async def test_agent_crash_is_reported_and_the_next_message_restarts_it(
    tmp_path: Path, groups: list[int]
) -> None:
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon, created(daemon, tmp_path, None) as conv:
            await conv.send("/crash")
            assert (await conv.turn_ended(1))["stop_reason"] == "agent_exited"
            (error,) = conv.of_type("error")
            assert error["message"] == "agent exited with status 3"
            assert CRASH_LINE in error["detail"]
            assert conv.index(lambda e: e["type"] == "error") < conv.index(ended(1))
            # The crash is reported once the agent exited; its record goes as its launcher
            # finishes, concurrently (a worker thread): soon after, not necessarily before.
            with trio.fail_after(5):
                while agent_groups(daemon):
                    await trio.sleep(0.02)
            again = await conv.send("/echo again")
            assert (await conv.turn_ended(again))["stop_reason"] == "end_turn"
            groups.extend(agent_groups(daemon))
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("crashed", True)
            assert conv.of_type("agent_message")[-1]["text"] == "again"
            info = (await conv.call("conversations/get"))["conversation"]
            assert (info["status"], info["live"]) == ("idle", True)
            await sigterm_and_time(daemon)


async def test_an_agent_killed_while_idle_is_reported_at_once(
    tmp_path: Path, groups: list[int]
) -> None:
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon, created(daemon, tmp_path, None) as conv:
            first = await conv.send("/echo hi")
            await conv.turn_ended(first)
            (pgid,) = agent_groups(daemon)
            groups.append(pgid)
            os.killpg(pgid, signal.SIGKILL)  # the OOM killer, say: no turn is running
            error = await conv.until(lambda e: e["type"] == "error")
            assert error["message"] == "agent exited while idle with status -9"
            again = await conv.send("/echo again")
            assert (await conv.turn_ended(again))["stop_reason"] == "end_turn"
            (restarted,) = conv.of_type("agent_restarted")
            assert (restarted["reason"], restarted["session_loaded"]) == ("crashed", True)
            await sigterm_and_time(daemon)
