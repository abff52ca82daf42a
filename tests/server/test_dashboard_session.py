"""The dashboard's view of what the agent says (issue 15), in Chromium against the in-process
server and the fake engine: the session's state in the head (context usage, the mode and model
pickers, other options in a settings popover), tool calls with their diffs and output, slash
command completion in the composer, and the agent's questions as forms.

The fake engine publishes the events when the test wants; a click's call is awaited at the
fake engine with a bounded poll (`_eventually`), never assumed to have arrived.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, RpcFailure
from tests.fakes.engine import FakeEngine
from tests.server.test_dashboard_browser import ARTIFACTS, _browse_in_process, _require_browser
from tests.server.test_dashboard_phone import (
    PHONE,
    _change,
    _eventually,
    _in_thumb_reach,
    _no_sideways_scroll,
    _on_trio,
    _page,
    _publish,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODES = {
    "current": "ask",
    "available": [{"id": "ask", "name": "Ask", "description": "Asks before editing"},
                  {"id": "code", "name": "Code"}, {"id": "plan", "name": "Plan"}],
}  # fmt: skip
OPTIONS: list[dict[str, Any]] = [
    {"id": "model", "name": "Model", "category": "model", "type": "select",
     "currentValue": "small", "options": [{"value": "small", "name": "Small"},
                                          {"value": "large", "name": "Large"}]},
    {"id": "effort", "name": "Reasoning effort", "category": "thought_level", "type": "select",
     "currentValue": "low", "options": [{"group": "levels", "name": "Levels", "options": [
         {"value": "low", "name": "Low"}, {"value": "high", "name": "High"}]}]},
    {"id": "web", "name": "Web search", "type": "boolean", "currentValue": False,
     "description": "Let the agent search the web"},
    {"id": "hue", "name": "A type nobody knows", "type": "colour", "currentValue": "red"},
]  # fmt: skip
USAGE = {"used": 53_000, "size": 200_000, "cost": {"amount": 0.25, "currency": "USD"}}


def _raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


def _calls(engine: FakeEngine, method: str) -> list[tuple[object, ...]]:
    """The fake engine's calls of `method`, once at least one has arrived (bounded wait)."""
    return _eventually(lambda: [c for c in engine.calls if c[0] == method])


# --- the head: usage, mode, model, settings ------------------------------------------------------


async def test_usage_and_the_mode_model_and_settings_pickers(tmp_path: Path) -> None:
    """Usage shows as a bar and a cost; the mode and model pickers and the settings popover
    call set_mode / set_option with what was chosen and show the agent's answer; a refusal
    shows the agent's message and puts the picker back; events change them live."""
    _require_browser()
    engine = FakeEngine()
    info = engine.add("conv0001")
    engine.convs["conv0001"] = msgspec.structs.replace(
        info, title="Session", modes=_raw(MODES), config_options=_raw(OPTIONS), usage=_raw(USAGE)
    )
    engine.add("conv0002")  # nothing said yet: no session bar
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_head, engine=engine))


