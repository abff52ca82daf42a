"""What a fake agent's session says, for the dashboard's browser tests: modes, options, usage,
slash commands, and a conversation with tool calls (an edit, a new file, a command's output)."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import msgspec

from tests.fakes.engine import FakeEngine

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
OLD = "".join(f"line {i}\n" for i in range(1, 11))
NEW = OLD.replace("line 5\n", "line five\n")
EDIT = {"type": "diff", "path": "/work/src/app.py", "old_text": OLD, "new_text": NEW}
NEW_FILE = {"type": "diff", "path": "/work/src/new.py",
            "new_text": "".join(f"row {i}\n" for i in range(100))}  # fmt: skip
COMMANDS = [
    {"name": "review", "description": "Review the changes on this branch"},
    {"name": "research", "description": "Search the web", "input_hint": "what to look for"},
    {"name": "init", "description": "Write an AGENTS.md"},
    {"name": "pre-commit", "description": "Run the hooks"},
]


def tool_engine() -> FakeEngine:
    """conv0001, "Tools": one turn with an edit, a new file and a command's output."""
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


def question(request: str, message: str, **more: Any) -> dict[str, Any]:
    """An `elicitation_requested` body: a form question open for ten minutes."""
    deadline = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 600))
    return {"request": request, "message": message, "prompt_seq": 1, "deadline": deadline,
            "schema": {"type": "object", "properties": {}}, **more}  # fmt: skip
