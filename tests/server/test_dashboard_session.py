"""The dashboard's view of what the agent says (issue 15), in Chromium against the in-process
server and the fake engine: the session's state in the head (context usage, the mode and model
pickers, other options in a settings popover) and the agent's questions as forms; all of it on a
phone. Tool calls and slash commands: test_dashboard_tools.py.

The fake engine publishes the events when the test wants; a click's call is awaited at the
fake engine with a bounded poll (`eventually`), never assumed to have arrived.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, RpcFailure
from tests.fakes.engine import FakeEngine
from tests.server.browser import (
    ARTIFACTS,
    PERMISSION,
    PHONE,
    browse_in_process,
    calls_of,
    eventually,
    in_thumb_reach,
    no_sideways_scroll,
    on_trio,
    open_page,
    publish,
    raw_json,
    require_browser,
)
from tests.server.dashboard_events import check_every_event_type
from tests.server.sessiondata import COMMANDS, MODES, OPTIONS, USAGE, question, tool_engine

if TYPE_CHECKING:
    from playwright.sync_api import FloatRect


# --- the head: usage, mode, model, settings ------------------------------------------------------


async def test_usage_and_the_mode_model_and_settings_pickers(tmp_path: Path) -> None:
    """Usage shows as a bar and a cost; the mode and model pickers and the settings popover
    call set_mode / set_option with what was chosen and show the agent's answer; a refusal
    shows the agent's message and puts the picker back; events change them live."""
    require_browser()
    engine = FakeEngine()
    info = engine.add("conv0001")
    engine.convs["conv0001"] = msgspec.structs.replace(
        info,
        title="Session",
        modes=raw_json(MODES),
        config_options=raw_json(OPTIONS),
        usage=raw_json(USAGE),
    )
    engine.add("conv0002")  # nothing said yet: no session bar
    every = engine.add("conv0003")
    engine.convs["conv0003"] = msgspec.structs.replace(every, title="Every event")
    await browse_in_process(tmp_path, engine, "conv0001", partial(_head, engine=engine))


