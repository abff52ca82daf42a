"""Codec: decode one `session/update` line and encode it back, acpd vs stdlib vs the ACP SDK.

Two lines: (a) an `agent_message_chunk` (~300 B, the commonest message), (b) a ~2 KB
`tool_call_update` with a content block, a diff and `rawInput`. Pipelines, all measured in
the same run and all checked to reproduce the input JSON:

* acpd-2pass: `decode_envelope` + `decode_session_notification` (typed Structs), then `encode_line`
  of a `Notification` into a reused buffer: the general path.
* acpd-fast: `decode_update_line` (one pass, a typed envelope whose params is the typed
  `SessionNotification`), then the same encode. The peer should try it first and fall back
  to the two-pass path when it returns None.
* stdlib: `json.loads` + `json.dumps(...).encode()` (untyped dicts: a floor for "parse JSON
  at all", not a like-for-like codec).
* sdk: the official Python SDK (`agent-client-protocol`, import `acp`, pydantic models), the
  way its connection does it, with its own functions where it has them: `json.loads` (its
  transport), `SessionNotification.model_validate(params)` (its router), then
  `acp.utils.serialize_params` (`model_dump(mode="json", by_alias=True, exclude_none=True,
  exclude_defaults=True)`) and `json.dumps(..., separators=(",", ":"))` (its sender).
* sdk-json: its models at their fastest: a pydantic envelope whose `params` is the SDK's
  `SessionNotification`, `model_validate_json(line)` + `model_dump_json(by_alias=True,
  exclude_none=True)` (all in pydantic-core).

Ratios compare both acpd pipelines against stdlib and both SDK pipelines. Targets: >= 5x
stdlib, >= 10x SDK. The SDK is optional (`pip install -e '.[bench]'`); without it its rows
are skipped with a note.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

from protocol import acp
from protocol.jsonrpc import Notification, decode_envelope, encode_line
from tests.bench._common import measure, ratio_row, row

Pipeline = Callable[[], bytes | bytearray]

SESSION_ID = "0199a3f2-5c1e-7b9a-9d4e-3f2a1b0c9d8e"


def _line(update: dict[str, Any]) -> bytes:
    msg = {
        "jsonrpc": "2.0",
        "method": "session/update",
        "params": {"sessionId": SESSION_ID, "update": update},
    }
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()


CHUNK = _line(
    {
        "sessionUpdate": "agent_message_chunk",
        "messageId": "msg_01J9ZK8Q3W4E5R6T7Y8U9I0O1P",
        "content": {
            "type": "text",
            "text": "I'll start by reading the failing test to understand what it expects, then ",
        },
    }
)

_OLD = "\n".join(
    f"def handler_{i}(request):\n    return render(request, 'pages/page_{i}.html')"
    for i in range(9)
)
TOOL_CALL_UPDATE = _line(
    {
        "sessionUpdate": "tool_call_update",
        "toolCallId": "toolu_01HXYZ9K2M3N4P5Q6R7S8T9U0V",
        "status": "completed",
        "title": "Edit src/app/views.py",
        "kind": "edit",
        "content": [
            {
                "type": "content",
                "content": {
                    "type": "text",
                    "text": "Replaced render with render_cached in 9 handlers; "
                    "the suite passes (42 passed in 1.31s).",
                },
            },
            {
                "type": "diff",
                "path": "/home/user/project/src/app/views.py",
                "oldText": _OLD,
                "newText": _OLD.replace("render(", "render_cached("),
            },
        ],
        "locations": [{"path": "/home/user/project/src/app/views.py", "line": 1}],
        "rawInput": {
            "file_path": "/home/user/project/src/app/views.py",
            "old_string": "return render(request",
            "new_string": "return render_cached(request",
            "replace_all": True,
        },
    }
)

LINES = {"chunk": CHUNK, "tool_call_update": TOOL_CALL_UPDATE}


# --- pipelines: each decodes `line` and returns it re-encoded --------------------------------


def acpd_two_pass(line: bytes) -> Pipeline:
    buf = bytearray()

    def go() -> bytearray:
        env = decode_envelope(line)
        session_id, update = acp.decode_session_notification(env.params)
        assert not isinstance(update, acp.UnknownUpdate)  # the peer branches on this too
        params = acp.SessionNotification(session_id=session_id, update=update)
        buf.clear()
        encode_line(Notification(method=acp.SESSION_UPDATE, params=params), buf)
        return buf  # ready to write to the pipe

    return go


def acpd_fast(line: bytes) -> Pipeline:
    buf = bytearray()

    def go() -> bytearray:
        params = acp.decode_update_line(line)
        assert params is not None
        buf.clear()
        encode_line(Notification(method=acp.SESSION_UPDATE, params=params), buf)
        return buf

    return go


def stdlib(line: bytes) -> Pipeline:
    def go() -> bytes:
        msg = json.loads(line)
        return (json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n").encode()

    return go


def sdk_pipelines(line: bytes) -> dict[str, Pipeline] | str:
    """The SDK's pipelines, or why they cannot run."""
    try:
        from acp import schema as sdk  # the official SDK (`agent-client-protocol`)
        from acp.utils import serialize_params
        from pydantic import BaseModel
    except ImportError as exc:
        return f"SDK not installed ({exc.name}): pip install -e '.[bench]'"

    def connection() -> bytes:
        msg = json.loads(line)  # acp._transport: a line read
        note = sdk.SessionNotification.model_validate(msg["params"])  # acp.router
        out = {"jsonrpc": "2.0", "method": msg["method"], "params": serialize_params(note)}
        return (json.dumps(out, separators=(",", ":")) + "\n").encode("utf-8")  # MessageSender

    class Envelope(BaseModel):
        jsonrpc: str
        method: str
        params: sdk.SessionNotification

    def pydantic_json() -> bytes:
        env = Envelope.model_validate_json(line)
        return env.model_dump_json(by_alias=True, exclude_none=True).encode() + b"\n"

    return {"sdk": connection, "sdk-json": pydantic_json}


