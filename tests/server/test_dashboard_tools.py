"""The dashboard's tool calls and slash commands (issue 15), in Chromium against the in-process
server and the fake engine: diffs (with the line counts and a reload that shows the same),
terminal output, and completion of the agent's commands in the composer.
"""

from __future__ import annotations

import random
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from tests.fakes.engine import FakeEngine
from tests.server.browser import (
    ARTIFACTS,
    browse_in_process,
    calls_of,
    eventually,
    open_page,
    publish,
    raw_json,
    require_browser,
)
from tests.server.sessiondata import COMMANDS, EDIT, NEW, tool_engine

if TYPE_CHECKING:
    from playwright.sync_api import Page

# --- tool calls: diffs, output, replay -----------------------------------------------------------

MINUS = "\u2212"  # the counts' minus sign, a typographic one
T1_DIFF = ["@@ -2,7 +2,7 @@", " line 2", " line 3", " line 4", "-line 5", "+line five",
           " line 6", " line 7", " line 8"]  # fmt: skip


async def test_tool_calls_show_diffs_and_output_and_a_reload_the_same(tmp_path: Path) -> None:
    """A file edit shows as a compact unified diff under its path with +/- counts, collapsible;
    a long one shows its first lines and "Show all"; a new file is all additions; tool output
    text, terminals, locations and raw input show; an update's content replaces the old; a
    reload (the events replayed from the store) shows the same. And the diff itself is a
    shortest one (`_check_the_diff`)."""
    require_browser()
    engine = tool_engine()
    await browse_in_process(tmp_path, engine, "conv0001", partial(_tools, engine=engine))


def _diff_lines(page: Page, tool_id: int) -> list[str]:
    body = page.locator("#events li.tool").nth(tool_id).locator(".diff-body").first
    return body.locator(".dl").all_inner_texts()


def _tools(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1100, "height": 900}) as page:
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
        publish(engine, "conv0001", "tool_call_update", tool_call_id="t1", prompt_seq=1,
                 content=[again])  # fmt: skip
        expect(diff.locator(".diff-counts")).to_have_text(f"+0{MINUS}1")
        expect(t1.locator("details.diff")).to_have_count(1)
        expect(t1.locator(".dl.del")).to_have_text("-line 9")
        publish(engine, "conv0001", "tool_call_update", tool_call_id="t1", prompt_seq=1,
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


async def test_slash_commands_complete_in_the_composer(tmp_path: Path) -> None:
    """Typing "/" lists the agent's commands with their descriptions (prefix matches first); arrow
    keys choose, Enter or Tab completes (without sending), a click too; the input hint shows
    once a command is typed; Esc closes the list without interrupting; the list follows a
    `commands` event."""
    require_browser()
    engine = FakeEngine()
    info = engine.add("conv0001")
    engine.convs["conv0001"] = msgspec.structs.replace(
        info, title="Commands", status="running", commands=raw_json(COMMANDS)
    )
    await browse_in_process(tmp_path, engine, "conv0001", partial(_complete, engine=engine))


def _complete(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1100, "height": 760}) as page:
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
        assert [c[:3] for c in calls_of(engine, "send")] == [("send", "conv0001", "/research rust")]
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
        assert calls_of(engine, "interrupt") == [("interrupt", "conv0001")]
        box.press_sequentially("r")  # a new word: the list is back
        expect(options).to_have_count(1)
        # Ctrl+Enter is the page's (steer, or send), even with the list open.
        box.press("Control+Enter")
        expect(box).to_have_value("")
        expect(listbox).to_be_hidden()
        steered = eventually(lambda: [c for c in engine.calls if c[1:3] == ("conv0001", "/pr")])

        # A click completes, the focus stays in the box.
        box.fill("")
        box.press("/")
        options.filter(has_text="/init").click()
        expect(box).to_have_value("/init ")
        expect(box).to_be_focused()

        # The agent's new list.
        publish(engine, "conv0001", "commands", commands=[{"name": "compact", "description": "x"}])
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
        eventually(lambda: [c for c in engine.calls if c[:3] == ("send", "conv0001", "done")])
        assert [c[:3] for c in engine.calls if c[0] in ("send", "steer", "interrupt")] == [
            ("send", "conv0001", "/research rust"),
            ("interrupt", "conv0001"),
            (steered[0][0], "conv0001", "/pr"),
            ("send", "conv0001", "done"),
        ]
