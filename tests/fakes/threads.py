"""Worker threads that count as work for trio's test clock.

Under `autojump_clock` a task waiting on `trio.to_thread.run_sync` counts as blocked: the mock
clock would jump past deadlines while SQLite works, and `wait_all_tasks_blocked` would return
with a store write still in flight. `busy_while_in_threads` patches `trio.to_thread.run_sync`
so that while a call runs in its thread a system task keeps the run queue non-empty (it only
checkpoints, so the thread's completion is picked up at once). The engine then runs its real
threaded store in tests, and "every task is blocked" again means "nothing is happening".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

__all__ = ["busy_while_in_threads"]

T = TypeVar("T")


def busy_while_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    real_run_sync = trio.to_thread.run_sync

    async def run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        running = True

        async def spin() -> None:
            while running:
                await trio.lowlevel.checkpoint()

        trio.lowlevel.spawn_system_task(spin)
        try:
            return await real_run_sync(fn, *args, **kwargs)
        finally:
            running = False

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
    # trio.Path's methods hold their own reference to it (`from trio.to_thread import ...`).
    monkeypatch.setattr(trio._path, "run_sync", run_sync)
