"""Agents' memory (daemon/status `agents_rss`): whole process groups, read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.agents.memory import RssGauge, groups_rss
from daemon.config import AGENT_MEMORY, MAX_AGENTS, default_max_agents

PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int, comm: str, pgrp: int, rss_pages: int) -> str:
    # pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
    rest = ["S", "1", str(pgrp)] + ["0"] * 16 + ["100", "4096", str(rss_pages), "0"]
    return f"{pid} ({comm}) {' '.join(rest)}\n"


def test_groups_rss_sums_every_member_of_the_groups(tmp_path: Path) -> None:
    procs = {10: (10, 100), 11: (10, 50), 12: (12, 7), 13: (99, 1000)}
    for pid, (pgrp, pages) in procs.items():
        (tmp_path / str(pid)).mkdir()
        comm = "node) (x" if pid == 11 else "agent"  # a name with parentheses and spaces
        (tmp_path / str(pid) / "stat").write_text(_stat(pid, comm, pgrp, pages))
    (tmp_path / "self").mkdir()  # not a pid
    (tmp_path / "14").mkdir()  # gone meanwhile: no stat
    assert groups_rss([10, 12], proc=str(tmp_path)) == (100 + 50 + 7) * PAGE
    assert groups_rss([], proc=str(tmp_path)) == 0
    assert groups_rss([12], proc=str(tmp_path / "nowhere")) == 0


def test_groups_rss_of_a_real_process_group() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = bytearray(32 << 20); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # Its 32 MiB buffer is touched (zeroed) once it runs: poll until it shows.
        for _ in range(500):
            if groups_rss([child.pid]) >= 32 << 20:
                break
            time.sleep(0.01)
        assert groups_rss([child.pid]) >= 32 << 20
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdin is not None
        child.stdin.close()


async def test_the_gauge_reads_at_most_once_per_max_age_and_waits_only_for_the_first(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[list[int]] = []
    gate = trio.Event()

    def fake(pgids: list[int]) -> int:
        reads.append(pgids)
        return 1000 * len(reads)

    async def slow(fn: Callable[[list[int]], int], pgids: list[int]) -> int:
        if reads:  # every read after the first takes a while
            await gate.wait()
        return fn(pgids)

    monkeypatch.setattr("daemon.agents.memory.groups_rss", fake)
    monkeypatch.setattr("daemon.agents.memory.trio.to_thread.run_sync", slow)
    groups = [1, 2]
    async with trio.open_nursery() as nursery:
        gauge = RssGauge(lambda: groups, nursery, max_age=1.0)
        assert await gauge.read() == 1000  # the first read is waited for
        assert await gauge.read() == 1000  # fresh: no second pass over /proc
        await trio.sleep(1)
        with trio.fail_after(0.001):  # stale: the last answer at once, the next read started
            assert await gauge.read() == 1000
            assert await gauge.read() == 1000  # one read at a time
        await trio.testing.wait_all_tasks_blocked()
        assert len(reads) == 1
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert await gauge.read() == 2000
        groups.clear()
        await trio.sleep(1)
        assert await gauge.read() == 2000  # stale: answered, and read again (no agent: 0)
        await trio.testing.wait_all_tasks_blocked()
        assert await gauge.read() == 0
    assert reads == [[1, 2], [1, 2]]


@pytest.mark.parametrize(
    ("mem_total_kib", "expected"),
    [
        (1 << 20, 1),  # 1 GiB: never below 1
        (2 << 20, 2),
        (4 << 20, 5),
        (16 << 20, MAX_AGENTS),
        (512 << 10, 1),
    ],
)
def test_the_default_max_agents_follows_memory(
    tmp_path: Path, mem_total_kib: int, expected: int
) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {mem_total_kib} kB\nMemFree:        1 kB\n")
    assert default_max_agents(str(meminfo)) == expected
    assert expected == max(1, min(MAX_AGENTS, mem_total_kib * 1024 // 2 // AGENT_MEMORY))


def test_the_default_max_agents_without_meminfo(tmp_path: Path) -> None:
    assert default_max_agents(str(tmp_path / "none")) == MAX_AGENTS
    (tmp_path / "odd").write_text("nothing useful\n")
    assert default_max_agents(str(tmp_path / "odd")) == MAX_AGENTS
