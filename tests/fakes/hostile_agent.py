"""A hostile or broken ACP agent for acpd's tests: plain JSON on stdio, no acpd code in it.

    python tests/fakes/hostile_agent.py MODE [ARGS...]

It answers `initialize` and `session/new` (session "h1"), then on each `session/prompt`:

- `huge N MIB`: N `agent_message_chunk`s of MIB MiB each (each starts with its number), then
  `end_turn`.
- `oversized MIB`: a chunk "before", one update line of MIB MiB, a chunk "after", `end_turn`.
- `oversized-reply MIB`: a chunk "before", then its reply to the prompt MIB MiB long.
- `straggle`: a chunk "working", then waits for `session/cancel` and answers `cancelled`
  with a chunk "LEAK" right behind the reply, in the same write.
- `foreign-permission`: asks permission for another session, then with no options; says in
  a chunk what it was answered (`refused CODE` or `answered`), then `end_turn`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MiB = 1024 * 1024
SESSION = "h1"

_out = sys.stdout.buffer
_in = sys.stdin.buffer


def line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def send(*msgs: dict[str, Any]) -> None:
    _out.write(b"".join(line(m) for m in msgs))
    _out.flush()


def update(body: dict[str, Any]) -> dict[str, Any]:
    params = {"sessionId": SESSION, "update": body}
    return {"jsonrpc": "2.0", "method": "session/update", "params": params}


def chunk(text: str) -> dict[str, Any]:
    return update(
        {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}
    )


def reply(msg_id: object, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def read() -> dict[str, Any] | None:
    raw = _in.readline()
    if not raw:
        return None
    msg: dict[str, Any] = json.loads(raw)
    return msg


def ask(msg_id: int, session: str, options: list[dict[str, str]]) -> str:
    tool = {"toolCallId": f"t{msg_id}", "title": "rm -rf ~"}
    params = {"sessionId": session, "toolCall": tool, "options": options}
    send({"jsonrpc": "2.0", "id": msg_id, "method": "session/request_permission", "params": params})
    while (msg := read()) is not None:
        if msg.get("id") == msg_id and "method" not in msg:
            return f"refused {msg['error']['code']}" if "error" in msg else "answered"
    raise SystemExit(0)


def prompt(mode: str, args: list[str], msg_id: object) -> None:
    if mode == "huge":
        count, size = int(args[0]), int(args[1]) * MiB
        for i in range(count):
            text = f"<{i:04d}>"
            send(chunk(text + "x" * (size - len(text))))
        send(reply(msg_id, {"stopReason": "end_turn"}))
    elif mode == "oversized":
        big = chunk("y" * (int(args[0]) * MiB))
        send(chunk("before"), big, chunk("after"), reply(msg_id, {"stopReason": "end_turn"}))
    elif mode == "oversized-reply":
        padded = {"stopReason": "end_turn", "_meta": {"pad": "z" * (int(args[0]) * MiB)}}
        send(chunk("before"), reply(msg_id, padded))
    elif mode == "straggle":
        send(chunk("working"))
        while (msg := read()) is not None:
            if msg.get("method") == "session/cancel":
                send(reply(msg_id, {"stopReason": "cancelled"}), chunk("LEAK"))
                return
        raise SystemExit(0)
    elif mode == "foreign-permission":
        allow = [{"optionId": "ok", "name": "OK", "kind": "allow_once"}]
        first = ask(100, "someone-else", allow)
        second = ask(101, SESSION, [])
        send(chunk(f"{first}, {second}"), reply(msg_id, {"stopReason": "end_turn"}))
    else:
        raise SystemExit(f"hostile_agent: unknown mode {mode!r}")


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    while (msg := read()) is not None:
        method, msg_id = msg.get("method"), msg.get("id")
        if method == "initialize":
            result = {"protocolVersion": 1, "agentCapabilities": {}, "authMethods": []}
            send(reply(msg_id, result))
        elif method == "session/new":
            send(reply(msg_id, {"sessionId": SESSION}))
        elif method == "session/prompt":
            prompt(mode, args, msg_id)
        elif msg_id is not None and method is not None:
            error = {"code": -32601, "message": f"method not found: {method}"}
            send({"jsonrpc": "2.0", "id": msg_id, "error": error})


if __name__ == "__main__":
    main()
