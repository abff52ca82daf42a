"""Rendering events and deltas for people: each message once, compact one-liners."""

from __future__ import annotations

import io
from typing import Any

import pytest

from daemon.cli import views
from daemon.cli.client import Notice
from daemon.cli.render import Renderer, Style
from tests.cli.fakeserver import conv, ev


def run(*items: dict[str, Any], style: Style | None = None) -> str:
    out = io.StringIO()
    r = Renderer(out, style)
    for item in items:
        if "kind" in item:
            r.notice(Notice("conversation/delta", item))
        elif "last_seq" in item:
            r.notice(Notice("conversation/lagged", item))
        else:
            r.notice(Notice("conversation/event", {"id": "c", "event": item}))
    r.close()
    return out.getvalue()


def delta(text: str, prompt_seq: int = 1, kind: str = "message") -> dict[str, Any]:
    return {"id": "c", "prompt_seq": prompt_seq, "kind": kind, "text": text}


def test_live_message_is_printed_once_from_its_deltas() -> None:
    out = run(
        ev(1, "user_message", text="hi"),
        ev(2, "turn_started", prompt_seq=1),
        delta("Hel"),
        delta("lo!"),
        ev(3, "agent_message", text="Hello!", prompt_seq=1),
        ev(4, "turn_ended", prompt_seq=1, stop_reason="end_turn"),
    )
    assert out == "> hi\nHello!\n"


def test_replay_prints_the_event_text() -> None:
    out = run(
        ev(2, "turn_started", prompt_seq=1),
        ev(3, "agent_message", text="Hello!", prompt_seq=1),
        ev(4, "turn_ended", prompt_seq=1, stop_reason="end_turn"),
    )
    assert out == "Hello!\n"


def test_text_around_a_tool_call_and_one_event_per_segment() -> None:
    out = run(
        delta("Let me look."),
        ev(3, "agent_message", text="Let me look.", prompt_seq=1),
        ev(4, "tool_call", tool_call_id="t1", title="Read a.py", status="pending", prompt_seq=1),
        ev(5, "tool_call", tool_call_id="t1", title="", status="completed", prompt_seq=1),
        delta("Done."),
        ev(6, "agent_message", text="Done.", prompt_seq=1),
    )
    assert out == (
        "Let me look.\n  - tool: Read a.py [pending]\n  - tool: Read a.py [completed]\nDone.\n"
    )


def test_joined_mid_message_gets_the_full_text_once_more() -> None:
    out = run(delta("lo!"), ev(3, "agent_message", text="Hello!", prompt_seq=1))
    assert out == "lo!\n(missed part of the stream; in full:)\nHello!\n"


def test_lag_is_said_and_the_full_message_follows() -> None:
    out = run(
        delta("Hel"),
        {"id": "c", "last_seq": 2},
        ev(3, "agent_message", text="Hello!", prompt_seq=1),
    )
    assert "catching up" in out
    assert out.endswith("(missed part of the stream; in full:)\nHello!\n")


def test_thoughts_and_message_are_kept_apart_and_deduped_per_kind() -> None:
    out = run(
        delta("hmm", kind="thought"),
        delta("Answer"),
        ev(3, "agent_message", text="Answer", prompt_seq=1),
        ev(4, "agent_thought", text="hmm", prompt_seq=1),
    )
    assert out == "(thinking) hmm\nAnswer\n"


def test_thoughts_are_dimmed_on_a_terminal() -> None:
    out = run(delta("hmm", kind="thought"), style=Style(True))
    assert out == "\x1b[2m(thinking) \x1b[0m\x1b[2mhmm\x1b[0m\n"


def test_dedupe_is_per_turn() -> None:
    out = run(
        delta("one", prompt_seq=1),
        ev(3, "agent_message", text="one", prompt_seq=1),
        ev(5, "agent_message", text="two", prompt_seq=4),  # replayed, never streamed
    )
    assert out == "one\ntwo\n"


def test_own_user_messages_are_not_echoed() -> None:
    out = io.StringIO()
    r = Renderer(out)
    r.own_seqs.add(5)
    r.event(ev(5, "user_message", text="mine"))
    r.event(ev(6, "user_message", text="theirs\nline two"))
    assert out.getvalue() == "> theirs\n  line two\n"


