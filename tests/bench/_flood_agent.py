"""A minimal ACP agent that answers a prompt "N" with N agent_message_chunk lines, flat out.

The relay benchmark's agents: no framework. By default the lines are pre-encoded and written in
blocks of 1,000, the ceiling of what any agent could send; with `--per-line` each chunk is
encoded and written on its own, as a fast real agent does. A prompt that is not a number gets
no chunks.
"""

from __future__ import annotations

import json
import sys


def _line(msg: object) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def _chunks(n: int) -> bytes:
    update = {
        "sessionUpdate": "agent_message_chunk",
        "content": {"type": "text", "text": "streaming text, flat out "},
    }
    return _line(
        {
            "jsonrpc": "2.0",
            "method": "session/update",
            "params": {"sessionId": "flood", "update": update},
        }
    ) * min(n, 1000)


def main() -> None:
    out = sys.stdout.buffer
    per_line = "--per-line" in sys.argv[1:]
    block = _chunks(1000)
    for raw in sys.stdin.buffer:
        msg = json.loads(raw)
        method, id_ = msg.get("method"), msg.get("id")
        if id_ is None:
            continue  # notifications (session/cancel): the turn is over before one could land
        result: object
        if method == "initialize":
            result = {"protocolVersion": 1, "agentCapabilities": {"loadSession": False}}
        elif method == "session/new":
            result = {"sessionId": "flood"}
        elif method == "session/prompt":
            text = msg["params"]["prompt"][0].get("text", "")
            n = int(text) if text.strip().isdigit() else 0
            if per_line:
                for i in range(n):
                    update = {"sessionUpdate": "agent_message_chunk",
                              "content": {"type": "text", "text": f"token {i} "}}  # fmt: skip
                    params = {"sessionId": "flood", "update": update}
                    out.write(
                        _line({"jsonrpc": "2.0", "method": "session/update", "params": params})
                    )
                    out.flush()
            else:
                for _ in range(n // 1000):
                    out.write(block)
                out.write(_chunks(n % 1000) if n % 1000 else b"")
            result = {"stopReason": "end_turn"}
        else:
            out.write(
                _line({"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": method}})
            )
            out.flush()
            continue
        out.write(_line({"jsonrpc": "2.0", "id": id_, "result": result}))
        out.flush()


if __name__ == "__main__":
    main()