# --- running ---------------------------------------------------------------------------------


def _check(label: str, fn: Pipeline, line: bytes) -> str:
    """'' if `fn` reproduces the line's JSON, else a note saying it does not."""
    out = fn()
    if not out.endswith(b"\n") or json.loads(out) != json.loads(line):
        return f"{label}: output differs from input"
    return ""


def _number_for(fn: Pipeline, target_s: float) -> int:
    """Calls per run so that one run takes about `target_s`."""
    stats = measure(fn, repeat=1, number=200, warmup=50)
    return max(100, int(target_s * 1e9 / stats["median"]))


def run(quick: bool) -> list[dict[str, Any]]:
    repeat, target_s = (3, 0.02) if quick else (15, 0.1)
    rows: list[dict[str, Any]] = []
    for label, line in LINES.items():
        pipelines: dict[str, Pipeline] = {
            "acpd-2pass": acpd_two_pass(line),
            "acpd-fast": acpd_fast(line),
            "stdlib": stdlib(line),
        }
        sdk = sdk_pipelines(line)
        sdk_note = sdk if isinstance(sdk, str) else ""
        if isinstance(sdk, dict):
            pipelines.update(sdk)
        notes = {name: _check(name, fn, line) for name, fn in pipelines.items()}
        numbers = {name: _number_for(fn, target_s) for name, fn in pipelines.items()}
        # Interleaved, round by round: every pipeline sees the same machine, so a busy moment
        # slows all of them rather than skewing a ratio.
        runs: dict[str, list[float]] = {name: [] for name in pipelines}
        for _ in range(repeat):
            for name, fn in pipelines.items():
                runs[name].append(measure(fn, repeat=1, number=numbers[name])["median"])
        stats: dict[str, dict[str, Any]] = {
            name: {"median": statistics.median(r), "min": min(r), "max": max(r), "runs": len(r)}
            for name, r in runs.items()
        }
        for name in pipelines:
            note = notes[name] or f"{len(line)} B line"
            rows.append(row(f"{label} {name}", "ns/op", stats[name], note))
        if sdk_note:
            rows.append({"name": f"{label} sdk", "unit": "", "note": f"skipped: {sdk_note}"})
        for ours in ("acpd-2pass", "acpd-fast"):
            rows.append(
                ratio_row(f"{label} stdlib/{ours}", stats["stdlib"], stats[ours], "target >= 5x")
            )
            for theirs in ("sdk", "sdk-json") if not sdk_note else ():
                rows.append(
                    ratio_row(
                        f"{label} {theirs}/{ours}", stats[theirs], stats[ours], "target >= 10x"
                    )
                )
    return rows