def test_one_liners_for_plan_permission_turn_end_restart_error() -> None:
    entries = [
        {"content": "read", "status": "completed", "priority": "high"},
        {"content": "write", "status": "in_progress", "priority": "high"},
        {"content": "test", "status": "pending", "priority": "low"},
    ]
    options = [
        {"option_id": "allow", "name": "Allow once", "kind": "allow_once"},
        {"option_id": "deny", "name": "Reject", "kind": "reject_once"},
    ]
    out = run(
        ev(1, "plan", entries=entries, prompt_seq=1),
        ev(2, "permission_requested", request="r1", options=options, title="Run ls", prompt_seq=1),
        ev(3, "permission_resolved", request="r1", outcome="selected", option="allow", by="user"),
        ev(4, "turn_ended", prompt_seq=1, stop_reason="cancelled"),
        ev(5, "agent_restarted", reason="crashed", session_loaded=False),
        ev(6, "error", message="boom"),
        ev(7, "something_new"),
    )
    assert out.splitlines() == [
        "  - plan: [x] read | [~] write | [ ] test",
        "? permission r1: Run ls",
        "    1) Allow once  [allow]",
        "    2) Reject  [deny]",
        "  - permission r1: selected allow by user",
        "(turn ended: cancelled)",
        "(agent restarted: crashed; new session, context lost)",
        "error: boom",
        "(something_new)",
    ]


def test_tool_output_delta_is_one_dim_line() -> None:
    assert run(delta("line 1\nline 2\n", kind="tool")) == "    | line 1 (+1 lines)\n"


def test_partial_recovered_message_is_marked() -> None:
    out = run(ev(3, "agent_message", text="Hal", prompt_seq=1, partial=True))
    assert out == "Hal [partial: recovered after a crash]\n"


def test_style_off_for_pipes_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Style.for_stream(Tty()).enabled
    assert not Style.for_stream(io.StringIO()).enabled
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.for_stream(Tty()).enabled


def test_ago() -> None:
    now = 1735787045.0  # 2025-01-02T03:04:05Z
    assert views.ago("2025-01-02T03:04:05.000Z", now) == "0s"
    assert views.ago("2025-01-02T03:03:05Z", now) == "1m"
    assert views.ago("2025-01-01T03:04:05Z", now) == "1d"
    assert views.ago("garbage", now) == "garbage"


def test_conversations_table_cuts_titles_to_the_width() -> None:
    convs = [conv("aaaa", title="x" * 200), conv("bb", status="running", queued=2)]
    text = views.conversations(convs, width=80)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "QUEUED", "UPDATED", "AGENT", "TITLE"]
    assert lines[1].startswith("aaaa  idle")
    assert all(len(line) <= 80 for line in lines)
    assert lines[2].split()[:3] == ["bb", "running", "2"]
    assert "x" * 200 in views.conversations(convs)  # not a terminal: nothing cut


def test_waiting_conversations_show_their_place_in_line() -> None:
    convs = [conv("aaaa", status="waiting", slot_position=2), conv("bb", slot_position=None)]
    lines = views.conversations(convs).splitlines()
    assert lines[1].split()[:3] == ["aaaa", "waiting", "#2"]
    assert lines[2].split()[:2] == ["bb", "idle"]


def test_status_shows_slots_and_agents_memory() -> None:
    result = {"pid": 2, "slots": {"used": 3, "max": 8, "waiting": 2}, "agents_rss": 3 << 29}
    shown = views.status(result, "/s")
    assert "slots:      3 of 8 agent slots used, 2 conversation(s) waiting" in shown
    assert "agents_rss: 1.5 GiB" in shown
    slots = {"used": 8, "max": 8, "waiting": 1, "starting": 2, "max_starting": 2}
    storm = views.status({"slots": {**slots, "starts_waiting": 3}}, "/s")
    assert (
        "slots:  8 of 8 agent slots used, 2 starting (at most 2 at once), 3 waiting to start, "
        "1 conversation(s) waiting"
    ) in storm
    idle = views.status({"slots": {"used": 0, "max": 8, "waiting": 0}, "agents_rss": 0}, "/s")
    assert "0 of 8 agent slots used\n" in idle
    assert "agents_rss: 0 B" in idle
    assert [views.size(n) for n in (512, 1536, 5 << 20)] == ["512 B", "1.5 KiB", "5.0 MiB"]
    counted = views.status({"counters": {"requests": 2, "request_errors": 0}}, "/s")
    assert "counters: requests 2, request_errors 0" in counted


def test_records() -> None:
    assert views.queue({"pending": []}) == "(nothing queued)"
    assert views.queue({"pending": [{"seq": 4, "text": "a\nb", "number": 2}]}) == (
        "   #2  a (+1 lines)"
    )
    assert views.queue({"pending": [{"seq": 4, "text": "a"}]}) == "seq 4  a"  # an older daemon
    shown = views.conversation({"conversation": conv(live=True)})
    assert "live:       yes" in shown
    assert "cwd:        /tmp" in shown
    agents = views.agents({"agents": [{"name": "demo", "command": ["python", "-m", "x y"]}]})
    assert agents.splitlines()[1] == "demo   python -m 'x y'"
