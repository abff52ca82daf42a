"""`protocol.translate`: stored events and deltas as ACP updates, one translation for replay
and live. Every update it makes is checked against the ACP schema."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from protocol import acp
from protocol import translate as tr
from tests.protocol._schema import assert_valid

_seq = 0


def event(type_: str, **body: Any) -> tr.Event:
    global _seq
    _seq += 1
    raw = msgspec.json.encode({"seq": _seq, "type": type_, "ts": "2026-01-01T00:00:00Z", **body})
    return tr.decode_event(raw)


def wire(updates: list[acp.KnownUpdate]) -> list[dict[str, Any]]:
    """The updates as the client gets them, each checked against the schema."""
    out = []
    for u in updates:
        note = msgspec.json.decode(
            msgspec.json.encode(acp.SessionNotification(session_id="s", update=u))
        )
        assert_valid(note, "SessionNotification")
        out.append(note["update"])
    return out


def text(kind: str, t: str) -> dict[str, Any]:
    return {"sessionUpdate": kind, "content": {"type": "text", "text": t}}


def test_every_event_type_on_main_translates() -> None:
    t = tr.Translator()
    options = [{"option_id": "a", "name": "A", "kind": "allow_once"}]
    got = []
    for type_, body in [
        ("user_message", {"text": "hi"}),
        ("turn_started", {"prompt_seq": 1}),
        ("agent_thought", {"text": "hmm", "prompt_seq": 1}),
        (
            "plan",
            {
                "entries": [{"content": "x", "priority": "high", "status": "pending"}],
                "prompt_seq": 1,
            },
        ),
        (
            "tool_call",
            {
                "tool_call_id": "t",
                "title": "Read",
                "status": "in_progress",
                "kind": "read",
                "prompt_seq": 1,
            },
        ),
        ("tool_call", {"tool_call_id": "t", "title": "", "status": "completed", "prompt_seq": 1}),
        (
            "permission_requested",
            {
                "request": "p",
                "options": options,
                "title": "May I?",
                "prompt_seq": 1,
                "deadline": "x",
            },
        ),
        (
            "permission_resolved",
            {"request": "p", "outcome": "selected", "option": "a", "by": "user"},
        ),
        ("agent_message", {"text": "hello", "prompt_seq": 1}),
        ("turn_ended", {"prompt_seq": 1, "stop_reason": "end_turn"}),
        ("agent_restarted", {"reason": "idle", "session_loaded": True}),
        ("error", {"message": "boom"}),
    ]:
        got += wire(t.event(event(type_, **cast("dict[str, Any]", body)), live=False))
    assert got == [
        text("user_message_chunk", "hi"),
        text("agent_thought_chunk", "hmm"),
        {
            "sessionUpdate": "plan",
            "entries": [{"content": "x", "priority": "high", "status": "pending"}],
        },
        {
            "sessionUpdate": "tool_call",
            "toolCallId": "t",
            "title": "Read",
            "kind": "read",
            "status": "in_progress",
        },
        {"sessionUpdate": "tool_call_update", "toolCallId": "t", "status": "completed"},
        text("agent_message_chunk", "hello"),
    ]
    # Every type on main has an entry (a new one must be added here and to the table).
    main = [
        "user_message",
        "turn_started",
        "agent_message",
        "agent_thought",
        "tool_call",
        "plan",
        "permission_requested",
        "permission_resolved",
        "turn_ended",
        "agent_restarted",
        "error",
    ]
    assert set(main) <= tr.EVENT_TYPES.keys()


def test_text_streamed_as_deltas_is_not_repeated_by_its_event() -> None:
    t = tr.Translator()
    assert wire(t.delta(1, "message", "hel")) == [text("agent_message_chunk", "hel")]
    assert wire(t.delta(1, "thought", "hm")) == [text("agent_thought_chunk", "hm")]
    assert wire(t.delta(1, "message", "lo")) == [text("agent_message_chunk", "lo")]
    assert t.event(event("agent_message", text="hello", prompt_seq=1), live=True) == []
    assert t.event(event("agent_thought", text="hm", prompt_seq=1), live=True) == []
    # The next message starts afresh.
    assert wire(t.event(event("agent_message", text="new", prompt_seq=1), live=True)) == [
        text("agent_message_chunk", "new")
    ]
    assert t.delta(1, "tool", "progress") == []  # no tool call id: the stored call says it


def test_what_streamed_before_a_subscription_is_counted_once() -> None:
    t = tr.Translator()
    # Joined mid-message: the snapshot is emitted, the rest comes as deltas, the event adds
    # nothing.
    assert wire(t.streamed(2, "message", "abc")) == [text("agent_message_chunk", "abc")]
    assert wire(t.delta(2, "message", "d")) == [text("agent_message_chunk", "d")]
    assert t.event(event("agent_message", text="abcd", prompt_seq=2), live=True) == []
    # A resubscription after emitting "ab" of a message now at "abcde": only the rest.
    t.delta(3, "message", "ab")
    assert wire(t.streamed(3, "message", "abcde")) == [text("agent_message_chunk", "cde")]
    assert wire(t.event(event("agent_message", text="abcdef", prompt_seq=3), live=True)) == [
        text("agent_message_chunk", "f")
    ]
    # A message closed while we were away: its event carries what we missed.
    t.delta(4, "message", "xy")
    assert wire(t.event(event("agent_message", text="xyz", prompt_seq=4), live=True)) == [
        text("agent_message_chunk", "z")
    ]


def test_tool_calls_become_updates_once_known() -> None:
    t = tr.Translator()
    first = wire(
        t.event(event("tool_call", tool_call_id="a", title="", status="pending"), live=True)
    )
    assert first == [
        {"sessionUpdate": "tool_call", "toolCallId": "a", "title": "a", "status": "pending"}
    ]
    again = wire(
        t.event(event("tool_call", tool_call_id="a", title="Run", status="failed"), live=True)
    )
    assert again == [
        {"sessionUpdate": "tool_call_update", "toolCallId": "a", "title": "Run", "status": "failed"}
    ]


def test_tool_ids_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tr, "MAX_TOOL_IDS", 2)
    t = tr.Translator()
    for tid in "abc":
        t.event(event("tool_call", tool_call_id=tid, title=tid, status="pending"), live=True)
    again = t.event(event("tool_call", tool_call_id="a", title="a", status="done"), live=True)
    assert isinstance(again[0], acp.ToolCall)  # forgotten: a new tool call again
    again = t.event(event("tool_call", tool_call_id="c", title="c", status="done"), live=True)
    assert isinstance(again[0], acp.ToolCallUpdate)


def test_second_round_events() -> None:
    t = tr.Translator(notices=True)
    diff = {"type": "diff", "path": "/a", "oldText": "x", "new_text": "y"}
    block = {"type": "content", "content": {"type": "text", "text": "out"}}
    term = {"type": "terminal", "terminal_id": "T1"}
    got = []
    for type_, body in [
        ("usage", {"used": 1, "size": 9}),
        ("usage", {"used": 1}),  # ACP needs both: left out
        (
            "commands",
            {"commands": [{"name": "a"}, {"name": "b", "description": "B", "input_hint": "h"}]},
        ),
        ("mode", {"current": "plan"}),
        (
            "config_options",
            {"options": [{"id": "m", "name": "M", "type": "boolean", "currentValue": True}]},
        ),
        ("title", {"title": None}),
        (
            "tool_call_update",
            {"tool_call_id": "z", "content": [diff, block, term, {"type": "nope"}]},
        ),
    ]:
        got += wire(t.event(event(type_, **cast("dict[str, Any]", body)), live=True))
    assert got == [
        {"sessionUpdate": "usage_update", "used": 1, "size": 9},
        {
            "sessionUpdate": "available_commands_update",
            "availableCommands": [
                {"name": "a", "description": ""},
                {"name": "b", "description": "B", "input": {"hint": "h"}},
            ],
        },
        {"sessionUpdate": "current_mode_update", "currentModeId": "plan"},
        {
            "sessionUpdate": "config_option_update",
            "configOptions": [{"id": "m", "name": "M", "type": "boolean", "currentValue": True}],
        },
        {"sessionUpdate": "session_info_update", "title": None},
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "z",
            "content": [
                {"type": "diff", "path": "/a", "newText": "y", "oldText": "x"},
                {"type": "content", "content": {"type": "text", "text": "out"}},
                {"type": "terminal", "terminalId": "T1"},
            ],
        },
    ]


def test_notices_are_live_only_and_only_for_clients_that_take_them() -> None:
    restarted = event("agent_restarted", reason="crashed", session_loaded=False)
    ended = event("turn_ended", prompt_seq=1, stop_reason="agent_exited", detail="status 3")
    error = event("error", message="agent exited", stderr="Traceback...")
    for t, live in ((tr.Translator(), True), (tr.Translator(notices=True), False)):
        assert [t.event(e, live=live) for e in (restarted, ended, error)] == [[], [], []]
    t = tr.Translator(notices=True)
    got = [u for e in (restarted, ended, error) for u in wire(t.event(e, live=True))]
    assert got == [
        {
            "sessionUpdate": "notice",
            "severity": "info",
            "title": "agent restarted (crashed)",
            "description": "new session: earlier context is lost",
        },
        {
            "sessionUpdate": "notice",
            "severity": "warning",
            "title": "turn ended: agent_exited",
            "description": "status 3",
        },
        {
            "sessionUpdate": "notice",
            "severity": "error",
            "title": "agent exited",
            "description": "Traceback...",
        },
    ]
    assert t.event(event("turn_ended", prompt_seq=1, stop_reason="cancelled"), live=True) == []


def test_unknown_types_and_odd_bodies_give_nothing() -> None:
    t = tr.Translator()
    assert t.event(event("brand_new", x=1), live=True) == []
    odd = event("user_message", text=5)
    assert odd.body is None
    assert t.event(odd, live=True) == []
    with pytest.raises(msgspec.DecodeError):
        tr.decode_event(b'{"type": "user_message"}')
    with pytest.raises(msgspec.DecodeError):
        tr.decode_event(b"not json")


def test_a_user_message_is_history_when_it_is_prompted_with_its_edits() -> None:
    """Queued messages are not history yet: each is shown when its turn starts, with the text
    it was prompted with, or when the agent takes it into a running turn (a steer)."""
    t = tr.Translator()
    first = event("user_message", text="first")
    second = event("user_message", text="second, unedited")
    steer = event("user_message", text="also: use tabs", steer=True)
    gone = event("user_message", text="removed before it ran")
    got: list[dict[str, Any]] = []
    for e in (first, second, steer, gone):
        got += wire(t.event(e, live=True))
    assert got == []  # all queued
    got += wire(t.event(event("turn_started", prompt_seq=first.seq), live=True))
    got += wire(t.event(event("user_message_steered", message_seq=steer.seq, prompt_seq=first.seq,
                              outcome="injected"), live=True))  # fmt: skip
    edited = event("user_message_edited", message_seq=second.seq, text="second, edited")
    got += wire(t.event(edited, live=True))
    got += wire(t.event(event("queue_reordered", order=[second.seq, gone.seq]), live=True))
    got += wire(t.event(event("turn_started", prompt_seq=second.seq), live=True))
    assert got == [
        text("user_message_chunk", "first"),
        text("user_message_chunk", "also: use tabs"),
        text("user_message_chunk", "second, edited"),
    ]
    # Nothing twice: a turn started again (after a restart, say) shows no message again.
    assert t.event(event("turn_started", prompt_seq=first.seq), live=True) == []
