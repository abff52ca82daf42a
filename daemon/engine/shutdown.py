"""Stopping every conversation and agent within `shutdown_grace`, however many run.

At once, all together: running turns are interrupted and drain, waits for a slot and start-ups
are given up, and agents whose supervisor is done are stopped. At `stop_at` (`stop_grace` +
KILL_WAIT before the end) whatever is left is cancelled, so every agent still running gets
SIGTERM then, together; at `kill_at` (KILL_WAIT before the end) every agent's process group
still there gets SIGKILL, whatever its own stop was doing (its tree's stragglers are the
containment sweep's, after the engine).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from daemon.config import Config
from daemon.engine.slots import SlotTable

if TYPE_CHECKING:
    from daemon.engine.supervisor import Conversation

__all__ = ["KILL_WAIT", "stop_everything"]

log = logging.getLogger("acpd.engine")

# At shutdown, the last part of shutdown_grace (a quarter of it at most) is left for killed
# agents' groups to end and the daemon to exit: agents still running are sent SIGKILL this
# long before the end.
KILL_WAIT = 2.0


async def stop_everything(
    convs: Sequence[Conversation],
    slots: SlotTable,
    config: Config,
    conversations: trio.CancelScope,
) -> None:
    """Stop `convs` (every live one) and their agents by the deadlines above; `conversations`
    is the scope their supervisors run in, cancelled at `stop_at`."""
    grace = config.shutdown_grace
    now = trio.current_time()
    kill_at = now + grace - min(KILL_WAIT, grace / 4)
    stop_at = kill_at - min(config.stop_grace, (kill_at - now) / 2)
    slots.stop_by(kill_at)
    for conv in convs:
        conv.begin_shutdown()
    with trio.move_on_at(stop_at):
        for conv in convs:
            await conv.finished.wait()
    conversations.cancel()
    with trio.move_on_at(kill_at):
        await slots.wait_all_released()
    if killed := slots.kill_all():
        log.warning("killed %d agent process group(s) still stopping at the deadline", killed)
