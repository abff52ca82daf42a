"""`acpd show` (usage, mode, model), `acpd commands`, `mode`, `option`; tool calls and diffs in a
stream; error details."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import commands as cli
from daemon.cli import render, sessionview
from tests.cli.fakeserver import Conn, Fail, conv, ev, hang_guard, serving

OPTIONS = [
    {"id": "mode", "name": "Approval Preset", "category": "mode", "type": "select",
     "currentValue": "read-only",
     "options": [{"value": "read-only", "name": "Read Only"},
                 {"value": "auto", "name": "Default"}]},
    {"id": "model", "name": "Model", "category": "model", "type": "select",
     "currentValue": "gpt-5.4", "options": [{"value": "gpt-5.5", "name": "GPT-5.5"},
                                            {"value": "gpt-5.4", "name": "gpt-5.4"}]},
    {"id": "effort", "name": "Reasoning Effort", "category": "thought_level", "type": "select",
     "currentValue": "medium", "options": [{"group": "g", "name": "Levels", "options": [
         {"value": "low", "name": "Low"}, {"value": "medium", "name": "Medium"}]}]},
    {"id": "web", "name": "Web search", "type": "boolean", "currentValue": False},
]  # fmt: skip
MODES = {"current": "auto", "available": [
    {"id": "read-only", "name": "Read Only", "description": "Asks before edits"},
    {"id": "auto", "name": "Default"}]}  # fmt: skip
COMMANDS = [{"name": "web", "description": "Search the web", "input_hint": "query"},
            {"name": "init", "description": "Write AGENTS.md"}]  # fmt: skip
USAGE = {"used": 12345, "size": 200000, "cost": {"amount": 0.254, "currency": "USD"}}


def acpd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with hang_guard():
        code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def full(tmp_path: Path) -> dict[str, Any]:
    return conv(modes=MODES, config_options=OPTIONS, commands=COMMANDS, usage=USAGE,
                agent_log=str(tmp_path / "c.log"))  # fmt: skip


def test_show_prints_usage_mode_model_and_the_log(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with serving({"conversations/get": lambda c, p: {"conversation": full(tmp_path)}}) as server:
        code, out, err = acpd(capsys, "show", "c0", "--socket", server.path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    column = len(lines[0]) - len(lines[0].split(":", 1)[1].lstrip())
    assert all(len(line) - len(line.split(":", 1)[1].lstrip()) == column for line in lines)
    assert [line.split(None, 1) for line in lines[-6:]] == [
        ["usage:", "12,345 of 200,000 tokens (6%), 0.25 USD"],
        ["mode:", "Default (auto)"],
        ["model:", "gpt-5.4"],
        ["options:", "mode=Read Only (read-only), effort=Medium (medium), web=off"],
        ["commands:", "/web /init"],
        ["agent_log:", f"{tmp_path / 'c.log'} (nothing yet)"],
    ]
    assert "config_options" not in out
    assert out.startswith("id:")


def test_show_before_the_agent_said_anything(capsys: pytest.CaptureFixture[str]) -> None:
    state = conv(modes=None, config_options=None, commands=None, usage=None)
    with serving({"conversations/get": lambda c, p: {"conversation": state}}) as server:
        code, out, _ = acpd(capsys, "show", "c0", "--socket", server.path)
    assert code == 0
    assert "usage" not in out
    assert "None" not in out
    assert out.splitlines()[-1].startswith("live:")


def test_commands_modes_and_options_for_people(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with serving({"conversations/get": lambda c, p: {"conversation": full(tmp_path)}}) as server:
        _, out, _ = acpd(capsys, "commands", "c0", "--socket", server.path)
        assert out == "/web <query>  Search the web\n/init         Write AGENTS.md\n"
        _, out, _ = acpd(capsys, "mode", "c0", "--socket", server.path)
        assert out == "  read-only  Read Only  Asks before edits\n* auto  Default\n"
        _, out, _ = acpd(capsys, "option", "c0", "--socket", server.path)
        assert out.splitlines()[:4] == [
            "mode = Read Only (read-only)   (Approval Preset)",
            "    choices: read-only, auto",
            "model = gpt-5.4   (Model)",
            "    choices: gpt-5.5, gpt-5.4",
        ]
        assert out.splitlines()[-2:] == ["web = off   (Web search)", "    choices: on, off"]
        _code, out, _ = acpd(capsys, "commands", "c0", "--socket", server.path, "--json")
        assert json.loads(out)["conversation"]["commands"] == COMMANDS
    with serving({"conversations/get": lambda c, p: {"conversation": conv()}}) as server:
        _, out, _ = acpd(capsys, "commands", "c0", "--socket", server.path)
        assert out == "(the agent has not offered any slash commands yet)\n"
        _, out, _ = acpd(capsys, "mode", "c0", "--socket", server.path)
        assert out == "(the agent has not said which modes it has yet)\n"


def test_setting_a_mode_or_an_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    handlers = {
        "conversations/get": lambda c, p: {"conversation": full(tmp_path)},
        "conversations/set_mode": lambda c, p: {},
        "conversations/set_option": lambda c, p: {},
    }
    with serving(handlers) as server:
        assert acpd(capsys, "mode", "c0", "read-only", "--socket", server.path) == (
            0, "mode: read-only\n", "",
        )  # fmt: skip
        assert acpd(capsys, "option", "c0", "model", "GPT-5.5", "--socket", server.path)[1] == (
            "model: gpt-5.5\n"  # a choice's name becomes its value
        )
        assert acpd(capsys, "option", "c0", "web", "on", "--socket", server.path)[1] == "web: on\n"
        acpd(capsys, "option", "c0", "unknown", "x", "--socket", server.path)
    sets = [r for r in server.requests if r[0] != "conversations/get"]
    assert sets == [
        ("conversations/set_mode", {"id": "c0", "mode": "read-only"}),
        ("conversations/set_option", {"id": "c0ffee01", "option": "model", "value": "gpt-5.5"}),
        ("conversations/set_option", {"id": "c0ffee01", "option": "web", "value": True}),
        ("conversations/set_option", {"id": "c0ffee01", "option": "unknown", "value": "x"}),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["option", "c0", "model"], "give KEY and VALUE to set an option, or neither"),
        (["option", "c0", "model", "gpt-9"], "model has no choice 'gpt-9' (choices: gpt-5.5, "),
        (["option", "c0", "web", "maybe"], "web is on or off, not 'maybe'"),
    ],
)
def test_bad_option_values_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    handlers = {"conversations/get": lambda c, p: {"conversation": full(tmp_path)}}
    with serving(handlers) as server:
        code, out, err = acpd(capsys, *argv, "--socket", server.path)
    assert (code, out) == (2, "")
    assert err.startswith("acpd: error: ")
    assert message in err


def test_a_daemon_without_set_mode_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def missing(conn: Conn, params: dict[str, Any]) -> Any:
        raise Fail(-32601, "method not found: conversations/set_mode")

    handlers = {"conversations/get": lambda c, p: {"conversation": full(tmp_path)},
                "conversations/set_mode": missing, "conversations/set_option": missing}  # fmt: skip
    with serving(handlers) as server:
        code, out, err = acpd(capsys, "mode", "c0", "plan", "--socket", server.path)
        assert (code, out) == (1, "")
        assert err == (
            "acpd: error: this daemon cannot do that yet (no method conversations/set_mode)\n"
        )
        code, _, err = acpd(capsys, "option", "c0", "model", "gpt-5.5", "--socket", server.path)
        assert code == 1
        assert err.count("\n") == 1


# --- streams ----------------------------------------------------------------------------------


def run(*events: dict[str, Any]) -> str:
    out = io.StringIO()
    r = render.Renderer(out)
    for e in events:
        r.event(e)
    r.close()
    return out.getvalue()


def test_a_diff_is_shown_compactly() -> None:
    old = "".join(f"line {i}\n" for i in range(40))
    new = old.replace("line 3\n", "line three\n").replace("line 30\n", "")
    new += "".join(f"added {i}\n" for i in range(20))
    shown = run(
        ev(3, "tool_call", tool_call_id="t1", title="Edit a.py", kind="edit", status="pending",
           locations=[{"path": "/p/a.py", "line": 3}]),
        ev(4, "tool_call_update", tool_call_id="t1", status="completed",
           content=[{"type": "diff", "path": "/p/a.py", "old_text": old, "new_text": new}]),
    ).splitlines()  # fmt: skip
    assert shown[0] == "  - tool: Edit a.py (edit) /p/a.py:3 [pending]"
    assert shown[1] == "  - tool: Edit a.py [completed]"
    assert shown[2] == "    | /p/a.py (+21 -2)"
    assert shown[3:7] == ["    | @@ -3,3 +3,3 @@", "    |  line 2", "    | -line 3",
                          "    | +line three"]  # fmt: skip
    assert len(shown) == 3 + sessionview.DIFF_LINES + 1
    assert shown[-1].startswith("    | … +")
    assert shown[-1].endswith(" more lines")


def test_tool_output_new_files_and_terminals() -> None:
    output = "\n".join(f"out {i}" for i in range(10))
    shown = run(
        ev(3, "tool_call", tool_call_id="t", title="Run tests", status="completed",
           content=[{"type": "content", "content": {"type": "text", "text": output}},
                    {"type": "terminal", "terminal_id": "term-1"},
                    {"type": "diff", "path": "/p/new.py", "new_text": "a\nb\n"},
                    {"type": "content", "content": {"type": "image", "data": "...",
                                                    "mimeType": "image/png"}}],
           truncated=True),
    ).splitlines()  # fmt: skip
    assert shown == [
        "  - tool: Run tests [completed] (too large: stored cut)",
        *[f"    | out {i}" for i in range(6)],
        "    | … +4 more lines",
        "    | [terminal term-1]",
        "    | /p/new.py (new file, 2 lines)",
        "    | +a",
        "    | +b",
        "    | [image]",
    ]


def test_state_events_in_a_stream_and_error_details() -> None:
    shown = run(
        ev(1, "usage", used=5, size=10),
        ev(2, "mode", current="plan"),
        ev(3, "title", title="Fixing it"),
        ev(4, "commands", commands=COMMANDS),
        ev(5, "config_options", options=OPTIONS),
        ev(6, "error", message="agent exited with status 1", detail="Traceback...\nKeyError: x"),
        ev(7, "elicitation_requested", request="q1", message="Which branch?"),
        ev(8, "elicitation_resolved", request="q1", action="accept", by="user"),
    )
    assert shown.splitlines() == [
        "(mode: plan)",
        "(title: Fixing it)",
        "(slash commands: /web /init)",
        "(model: gpt-5.4; options: mode=Read Only (read-only), effort=Medium (medium), web=off)",
        "error: agent exited with status 1",
        "    Traceback...",
        "    KeyError: x",
        "? question q1: Which branch?",
        "    answer with: acpd answer ID q1 FIELD=VALUE... (or --decline)",
        "  - question q1: accept by user",
    ]
