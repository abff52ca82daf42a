"""One event of every stored type, for a browser test to publish into a conversation the page
shows: each type must have a rendering the dashboard chose (`RENDERERS` in timeline.js, which
must name exactly protocol.events.EVENT_BODIES), and none may fall through to the `unknown`
line, or break the page. A new event type fails here until the dashboard renders it and a
sample of it is added."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from protocol import events as ev
from tests.fakes.engine import FakeEngine
from tests.server.browser import (
    on_trio,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

_DEADLINE = "2999-01-01T00:00:00.000Z"

# In the order a turn would have them; seqs from 1 in a conversation with no events before.
EVERY_EVENT: list[tuple[str, dict[str, Any]]] = [
    ("user_message", {"text": "first", "number": 1}),  # 1
    ("turn_started", {"prompt_seq": 1}),
    ("agent_thought", {"text": "thinking it over", "prompt_seq": 1}),
    ("agent_message", {"text": "on it", "prompt_seq": 1}),
    ("tool_call", {"tool_call_id": "t1", "prompt_seq": 1, "title": "Read a.py",
                   "status": "pending", "kind": "read"}),
    ("tool_call_update", {"tool_call_id": "t1", "prompt_seq": 1, "status": "completed"}),
    ("plan", {"entries": [{"content": "read it", "status": "completed"}], "prompt_seq": 1}),
    ("permission_requested", {"request": "r1", "title": "Touch a file", "prompt_seq": 1,
                              "options": [{"option_id": "allow", "name": "Allow",
                                           "kind": "allow_once"}],
                              "deadline": _DEADLINE}),
    ("permission_resolved", {"request": "r1", "outcome": "selected", "option": "allow",
                             "by": "policy"}),
    ("elicitation_requested", {"request": "q1", "message": "Which branch?", "prompt_seq": 1,
                               "deadline": _DEADLINE,
                               "schema": {"type": "object", "properties": {}}}),
    ("elicitation_resolved", {"request": "q1", "action": "decline", "by": "user"}),
    ("user_message", {"text": "second", "number": 2}),  # 12
    ("user_message_edited", {"message_seq": 12, "text": "second, edited"}),
    ("user_message", {"text": "third\nand more", "number": 3}),  # 14
    ("queue_reordered", {"order": [14, 12]}),
    ("user_message_removed", {"message_seq": 14}),
    ("user_message_steered", {"message_seq": 12, "prompt_seq": 1, "outcome": "injected"}),
    ("usage", {"used": 1000, "size": 8000}),
    ("commands", {"commands": [{"name": "web", "description": "Search the web"}]}),
    ("mode", {"current": "plan", "available": [{"id": "plan", "name": "Plan"}]}),
    ("config_options", {"options": [{"id": "model", "name": "Model", "type": "select",
                                     "currentValue": "big", "options": [
                                         {"value": "big", "name": "Big"}]}]}),
    ("title", {"title": "Every event"}),
    ("agent_restarted", {"reason": "crashed", "session_loaded": True}),
    ("error", {"message": "the agent said no", "detail": "why, at length"}),
    ("turn_ended", {"prompt_seq": 1, "stop_reason": "end_turn"}),
]  # fmt: skip


def check_every_event_type(page: Page, engine: FakeEngine, conv_id: str) -> None:
    """`conv_id` (no events yet) is open in `page`: publish one of each, then look."""
    from playwright.sync_api import expect

    types = {type_ for type_, _ in EVERY_EVENT}
    assert types == ev.EVENT_BODIES.keys(), types ^ ev.EVENT_BODIES.keys()
    for type_, body in EVERY_EVENT:
        assert msgspec.convert(body, ev.EVENT_BODIES[type_]), type_  # a real body
    rendered = page.evaluate("async () => Object.keys((await import('/timeline.js')).RENDERERS)")
    assert sorted(rendered) == sorted(ev.EVENT_BODIES), "timeline.js: RENDERERS"

    def publish_all() -> None:
        for type_, body in EVERY_EVENT:
            engine.publish(conv_id, type_, **body)
        engine.publish(conv_id, "from_a_newer_daemon", what="ever")

    on_trio(publish_all)
    events = page.locator("#events")
    expect(events.locator("li.meta.unknown")).to_have_text(["from_a_newer_daemon"])
    expect(events.locator("li.msg.user")).to_have_count(2)
    expect(events.locator("li.msg.user").first).to_contain_text("first")
    steered = events.locator("li.msg.user.steered")
    expect(steered).to_contain_text("second, edited")
    expect(steered).to_contain_text("steered into the running turn")
    expect(events.locator("li.meta.removed")).to_have_text(
        "message 3 removed from the queue: “third”"
    )
    expect(events.locator("li.thought")).to_contain_text("thinking it over")
    expect(events.locator("li.msg.agent")).to_contain_text("on it")
    expect(events.locator("li.tool")).to_contain_text("Read a.py")
    expect(events.locator("li.plan")).to_contain_text("read it")
    expect(events.locator("li.permission .deadline")).to_have_text("answered by policy: Allow")
    expect(events.locator("li.question .deadline")).to_have_text("answered: decline (by user)")
    changes = events.locator("li.session-change:not([hidden]) > span")
    expect(changes).to_have_text(["mode → Plan", "model → Big"])
    expect(events.locator("li.meta.warn")).to_have_text(
        "agent restarted: crashed (session restored)"
    )
    expect(events.locator("li.error-event")).to_contain_text("the agent said no")
    expect(events.locator("li.meta", has_text="turn ended")).to_have_count(1)
    expect(page.locator("#session .usage-text")).to_have_text("1K / 8K")
