"""The dashboard's view of what the agent says (issue 15), in Chromium against the in-process
server and the fake engine: the session's state in the head (context usage, the mode and model
pickers, other options in a settings popover), tool calls with their diffs and output, slash
command completion in the composer, and the agent's questions as forms.

The fake engine publishes the events when the test wants; a click's call is awaited at the
fake engine with a bounded poll (`_eventually`), never assumed to have arrived.
"""

from __future__ import annotations

import random
import re
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, RpcFailure
from tests.fakes.engine import FakeEngine
from tests.server.dashboard_events import check_every_event_type
from tests.server.test_dashboard_browser import ARTIFACTS, _browse_in_process, _require_browser
from tests.server.test_dashboard_phone import (
    PERMISSION,
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
    from playwright.sync_api import FloatRect, Page

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
    every = engine.add("conv0003")
    engine.convs["conv0003"] = msgspec.structs.replace(every, title="Every event")
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
        # ...and the timeline says when it changed: the events, as lines.
        changes = page.locator("#events li.session-change:not([hidden]) > span")
        expect(changes).to_have_text(["mode → Code"])
        model.select_option("large")
        assert _calls(engine, "set_option") == [("set_option", "conv0001", "model", "large")]
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
        # Each line says what changed since the one before: a refused choice is no line.
        expect(changes).to_have_text(["mode → Code",
                                      "model → Large · reasoning effort → Low · web search → off",
                                      "reasoning effort → High", "web search → on",
                                      "mode → Ask", "model → Small"])  # fmt: skip
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
        others = page.locator("#list li").filter(has_not_text="Session")
        others.filter(has_not_text="Every event").get_by_role("button").click()
        expect(page.locator("#conv-meta")).to_contain_text("conv0002")
        expect(page.locator("#session")).to_be_hidden()

        # Every event type the daemon stores, each rendered as the dashboard chose.
        page.locator("#list li").filter(has_text="Every event").get_by_role("button").click()
        expect(page.locator("#conv-meta")).to_contain_text("conv0003")
        check_every_event_type(page, engine, "conv0003")


# --- tool calls: diffs, output, replay -----------------------------------------------------------

OLD = "".join(f"line {i}\n" for i in range(1, 11))
NEW = OLD.replace("line 5\n", "line five\n")
EDIT = {"type": "diff", "path": "/work/src/app.py", "old_text": OLD, "new_text": NEW}
NEW_FILE = {"type": "diff", "path": "/work/src/new.py",
            "new_text": "".join(f"row {i}\n" for i in range(100))}  # fmt: skip
MINUS = "\u2212"  # the counts' minus sign, a typographic one
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
    reload (the events replayed from the store) shows the same. And the diff itself is a
    shortest one (`_check_the_diff`)."""
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
        expect(diff.locator(".diff-counts")).to_have_text(f"+1{MINUS}1")
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
        expect(new_file.locator(".diff-counts")).to_have_text(f"+100{MINUS}0")
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
        expect(diff.locator(".diff-counts")).to_have_text(f"+0{MINUS}1")
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
        _check_the_diff(page)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            prev, row[j + 1] = row[j + 1], prev + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


def _check_the_diff(page: Page) -> None:
    """The page's diff (diff.js) of random line lists: both sides rebuilt from it, and no
    longer than the longest common subsequence allows; past its bound (a rewrite) it is still
    exact. Hunks are numbered as `diff -u` numbers them."""
    rng = random.Random(15)
    cases = [[[rng.choice("abcdef") for _ in range(rng.randrange(0, 40))]
              for _side in range(2)] for _ in range(300)]  # fmt: skip
    rewrite = [[f"old {i}" for i in range(600)], [f"new {i}" for i in range(500)]]
    results = page.evaluate(DIFF_SCRIPT, {"cases": [*cases, rewrite]})
    for (a, b), ops in zip([*cases, rewrite], results["ops"], strict=True):
        assert [line for op, line in ops if op != "+"] == a
        assert [line for op, line in ops if op != "-"] == b
        if [a, b] != rewrite:
            assert sum(op != " " for op, _ in ops) == len(a) + len(b) - 2 * _lcs(a, b), (a, b)
    assert results["unified"] == [
        ["hunk", "@@ -1,5 +1,5 @@"], [" ", "a"], ["-", "b"], ["+", "B"], [" ", "c"], [" ", "d"],
        [" ", "e"], ["hunk", "@@ -9,4 +9,3 @@"], [" ", "i"], [" ", "j"], [" ", "k"], ["-", "l"],
    ]  # fmt: skip  # as `diff -u` prints it
    assert results["empty"] == [["hunk", "@@ -0,0 +1,1 @@"], ["+", "x"]]


DIFF_SCRIPT = """async ({cases}) => {
  const { diffLines, unifiedDiff } = await import("/diff.js");
  const text = (s) => s.split("").map((c) => c + "\\n").join("");
  return {
    ops: cases.map(([a, b]) => diffLines(a, b)),
    unified: unifiedDiff(text("abcdefghijkl"), text("aBcdefghijk")).lines,
    empty: unifiedDiff(null, "x").lines,
  };
}"""


# --- slash commands in the composer --------------------------------------------------------------

COMMANDS = [
    {"name": "review", "description": "Review the changes on this branch"},
    {"name": "research", "description": "Search the web", "input_hint": "what to look for"},
    {"name": "init", "description": "Write an AGENTS.md"},
    {"name": "pre-commit", "description": "Run the hooks"},
]


async def test_slash_commands_complete_in_the_composer(tmp_path: Path) -> None:
    """Typing "/" lists the agent's commands with their descriptions (prefix matches first); arrow
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
        assert [c[:3] for c in _calls(engine, "send")] == [("send", "conv0001", "/research rust")]
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
        # Ctrl+Enter is the page's (steer, or send), even with the list open.
        box.press("Control+Enter")
        expect(box).to_have_value("")
        expect(listbox).to_be_hidden()
        steered = _eventually(lambda: [c for c in engine.calls if c[1:3] == ("conv0001", "/pr")])

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
        assert [c[:3] for c in engine.calls if c[0] in ("send", "steer", "interrupt")] == [
            ("send", "conv0001", "/research rust"),
            ("interrupt", "conv0001"),
            (steered[0][0], "conv0001", "/pr"),
            ("send", "conv0001", "done"),
        ]


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


def _question(request: str, message: str, **more: Any) -> dict[str, Any]:
    deadline = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 600))
    return {"request": request, "message": message, "prompt_seq": 1, "deadline": deadline,
            "schema": {"type": "object", "properties": {}}, **more}  # fmt: skip


