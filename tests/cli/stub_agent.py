"""A scripted ACP agent for the CLI's end-to-end tests (stdlib only, one JSON-RPC line each).

The prompt text picks the behaviour, so every CLI path has a deterministic turn behind it:

- `ask ...`: asks permission (options `allow`, `deny`), then says which was chosen;
- `wait ...`: says "waiting", then holds the turn until `session/cancel`;
- `plan ...`: a thought, a plan and a tool call around its answer;
- anything else: answers `echo: <text>` in two chunks.
"""

from __future__ import annotations

import json
import sys
from typing import Any

SESSION = "stub-session"


def send(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", **msg}) + "\n")
    sys.stdout.flush()


def update(body: dict[str, Any]) -> None:
    send({"method": "session/update", "params": {"sessionId": SESSION, "update": body}})


def say(text: str, kind: str = "agent_message_chunk") -> None:
    update({"sessionUpdate": kind, "content": {"type": "text", "text": text}})


def main() -> None:
    prompt_id: object = None  # the session/prompt being answered
    asked: dict[int, object] = {}  # our permission request id -> its prompt's id
    next_id = 1000
    for line in sys.stdin:
        msg = json.loads(line)
        method, params = msg.get("method"), msg.get("params") or {}
        if method == "initialize":
            caps = {"loadSession": True}
            send({"id": msg["id"], "result": {"protocolVersion": 1, "agentCapabilities": caps}})
        elif method == "session/new":
            send({"id": msg["id"], "result": {"sessionId": SESSION}})
        elif method == "session/load":
            send({"id": msg["id"], "result": {}})
        elif method == "session/prompt":
            prompt_id = msg["id"]
            text = " ".join(b.get("text", "") for b in params.get("prompt", []))
            if text.startswith("ask"):
                asked[next_id] = prompt_id
                options = [
                    {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                    {"optionId": "deny", "name": "Reject", "kind": "reject_once"},
                ]
                tool = {"toolCallId": "t1", "title": "touch /tmp/x", "status": "pending"}
                request = {"sessionId": SESSION, "toolCall": tool, "options": options}
                send({"id": next_id, "method": "session/request_permission", "params": request})
                next_id += 1
                continue
            if text.startswith("wait"):
                say("waiting")
                continue
            if text.startswith("plan"):
                say("let me think", "agent_thought_chunk")
                entries = [{"content": "look", "priority": "high", "status": "in_progress"}]
                update({"sessionUpdate": "plan", "entries": entries})
                tool = {"toolCallId": "t2", "title": "read file", "status": "completed"}
                update({"sessionUpdate": "tool_call", **tool})
            half = len(text) // 2
            say("echo: " + text[:half])
            say(text[half:])
            send({"id": prompt_id, "result": {"stopReason": "end_turn"}})
            prompt_id = None
        elif method == "session/cancel":
            if prompt_id is not None:
                send({"id": prompt_id, "result": {"stopReason": "cancelled"}})
                prompt_id = None
        elif method is None and msg.get("id") in asked:  # our permission request's answer
            owner = asked.pop(msg["id"])
            outcome = (msg.get("result") or {}).get("outcome") or {}
            chosen = outcome.get("optionId") or outcome.get("outcome", "?")
            say(f"permission: {chosen}")
            send({"id": owner, "result": {"stopReason": "end_turn"}})
            prompt_id = None
        elif "id" in msg and method is not None:
            send({"id": msg["id"], "error": {"code": -32601, "message": f"no {method}"}})


if __name__ == "__main__":
    main()
