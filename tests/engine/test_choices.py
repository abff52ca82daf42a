"""Modes and config options: set through acpd (starting the agent if needed), stored, and
put back on a new or resumed session after the agent restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from protocol import acp
from protocol.api import ConversationInfo
from protocol.jsonrpc import INVALID_PARAMS, RpcFailure
from tests.engine.harness import Harness, harness, wait_turn_ended

ASK, PLAN = acp.SessionMode(id="ask", name="Ask"), acp.SessionMode(id="plan", name="Plan")
MODES = acp.SessionModeState(current_mode_id="ask", available_modes=[ASK, PLAN])
OPTIONS: list[dict[str, Any]] = [
    {
        "type": "select",
        "id": "model",
        "name": "Model",
        "category": "model",
        "currentValue": "small",
        "options": [{"value": "small", "name": "Small"}, {"value": "big", "name": "Big"}],
    },
    {"type": "boolean", "id": "fast", "name": "Fast", "currentValue": False},
]


def _current_mode(info: ConversationInfo) -> str:
    assert info.modes is not None
    current: str = json.loads(bytes(info.modes))["current"]
    return current


def _agent_kwargs(h: Harness) -> None:
    h.agent_kwargs.update(modes=MODES, config_options=OPTIONS)


async def _restart(h: Harness, cid: str, n: int) -> None:
    """Stop the agent as idle, then send: a new agent starts in its own defaults."""
    await trio.sleep(h.config.idle_ttl + 1)
    await trio.testing.wait_all_tasks_blocked()
    assert h.e.agents_running() == 0
    await h.e.send(cid, f"again {n}", run=True, interrupt=False)
    await wait_turn_ended(h, cid, n)


async def test_set_mode_starts_the_agent_and_is_stored(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        _agent_kwargs(h)
        cid = await h.create()
        assert h.e.agents_running() == 0
        info = await h.e.set_mode(cid, "plan")
        assert h.agent.modes is not None
        assert h.agent.modes.current_mode_id == "plan"
        assert _current_mode(info) == "plan"
        types = await h.types(cid)
        assert types[-1] == "mode"


async def test_mode_and_options_are_put_back_after_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        _agent_kwargs(h)
        cid = await h.create()
        await h.e.send(cid, "hello", run=True, interrupt=False)
        await wait_turn_ended(h, cid)
        await h.e.set_mode(cid, "plan")
        await h.e.set_option(cid, "model", "big")
        await h.e.set_option(cid, "fast", True)
        first = h.agent
        await _restart(h, cid, 2)
        second = h.agent
        assert second is not first
        # Set again during start-up, before the message was prompted.
        assert second.methods.index("session/set_mode") < second.methods.index("session/prompt")
        assert second.modes is not None
        assert second.modes.current_mode_id == "plan"
        values = {o["id"]: o["currentValue"] for o in second.config_options or ()}
        assert values == {"model": "big", "fast": True}
        info = await h.e.get(cid)
        assert _current_mode(info) == "plan"
        # A session that already has them is left alone.
        await _restart(h, cid, 3)
        assert "session/set_mode" in h.agent.methods


async def test_what_the_agent_refuses_comes_back_to_the_caller(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        _agent_kwargs(h)
        cid = await h.create()
        with pytest.raises(RpcFailure) as info:
            await h.e.set_mode(cid, "yolo")
        assert info.value.code == INVALID_PARAMS
        with pytest.raises(RpcFailure):
            await h.e.set_option(cid, "nope", "x")
        modes = [e["current"] for e in await h.events(cid) if e["type"] == "mode"]
        assert modes == ["ask"]  # the set-up's, and nothing of the refused one


async def test_a_choice_the_restarted_agent_no_longer_offers_is_said(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, idle_ttl=100.0) as h:
        _agent_kwargs(h)
        cid = await h.create()
        await h.e.set_mode(cid, "plan")
        h.agent_kwargs["modes"] = acp.SessionModeState(current_mode_id="ask", available_modes=[ASK])
        await _restart(h, cid, 1)
        messages = [e["message"] for e in await h.events(cid) if e["type"] == "error"]
        assert messages == [
            "the agent's mode 'plan' is not offered after its restart; it was left out"
        ]
        assert "session/set_mode" not in h.agent.methods