async def test_questions_are_forms_answered_once(tmp_path: Path) -> None:
    """A question's form is built from its schema (text, integer, number, checkbox, enum
    selects, a multiple choice), checked by the browser, and its answer sent with the schema's
    types; Decline and Cancel answer so; a url question shows the whole address and an Open
    link (none for what is not a web address); a refused answer says why; a question answered
    elsewhere says "already answered"; the resolution settles the card, also after a reload.
    A question or permission request over with no answer recorded stops offering its buttons
    ("no longer open"), at a refresh and at a load; one answered elsewhere too."""
    _require_browser()
    engine = FakeEngine()
    info = engine.add("conv0001")
    engine.convs["conv0001"] = msgspec.structs.replace(info, title="Questions", status="running")
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_questions, engine=engine))


def _answers(engine: FakeEngine, request: str) -> list[tuple[object, ...]]:
    return _eventually(lambda: [c for c in engine.calls if c[0] == "answer" and c[2] == request])


def _questions(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with _page(viewport={"width": 1100, "height": 900}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Questions")
        _publish(engine, "conv0001", "elicitation_requested",
                 **_question("q1", "A few details, please", schema=SCHEMA))  # fmt: skip
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
        _publish(engine, "conv0001", "elicitation_resolved", request="q1", action="accept",
                 content=content, by="user")  # fmt: skip
        expect(card).to_have_class(re.compile("settled"))
        expect(card.locator(".deadline")).to_have_text("answered: accept (by user)")
        expect(card.locator("form")).to_have_count(0)
        expect(card.locator(".answer")).to_contain_text("name: Ada")

        # Decline and Cancel, no content.
        _publish(engine, "conv0001", "elicitation_requested", **_question("q2", "Second?"))
        _publish(engine, "conv0001", "elicitation_requested", **_question("q3", "Third?"))
        page.locator("li.question[data-request=q2]").get_by_role("button", name=re.compile(
            "^Decline")).click()  # fmt: skip
        assert _answers(engine, "q2") == [("answer", "conv0001", "q2", "decline", None)]
        page.locator("li.question[data-request=q3]").get_by_role("button", name=re.compile(
            "^Cancel")).click()  # fmt: skip
        assert _answers(engine, "q3") == [("answer", "conv0001", "q3", "cancel", None)]

        # Refused: the reason shows and the form can be answered again.
        refusal = RpcFailure(INVALID_PARAMS, "the answer does not fit: ratio: expected number")
        _on_trio(lambda: engine.failures.__setitem__("answer", refusal))
        _publish(engine, "conv0001", "elicitation_requested", **_question("q4", "Fourth?"))
        q4 = page.locator("li.question[data-request=q4]")
        q4.get_by_role("button", name=re.compile("^Accept")).click()
        expect(q4.locator(".note")).to_have_text("the answer does not fit: ratio: expected number")
        expect(q4.get_by_role("button", name=re.compile("^Accept"))).to_be_enabled()

        # Answered elsewhere first: -32003 says so; the resolution then settles it.
        gone = RpcFailure(CONFLICT, "no open question 'q4' (answered already?)")
        _on_trio(lambda: engine.failures.__setitem__("answer", gone))
        q4.get_by_role("button", name=re.compile("^Decline")).click()
        expect(q4.locator(".note")).to_have_text(
            "Already answered (elsewhere, or the deadline passed)."
        )
        expect(q4.get_by_role("button", name=re.compile("^Decline"))).to_be_disabled()
        _publish(engine, "conv0001", "elicitation_resolved", request="q4", action="cancel",
                 by="timeout")  # fmt: skip
        expect(q4.locator(".deadline")).to_have_text("deadline passed: cancel")
        _on_trio(lambda: engine.failures.pop("answer"))

        # A url question: the whole address, an explicit link; accepting sends no content.
        _publish(engine, "conv0001", "elicitation_requested",
                 **_question("q5", "Log in to the service", mode="url", url=LOGIN))  # fmt: skip
        q5 = page.locator("li.question[data-request=q5]")
        expect(q5.locator("code.url")).to_have_text(LOGIN)
        open_link = q5.get_by_role("link", name=re.compile("^Open"))
        expect(open_link).to_have_attribute("href", LOGIN)
        expect(open_link).to_have_attribute("target", "_blank")
        expect(open_link).to_have_attribute("rel", "noopener noreferrer")
        page.screenshot(path=str(ARTIFACTS / "dashboard-question-url.png"))
        q5.get_by_role("button", name=re.compile("^Accept")).click()
        assert _answers(engine, "q5") == [("answer", "conv0001", "q5", "accept", None)]
        _publish(engine, "conv0001", "elicitation_requested",
                 **_question("q6", "Run this", mode="url", url="javascript:alert(1)"))  # fmt: skip
        q6 = page.locator("li.question[data-request=q6]")
        expect(q6.locator("code.url")).to_have_text("javascript:alert(1)")
        expect(q6).to_contain_text("Not a web address")
        expect(q6.get_by_role("link")).to_have_count(0)

        assert [c for c in engine.calls if c[0] == "interrupt"] == []

        # Read back: settled ones settled, open ones open.
        _publish(engine, "conv0001", "elicitation_resolved", request="q2", action="decline",
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
        _publish(engine, "conv0001", "agent_restarted", reason="crashed", session_loaded=False)
        expect(q3).to_have_class(re.compile("stale"))
        expect(q3.locator(".deadline")).to_have_text("no longer open")
        expect(q3.locator(".deadline")).to_have_attribute("title", re.compile("no longer waits"))
        expect(q3.locator("form")).to_have_count(0)
        expect(q5.locator("form")).to_have_count(1)  # still open: still listed
        _publish(engine, "conv0001", "elicitation_resolved", request="q3", action="cancel",
                 by="agent_stopped")  # fmt: skip
        expect(q3.locator(".deadline")).to_have_text("cancelled: the agent stopped")
        expect(q3).not_to_have_class(re.compile("stale"))

        # Permission requests alike. One answered elsewhere first (-32003): no error, the card
        # stops offering its buttons at once, and its resolution says who answered.
        _publish(engine, "conv0001", "permission_requested", **PERMISSION)
        r1 = page.locator("li.permission[data-request=r1]")
        gone = RpcFailure(CONFLICT, "no pending permission request 'r1'")
        _on_trio(lambda: engine.failures.__setitem__("permit", gone))
        r1.get_by_role("button", name=re.compile("^Allow")).click()
        expect(r1.locator(".deadline")).to_have_text("no longer open")
        expect(r1.get_by_role("button")).to_have_count(0)
        expect(page.locator("#conv-error")).to_be_hidden()
        _publish(engine, "conv0001", "permission_resolved", request="r1", outcome="selected",
                 option="reject", by="user")  # fmt: skip
        expect(r1.locator(".deadline")).to_have_text("answered: Reject (by user)")
        # One the turn's cancel answered; one gone with no answer recorded, at a refresh and
        # at a reload (checked against the list the page loads with).
        for r in ("r2", "r3"):
            _publish(engine, "conv0001", "permission_requested", **PERMISSION | {"request": r})
        _publish(engine, "conv0001", "permission_resolved", request="r2", outcome="cancelled",
                 by="cancel")  # fmt: skip
        r2, r3 = (page.locator(f"li.permission[data-request={r}]") for r in ("r2", "r3"))
        expect(r2.locator(".deadline")).to_have_text("cancelled: the turn was interrupted")
        expect(r3.get_by_role("button", name=re.compile("^Allow"))).to_be_enabled()
        _forget(engine, "r3")
        _publish(engine, "conv0001", "agent_restarted", reason="crashed", session_loaded=False)
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

    _on_trio(forget)


# --- a phone; what waits ----------------------------------------------------------------------

LONG = "y" * 300


async def test_all_of_it_on_a_phone(tmp_path: Path) -> None:
    """At 390x844 (issue 19's phone), dark: the session bar, a diff of long lines under a long path,
    the command list and a question with a long address fit the screen's width; the pickers
    and the question's buttons are finger-sized, the buttons in a thumb's reach."""
    _require_browser()
    engine = _tool_engine()
    wide = {"type": "diff", "path": f"/work/{LONG}/a.py", "old_text": f"a = '{LONG}'\n",
            "new_text": f"a = '{LONG}!'\n"}  # fmt: skip
    engine.publish("conv0001", "tool_call", tool_call_id="t4", title=f"Edit {LONG}",
                   status="completed", prompt_seq=1, content=[wide])  # fmt: skip
    engine.convs["conv0001"] = msgspec.structs.replace(
        engine.convs["conv0001"], modes=_raw(MODES), config_options=_raw(OPTIONS),
        usage=_raw(USAGE), commands=_raw(COMMANDS), status="running",
        last_seq=len(engine.stored["conv0001"]),
    )  # fmt: skip
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_phone, engine=engine))


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
    with _page(viewport=PHONE, is_mobile=True, has_touch=True, color_scheme="dark") as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Tools")
        expect(page.locator("#events li.tool")).to_have_count(4)
        expect(page.locator("#events li.tool").last.locator(".dl.add")).to_contain_text(LONG)
        _no_sideways_scroll(page)
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
        _no_sideways_scroll(page)
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
        _publish(engine, "conv0001", "elicitation_requested",
                 **_question("q1", "Log in", mode="url", url=LOGIN))  # fmt: skip
        q1 = page.locator("li.question[data-request=q1]")
        expect(q1.locator("code.url")).to_have_text(LOGIN)
        _no_sideways_scroll(page)
        _in_thumb_reach(page, "li.question[data-request=q1] button[type=submit]")
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-question.png"))
        q1.get_by_role("button", name=re.compile("^Cancel")).tap()
        assert _answers(engine, "q1") == [("answer", "conv0001", "q1", "cancel", None)]
        _publish(engine, "conv0001", "elicitation_resolved", request="q1", action="cancel",
                 by="user")  # fmt: skip
        expect(q1).to_have_class(re.compile("settled"))
        _publish(engine, "conv0001", "elicitation_requested",
                 **_question("q2", "Details", schema=SCHEMA))  # fmt: skip
        expect(page.locator("li.question[data-request=q2] form")).to_be_visible()
        _in_thumb_reach(page, "li.question[data-request=q2] button[type=submit]")
        _in_thumb_reach(page, "li.question[data-request=q2] button:text('Decline')")
        _no_sideways_scroll(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-form.png"))


async def test_questions_elsewhere_count_in_the_title_and_notify(tmp_path: Path) -> None:
    """A question in a conversation not on screen: a notification, and the title counts it
    (the daemon's `open_requests`, which counts questions) until it is answered."""
    _require_browser()
    engine = FakeEngine()
    for conv_id, title, at in [("conv0001", "Open one", "02"), ("conv0002", "Elsewhere", "01")]:
        info = engine.add(conv_id)
        engine.convs[conv_id] = msgspec.structs.replace(
            info, title=title, status="running", updated_at=f"2025-01-01T00:00:{at}.000Z"
        )
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_elsewhere, engine=engine))


