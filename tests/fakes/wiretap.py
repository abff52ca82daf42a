"""`WireTap`: what acpd writes to and reads from each agent connection, for schema checks."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import daemon.agents.launch
from daemon.agents.peer import AgentPeer


class WireTap(trio.abc.Stream):
    """A stream that records what passes through it, each way."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = bytearray()
        self.received = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def tap_agent_connections(monkeypatch: pytest.MonkeyPatch) -> list[WireTap]:
    """One `WireTap` per agent connection opened in the test, in order: what acpd's peer
    writes (`sent`) and reads (`received`), exactly as on the agent's stdin/stdout."""
    taps: list[WireTap] = []

    def tapped(stream: trio.abc.Stream, **kwargs: Any) -> AgentPeer:
        taps.append(WireTap(stream))
        return AgentPeer(taps[-1], **kwargs)

    # launch.py makes every agent's peer (`open_agent`, `connect_agent`).
    monkeypatch.setattr(daemon.agents.launch, "AgentPeer", tapped)
    return taps