def _head(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with _page(viewport={"width": 1100, "height": 760}) as page:
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
        assert _calls(engine, "set_mode") == [("set_mode", "conv0001", "code")]
        expect(mode).to_have_value("code")
        expect(mode).to_be_enabled()
        model.select_option("large")
        assert _calls(engine, "set_option") == [("set_option", "conv0001", "model", "large")]
        expect(model).to_have_value("large")

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
        _eventually(lambda: [c for c in engine.calls if c[1:3] == ("conv0001", "effort")])
        web = panel.get_by_role("checkbox", name="Web search")
        expect(web).not_to_be_checked()
        expect(panel).to_contain_text("Let the agent search the web")
        web.check()
        _eventually(lambda: [c for c in engine.calls if c[2:] == ("web", True)])
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
        _on_trio(lambda: engine.failures.__setitem__("set_mode", refusal))
        mode.select_option("plan")
        expect(page.locator("#conv-error")).to_have_text("the agent refused: no such mode: plan")
        expect(mode).to_have_value("code")
        assert [c[2] for c in engine.calls if c[0] == "set_mode"] == ["code", "plan"]
        _on_trio(lambda: engine.failures.pop("set_mode"))

        # The agent changes them itself: events, live.
        _publish(engine, "conv0001", "mode", current="ask")
        expect(mode).to_have_value("ask")
        _publish(engine, "conv0001", "usage", used=150_000, size=200_000)
        expect(usage.locator(".usage-text")).to_have_text("150K / 200K")
        options = [{**OPTIONS[0], "currentValue": "small"}]
        _publish(engine, "conv0001", "config_options", options=options)
        expect(model).to_have_value("small")
        expect(settings).to_be_hidden()  # no other options left
        # A refresh of the conversation, its state older than those events, undoes nothing
        # (a refresh reads the queue once it has shown the conversation: waited for).
        queue_reads = len(_calls(engine, "queue"))
        _publish(engine, "conv0001", "turn_ended", prompt_seq=1, stop_reason="end_turn")
        _eventually(lambda: [c for c in engine.calls if c[0] == "queue"][queue_reads:])
        expect(mode).to_have_value("ask")
        expect(model).to_have_value("small")
        expect(usage.locator(".usage-text")).to_have_text("150K / 200K")

        # A conversation whose agent has said nothing: no bar at all.
        page.locator("#list li").filter(has_not_text="Session").get_by_role("button").click()
        expect(page.locator("#conv-meta")).to_contain_text("conv0002")
        expect(page.locator("#session")).to_be_hidden()


# --- tool calls: diffs, output, replay -----------------------------------------------------------

OLD = "".join(f"line {i}\n" for i in range(1, 11))
NEW = OLD.replace("line 5\n", "line five\n")
EDIT = {"type": "diff", "path": "/work/src/app.py", "old_text": OLD, "new_text": NEW}
NEW_FILE = {"type": "diff", "path": "/work/src/new.py",
            "new_text": "".join(f"row {i}\n" for i in range(100))}  # fmt: skip
T1_DIFF = ["@@ -2,7 +2,7 @@", " line 2", " line 3", " line 4", "-line 5", "+line five",
           " line 6", " line 7", " line 8"]  # fmt: skip


def _tool_engine() -> FakeEngine:
    engine = FakeEngine()
    engine.convs["conv0001"] = msgspec.structs.replace(engine.add("conv0001"), title="Tools")
    pub = partial(engine.publish, "conv0001")
    pub("user_message", text="edit it")
    pub("turn_started", prompt_seq=1)
    pub("tool_call", tool_call_id="t1", title="Edit app.py", kind="edit", status="in_progress",
        prompt_seq=1, locations=[{"path": "/work/src/app.py", "line": 5}],
        content=[EDIT])  # fmt: skip
    pub("tool_call_update", tool_call_id="t1", status="completed", prompt_seq=1)
    pub("tool_call", tool_call_id="t2", title="Write new.py", kind="edit", status="completed",
        prompt_seq=1, content=[NEW_FILE])  # fmt: skip
    pub("tool_call", tool_call_id="t3", title="Run the tests", kind="execute", status="completed",
        prompt_seq=1, raw_input={"command": ["pytest", "-q"]},
        content=[{"type": "content", "content": {"type": "text", "text": "3 passed"}},
                 {"type": "terminal", "terminal_id": "term-1"}])  # fmt: skip
    engine.convs["conv0001"] = msgspec.structs.replace(
        engine.convs["conv0001"], last_seq=len(engine.stored["conv0001"])
    )
    return engine


async def test_tool_calls_show_diffs_and_output_and_a_reload_the_same(tmp_path: Path) -> None:
    """A file edit shows as a compact unified diff under its path with +/- counts, collapsible;
    a long one shows its first lines and "Show all"; a new file is all additions; tool output
    text, terminals, locations and raw input show; an update's content replaces the old; a
    reload (the events replayed from the store) shows the same."""
    _require_browser()
    engine = _tool_engine()
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_tools, engine=engine))


def _diff_lines(page: Page, tool_id: int) -> list[str]:
    body = page.locator("#events li.tool").nth(tool_id).locator(".diff-body").first
    return body.locator(".dl").all_inner_texts()


