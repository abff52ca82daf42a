"""AgentPeer throughput: decoded `session/update`s per second from a real child process.

A child (`sys.executable -c`) pre-encodes N `agent_message_chunk` lines and writes them flat
out to its stdout. Read three ways, in the same run:

* `AgentPeer` under trio (receive_some(64 KiB) + LineSplitter + one-pass typed decode +
  `on_update` per message + `on_batch_end` per chunk), what the daemon does;
* a plain blocking loop: `subprocess.Popen` + `for line in proc.stdout` + the same typed
  msgspec decode (the floor a trio version is compared with; target >= 0.5x);
* a bare pipe reader that only counts bytes (`os.read` 64 KiB), for reference.

Rates are measured from the first message read to the last, so the child's start-up is not
counted. Run: `python -m tests.bench.bench_peer [--quick]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

import msgspec
import trio

from daemon.agents.peer import AgentPeer
from protocol import acp
from tests.bench._common import row

__all__ = ["run"]

# The child: build every line first, then write them in 64 KiB pieces.
_CHILD = """
import sys
n = int(sys.argv[1])
head = b'{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess-0123456789",'
tail = b'"update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"'
data = b"".join(b"%s%schunk %d of the reply, a few words long. \\"}}}}\\n" % (head, tail, i)
                for i in range(n))
out = sys.stdout.buffer
for off in range(0, len(data), 65536):
    out.write(data[off:off + 65536])
out.flush()
"""


class _Line(msgspec.Struct, frozen=True, gc=False):
    jsonrpc: str
    method: str
    params: acp.SessionNotification


def _child(n: int) -> list[str]:
    return [sys.executable, "-c", _CHILD, str(n)]


async def _peer_once(n: int) -> float:
    proc = await trio.lowlevel.open_process(
        _child(n), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdio is not None
    seen = 0
    first = last = 0.0

    def on_update(_sid: str, _update: acp.SessionUpdate) -> None:
        nonlocal seen, first, last
        seen += 1
        if seen == 1:
            first = time.perf_counter()
        elif seen == n:
            last = time.perf_counter()

    batches = 0

    def on_batch_end() -> None:
        nonlocal batches
        batches += 1

    peer = AgentPeer(proc.stdio, on_update=on_update, on_batch_end=on_batch_end)
    try:
        await peer.run()
    finally:
        await proc.stdio.aclose()
        await proc.wait()
    assert seen == n, (seen, n)
    assert peer.stats.malformed == 0
    return (n - 1) / (last - first)


def _plain_once(n: int) -> float:
    decoder = msgspec.json.Decoder(_Line)
    seen = 0
    first = 0.0
    with subprocess.Popen(_child(n), stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            decoder.decode(line)
            seen += 1
            if seen == 1:
                first = time.perf_counter()
        last = time.perf_counter()
    assert seen == n, (seen, n)
    return (n - 1) / (last - first)


def _pipe_once(n: int) -> float:
    total = 0
    first = 0.0
    with subprocess.Popen(_child(n), stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while data := os.read(fd, 65536):
            if not total:
                first = time.perf_counter()
            total += len(data)
        last = time.perf_counter()
    return total / (last - first) / 1e6


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def run(quick: bool) -> list[dict[str, Any]]:
    n, runs = (20_000, 3) if quick else (200_000, 5)
    peer: list[float] = []
    plain: list[float] = []
    pipe: list[float] = []
    _plain_once(1000)  # warm up the page cache and the interpreter's imports
    for _ in range(runs):
        # Interleaved, so drifting machine load affects both alike.
        peer.append(trio.run(_peer_once, n))
        plain.append(_plain_once(n))
        pipe.append(_pipe_once(n))
    ratios = [a / b for a, b in zip(peer, plain, strict=True)]
    note = f"{n} agent_message_chunk lines from a child process"
    return [
        row("peer decoded updates", "msg/s", _stats(peer), f"AgentPeer under trio; {note}"),
        row("plain loop decoded updates", "msg/s", _stats(plain), f"Popen + for line; {note}"),
        row("peer / plain loop", "x", _stats(ratios), "per-run ratio; target >= 0.5"),
        row("bare pipe read", "MB/s", _stats(pipe), "os.read 64 KiB, bytes counted only"),
    ]


def main() -> None:
    rows = run("--quick" in sys.argv[1:])
    for r in rows:
        print(
            f"{r['name']:<28} {r['median']:>14,.2f} {r['unit']:<6} "
            f"(min {r['min']:,.2f}, max {r['max']:,.2f}, runs {r['runs']})  {r['note']}"
        )


if __name__ == "__main__":
    main()