def _head(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1100, "height": 760}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Session")
        usage = page.locator("#session .usage")
        expect(usage.locator(".usage-text")).to_have_text("53K / 200K · $0.25")
        expect(usage).to_have_attribute(
            "title", "53,000 of 200,000 tokens of context used (26%); cost so far $0.25"
        )
        meter = page.get_by_role("meter", name="Context used")
        assert meter.evaluate("m => [m.value, m.max]") == [53_000, 200_000]

        mode = page.get_by_role("combobox", name="Mode", exact=True)
        expect(mode).to_have_value("ask")
        assert mode.locator("option").all_inner_texts() == ["Ask", "Code", "Plan"]
        model = page.get_by_role("combobox", name="Model", exact=True)
        expect(model).to_have_value("small")
        page.screenshot(path=str(ARTIFACTS / "dashboard-session-head.png"))

        # Choosing calls the daemon; its answer (the agent agreed) is what shows.
        mode.select_option("code")
        assert calls_of(engine, "set_mode") == [("set_mode", "conv0001", "code")]
        expect(mode).to_have_value("code")
        expect(mode).to_be_enabled()
        # ...and the timeline says when it changed: the events, as lines.
        changes = page.locator("#events li.session-change:not([hidden]) > span")
        expect(changes).to_have_text(["mode → Code"])
        model.select_option("large")
        assert calls_of(engine, "set_option") == [("set_option", "conv0001", "model", "large")]
        expect(model).to_have_value("large")
        # The first options event says them all (none known before it), in their names.
        expect(changes.last).to_have_text(
            "model → Large · reasoning effort → Low · web search → off"
        )

        # The other options (the unknown type left out) in a popover: keyboard in and out.
        settings = page.get_by_role("button", name="Settings")
        expect(settings).to_have_attribute("aria-expanded", "false")
        settings.click()
        panel = page.get_by_role("group", name="Agent settings")
        expect(panel).to_be_visible()
        effort = panel.get_by_role("combobox", name="Reasoning effort")
        expect(effort).to_be_focused()
        expect(panel).not_to_contain_text("A type nobody knows")
        assert effort.locator("optgroup").get_attribute("label") == "Levels"
        effort.select_option("high")
        eventually(lambda: [c for c in engine.calls if c[1:3] == ("conv0001", "effort")])
        web = panel.get_by_role("checkbox", name="Web search")
        expect(web).not_to_be_checked()
        expect(panel).to_contain_text("Let the agent search the web")
        web.check()
        eventually(lambda: [c for c in engine.calls if c[2:] == ("web", True)])
        expect(web).to_be_checked()
        expect(web).to_be_enabled()
        page.screenshot(path=str(ARTIFACTS / "dashboard-session-settings.png"))
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(settings).to_be_focused()
        expect(settings).to_have_attribute("aria-expanded", "false")
        assert [c for c in engine.calls if c[0] == "interrupt"] == []  # Esc closed, no more
        sets = [c for c in engine.calls if c[0] == "set_option"]
        assert sets == [("set_option", "conv0001", "model", "large"),
                        ("set_option", "conv0001", "effort", "high"),
                        ("set_option", "conv0001", "web", True)]  # fmt: skip

        # A refusal: the agent's message, and the picker shows the agent's mode again.
        refusal = RpcFailure(INVALID_PARAMS, "the agent refused: no such mode: plan")
        on_trio(lambda: engine.failures.__setitem__("set_mode", refusal))
        mode.select_option("plan")
        expect(page.locator("#conv-error")).to_have_text("the agent refused: no such mode: plan")
        expect(mode).to_have_value("code")
        assert [c[2] for c in engine.calls if c[0] == "set_mode"] == ["code", "plan"]
        on_trio(lambda: engine.failures.pop("set_mode"))

        # The agent changes them itself: events, live.
        publish(engine, "conv0001", "mode", current="ask")
        expect(mode).to_have_value("ask")
        publish(engine, "conv0001", "usage", used=150_000, size=200_000)
        expect(usage.locator(".usage-text")).to_have_text("150K / 200K")
        options = [{**OPTIONS[0], "currentValue": "small"}]
        publish(engine, "conv0001", "config_options", options=options)
        expect(model).to_have_value("small")
        # Each line says what changed since the one before: a refused choice is no line.
        expect(changes).to_have_text(["mode → Code",
                                      "model → Large · reasoning effort → Low · web search → off",
                                      "reasoning effort → High", "web search → on",
                                      "mode → Ask", "model → Small"])  # fmt: skip
        expect(settings).to_be_hidden()  # no other options left
        # A refresh of the conversation, its state older than those events, undoes nothing
        # (a refresh reads the queue once it has shown the conversation: waited for).
        queue_reads = len(calls_of(engine, "queue"))
        publish(engine, "conv0001", "turn_ended", prompt_seq=1, stop_reason="end_turn")
        eventually(lambda: [c for c in engine.calls if c[0] == "queue"][queue_reads:])
        expect(mode).to_have_value("ask")
        expect(model).to_have_value("small")
        expect(usage.locator(".usage-text")).to_have_text("150K / 200K")

        # A conversation whose agent has said nothing: no bar at all.
        others = page.locator("#list li").filter(has_not_text="Session")
        others.filter(has_not_text="Every event").get_by_role("button").click()
        expect(page.locator("#conv-meta")).to_contain_text("conv0002")
        expect(page.locator("#session")).to_be_hidden()

        # Every event type the daemon stores, each rendered as the dashboard chose.
        page.locator("#list li").filter(has_text="Every event").get_by_role("button").click()
        expect(page.locator("#conv-meta")).to_contain_text("conv0003")
        check_every_event_type(page, engine, "conv0003")


