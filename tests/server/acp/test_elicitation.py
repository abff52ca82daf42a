"""Elicitations through the front door, from `elicitation_requested` events (CONTRACT.md,
second round): asked as `elicitation/create` of clients that take forms, withdrawn when
resolved elsewhere; the answer goes to `elicitations/respond`. Also the second round's other
events, which reach a live client as their ACP updates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import trio
import trio.testing

from protocol import acp
from tests.fakes.agent import Reply, Request
from tests.fakes.engine import FakeEngine
from tests.fakes.guard import hang_guard
from tests.server.acp.harness import fake_front, front

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@hang_guard()
async def test_an_elicitation_is_asked_and_its_answer_sent_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeEngine()
    async with fake_front(engine) as f:
        forms, plain = await f.client(), await f.client()
        await forms.initialize(elicitation={"form": {}})
        await plain.initialize(elicitation={})  # `{}` advertises no mode
        sid = (await forms.call("session/new", {"cwd": "/w", "mcpServers": []}))["sessionId"]
        await plain.call("session/resume", {"sessionId": sid, "cwd": "/w"})
        forms.elicitation_answer = {"action": "accept", "content": {"name": "x"}}
        with caplog.at_level(logging.INFO, logger="acpd.acp"):
            asked = {"request": "e1", "message": "Your name?", "schema": SCHEMA}
            engine.publish(sid, "elicitation_requested", **asked)
            await forms.wait_for(lambda c: c.asked)
            await trio.testing.wait_all_tasks_blocked()
        assert forms.asked == [
            {
                "method": "elicitation/create",
                "sessionId": sid,
                "mode": "form",
                "message": "Your name?",
                "requestedSchema": SCHEMA,
            }
        ]
        assert plain.asked == []
        answers = [c for c in engine.calls if c[0] == "answer"]
        assert answers == [("answer", sid, "e1", "accept", {"name": "x"})]


async def test_a_question_from_a_real_agent_is_answered_from_an_acp_client(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with front(tmp_path) as f:
        client = await f.client()
        await client.initialize(elicitation={"form": {}})
        sid = await client.new(tmp_path)
        ask = {"sessionId": "sess-1", "mode": "form", "message": "Name?", "requestedSchema": SCHEMA}
        f.h.script(Request("elicitation/create", ask), Reply())
        client.elicitation_answer = {"action": "accept", "content": {"name": "Ada"}}
        assert await client.prompt(sid, "go") == {"stopReason": "end_turn"}
        assert f.h.agent.client_answers == [{"action": "accept", "content": {"name": "Ada"}}]
        events = await f.h.events(sid)
        resolved = [e for e in events if e["type"] == "elicitation_resolved"]
        assert [(e["action"], e["by"]) for e in resolved] == [("accept", "user")]


@hang_guard()
async def test_a_url_elicitation_goes_to_clients_that_take_urls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine()
    async with fake_front(engine) as f:
        urls, forms = await f.client(), await f.client()
        await urls.initialize(elicitation={"url": {}})
        await forms.initialize(elicitation={"form": {}})
        sid = (await urls.call("session/new", {"cwd": "/w", "mcpServers": []}))["sessionId"]
        await forms.call("session/resume", {"sessionId": sid, "cwd": "/w"})
        engine.publish(sid, "elicitation_requested", request="e3", mode="url",
                       message="Log in", url="https://example.com/login")  # fmt: skip
        await urls.wait_for(lambda c: c.asked)
        await trio.testing.wait_all_tasks_blocked()
        assert urls.asked == [
            {
                "method": "elicitation/create",
                "sessionId": sid,
                "mode": "url",
                "message": "Log in",
                "url": "https://example.com/login",
                "elicitationId": "e3",
            }
        ]
        assert forms.asked == []


@hang_guard()
async def test_an_elicitation_resolved_elsewhere_is_withdrawn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine()
    async with fake_front(engine) as f:
        client = await f.client()
        await client.initialize(elicitation={"form": {}})
        sid = (await client.call("session/new", {"cwd": "/w", "mcpServers": []}))["sessionId"]
        client.elicitation_answer = None  # it waits
        engine.publish(sid, "elicitation_requested", request="e2", message="Sure?")
        await client.wait_for(lambda c: c.asked)
        engine.publish(sid, "elicitation_resolved", request="e2", action="decline")
        await client.wait_for(lambda c: c.withdrawn)
        assert client.withdrawn == ["elicitation/create"]
        assert client.asked[0]["requestedSchema"] == {"type": "object", "properties": {}}


@hang_guard()
async def test_second_round_events_reach_a_live_client_as_updates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine()
    async with fake_front(engine) as f:
        client = await f.client()
        await client.initialize(session={"notices": {}})
        sid = (await client.call("session/new", {"cwd": "/w", "mcpServers": []}))["sessionId"]
        diff = {"type": "diff", "path": "/w/a.py", "old_text": "a", "new_text": "b"}
        for type_, body in [
            ("usage", {"used": 10, "size": 100, "cost": {"amount": 0.5, "currency": "USD"}}),
            (
                "commands",
                {"commands": [{"name": "web", "description": "search", "input_hint": "query"}]},
            ),
            ("mode", {"current": "plan"}),
            (
                "config_options",
                {
                    "options": [
                        {
                            "id": "model",
                            "name": "Model",
                            "type": "select",
                            "currentValue": "a",
                            "options": [],
                        }
                    ]
                },
            ),
            ("title", {"title": "Fix the tests"}),
            (
                "tool_call",
                {
                    "tool_call_id": "t",
                    "title": "Edit",
                    "kind": "edit",
                    "status": "pending",
                    "content": [diff],
                    "locations": [{"path": "/w/a.py", "line": 3}],
                    "raw_input": {"path": "a.py"},
                },
            ),
            (
                "tool_call_update",
                {"tool_call_id": "t", "status": "completed", "raw_output": {"ok": True}},
            ),
            ("error", {"message": "agent failed to start", "detail": "no key"}),
        ]:
            engine.publish(sid, type_, **cast("dict[str, Any]", body))
        await client.wait_for(lambda c: len(c.updates) == 8)
        kinds = client.kinds()
        assert kinds == [
            "usage_update",
            "available_commands_update",
            "current_mode_update",
            "config_option_update",
            "session_info_update",
            "tool_call",
            "tool_call_update",
            "notice",
        ]
        call = client.of(acp.ToolCall)[0]
        assert call.content == [acp.Diff(path="/w/a.py", old_text="a", new_text="b")]
        assert call.locations == [acp.ToolCallLocation(path="/w/a.py", line=3)]
        assert msgspec_loads(call.raw_input) == {"path": "a.py"}
        update = client.of(acp.ToolCallUpdate)[0]
        assert msgspec_loads(update.raw_output) == {"ok": True}
        notice = client.of(acp.Notice)[0]
        assert (notice.severity, notice.title, notice.description) == (
            "error",
            "agent failed to start",
            "no key",
        )


def msgspec_loads(raw: object) -> object:
    return msgspec.json.decode(raw)  # type: ignore[call-overload]


@hang_guard()
async def test_load_and_resume_answer_with_the_sessions_modes_and_options(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = FakeEngine()
    info = engine.add("conv-modes")
    available = [{"id": "plan", "name": "Plan"}, {"id": "auto", "name": "Auto", "description": "a"}]
    modes = {"current": "plan", "available": available}
    choice = [{"value": "fast", "name": "Fast"}]
    options = [
        {
            "id": "model",
            "name": "Model",
            "type": "select",
            "currentValue": "fast",
            "options": choice,
        }
    ]
    engine.convs["conv-modes"] = msgspec.structs.replace(
        info,
        modes=msgspec.Raw(msgspec.json.encode(modes)),
        config_options=msgspec.Raw(msgspec.json.encode(options)),
    )
    async with fake_front(engine) as f:
        client = await f.client()
        await client.initialize()
        expected = {
            "modes": {
                "currentModeId": "plan",
                "availableModes": [
                    {"id": "plan", "name": "Plan"},
                    {"id": "auto", "name": "Auto", "description": "a"},
                ],
            },
            "configOptions": options,
        }
        load = {"sessionId": "conv-modes", "cwd": "/", "mcpServers": []}
        assert await client.call("session/load", load) == expected
        resume = {"sessionId": "conv-modes", "cwd": "/"}
        assert await client.call("session/resume", resume) == expected
