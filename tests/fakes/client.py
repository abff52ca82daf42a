"""The client side of agent tests: callbacks for `open_agent`/`connect_agent` that record what
the agent sent and answer its permission requests as told."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import attrs
import msgspec
import trio

from daemon.agents.connection import AgentSpec, PeerHandlers
from protocol import acp
from protocol.jsonrpc import METHOD_NOT_FOUND, RpcFailure

__all__ = ["RecordingClient", "demo_spec"]


@attrs.define(eq=False)
class RecordingClient:
    """Records updates and batches; answers `session/request_permission` with `answer` (an
    option id, or None for `cancelled`), after `gate` is set if one is given."""

    answer: str | None = "allow"
    gate: trio.Event | None = None
    updates: list[tuple[str, acp.SessionUpdate]] = attrs.field(factory=list)
    batches: int = 0
    asked: list[acp.RequestPermissionRequest] = attrs.field(factory=list)
    asked_event: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def handlers(self) -> PeerHandlers:
        return PeerHandlers(
            on_update=self.on_update, on_request=self.on_request, on_batch_end=self.on_batch_end
        )

    def on_update(self, sid: str, update: acp.SessionUpdate) -> None:
        self.updates.append((sid, update))
        self._changed.set()
        self._changed = trio.Event()

    def on_batch_end(self) -> None:
        self.batches += 1

    async def on_request(self, method: str, raw: msgspec.Raw) -> object:
        if method != acp.REQUEST_PERMISSION:
            raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")
        self.asked.append(msgspec.json.decode(raw, type=acp.RequestPermissionRequest))
        self.asked_event.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.answer is None:
            return acp.RequestPermissionResponse(outcome=acp.CancelledOutcome())
        return acp.RequestPermissionResponse(outcome=acp.SelectedOutcome(option_id=self.answer))

    async def wait_updates(self, n: int) -> None:
        while len(self.updates) < n:
            await self._changed.wait()

    def of_type(self, tp: type[acp.KnownUpdate]) -> list[acp.SessionUpdate]:
        return [u for _, u in self.updates if isinstance(u, tp)]

    def text(self, tp: type[acp.KnownUpdate] = acp.AgentMessageChunk) -> str:
        """The concatenated text of every update of a chunk type."""
        return "".join(
            acp.content_text(u.content)
            for _, u in self.updates
            if isinstance(u, tp)
            and isinstance(u, acp.AgentMessageChunk | acp.AgentThoughtChunk | acp.UserMessageChunk)
        )

    def tags(self) -> list[str]:
        return [type(u).__name__ for _, u in self.updates]


def demo_spec(state_dir: Path, cwd: Path, env: Mapping[str, str] | None = None) -> AgentSpec:
    """The demo agent as a subprocess, its sessions under `state_dir`, fast."""
    base = {"ACPD_DEMO_DIR": str(state_dir), "ACPD_DEMO_DELAY": "0.01"}
    return AgentSpec(
        name="demo",
        argv=(sys.executable, "-m", "daemon.agents.demo"),
        cwd=str(cwd),
        env={**base, **(env or {})},
    )