# --- the agent's questions -----------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "title": "Your name", "description": "As in the commits",
                 "minLength": 2},
        "count": {"type": "integer", "title": "How many", "minimum": 1, "maximum": 9,
                  "default": 3},
        "ratio": {"type": "number", "title": "Ratio"},
        "ok": {"type": "boolean", "title": "Go ahead", "default": False},
        "colour": {"type": "string", "title": "Colour", "enum": ["red", "green"],
                   "enumNames": ["Red", "Green"]},
        "level": {"type": "integer", "title": "Level",
                  "oneOf": [{"const": 1, "title": "Low"}, {"const": 2, "title": "High"}]},
        "tags": {"type": "array", "title": "Tags", "items": {"enum": ["a", "b", "c"]}},
    },
    "required": ["name", "colour"],
}  # fmt: skip
LOGIN = "https://login.example.com/device?code=ABCD-1234&next=%2Fhome%2F" + "x" * 200


async def test_questions_are_forms_answered_once(tmp_path: Path) -> None:
    """A question's form is built from its schema (text, integer, number, checkbox, enum
    selects, a multiple choice), checked by the browser, and its answer sent with the schema's
    types; Decline and Cancel answer so; a url question shows the whole address and an Open
    link (none for what is not a web address); a refused answer says why; a question answered
    elsewhere says "already answered"; the resolution settles the card, also after a reload.
    A question or permission request over with no answer recorded stops offering its buttons
    ("no longer open"), at a refresh and at a load; one answered elsewhere too."""
    require_browser()
    engine = FakeEngine()
    info = engine.add("conv0001")
    engine.convs["conv0001"] = msgspec.structs.replace(info, title="Questions", status="running")
    await browse_in_process(tmp_path, engine, "conv0001", partial(_questions, engine=engine))


def _answers(engine: FakeEngine, request: str) -> list[tuple[object, ...]]:
    return eventually(lambda: [c for c in engine.calls if c[0] == "answer" and c[2] == request])


