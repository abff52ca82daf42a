"""Hostile or broken agents, as real subprocesses (tests/fakes/hostile_agent.py) behind a real
daemon: huge chunks, lines over the cap, stragglers after a cancelled reply, permission
requests that are not ours. Real time, with a hang guard on each test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from daemon.cli.client import Client
from daemon.engine.eventlog import SEGMENT_CHARS
from daemon.engine.reads import PAGE_BYTES
from tests.engine.realdaemon import Conv, call, created, stored_events
from tests.server.test_serve import Daemon, running_daemon

pytestmark = pytest.mark.subprocess

HOSTILE = [sys.executable, str(Path(__file__).parents[1] / "fakes" / "hostile_agent.py")]
MiB = 1024 * 1024
Json = dict[str, Any]


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in bytes."""
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def one_turn(conv: Conv, text: str = "go") -> Json:
    seq = await conv.send(text)
    return await conv.turn_ended(seq)


def texts(events: list[Json]) -> list[str]:
    return [e["text"] for e in events if e["type"] == "agent_message"]


def errors(events: list[Json]) -> list[str]:
    return [e["message"] for e in events if e["type"] == "error"]


async def test_huge_chunks_are_stored_in_parts_with_bounded_memory(tmp_path: Path) -> None:
    """Invariant: whatever an agent's chunk size, a stored event is at most one part, a page
    at most PAGE_BYTES, and the daemon's memory stays bounded; a client reads it all back."""
    count, size = 10, 10
    with trio.fail_after(120):
        async with running_daemon(tmp_path) as daemon:
            before = peak_rss(daemon.proc.pid)
            async with created(daemon, tmp_path, [*HOSTILE, "huge", str(count), str(size)]) as conv:
                await conv.call("conversations/unsubscribe")
                await conv.call("conversations/subscribe", after_seq=0, deltas=False)
                ended = await one_turn(conv)
                assert ended["stop_reason"] == "end_turn"
            peak = peak_rss(daemon.proc.pid)
            pages = await trio.to_thread.run_sync(_page_sizes, daemon, conv.id)
            followed = await _follow_output_size(daemon, conv.id, count * size * MiB)
        events = stored_events(daemon, conv.id)
    stored = texts(events)
    assert "".join(stored) == "".join(f"<{i:04d}>" + "x" * (size * MiB - 6) for i in range(count))
    assert max(map(len, stored)) == SEGMENT_CHARS  # parts, not one 10 MiB event
    assert len(stored) == count * size * MiB // SEGMENT_CHARS
    assert max(pages) <= PAGE_BYTES + 64 * 1024  # a page's bodies, plus the envelopes
    assert followed >= count * size * MiB
    # The daemon held at most a few chunks' worth at once (it started at `before`).
    assert peak - before < 160 * MiB, f"peak RSS grew by {(peak - before) / MiB:.0f} MiB"
    assert peak < 200 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


def _page_sizes(daemon: Daemon, conv_id: str) -> list[int]:
    """Read the whole conversation page by page, as a client would; each reply's size."""
    sizes, after = [], 0
    with Client(str(daemon.socket)) as client:
        while True:
            result = client.call("conversations/events", {"id": conv_id, "after_seq": after})
            sizes.append(len(json.dumps(result)))
            if not result["events"]:
                return sizes
            after = result["events"][-1]["seq"]


async def _follow_output_size(daemon: Daemon, conv_id: str, at_least: int) -> int:
    """`acpd follow ID --from 0` replays it all (no client line limit is hit, no hang):
    how many bytes it printed before it was stopped."""
    cmd = [sys.executable, "-m", "daemon.cli", "follow", conv_id, "--from", "0"]
    proc = await trio.lowlevel.open_process(
        [*cmd, "--socket", str(daemon.socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ACPD_DEBUG": "1"},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    total = 0
    try:
        while total < at_least:
            data = await proc.stdout.receive_some(1 << 20)
            if not data:
                err = await proc.stderr.receive_some(65536)
                raise AssertionError(f"acpd follow ended early: {err.decode()}")
            total += len(data)
    finally:
        proc.send_signal(signal.SIGINT)
        await proc.wait()
    return total


async def test_a_line_over_the_cap_is_reported_not_dropped_silently(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, [*HOSTILE, "oversized", "17"]) as conv,
        ):
            ended = await one_turn(conv)
    assert ended["stop_reason"] == "end_turn"
    events = stored_events(daemon, conv.id)
    assert "".join(texts(events)) == "beforeafter"
    (error,) = errors(events)
    assert "dropped session/update of 17.0 MiB from the agent" in error
    assert "16 MiB limit" in error


async def test_an_answer_over_the_cap_fails_its_turn_at_once(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, [*HOSTILE, "oversized-reply", "17"]) as conv,
        ):
            ended = await one_turn(conv)  # not a wait for the turn timeout
    assert ended["stop_reason"] == "error"
    events = stored_events(daemon, conv.id)
    messages = errors(events)
    assert any("(it answered session/prompt, which fails)" in m for m in messages), messages
    assert any(m.startswith("agent error: the agent's answer was") for m in messages), messages
    assert texts(events) == ["before"]


async def test_an_update_behind_a_cancelled_reply_is_nobodys(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, [*HOSTILE, "straggle"]) as conv,
        ):
            seq = await conv.send("go")
            while not any(d["text"] == "working" for d in conv.deltas):
                await conv.delta()
            await conv.call("turns/interrupt")
            ended = await conv.turn_ended(seq)
            status = await call(conv.client, "daemon/status", {})
    assert ended["stop_reason"] == "cancelled"
    assert texts(stored_events(daemon, conv.id)) == ["working"]  # no LEAK
    assert status["counters"]["updates_dropped"] == 1


async def test_permission_requests_that_are_not_ours_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            running_daemon(tmp_path) as daemon,
            created(daemon, tmp_path, [*HOSTILE, "foreign-permission"]) as conv,
        ):
            ended = await one_turn(conv)
    assert ended["stop_reason"] == "end_turn"
    events = stored_events(daemon, conv.id)
    assert texts(events) == ["refused -32602, refused -32602"]
    assert not [e for e in events if e["type"].startswith("permission_")]
