"""Engine benchmarks (issue 4): relay rate, send-ack latency under load, interrupt latency,
time to ready and memory with 100,000 stored conversations, memory per live supervisor.

- Relay: `_flood_agent.py` answers a prompt "N" with N message chunks written flat out. Its
  bare rate is what a trivial reader draining its stdout sees; through acpd it is a real engine
  (agent subprocess, store threads) and 1 or 10 subscribers iterating their notification
  lines, each to the end of the turn.
- Send ack: a real daemon, a conversation whose agent floods a long turn (one socket client
  draining its deltas), and `messages/send` round trips from another client during it: what a
  user waits for, durable commit included.
- Interrupt: the engine over an in-process fake agent on the real clock and real store
  threads: `send(interrupt=True)` to `session/cancel` read by the agent, and the agent's
  `cancelled` reply to the next `session/prompt` read by it.
- Steer (issue 17): the same set-up, an agent that advertises steering and a turn that runs:
  `messages/send {steer}` to `_session/steering` read by the agent, and to the reply
  (`steered: true`: the agent's answer and a durable commit later), beside a plain send's ack
  measured the same way in the same turn.
- Start-up and RSS: a real daemon on an empty data dir and on bench_store's 100,000 store,
  spawn to the first `daemon/status` answer, interleaved run by run.

Run with `python -m tests.bench.run --only engine` (or this module directly).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from daemon.cli.client import Client
from daemon.config import Config
from daemon.engine.opening import open_engine
from daemon.engine.registry import Engine
from protocol import acp
from tests.bench._common import ratio_row, row, running_daemon, stats, subscriber
from tests.bench.bench_store import BIG, _store_of
from tests.engine.harness import harness, wait_turn_ended
from tests.fakes.agent import Reply, WaitForCancel

FLOOD = [sys.executable, str(Path(__file__).with_name("_flood_agent.py"))]
DEMO = [sys.executable, "-m", "daemon.agents.demo"]


@attrs.frozen
class Agent:
    """An agent for the relay: its argv and the prompt that makes it send `n` chunks."""

    name: str
    argv: list[str]
    prompt: str  # with {n}
    note: str

    def text(self, n: int) -> str:
        return self.prompt.format(n=n)


AGENTS = (
    Agent("blocks", FLOOD, "{n}", "pre-encoded lines, 1,000 per write: any agent's ceiling"),
    Agent("per-line", [*FLOOD, "--per-line"], "{n}", "each chunk encoded and written alone"),
    Agent("demo", DEMO, "/flood {n}", "acpd's demo agent (trio + msgspec)"),
)


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


# --- the agent's own rate into a bare pipe -----------------------------------------------------


def bare_pipe_rate(agent: Agent, n: int, tmp: Path) -> float:
    """Chunks/s the agent writes into a pipe drained by a trivial reader."""
    proc = subprocess.Popen(agent.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp)
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:

        def call(id_: int, method: str, params: dict[str, Any]) -> Any:
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(
                _line({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})
            )
            proc.stdin.flush()
            while True:
                msg = json.loads(proc.stdout.readline())
                if msg.get("id") == id_:
                    return msg["result"]

        call(0, "initialize", {"protocolVersion": 1})
        sid = call(1, "session/new", {"cwd": str(tmp), "mcpServers": []})["sessionId"]
        prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": agent.text(n)}]}
        start = time.perf_counter()
        proc.stdin.write(
            _line({"jsonrpc": "2.0", "id": 2, "method": "session/prompt", "params": prompt})
        )
        proc.stdin.flush()
        # The trivial reader: big raw reads, no line splitting, until the reply (the last line).
        fd, tail = proc.stdout.fileno(), b""
        while not tail.endswith(b'"end_turn"}}\n'):
            data = os.read(fd, 1 << 16)
            if not data:
                raise RuntimeError(f"the {agent.name} agent exited")
            tail = (tail + data)[-64:]
        return n / (time.perf_counter() - start)
    finally:
        proc.kill()
        proc.wait()


# --- relay through the engine to k subscribers --------------------------------------------------


async def _turn_through(engine: Engine, cid: str, text: str, subscribers: int) -> float:
    """Seconds from send to every subscriber having seen the turn end."""
    after = (await engine.get(cid)).last_seq
    subs = [await engine.subscribe(cid, after_seq=after, deltas=True) for _ in range(subscribers)]

    async def consume(sub: Any) -> None:
        async for line in sub:
            if b'"turn_ended"' in line:
                break
        sub.close()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for sub in subs:
            nursery.start_soon(consume, sub)
        await engine.send(cid, text, run=True, interrupt=False)
    return time.perf_counter() - start


async def _relay(agent: Agent, n: int, tmp: Path, counts: tuple[int, ...]) -> dict[int, float]:
    """Chunks/s through the engine for each subscriber count."""
    rates: dict[int, float] = {}
    async with open_engine(Config(), tmp) as engine:
        info = await engine.create(agent=agent.name, agent_cmd=agent.argv, cwd=str(tmp), title="b")
        await _turn_through(engine, info.id, agent.text(10), 1)  # the agent is up
        for k in counts:
            rates[k] = n / await _turn_through(engine, info.id, agent.text(n), k)
        await engine.delete(info.id)
    return rates


# --- send ack while a turn streams, through a real daemon ---------------------------------------


def _send_ack(agent: Agent, n: int, samples: int, tmp: Path) -> list[float]:
    """`messages/send` round trips (ms) while `agent` streams a turn of `n` chunks."""
    data = tmp / "data"
    data.mkdir(mode=0o700)
    env = {"ACPD_DEMO_DIR": str(tmp / "demo"), "ACPD_DEMO_DELAY": "0.001"}  # ~1,000 chunks/s
    with (
        running_daemon(data, tmp / "ack.sock", env=env) as daemon,
        Client(daemon.socket) as client,
    ):
        new = {"agent_cmd": agent.argv, "cwd": str(tmp), "title": "ack"}
        cid = client.call("conversations/create", new)["conversation"]["id"]
        with subscriber(daemon, cid):
            client.call("messages/send", {"id": cid, "text": agent.text(10)})  # start the agent
            while client.call("conversations/get", {"id": cid})["conversation"]["status"] != "idle":
                time.sleep(0.01)
            client.call("messages/send", {"id": cid, "text": agent.text(n)})
            time.sleep(0.2)  # streaming now
            out: list[float] = []
            for i in range(samples):  # each queues a turn behind the long one
                start = time.perf_counter_ns()
                client.call("messages/send", {"id": cid, "text": f"queued {i}"})
                out.append((time.perf_counter_ns() - start) / 1e6)
                time.sleep(0.002)  # a person types slower; the turn keeps streaming
            info = client.call("conversations/get", {"id": cid})["conversation"]
            if (info["status"], info["queued"]) != ("running", samples):  # still the long turn
                raise RuntimeError(f"the long turn ended before the samples did: {stats(out)}")
            client.call("conversations/delete", {"id": cid})
    return out


# --- interrupt latencies: in-process fake agent, real clock, real store threads -----------------


async def _interrupt_latency(rounds: int, tmp: Path) -> tuple[list[float], list[float]]:
    to_cancel: list[float] = []
    to_next: list[float] = []
    async with harness(tmp, drain_timeout=5.0) as h:
        cid = await h.create()
        await h.e.send(cid, "warm", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        for i in range(rounds):
            h.script(WaitForCancel(), Reply("cancelled"))
            prompts = h.agent.count("session/prompt")
            await h.e.send(cid, f"m{i}", run=True, interrupt=False)
            await h.agent.wait_for("session/prompt", prompts + 1)
            start = time.perf_counter()
            await h.e.send(cid, f"next{i}", run=True, interrupt=True)
            await h.agent.wait_for("session/cancel", i + 1)
            cancelled = time.perf_counter()
            await h.agent.wait_for("session/prompt", prompts + 2)
            to_cancel.append((cancelled - start) * 1e3)
            to_next.append((time.perf_counter() - cancelled) * 1e3)
            await wait_turn_ended(h, cid)
    return to_cancel, to_next


async def _steer_latency(rounds: int, tmp: Path) -> tuple[list[float], list[float], list[float]]:
    """(plain send ack, steer to `_session/steering` at the agent, steer ack), in ms."""
    sends: list[float] = []
    to_agent: list[float] = []
    acks: list[float] = []
    async with harness(tmp, drain_timeout=5.0) as h:
        h.agent_kwargs["steering"] = "meta"
        cid = await h.create()
        h.script(WaitForCancel(), Reply("cancelled"))
        await h.e.send(cid, "a long turn", run=True, interrupt=False)
        await trio.sleep(0.05)  # let it start, so a steer has a turn to join
        await h.agent.wait_for("session/prompt")

        async def steer(i: int, start: float) -> None:
            result = await h.e.steer(cid, f"steer {i}")
            acks.append((time.perf_counter() - start) * 1e3)
            if result.steered is not True:
                raise RuntimeError(f"steer {i} was not taken: {result}")

        for i in range(rounds):
            start = time.perf_counter()
            await h.e.send(cid, f"queued {i}", run=True, interrupt=False)
            sends.append((time.perf_counter() - start) * 1e3)
            async with trio.open_nursery() as nursery:
                start = time.perf_counter()
                nursery.start_soon(steer, i, start)
                await h.agent.wait_for(acp.SESSION_STEERING, i + 1)
                to_agent.append((time.perf_counter() - start) * 1e3)
        await h.e.interrupt(cid)
        await wait_turn_ended(h, cid)
    return sends, to_agent, acks


# --- start-up and memory through the real daemon ------------------------------------------------


def _data_dir(n: int, tmp: Path) -> Path:
    data = tmp / f"data-{n}"
    data.mkdir(mode=0o700)
    if n:
        shutil.copyfile(_store_of(n), data / "acpd.sqlite3")
        conn = sqlite3.connect(data / "acpd.sqlite3", isolation_level=None)
        try:
            conn.execute("DELETE FROM queue")  # no recovery: pure start-up
        finally:
            conn.close()
    return data


def _startup(runs: int, tmp: Path) -> dict[int, tuple[list[float], list[float]]]:
    """(time to ready in ms, RSS at ready in KiB) per stored count, interleaved run by run."""
    sizes = (0, BIG)
    dirs = {n: _data_dir(n, tmp) for n in sizes}
    out: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in sizes}
    for i in range(runs + 1):
        for n in sizes:
            with running_daemon(dirs[n], tmp / f"start-{n}.sock") as daemon:
                if i:  # the first round only warms the page cache
                    out[n][0].append(daemon.ready_ms)
                    out[n][1].append(daemon.rss_kib())
    return out


_PER_WATCHER = 200  # subscriptions per watching connection (under both limits)


def _per_supervisor(count: int, tmp: Path) -> float:
    """RSS (KiB) per live supervisor without an agent: `count` conversations subscribed."""
    data = tmp / "data-sup"
    data.mkdir(mode=0o700)
    with running_daemon(data, tmp / "sup.sock") as daemon, Client(daemon.socket) as client:
        ids = [
            client.call("conversations/create", {"cwd": str(tmp)})["conversation"]["id"]
            for _ in range(count)
        ]
        time.sleep(0.5)  # settle: allocator and store caches after the creates
        before = daemon.rss_kib()
        # Watchers share connections: the socket takes at most MAX_CONNECTIONS clients and a
        # connection at most MAX_SUBSCRIPTIONS subscriptions.
        watchers: list[Client] = []
        for i, cid in enumerate(ids):
            if i % _PER_WATCHER == 0:
                watchers.append(Client(daemon.socket))
            watchers[-1].call("conversations/subscribe", {"id": cid, "deltas": False})
        live = client.call("daemon/status")["conversations_live"]
        if live < count:
            raise RuntimeError(f"{live} live supervisors, expected {count}")
        after = daemon.rss_kib()
        for sub in watchers:
            sub.close()
    # A watcher's connection is a task in the daemon too: counted in, shared by _PER_WATCHER.
    return (after - before) / count


def _ratio(name: str, big: list[float], small: list[float], note: str) -> dict[str, Any]:
    return ratio_row(name, stats(big), stats(small), note)


def run(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    n = 50_000 if quick else 200_000
    with tempfile.TemporaryDirectory(prefix="acpd-bench-engine-") as d:
        tmp = Path(d)
        rounds = 2 if quick else 5
        for agent in AGENTS:
            count = n if agent.name != "demo" else n // 10  # the demo agent is slow
            bare: list[float] = []
            relays: list[dict[int, float]] = []
            for i in range(rounds):  # interleaved: both see the same machine
                bare.append(bare_pipe_rate(agent, count, tmp))
                (tmp / f"relay-{agent.name}-{i}").mkdir()
                relays.append(
                    trio.run(_relay, agent, count, tmp / f"relay-{agent.name}-{i}", (1, 10))
                )
            rows.append(
                row(f"{agent.name} agent -> bare pipe", "chunks/s", stats(bare), agent.note)
            )
            for k in (1, 10):
                rates = stats([r[k] for r in relays])
                rows.append(
                    row(f"{agent.name} agent -> acpd -> {k} subscriber(s)", "chunks/s", rates)
                )
                rows.append(ratio_row(f"{agent.name}: relay to {k} / bare pipe", rates, stats(bare),
                                      "goal >= 0.8, floor 0.5"))  # fmt: skip
        for agent, chunks, what in (
            (Agent("demo", DEMO, "/slow {n}", ""), 1_000_000, "demo agent at ~1,000 chunks/s"),
            (AGENTS[0], 50_000_000, "blocks agent, flat out"),
        ):
            (tmp / f"ack-{agent.name}").mkdir()
            acks = stats(_send_ack(agent, chunks, 100 if quick else 500, tmp / f"ack-{agent.name}"))
            note = f"durable, socket client; p99 {acks['p99']:.2f} (goal p99 <= 2)"
            rows.append(row(f"messages/send round trip, {what}", "ms", acks, note))
        (tmp / "int").mkdir()
        to_cancel, to_next = trio.run(_interrupt_latency, 20 if quick else 100, tmp / "int")
        st = stats(to_cancel)
        rows.append(
            row(
                "interrupt -> session/cancel at the agent",
                "ms",
                st,
                f"p99 {st['p99']:.2f}; goal <= 2",
            )
        )
        st = stats(to_next)
        rows.append(
            row(
                "cancelled reply -> next prompt at the agent",
                "ms",
                st,
                f"p99 {st['p99']:.2f}; goal <= 5",
            )
        )
        (tmp / "steer").mkdir()
        sends, to_agent, steer_acks = trio.run(_steer_latency, 100 if quick else 500, tmp / "steer")
        for name, samples, note in (
            ("messages/send ack, a turn running (in process)", sends, "durable; beside the steers"),
            ("messages/send {steer} -> _session/steering at the agent", to_agent,
             "stored durably first, then sent"),
            ("messages/send {steer} ack (steered: true)", steer_acks,
             "+ the agent's answer and a second durable commit"),
        ):  # fmt: skip
            st = stats(samples)
            rows.append(row(name, "ms", st, f"p99 {st['p99']:.2f}; {note}"))
        start = _startup(3 if quick else 20, tmp)
        (t0, r0), (t1, r1) = start[0], start[BIG]
        rows.append(row("time to ready, empty store", "ms", stats(t0), "spawn to daemon/status"))
        rows.append(row(f"time to ready, {BIG:,} stored", "ms", stats(t1)))
        rows.append(_ratio(f"time to ready {BIG:,} / empty", t1, t0, "goal <= 1.05"))
        rows.append(row("daemon RSS at ready, empty store", "KiB", stats(r0)))
        rows.append(row(f"daemon RSS at ready, {BIG:,} stored", "KiB", stats(r1)))
        rows.append(_ratio(f"daemon RSS {BIG:,} / empty", r1, r0, "goal <= 1.1"))
        count = 200 if quick else 1000
        per = _per_supervisor(count, tmp)
        rows.append(
            row(
                "RSS per live supervisor (no agent)",
                "KiB",
                {"median": per, "min": per, "max": per, "runs": 1},
                f"{count} subscribed conversations, connection included",
            )
        )
    return rows


if __name__ == "__main__":
    from tests.bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