def _questions(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1100, "height": 900}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Questions")
        publish(engine, "conv0001", "elicitation_requested",
                 **question("q1", "A few details, please", schema=SCHEMA))  # fmt: skip
        card = page.locator("#events li.question[data-request=q1]")
        expect(card).to_contain_text("A few details, please")
        expect(card.locator(".deadline")).to_contain_text("answer by")
        expect(card.locator(".deadline")).to_contain_text("default answer in 1")
        name = card.get_by_role("textbox", name="Your name")
        expect(name).to_have_attribute("required", "")
        expect(card.get_by_text("As in the commits")).to_be_visible()
        count = card.get_by_role("spinbutton", name="How many")
        expect(count).to_have_value("3")
        colour = card.get_by_role("combobox", name="Colour")
        assert colour.locator("option").all_inner_texts() == ["Choose…", "Red", "Green"]
        page.screenshot(path=str(ARTIFACTS / "dashboard-question.png"))

        # The browser checks the form first: nothing is sent without the required name.
        accept = card.get_by_role("button", name=re.compile("^Accept"))
        accept.click()
        assert name.evaluate("e => e.validity.valueMissing") is True
        name.fill("Ada")
        name.press("Escape")  # not the page's Esc: that would interrupt, and cancel this
        colour.select_option("Green")
        card.get_by_role("spinbutton", name="Ratio").fill("0.5")
        count.fill("4")
        card.get_by_role("checkbox", name="Go ahead").check()
        card.get_by_role("combobox", name="Level").select_option("High")
        card.get_by_role("group", name="Tags").get_by_role("checkbox", name="a").check()
        card.get_by_role("group", name="Tags").get_by_role("checkbox", name="c").check()
        accept.click()
        answered = _answers(engine, "q1")
        content = {"name": "Ada", "count": 4, "ratio": 0.5, "ok": True, "colour": "green",
                   "level": 2, "tags": ["a", "c"]}  # fmt: skip
        assert answered == [("answer", "conv0001", "q1", "accept", content)]
        got = answered[0][4]
        assert isinstance(got, dict)
        assert type(got["count"]) is int
        assert type(got["level"]) is int
        publish(engine, "conv0001", "elicitation_resolved", request="q1", action="accept",
                 content=content, by="user")  # fmt: skip
        expect(card).to_have_class(re.compile("settled"))
        expect(card.locator(".deadline")).to_have_text("answered: accept (by user)")
        expect(card.locator("form")).to_have_count(0)
        expect(card.locator(".answer")).to_contain_text("name: Ada")

        # Decline and Cancel, no content.
        publish(engine, "conv0001", "elicitation_requested", **question("q2", "Second?"))
        publish(engine, "conv0001", "elicitation_requested", **question("q3", "Third?"))
        page.locator("li.question[data-request=q2]").get_by_role("button", name=re.compile(
            "^Decline")).click()  # fmt: skip
        assert _answers(engine, "q2") == [("answer", "conv0001", "q2", "decline", None)]
        page.locator("li.question[data-request=q3]").get_by_role("button", name=re.compile(
            "^Cancel")).click()  # fmt: skip
        assert _answers(engine, "q3") == [("answer", "conv0001", "q3", "cancel", None)]

        # Refused: the reason shows and the form can be answered again.
        refusal = RpcFailure(INVALID_PARAMS, "the answer does not fit: ratio: expected number")
        on_trio(lambda: engine.failures.__setitem__("answer", refusal))
        publish(engine, "conv0001", "elicitation_requested", **question("q4", "Fourth?"))
        q4 = page.locator("li.question[data-request=q4]")
        q4.get_by_role("button", name=re.compile("^Accept")).click()
        expect(q4.locator(".note")).to_have_text("the answer does not fit: ratio: expected number")
        expect(q4.get_by_role("button", name=re.compile("^Accept"))).to_be_enabled()

        # Answered elsewhere first: -32003 says so; the resolution then settles it.
        gone = RpcFailure(CONFLICT, "no open question 'q4' (answered already?)")
        on_trio(lambda: engine.failures.__setitem__("answer", gone))
        q4.get_by_role("button", name=re.compile("^Decline")).click()
        expect(q4.locator(".note")).to_have_text(
            "Already answered (elsewhere, or the deadline passed)."
        )
        expect(q4.get_by_role("button", name=re.compile("^Decline"))).to_be_disabled()
        publish(engine, "conv0001", "elicitation_resolved", request="q4", action="cancel",
                 by="timeout")  # fmt: skip
        expect(q4.locator(".deadline")).to_have_text("deadline passed: cancel")
        on_trio(lambda: engine.failures.pop("answer"))

        # A url question: the whole address, an explicit link; accepting sends no content.
        publish(engine, "conv0001", "elicitation_requested",
                 **question("q5", "Log in to the service", mode="url", url=LOGIN))  # fmt: skip
        q5 = page.locator("li.question[data-request=q5]")
        expect(q5.locator("code.url")).to_have_text(LOGIN)
        open_link = q5.get_by_role("link", name=re.compile("^Open"))
        expect(open_link).to_have_attribute("href", LOGIN)
        expect(open_link).to_have_attribute("target", "_blank")
        expect(open_link).to_have_attribute("rel", "noopener noreferrer")
        page.screenshot(path=str(ARTIFACTS / "dashboard-question-url.png"))
        q5.get_by_role("button", name=re.compile("^Accept")).click()
        assert _answers(engine, "q5") == [("answer", "conv0001", "q5", "accept", None)]
        publish(engine, "conv0001", "elicitation_requested",
                 **question("q6", "Run this", mode="url", url="javascript:alert(1)"))  # fmt: skip
        q6 = page.locator("li.question[data-request=q6]")
        expect(q6.locator("code.url")).to_have_text("javascript:alert(1)")
        expect(q6).to_contain_text("Not a web address")
        expect(q6.get_by_role("link")).to_have_count(0)

        assert [c for c in engine.calls if c[0] == "interrupt"] == []

        # Read back: settled ones settled, open ones open.
        publish(engine, "conv0001", "elicitation_resolved", request="q2", action="decline",
                 by="user")  # fmt: skip
        page.reload()
        expect(page.locator("#events li.question")).to_have_count(6)
        expect(page.locator("#events li.question.settled")).to_have_count(3)
        expect(card.locator(".deadline")).to_have_text("answered: accept (by user)")
        expect(page.locator("li.question[data-request=q3] form")).to_have_count(1)

        # Over with no answer recorded (the daemon restarted, say): the conversation no longer
        # lists it as open, and the next refresh settles its card, saying so; a recorded
        # answer, if one comes after all, says how it ended.
        q3 = page.locator("li.question[data-request=q3]")
        _forget(engine, "q3")
        publish(engine, "conv0001", "agent_restarted", reason="crashed", session_loaded=False)
        expect(q3).to_have_class(re.compile("stale"))
        expect(q3.locator(".deadline")).to_have_text("no longer open")
        expect(q3.locator(".deadline")).to_have_attribute("title", re.compile("no longer waits"))
        expect(q3.locator("form")).to_have_count(0)
        expect(q5.locator("form")).to_have_count(1)  # still open: still listed
        publish(engine, "conv0001", "elicitation_resolved", request="q3", action="cancel",
                 by="agent_stopped")  # fmt: skip
        expect(q3.locator(".deadline")).to_have_text("cancelled: the agent stopped")
        expect(q3).not_to_have_class(re.compile("stale"))

        # Permission requests alike. One answered elsewhere first (-32003): no error, the card
        # stops offering its buttons at once, and its resolution says who answered.
        publish(engine, "conv0001", "permission_requested", **PERMISSION)
        r1 = page.locator("li.permission[data-request=r1]")
        gone = RpcFailure(CONFLICT, "no pending permission request 'r1'")
        on_trio(lambda: engine.failures.__setitem__("permit", gone))
        r1.get_by_role("button", name=re.compile("^Allow")).click()
        expect(r1.locator(".deadline")).to_have_text("no longer open")
        expect(r1.get_by_role("button")).to_have_count(0)
        expect(page.locator("#conv-error")).to_be_hidden()
        publish(engine, "conv0001", "permission_resolved", request="r1", outcome="selected",
                 option="reject", by="user")  # fmt: skip
        expect(r1.locator(".deadline")).to_have_text("answered: Reject (by user)")
        # One the turn's cancel answered; one gone with no answer recorded, at a refresh and
        # at a reload (checked against the list the page loads with).
        for r in ("r2", "r3"):
            publish(engine, "conv0001", "permission_requested", **PERMISSION | {"request": r})
        publish(engine, "conv0001", "permission_resolved", request="r2", outcome="cancelled",
                 by="cancel")  # fmt: skip
        r2, r3 = (page.locator(f"li.permission[data-request={r}]") for r in ("r2", "r3"))
        expect(r2.locator(".deadline")).to_have_text("cancelled: the turn was interrupted")
        expect(r3.get_by_role("button", name=re.compile("^Allow"))).to_be_enabled()
        _forget(engine, "r3")
        publish(engine, "conv0001", "agent_restarted", reason="crashed", session_loaded=False)
        expect(r3.locator(".deadline")).to_have_text("no longer open")
        expect(r3.get_by_role("button")).to_have_count(0)
        page.reload()
        expect(page.locator("#events li.permission")).to_have_count(3)
        expect(r3.locator(".deadline")).to_have_text("no longer open")
        expect(q3.locator(".deadline")).to_have_text("cancelled: the agent stopped")
        expect(q5.locator("form")).to_have_count(1)
        expect(page.locator("#events li.settled button")).to_have_count(0)


