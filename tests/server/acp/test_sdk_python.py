"""`acpd acp` end to end, driven by the official Python SDK's client (`agent-client-protocol`,
module `acp`): a real `acpd serve` with the demo agent, `acpd acp` spawned by the SDK as its
agent (through a tap that keeps every line it writes, checked against the ACP schema).

The SDK is asyncio; each test runs its own event loop (`asyncio.run`), bounded by TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from tests.server.acp.live import ROOT, TIMEOUT, LiveDaemon, live

sdk = pytest.importorskip("acp", reason="agent-client-protocol (the test extra) is needed")
from acp import schema, text_block  # noqa: E402

pytestmark = pytest.mark.subprocess
__all__ = ["live"]  # the fixture, imported for this module


class Recorder:
    """An SDK `Client`: keeps every update; answers permission requests with `answer`."""

    def __init__(self, answer: str | None = "allow") -> None:
        self.answer = answer
        self.updates: list[tuple[str, Any]] = []
        self.permissions: list[Any] = []
        self.changed = asyncio.Event()

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append((session_id, update))
        self.changed.set()

    async def request_permission(
        self, options: list[Any], session_id: str, tool_call: Any, **kwargs: Any
    ) -> schema.RequestPermissionResponse:
        self.permissions.append((session_id, tool_call, options))
        if self.answer is None:
            return schema.RequestPermissionResponse(
                outcome=schema.DeniedOutcome(outcome="cancelled")
            )
        outcome = schema.AllowedOutcome(option_id=self.answer, outcome="selected")
        return schema.RequestPermissionResponse(outcome=outcome)

    def kinds(self) -> list[str]:
        return [u.session_update for _, u in self.updates]

    def text(self, kind: str = "agent_message_chunk") -> str:
        return "".join(u.content.text for _, u in self.updates if u.session_update == kind)

    async def wait_for(self, check: Callable[[Recorder], bool]) -> None:
        while not check(self):
            self.changed.clear()
            await self.changed.wait()


async def connect(stack: AsyncExitStack, live: LiveDaemon, client: Recorder) -> Any:
    argv = live.acp_argv()
    conn, _proc = await stack.enter_async_context(
        sdk.spawn_agent_process(client, argv[0], *argv[1:], env=live.env, cwd=str(ROOT))
    )
    init = await conn.initialize(protocol_version=1)
    assert init.protocol_version == 1
    return conn


def run(live: LiveDaemon, scenario: Callable[[AsyncExitStack], Awaitable[None]]) -> None:
    async def main() -> None:
        async with AsyncExitStack() as stack:
            await asyncio.wait_for(scenario(stack), TIMEOUT)

    asyncio.run(main())
    assert live.check_traffic() > 0


def test_new_prompt_streams_chunks_and_ends_the_turn(live: LiveDaemon) -> None:
    async def scenario(stack: AsyncExitStack) -> None:
        client = Recorder()
        conn = await connect(stack, live, client)
        session = await conn.new_session(cwd=str(live.work))
        answer = await conn.prompt(session_id=session.session_id,
                                   prompt=[text_block("hello from python")])  # fmt: skip
        assert answer.stop_reason == "end_turn"
        kinds = client.kinds()
        assert kinds[:4] == ["agent_thought_chunk", "plan", "tool_call", "tool_call_update"]
        assert kinds.count("agent_message_chunk") > 1  # streamed, not in one piece
        assert "user_message_chunk" not in kinds  # its own prompt is not echoed
        assert client.text() == (
            "You said: hello from python (3 words). This is acpd's demo agent."
        )

    run(live, scenario)


def test_a_second_client_lists_and_loads_the_history(live: LiveDaemon) -> None:
    async def scenario(stack: AsyncExitStack) -> None:
        first = Recorder()
        conn = await connect(stack, live, first)
        sid = (await conn.new_session(cwd=str(live.work))).session_id
        await conn.prompt(session_id=sid, prompt=[text_block("remember this")])
        second = Recorder()
        other = await connect(stack, live, second)
        listed = await other.list_sessions(cwd=str(live.work))
        mine = [s for s in listed.sessions if s.session_id == sid]
        assert len(mine) == 1
        assert mine[0].title == "remember this"
        assert mine[0].cwd == str(live.work)
        await other.load_session(cwd=str(live.work), session_id=sid)
        assert second.kinds()[0] == "user_message_chunk"
        assert second.text("user_message_chunk") == "remember this"
        assert second.text() == first.text()
        assert second.kinds().count("tool_call") == 1

    run(live, scenario)


def test_a_turn_started_over_the_socket_reaches_the_attached_client(live: LiveDaemon) -> None:
    async def scenario(stack: AsyncExitStack) -> None:
        client = Recorder()
        conn = await connect(stack, live, client)
        sid = (await conn.new_session(cwd=str(live.work))).session_id
        await asyncio.to_thread(live.acpd, "send", sid, "typed in a terminal")
        await client.wait_for(lambda c: "demo agent." in c.text())
        assert client.text("user_message_chunk") == "typed in a terminal"
        assert "You said: typed in a terminal" in client.text()

    run(live, scenario)


def test_cancel_answers_the_running_prompt_cancelled(live: LiveDaemon) -> None:
    async def scenario(stack: AsyncExitStack) -> None:
        client = Recorder()
        conn = await connect(stack, live, client)
        sid = (await conn.new_session(cwd=str(live.work))).session_id
        turn = asyncio.create_task(conn.prompt(session_id=sid, prompt=[text_block("/slow 500")]))
        await client.wait_for(lambda c: c.text().startswith("1 2 "))
        await conn.cancel(session_id=sid)
        answer = await turn
        assert answer.stop_reason == "cancelled"
        assert len(client.text().split()) < 500
        # The queue paused (as `acpd interrupt` does); the next prompt runs it again.
        again = await conn.prompt(session_id=sid, prompt=[text_block("/echo still here")])
        assert again.stop_reason == "end_turn"
        assert client.text().endswith("still here")

    run(live, scenario)


def test_a_permission_is_answered_from_the_acp_client(live: LiveDaemon) -> None:
    async def scenario(stack: AsyncExitStack) -> None:
        client = Recorder(answer="allow")
        conn = await connect(stack, live, client)
        sid = (await conn.new_session(cwd=str(live.work))).session_id
        answer = await conn.prompt(session_id=sid, prompt=[text_block("ask for permission")])
        assert answer.stop_reason == "end_turn"
        ((asked_sid, tool_call, options),) = client.permissions
        assert asked_sid == sid
        assert tool_call.title == "Touch a file"
        assert [o.option_id for o in options] == ["allow", "reject"]
        assert "Permission granted (allow)." in client.text()

    run(live, scenario)


def test_detach_and_reattach(live: LiveDaemon) -> None:
    async def scenario(stack: AsyncExitStack) -> None:
        client = Recorder()
        async with AsyncExitStack() as first:
            conn = await connect(first, live, client)
            sid = (await conn.new_session(cwd=str(live.work))).session_id
            prompt = [text_block("/slow 40")]
            turn = asyncio.create_task(conn.prompt(session_id=sid, prompt=prompt))
            await client.wait_for(lambda c: c.text().startswith("1 "))
        with contextlib.suppress(Exception):  # its answer had nowhere to go
            await turn
        # The client (and its `acpd acp`) went away mid-turn; the turn went on in the daemon.
        events = await asyncio.to_thread(live.wait_turns, sid, 1)
        ended = [e for e in events if e["type"] == "turn_ended"]
        assert ended[-1]["stop_reason"] == "end_turn"
        again = Recorder()
        conn = await connect(stack, live, again)
        await conn.resume_session(cwd=str(live.work), session_id=sid)
        assert again.updates == []  # resume: no replay
        answer = await conn.prompt(session_id=sid, prompt=[text_block("/echo back")])
        assert answer.stop_reason == "end_turn"
        assert again.text() == "back"
        await conn.load_session(cwd=str(live.work), session_id=sid)
        full = "".join(f"{i} " for i in range(1, 41))
        assert again.text().endswith(full + "back")

    run(live, scenario)
