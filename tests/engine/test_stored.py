"""The count of stored conversations `daemon/status` shows: read once, then kept in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from daemon.engine.stored import StoredCount
from store import StorageUnavailable
from store.errors import IO_ERROR
from tests.engine.harness import harness


class Reads:
    """A fake store count: what it says, how often it was read, and a gate to hold a read."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.calls = 0
        self.gate: trio.Event | None = None

    async def __call__(self) -> int:
        self.calls += 1
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        return value


async def test_read_once_then_kept_by_creates_and_deletes() -> None:
    reads = Reads(3)
    count = StoredCount(reads)
    assert await count.get() == 3
    with count.changing() as counted:
        counted(1)
    with count.changing() as counted:
        counted(-1)
    with count.changing() as counted:
        counted(-1)
    with count.changing() as counted:
        counted(0)  # nothing to delete
    assert await count.get() == 2
    assert reads.calls == 1


async def test_a_change_that_raised_makes_the_next_get_read() -> None:
    reads = Reads(3)
    count = StoredCount(reads)
    assert await count.get() == 3
    with pytest.raises(StorageUnavailable), count.changing():
        raise StorageUnavailable(IO_ERROR, "store /x: disk I/O error")  # committed? unknown
    reads.value = 4
    assert await count.get() == 4
    assert reads.calls == 2


async def test_a_read_overlapping_a_change_is_not_kept() -> None:
    reads = Reads(3)
    count = StoredCount(reads)
    reads.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        got: list[int] = []

        async def get() -> None:
            got.append(await count.get())

        nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        with count.changing() as counted:  # did the read see it? it cannot tell
            counted(1)
        reads.gate.set()
    assert got == [3]
    reads.gate, reads.value = None, 4
    assert await count.get() == 4
    assert await count.get() == 4
    assert reads.calls == 2


async def test_a_read_beginning_during_a_change_is_not_kept() -> None:
    reads = Reads(3)
    count = StoredCount(reads)
    with count.changing() as counted:
        assert await count.get() == 3  # the change may or may not be in it
        counted(1)
    reads.value = 4
    assert await count.get() == 4
    assert reads.calls == 2


async def test_the_engine_counts_without_reading_the_store(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        first = await h.create()
        assert await h.e.count() == 1
        await h.create()
        await h.create()
        await h.e.delete(first)
        reads = h.e.io.statistics().reads
        assert await h.e.count() == 2
        assert h.e.io.statistics().reads == reads
        assert await h.e.io.read(lambda s: s.count_conversations()) == 2  # as the store says