def _forget(engine: FakeEngine, request: str) -> None:
    """The request leaves the conversation's open ones with no answer recorded, as when the
    daemon restarts; the conversation's info as of its newest event."""

    def forget() -> None:
        info = engine.convs["conv0001"]
        engine.convs["conv0001"] = msgspec.structs.replace(
            info, last_seq=len(engine.stored["conv0001"]),
            permissions=[p for p in info.permissions if p.request != request],
            questions=[q for q in info.questions if q.request != request],
        )  # fmt: skip

    on_trio(forget)


# --- a phone; what waits ----------------------------------------------------------------------

LONG = "y" * 300


async def test_all_of_it_on_a_phone(tmp_path: Path) -> None:
    """At 390x844 (issue 19's phone), dark: the session bar, a diff of long lines under a long path,
    the command list and a question with a long address fit the screen's width; the pickers
    and the question's buttons are finger-sized, the buttons in a thumb's reach."""
    require_browser()
    engine = tool_engine()
    wide = {"type": "diff", "path": f"/work/{LONG}/a.py", "old_text": f"a = '{LONG}'\n",
            "new_text": f"a = '{LONG}!'\n"}  # fmt: skip
    engine.publish("conv0001", "tool_call", tool_call_id="t4", title=f"Edit {LONG}",
                   status="completed", prompt_seq=1, content=[wide])  # fmt: skip
    engine.convs["conv0001"] = msgspec.structs.replace(
        engine.convs["conv0001"], modes=raw_json(MODES), config_options=raw_json(OPTIONS),
        usage=raw_json(USAGE), commands=raw_json(COMMANDS), status="running",
        last_seq=len(engine.stored["conv0001"]),
    )  # fmt: skip
    await browse_in_process(tmp_path, engine, "conv0001", partial(_phone, engine=engine))