def _tools(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with _page(viewport={"width": 1100, "height": 900}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Tools")
        tools = page.locator("#events li.tool")
        expect(tools).to_have_count(3)
        t1, t2, t3 = tools.nth(0), tools.nth(1), tools.nth(2)
        expect(t1).to_have_attribute("data-status", "completed")
        expect(t1).to_have_attribute("data-kind", "edit")
        expect(t1.locator(".tool-where")).to_have_text("/work/src/app.py:5")
        diff = t1.locator("details.diff")
        expect(diff.locator("summary")).to_contain_text("/work/src/app.py")
        expect(diff.locator(".diff-counts")).to_have_text("+1−1")
        expect(diff.locator(".dl")).to_have_count(len(T1_DIFF))
        assert _diff_lines(page, 0) == T1_DIFF
        expect(diff.locator(".dl.add")).to_have_text("+line five")
        expect(diff.locator(".dl.del")).to_have_text("-line 5")
        page.screenshot(path=str(ARTIFACTS / "dashboard-diff.png"))

        # Collapsible, by the keyboard too.
        body = diff.locator(".diff-body")
        expect(body).to_be_visible()
        diff.locator("summary").focus()
        page.keyboard.press("Enter")
        expect(body).to_be_hidden()
        page.keyboard.press("Enter")
        expect(body).to_be_visible()

        # A long diff: the first lines, then all of them on request.
        new_file = t2.locator("details.diff")
        expect(new_file.locator("summary")).to_contain_text("new file")
        expect(new_file.locator(".diff-counts")).to_have_text("+100−0")
        expect(new_file.locator(".dl")).to_have_count(40)
        expect(new_file.locator(".dl").first).to_have_text("@@ -0,0 +1,100 @@")
        new_file.get_by_role("button", name=re.compile("^Show all 101 lines")).click()
        expect(new_file.locator(".dl")).to_have_count(101)
        expect(new_file.locator(".dl").last).to_have_text("+row 99")
        expect(new_file.get_by_role("button", name=re.compile("^Show all"))).to_have_count(0)

        # Output text, the terminal, the raw input (collapsed).
        expect(t3.locator(".tool-output pre")).to_have_text("3 passed")
        expect(t3.locator(".terminal")).to_have_text("terminal term-1")
        raw = t3.locator("details.raw")
        expect(raw.locator("summary")).to_have_text("Input")
        raw.locator("summary").click()
        expect(raw.locator("pre")).to_contain_text('"pytest"')

        shown = tools.all_inner_texts()

        # A second edit: the update's content replaces the first diff.
        again = {**EDIT, "old_text": NEW, "new_text": NEW.replace("line 9\n", "")}
        _publish(engine, "conv0001", "tool_call_update", tool_call_id="t1", prompt_seq=1,
                 content=[again])  # fmt: skip
        expect(diff.locator(".diff-counts")).to_have_text("+0−1")
        expect(t1.locator("details.diff")).to_have_count(1)
        expect(t1.locator(".dl.del")).to_have_text("-line 9")
        _publish(engine, "conv0001", "tool_call_update", tool_call_id="t1", prompt_seq=1,
                 content=[EDIT])  # fmt: skip
        expect(t1.locator(".dl.add")).to_have_text("+line five")

        # Read back from the store: the same tool calls, the same diffs.
        page.reload()
        expect(page.locator("#conv-title")).to_have_text("Tools")
        expect(tools).to_have_count(3)
        expect(new_file.locator(".dl")).to_have_count(40)
        new_file.get_by_role("button", name=re.compile("^Show all")).click()
        raw.locator("summary").click()
        expect(new_file.locator(".dl")).to_have_count(101)
        assert tools.all_inner_texts() == shown
        assert _diff_lines(page, 0) == T1_DIFF


# --- slash commands in the composer --------------------------------------------------------------

COMMANDS = [
    {"name": "review", "description": "Review the changes on this branch"},
    {"name": "research", "description": "Search the web", "input_hint": "what to look for"},
    {"name": "init", "description": "Write an AGENTS.md"},
    {"name": "pre-commit", "description": "Run the hooks"},
]


async def test_slash_commands_complete_in_the_composer(tmp_path: Path) -> None:
    """"/" lists the agent's commands with their descriptions (prefix matches first); arrow
    keys choose, Enter or Tab completes (without sending), a click too; the input hint shows
    once a command is typed; Esc closes the list without interrupting; the list follows a
    `commands` event."""
    _require_browser()
    engine = FakeEngine()
    info = engine.add("conv0001")
    engine.convs["conv0001"] = msgspec.structs.replace(
        info, title="Commands", status="running", commands=_raw(COMMANDS)
    )
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_complete, engine=engine))