def _elsewhere(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    from tests.server.test_dashboard_phone import RECORD_NOTIFICATIONS

    origin = link.split("#")[0].rstrip("/")
    # bypass_csp: for `wait_for_function` (see test_dashboard_phone's notification test).
    with _page(permissions=["notifications"], bypass_csp=True) as page:
        page.context.grant_permissions(["notifications"], origin=origin)
        page.add_init_script(RECORD_NOTIFICATIONS)
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Open one")
        page.get_by_role("button", name="Notify me").click()
        expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")
        _publish(engine, "conv0002", "elicitation_requested", **_question("q1", "Which branch?"))
        _change(engine, "conv0002", open_requests=1)
        expect(page).to_have_title("(1) acpd")
        page.wait_for_function("window.__notes.length === 1")
        notes = page.evaluate("window.__notes")
        assert notes == [{"title": "Elsewhere: waiting for you", "body": "Asks: Which branch?"}]
        expect(page.locator("#list li", has_text="Elsewhere")).to_contain_text("waits for you")

        # Opened and answered there: the count goes.
        page.locator("#list li", has_text="Elsewhere").get_by_role("button").click()
        card = page.locator("li.question[data-request=q1]")
        card.get_by_role("button", name=re.compile("^Decline")).click()
        assert _answers(engine, "q1") == [("answer", "conv0002", "q1", "decline", None)]
        _publish(engine, "conv0002", "elicitation_resolved", request="q1", action="decline",
                 by="user")  # fmt: skip
        _change(engine, "conv0002", open_requests=0)
        expect(card).to_have_class(re.compile("settled"))
        expect(page).to_have_title("acpd")