def _on_screen(box: FloatRect | None) -> FloatRect:
    """Within the phone's width."""
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= PHONE["width"], box
    return box


def _finger_sized_on_screen(box: FloatRect | None) -> None:
    assert _on_screen(box)["height"] >= 44, box


def _phone(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    # In the dark theme, for its screenshots.
    with open_page(viewport=PHONE, is_mobile=True, has_touch=True, color_scheme="dark") as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Tools")
        expect(page.locator("#events li.tool")).to_have_count(4)
        expect(page.locator("#events li.tool").last.locator(".dl.add")).to_contain_text(LONG)
        no_sideways_scroll(page)
        mode = page.get_by_role("combobox", name="Mode", exact=True)
        expect(mode).to_be_visible()
        expect(page.locator("#session .usage-text")).to_be_visible()
        for control in (mode, page.get_by_role("combobox", name="Model", exact=True),
                        page.get_by_role("button", name="Settings")):  # fmt: skip
            _finger_sized_on_screen(control.bounding_box())
        page.get_by_role("button", name="Settings").tap()
        panel = page.get_by_role("group", name="Agent settings")
        expect(panel).to_be_visible()
        _on_screen(panel.bounding_box())
        no_sideways_scroll(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-session.png"))
        page.get_by_role("button", name="Settings").tap()
        expect(panel).to_be_hidden()

        # The command list: over the timeline, as wide as the screen at most, finger-sized.
        text = page.get_by_role("textbox", name="Message")
        text.tap()
        text.press("/")
        options = page.get_by_role("listbox").get_by_role("option")
        expect(options).to_have_count(4)
        for i in range(4):
            _finger_sized_on_screen(options.nth(i).bounding_box())
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-commands.png"))
        options.filter(has_text="/review").tap()
        expect(text).to_have_value("/review ")
        text.fill("")

        # Questions: the buttons at the bottom, also those of a form taller than the screen.
        publish(engine, "conv0001", "elicitation_requested",
                 **question("q1", "Log in", mode="url", url=LOGIN))  # fmt: skip
        q1 = page.locator("li.question[data-request=q1]")
        expect(q1.locator("code.url")).to_have_text(LOGIN)
        no_sideways_scroll(page)
        in_thumb_reach(page, "li.question[data-request=q1] button[type=submit]")
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-question.png"))
        q1.get_by_role("button", name=re.compile("^Cancel")).tap()
        assert _answers(engine, "q1") == [("answer", "conv0001", "q1", "cancel", None)]
        publish(engine, "conv0001", "elicitation_resolved", request="q1", action="cancel",
                 by="user")  # fmt: skip
        expect(q1).to_have_class(re.compile("settled"))
        publish(engine, "conv0001", "elicitation_requested",
                 **question("q2", "Details", schema=SCHEMA))  # fmt: skip
        expect(page.locator("li.question[data-request=q2] form")).to_be_visible()
        in_thumb_reach(page, "li.question[data-request=q2] button[type=submit]")
        in_thumb_reach(page, "li.question[data-request=q2] button:text('Decline')")
        no_sideways_scroll(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-form.png"))
