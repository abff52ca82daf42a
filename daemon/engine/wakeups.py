"""A supervisor's wake-ups, and what it does while none comes: the idle policy.

The store is the queue, so a wake-up only says "look at the store again": the channel holds
one, and a lost or coalesced wake-up loses nothing. While idle and unwatched, the agent is
stopped after `idle_ttl`, and a supervisor with no agent retires after `LINGER` (or `idle_ttl`,
if shorter). A subscriber keeps both: the last one leaving wakes the supervisor, and the idle
clock starts again then.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import attrs
import trio

from daemon.config import Config
from daemon.engine.eventlog import EventLog
from daemon.engine.fanout import Fanout
from daemon.engine.slot import AgentSlot

__all__ = ["LINGER", "Wakeups"]

log = logging.getLogger("acpd.conversation")

# How long a supervisor with no agent, no work and nobody watching stays before it retires.
LINGER = 60.0


@attrs.define(eq=False)
class Wakeups:
    """The supervisor's wake-up channel and its idle waits."""

    _conv_id: str
    _fanout: Fanout
    _slot: AgentSlot
    _log: EventLog
    _config: Callable[[], Config]
    _send: trio.MemorySendChannel[None] = attrs.field(init=False)
    _recv: trio.MemoryReceiveChannel[None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Capacity 1: a full buffer already means "look at the store again".
        self._send, self._recv = trio.open_memory_channel[None](1)

    def wake(self) -> None:
        try:
            self._send.send_nowait(None)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def stop_waking(self) -> None:
        """No more wake-ups (a graceful stop): the next wait says it is time to retire."""
        self._send.close()

    def close(self) -> None:
        self._recv.close()

    async def wait_for_work(self) -> bool:
        """Block until woken (True); meanwhile stop an idle, unwatched agent, and say when
        nobody needs this supervisor any more (False)."""
        idle_since = trio.current_time()
        while True:
            config = self._config()
            if self._fanout.subscribers > 0:
                # Someone is looking: the agent stays, and so do we. The last subscriber
                # leaving wakes us (engine.subscribe), and the idle clock starts again then.
                deadline = math.inf
            elif self._slot.live:
                deadline = idle_since + config.idle_ttl
            else:
                deadline = idle_since + min(config.idle_ttl, LINGER)
            with trio.move_on_at(deadline):
                self._slot.park()  # meanwhile an idle agent may give its slot to a waiting one
                try:
                    await self._recv.receive()
                except trio.EndOfChannel:
                    return False
                finally:
                    self._slot.unpark()
                return True
            if self._slot.live:
                log.info("conversation %s: agent idle, stopping it", self._conv_id)
                await self._slot.stop("idle")
            elif self._log.close_nowait():
                return False
            # Stopped the agent, or could not retire (a write is in flight): a full wait
            # again, never a busy loop.
            idle_since = trio.current_time()
