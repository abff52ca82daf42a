"""The ACP front door, `acpd acp`, against a real daemon: how soon a client has a session, and
what streaming through it costs per chunk next to a direct socket subscription.

- Session start: a fresh `acpd acp` process per run, driven over its pipes by a minimal
  blocking client: spawn to the `initialize` answer (process start and the daemon connection),
  then `initialize` sent to the first `session/new` answered (the figure an editor waits for
  after start-up). Side by side, what `session/new` does, straight on the socket from a
  connected client: `conversations/create`, then a connection of its own subscribed with
  `caught_up`.
- Per chunk: one conversation whose agent is `_flood_agent.py --per-line` (each chunk encoded
  and written on its own, as a fast real agent does), watched in the same turns by a direct
  subscriber on the socket and by an ACP client through `acpd acp`, which also sends the
  prompt. Each reader only looks for its end marker (`turn_ended`, the prompt's answer), so
  the two do the same work. Wall time from the prompt to each one's end, per chunk, and the
  CPU time `acpd acp` spent per chunk (from /proc).

Run: `python -m tests.bench.run --only acp`, or `python -m tests.bench.bench_acp`.
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench._common import ratio_row, row, running_daemon, stats

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0  # any one step: a hang guard
FLOOD = [sys.executable, str(Path(__file__).with_name("_flood_agent.py")), "--per-line"]


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


class LineReader:
    """Lines from a blocking file descriptor, with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(fd, selectors.EVENT_READ)

    def line(self) -> bytes:
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self.buf:
            if not self.sel.select(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("no answer in time")
            data = os.read(self.fd, 1 << 16)
            if not data:
                raise RuntimeError("the other end closed")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line


class AcpProcess:
    """`acpd acp` and a minimal blocking ACP client on its pipes."""

    def __init__(self, sock: str, *extra: str) -> None:
        argv = [sys.executable, "-m", "daemon.cli", "acp", "--socket", sock, *extra]
        self.started = time.perf_counter_ns()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.reader = LineReader(self.proc.stdout.fileno())
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.stdin.write(_line(msg))
        self.stdin.flush()
        return self.next_id

    def call(self, method: str, params: dict[str, Any]) -> Any:
        wanted = self.send(method, params)
        while True:
            msg = json.loads(self.reader.line())
            if msg.get("id") == wanted and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.stdin.close()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SocketClient:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.reader = LineReader(self.sock.fileno())
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self.sock.sendall(_line({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                 "params": params}))  # fmt: skip
        return self.next_id

    def call(self, method: str, params: dict[str, Any]) -> Any:
        wanted = self.send(method, params)
        while True:
            msg = json.loads(self.reader.line())
            if msg.get("id") == wanted:
                return msg["result"]

    def close(self) -> None:
        self.sock.close()


def _session_start(sock: str, cwd: str, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"start": [], "new": [], "total": [], "direct": []}
    init = {"protocolVersion": 1, "clientCapabilities": {}}
    for _ in range(runs):
        door = AcpProcess(sock)  # the client writes at once; the process reads when it can
        try:
            door.call("initialize", init)
            ready = time.perf_counter_ns()
            door.call("session/new", {"cwd": cwd, "mcpServers": []})
            done = time.perf_counter_ns()
        finally:
            door.close()
        out["start"].append((ready - door.started) / 1e6)
        out["new"].append((done - ready) / 1e6)
        out["total"].append((done - door.started) / 1e6)
        control = SocketClient(sock)
        try:
            start = time.perf_counter_ns()
            conv = control.call("conversations/create", {"cwd": cwd})["conversation"]
            stream = SocketClient(sock)
            stream.call("conversations/subscribe", {"id": conv["id"], "caught_up": True})
            stream.reader.line()  # the caught_up notice
            out["direct"].append((time.perf_counter_ns() - start) / 1e6)
            stream.close()
        finally:
            control.close()
    return out


def _cpu_ns(pid: int) -> int:
    """Time on a CPU so far, in ns (schedstat: finer than /proc/PID/stat's ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _per_chunk(sock: str, cwd: str, n: int, rounds: int) -> dict[str, list[float]]:
    """Both readers in threads, each keeping the arrival time of every text line: the k-th
    `conversation/delta` and the k-th `agent_message_chunk` carry the same text."""
    door = AcpProcess(sock, "--agent-cmd", shlex.join(FLOOD))
    out: dict[str, list[float]] = {
        "direct": [], "acp": [], "lag": [], "cpu": [], "cpu_message": [], "messages": []
    }  # fmt: skip
    try:
        door.call("initialize", {"protocolVersion": 1, "clientCapabilities": {}})
        sid = door.call("session/new", {"cwd": cwd, "mcpServers": []})["sessionId"]
        door.call("session/prompt", {"sessionId": sid, "prompt": [{"type": "text", "text": "10"}]})
        direct = SocketClient(sock)
        last = direct.call("conversations/get", {"id": sid})["conversation"]["last_seq"]
        direct.call("conversations/subscribe", {"id": sid, "after_seq": last})
        for _ in range(rounds):
            times: dict[str, list[int]] = {"direct": [], "acp": []}
            ends: dict[str, int] = {}

            def watch_direct(
                times: dict[str, list[int]] = times, ends: dict[str, int] = ends
            ) -> None:
                while b'"turn_ended"' not in (line := direct.reader.line()):
                    if b'"conversation/delta"' in line:
                        times["direct"].append(time.perf_counter_ns())
                ends["direct"] = time.perf_counter_ns()

            def watch_acp(
                marker: bytes, times: dict[str, list[int]] = times, ends: dict[str, int] = ends
            ) -> None:
                while marker not in (line := door.reader.line()):
                    if b'"agent_message_chunk"' in line:
                        times["acp"].append(time.perf_counter_ns())
                ends["acp"] = time.perf_counter_ns()
                if b'"end_turn"' not in line:
                    raise RuntimeError(f"the turn ended badly: {line[:200]!r}")

            cpu = _cpu_ns(door.proc.pid)
            start = time.perf_counter_ns()
            prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": str(n)}]}
            wanted = door.send("session/prompt", prompt)
            watchers = [
                threading.Thread(target=watch_direct),
                threading.Thread(target=watch_acp, args=(b'"id":%d,"result"' % wanted,)),
            ]
            for w in watchers:
                w.start()
            for w in watchers:
                w.join(TIMEOUT)
            if set(ends) != {"direct", "acp"} or len(times["acp"]) != len(times["direct"]):
                raise RuntimeError(f"the streams differ: {len(times['acp'])} chunks through "
                                   f"acpd acp, {len(times['direct'])} deltas")  # fmt: skip
            out["direct"].append((ends["direct"] - start) / 1e3 / n)
            out["acp"].append((ends["acp"] - start) / 1e3 / n)
            lags = sorted(a - b for a, b in zip(times["acp"], times["direct"], strict=True))
            out["lag"].append(lags[len(lags) // 2] / 1e3)
            spent = (_cpu_ns(door.proc.pid) - cpu) / 1e3
            out["cpu"].append(spent / n)
            out["cpu_message"].append(spent / max(1, len(times["acp"]) + 1))
            out["messages"].append(len(times["acp"]))
        direct.close()
    finally:
        door.close()
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    runs = 5 if quick else 20
    n, rounds = (5_000, 3) if quick else (20_000, 7)
    with tempfile.TemporaryDirectory(prefix="acpd-bench-acp-") as d:
        tmp = Path(d)
        (tmp / "work").mkdir()
        cwd = str(tmp / "work")
        with running_daemon(tmp / "data", tmp / "s.sock") as daemon:
            start = _session_start(daemon.socket, cwd, runs)
            chunks = _per_chunk(daemon.socket, cwd, n, rounds)
    rows.append(row("acpd acp: spawn -> initialize answered", "ms", stats(start["start"]),
                    "the client writes initialize at once: process start included"))  # fmt: skip
    new = stats(start["new"])
    rows.append(row("acpd acp: initialize answered -> session/new answered", "ms", new,
                    "conversations/create + a subscription"))  # fmt: skip
    rows.append(row("acpd acp: spawn -> session/new answered", "ms", stats(start["total"]),
                    "what an editor waits for a first session"))  # fmt: skip
    direct = stats(start["direct"])
    rows.append(row("socket: conversations/create + subscribe", "ms", direct,
                    "the same work from a connected socket client"))  # fmt: skip
    rows.append(ratio_row("session/new via acpd acp / on the socket", new, direct))
    note = f"{n:,} chunks a turn, per-line agent; same turns"
    per_direct, per_acp = stats(chunks["direct"]), stats(chunks["acp"])
    rows.append(row("per chunk, direct subscription (prompt -> turn_ended)", "µs", per_direct,
                    note))  # fmt: skip
    rows.append(row("per chunk, through acpd acp (prompt -> its answer)", "µs", per_acp, note))
    rows.append(ratio_row("per chunk: acpd acp / direct subscription", per_acp, per_direct))
    msgs = stats(chunks["messages"])
    rows.append(row("text message: acpd acp arrival - direct arrival (median)", "µs",
                    stats(chunks["lag"]),
                    f"~{msgs['median']:,.0f} a turn: the daemon coalesces chunks"))  # fmt: skip
    rows.append(row("acpd acp CPU per agent chunk", "µs", stats(chunks["cpu"]), "schedstat"))
    rows.append(row("acpd acp CPU per message relayed", "µs", stats(chunks["cpu_message"]),
                    "a delta in, a session/update out"))  # fmt: skip
    return rows


if __name__ == "__main__":
    from tests.bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