def _complete(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with _page(viewport={"width": 1100, "height": 760}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Commands")
        box = page.get_by_role("textbox", name="Message")
        listbox = page.get_by_role("listbox", name="The agent's slash commands")
        options = listbox.get_by_role("option")
        hint = page.locator("#command-hint")

        box.click()
        box.press("/")
        expect(listbox).to_be_visible()
        expect(options).to_have_count(4)
        expect(options.first).to_contain_text("Review the changes on this branch")
        expect(options.nth(1)).to_contain_text("what to look for")
        box.press_sequentially("re")
        expect(options).to_have_count(3)
        names = [t.split()[0] for t in options.all_inner_texts()]
        assert names == ["/review", "/research", "/pre-commit"]  # prefix matches first
        expect(options.first).to_have_attribute("aria-selected", "true")
        expect(box).to_have_attribute("aria-activedescendant", "command-0")
        page.screenshot(path=str(ARTIFACTS / "dashboard-commands.png"))

        box.press("ArrowDown")
        expect(options.nth(1)).to_have_attribute("aria-selected", "true")
        expect(box).to_have_attribute("aria-activedescendant", "command-1")
        box.press("ArrowUp")
        box.press("ArrowUp")  # wraps around to the last
        expect(options.nth(2)).to_have_attribute("aria-selected", "true")
        box.press("ArrowDown")
        box.press("ArrowDown")
        box.press("Enter")  # completes, does not send
        expect(box).to_have_value("/research ")
        expect(listbox).to_be_hidden()
        expect(hint).to_have_text("/research what to look for")
        box.press_sequentially("rust")
        box.press("Enter")  # the list is closed: this sends
        expect(box).to_have_value("")
        assert _calls(engine, "send") == [("send", "conv0001", "/research rust", True, False)]
        expect(hint).to_be_hidden()

        # Tab completes too; Esc closes the list, and only the next Esc interrupts.
        box.press_sequentially("/in")
        expect(options).to_have_count(1)
        box.press("Tab")
        expect(box).to_have_value("/init ")
        expect(box).to_be_focused()
        box.fill("")
        box.press_sequentially("/p")
        expect(listbox).to_be_visible()
        box.press("Escape")
        expect(listbox).to_be_hidden()
        expect(box).to_have_value("/p")
        box.press("Escape")
        assert _calls(engine, "interrupt") == [("interrupt", "conv0001")]
        box.press_sequentially("r")  # a new word: the list is back
        expect(options).to_have_count(1)

        # A click completes, the focus stays in the box.
        box.fill("")
        box.press("/")
        options.filter(has_text="/init").click()
        expect(box).to_have_value("/init ")
        expect(box).to_be_focused()

        # The agent's new list.
        _publish(engine, "conv0001", "commands", commands=[{"name": "compact", "description": "x"}])
        box.fill("")
        box.press("/")
        expect(options).to_have_count(1)
        expect(options.first).to_contain_text("/compact")
        box.press("Backspace")
        expect(listbox).to_be_hidden()

        # Calls arrive in the order made: once this send has, the Esc that closed the list
        # would have interrupted already, had it.
        box.fill("done")
        box.press("Enter")
        _eventually(lambda: [c for c in engine.calls if c[:3] == ("send", "conv0001", "done")])
        assert [c for c in engine.calls if c[0] in ("send", "interrupt")] == [
            ("send", "conv0001", "/research rust", True, False),
            ("interrupt", "conv0001"),
            ("send", "conv0001", "done", True, False),
        ]
