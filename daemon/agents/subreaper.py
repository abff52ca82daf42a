"""acpd as a child subreaper: orphans of agent trees come back to it, not to init.

`become()` (at `acpd serve` start-up) sets PR_SET_CHILD_SUBREAPER. From then on a process of an
agent's tree whose parent dies (an agent's wrapper exiting, a double fork, a `setsid()`
daemon) is re-parented to acpd, so it stays below acpd where `daemon.agents.tree` looks for
it, and it is acpd's to reap once it exits.

Reaping must not take the exit status of an agent acpd spawned itself: trio waits for those
(`open_agent` registers them with `manage`). `serve_reaper` reaps only other children, on
SIGCHLD. `sweep` ends whatever is left below acpd when it stops: every process below it then
is a leftover of an agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Iterator
from typing import Final

import trio

from daemon.agents.tree import Proc, descendants, kill_all, snapshot

__all__ = [
    "become",
    "is_active",
    "manage",
    "reap_adopted",
    "release",
    "serve_reaper",
    "spawning",
    "sweep",
]

log = logging.getLogger("acpd.subreaper")

PR_SET_CHILD_SUBREAPER: Final = 36
# A managed child's exit waits for trio to reap it: how soon to look again meanwhile.
_RETRY: Final = 0.05
_SWEEP_BOUND: Final = 5.0

_active = False
_managed: set[int] = set()  # children whose exit status trio collects
_spawns = 0  # spawns in flight: a child may exist before `manage` names it


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become() -> str | None:
    """Make this process a child subreaper. Returns None, or why it could not."""
    global _active
    try:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    except (OSError, AttributeError) as exc:  # AttributeError: no prctl in this libc
        return str(exc)
    _active = True
    return None


def is_active() -> bool:
    """Whether `become` succeeded in this process."""
    return _active


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Around a spawn whose child trio will wait for: until `manage` names it, no child that
    exits is reaped here (it might be that one)."""
    global _spawns
    _spawns += 1
    try:
        yield
    finally:
        _spawns -= 1


def manage(pid: int) -> None:
    _managed.add(pid)


def release(pid: int) -> None:
    """`pid` has been waited for (or never will be): an ordinary child again."""
    _managed.discard(pid)


def reap_adopted() -> bool:
    """Reap every exited child that nobody else waits for. False if an exited child that may
    be managed hides the rest (`waitid` shows one at a time): look again soon."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is None:
            return True
        if info.si_pid in _managed or _spawns:
            return False
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, os.WNOHANG)


async def _reap() -> None:
    while not reap_adopted():  # noqa: ASYNC110 (trio reaps the managed child meanwhile)
        await trio.sleep(_RETRY)


async def serve_reaper(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Reap adopted orphans as they exit, until cancelled."""
    with trio.open_signal_receiver(signal.SIGCHLD) as signals:
        task_status.started()
        await _reap()  # whatever exited before we listened
        async for _ in signals:
            await _reap()


def _below_me() -> dict[int, Proc]:
    table = snapshot()
    me = os.getpid()
    return {pid: table[pid] for pid in descendants(table, [me]) - {me} if table[pid].running}


async def sweep() -> int:
    """Kill every process still below acpd and reap them; returns how many there were.
    Only for a stopping daemon, once every agent has been stopped."""
    hit = await trio.to_thread.run_sync(kill_all, _below_me)
    with trio.move_on_after(_SWEEP_BOUND):
        while await trio.to_thread.run_sync(_below_me):  # noqa: ASYNC110 (nothing to wait on)
            await trio.sleep(0.02)
    reap_adopted()
    return len(hit)
