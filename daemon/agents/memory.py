"""How much memory agents take: the resident set of whole process groups, read from /proc.

An agent is often a tree (npx, node, the model's CLI, the tools it runs), all in the agent's
process group, so its cost is the sum over the group. One pass over `/proc/*/stat` gives each
process's group (field 5) and resident pages (field 24): reading it costs O(processes on the
machine), so callers run it in a thread and keep the answer a while (`RssGauge`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection

import attrs
import trio

__all__ = ["RssGauge", "groups_rss"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def groups_rss(pgids: Collection[int], proc: str = "/proc") -> int:
    """Resident bytes of every live process whose process group is in `pgids` (blocking)."""
    wanted = frozenset(pgids)
    if not wanted:
        return 0
    try:
        names = os.listdir(proc)
    except OSError:
        return 0
    pages = 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()  # state, ppid, pgrp, ..., rss is [21]
        try:
            if len(fields) > 21 and int(fields[2]) in wanted:
                pages += int(fields[21])
        except ValueError:
            continue
    return pages * _PAGE


@attrs.define(eq=False)
class RssGauge:
    """`groups_rss` of `groups()`, read in a worker thread at most once per `max_age` seconds.
    Only the first read is waited for: after that a caller gets the last answer at once, and
    a stale one starts the next read in the background (in `nursery`), so a status poll never
    waits for a pass over /proc on a machine busy starting agents."""

    groups: Callable[[], Collection[int]]
    _nursery: trio.Nursery
    max_age: float = 1.0
    _value: int | None = None
    _read_at: float = -math.inf
    _reading: bool = False

    async def read(self) -> int:
        """No checkpoint once there is a figure: under load each one is a turn of the busy
        event loop that a status poll would wait for."""
        if self._value is None:
            await self._refresh()
        elif not self._reading and trio.current_time() - self._read_at >= self.max_age:
            self._reading = True  # now: no second caller starts another meanwhile
            self._nursery.start_soon(self._refresh)
        return self._value or 0

    async def _refresh(self) -> None:
        self._reading = True
        try:
            pgids = list(self.groups())
            value = await trio.to_thread.run_sync(groups_rss, pgids) if pgids else 0
        finally:
            self._reading = False
        self._value, self._read_at = value, trio.current_time()
