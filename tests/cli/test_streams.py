"""`send --follow`, `follow` and `chat` against the fake socket (threads; real, short time)."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

import pytest

from daemon.cli import commands as cli
from tests.cli.fakeserver import DEFER, Conn, Fail, FakeServer, conv, ev, hang_guard, serving

CID = "c0ffee01full"


class Watch(io.StringIO):
    """A stdout that lets a test thread wait for some text to have been written."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def write(self, s: str) -> int:
        with self.changed:
            n = super().write(s)
            self.changed.notify_all()
        return n

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: text in self.getvalue(), timeout), self.getvalue()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def out() -> Watch:
    return Watch()


@pytest.fixture
def err() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def stdin_pipe() -> Iterator[tuple[TextIO, int]]:
    """A pipe for stdin (not a terminal): its read end as a file, and its write end."""
    r, w = os.pipe()
    with os.fdopen(r, "r") as reader:
        yield reader, w
    try:
        os.close(w)
    except OSError:
        pass


def main(
    argv: list[str], out: TextIO, err: TextIO | None = None, stdin: TextIO | None = None
) -> int:
    """`cli.main` with these streams as sys's (pytest's capture swaps them back between phases)."""
    saved = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err or io.StringIO()
    sys.stdin = stdin or io.StringIO("")
    try:
        with hang_guard():
            return cli.main(argv)
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved


def in_thread(fn: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT as a terminal's Ctrl-C meets a Python program: KeyboardInterrupt, whatever the
    suite was started with (a background job, or some CI runners, ignore SIGINT)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def ctrl_c() -> None:
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def ctrl_c_after(server: FakeServer, method: str) -> None:
    server.wait_for(method)
    ctrl_c()


def wait_sigint_handled() -> None:
    """Until chat has installed its own SIGINT handler (a bounded poll)."""
    deadline = time.monotonic() + 10
    while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        assert time.monotonic() < deadline, "chat never took SIGINT over"
        time.sleep(0.001)


def base_handlers(last_seq: int = 4, replay: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    def subscribe(conn: Conn, params: dict[str, Any]) -> object:
        events = replay or []
        conn.reply(conn.current_id, {"through_seq": max([last_seq] + [e["seq"] for e in events])})
        for event in events:
            conn.event(CID, event)
        return DEFER

    return {
        "conversations/get": lambda c, p: {"conversation": conv(CID, last_seq=last_seq)},
        "conversations/subscribe": subscribe,
    }


def turn(conn: Conn, seq: int, text: str, first: int) -> None:
    """What the daemon streams for one turn: events from seq `first` on, and deltas."""
    conn.event(CID, ev(first, "turn_started", prompt_seq=seq))
    half = len(text) // 2
    conn.delta(CID, seq, text[:half])
    conn.delta(CID, seq, text[half:])
    conn.event(CID, ev(first + 1, "agent_message", text=text, prompt_seq=seq))
    conn.event(CID, ev(first + 2, "turn_ended", prompt_seq=seq, stop_reason="end_turn"))


# --- send --follow ------------------------------------------------------------------------------


def send_handlers() -> dict[str, Any]:
    def send(conn: Conn, params: dict[str, Any]) -> object:
        conn.reply(conn.current_id, {"seq": 6, "queued": 1, "number": 3})
        conn.event(CID, ev(5, "user_message", text="someone else's"))
        conn.event(CID, ev(6, "user_message", text=params["text"]))
        turn(conn, 5, "not ours", 7)  # the turn ahead of ours: not shown
        turn(conn, 6, "Hello world", 10)
        conn.event(CID, ev(13, "user_message", text="after"))  # never read: we stopped
        return DEFER

    return {**base_handlers(), "messages/send": send}


def test_send_follow_streams_only_its_turn(out: Watch, err: io.StringIO) -> None:
    with serving(send_handlers()) as server:
        code = main(["send", "c0f", "hi", "--follow", "--socket", server.path], out, err)
    assert (code, err.getvalue()) == (0, "")
    assert out.getvalue() == "sent (message 3, queued: 1 turn ahead of it)\nHello world\n"
    assert server.requests == [
        ("conversations/get", {"id": "c0f"}),
        ("conversations/subscribe", {"id": CID, "after_seq": 4, "deltas": True}),
        ("messages/send", {"id": CID, "text": "hi", "run": True, "interrupt": False}),
    ]


def test_send_follow_json_lines(out: Watch) -> None:
    with serving(send_handlers()) as server:
        code = main(["send", CID, "hi", "--follow", "--json", "--socket", server.path], out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0
    assert lines[0] == {"seq": 6, "queued": 1, "number": 3}
    assert [x["method"] for x in lines[1:]] == ["conversation/event"] * 2 + [
        "conversation/delta"
    ] * 2 + ["conversation/event"] * 2
    assert lines[1]["params"]["event"]["seq"] == 6
    assert lines[-1] == {
        "method": "conversation/event",
        "params": {"id": CID, "event": ev(12, "turn_ended", prompt_seq=6, stop_reason="end_turn")},
    }


OPTIONS = [
    {"option_id": "allow", "name": "Allow", "kind": "allow_once"},
    {"option_id": "deny", "name": "Reject", "kind": "reject_once"},
]


def permission_handlers() -> dict[str, Any]:
    def send(conn: Conn, params: dict[str, Any]) -> object:
        conn.reply(conn.current_id, {"seq": 5, "queued": 0})
        conn.event(CID, ev(6, "turn_started", prompt_seq=5))
        conn.event(
            CID,
            ev(7, "permission_requested", request="r1", options=OPTIONS, title="rm", prompt_seq=5),
        )
        return DEFER

    def respond(conn: Conn, params: dict[str, Any]) -> object:
        conn.reply(conn.current_id, {})
        conn.event(CID, ev(8, "permission_resolved", request="r0", outcome="selected"))  # not ours
        conn.event(CID, ev(9, "permission_resolved", request="r1", outcome="selected", by="user"))
        conn.event(CID, ev(10, "turn_ended", prompt_seq=5, stop_reason="end_turn"))
        return DEFER

    return {**base_handlers(), "messages/send": send, "permissions/respond": respond}


def test_send_follow_asks_for_permission_on_a_terminal(
    out: Watch,
) -> None:
    with serving(permission_handlers()) as server:
        argv = ["send", CID, "go", "--follow", "--socket", server.path]
        code = main(argv, out, stdin=Tty("2\n"))
    assert code == 0
    assert out.getvalue().endswith(
        "    2) Reject  [deny]\nanswer 1-2 (Enter: leave it open): "
        "  - permission r1: selected by user\n"
    )
    assert ("permissions/respond", {"id": CID, "request": "r1", "option": "deny"}) in (
        server.requests
    )


def test_send_follow_without_terminal_tells_how_to_answer(
    out: Watch,
) -> None:
    with serving(permission_handlers()) as server:

        def answered_elsewhere() -> None:
            out.wait_for("OPTION\n")
            server.conns[0].event(CID, ev(9, "turn_ended", prompt_seq=5, stop_reason="end_turn"))

        in_thread(answered_elsewhere)
        code = main(["send", CID, "go", "--follow", "--socket", server.path], out)
    assert code == 0
    hint = f"    answer with: acpd permit --socket {server.path} {CID} r1 OPTION\n"
    assert out.getvalue().endswith(hint)
    assert "permissions/respond" not in server.methods()


# --- follow -------------------------------------------------------------------------------------


def test_follow_replays_then_streams_and_defers_permissions_to_after_the_replay(
    out: Watch, err: io.StringIO
) -> None:
    replay = [
        ev(1, "user_message", text="first"),
        ev(2, "permission_requested", request="r0", options=OPTIONS, title="a", prompt_seq=1),
        ev(3, "permission_resolved", request="r0", outcome="selected", option="allow"),
        ev(4, "agent_message", text="done before", prompt_seq=1),
        ev(5, "permission_requested", request="r1", options=OPTIONS, title="b", prompt_seq=1),
    ]
    handlers = base_handlers(last_seq=0, replay=replay)

    def subscribe(conn: Conn, params: dict[str, Any]) -> object:
        handlers["_sub"](conn, params)
        turn(conn, 6, "live text", 7)
        conn.sock.shutdown(2)  # the daemon goes away: follow ends with an error
        return DEFER

    handlers["_sub"], handlers["conversations/subscribe"] = (
        handlers["conversations/subscribe"],
        subscribe,
    )
    with serving(handlers) as server:
        code = main(["follow", "c0f", "--socket", server.path], out, err)
    assert code == 1
    assert err.getvalue() == "acpd: error: acpd closed the connection\n"
    text = out.getvalue()
    assert text.count("answer with:") == 1
    assert f"{CID} r1 OPTION" in text
    assert text.endswith("done before\n? permission r1: b\n    1) Allow  [allow]\n"
                         "    2) Reject  [deny]\n"
                         f"    answer with: acpd permit --socket {server.path} {CID} r1 OPTION\n"
                         "live text\n")  # fmt: skip
    assert server.requests[0] == (
        "conversations/subscribe",
        {"id": "c0f", "after_seq": 0, "deltas": True},
    )


@pytest.mark.usefixtures("ctrl_c_raises")
def test_follow_from_negative_counts_back_from_the_end(out: Watch) -> None:
    with serving(base_handlers(last_seq=30)) as server:
        in_thread(ctrl_c_after, server, "conversations/subscribe")
        code = main(["follow", CID, "--from", "-10", "--socket", server.path], out)
    assert code == 130
    assert server.requests[1][1]["after_seq"] == 20


@pytest.mark.usefixtures("ctrl_c_raises")
def test_follow_ctrl_c_exits_130_quietly(out: Watch, err: io.StringIO) -> None:
    with serving(base_handlers()) as server:
        in_thread(ctrl_c_after, server, "conversations/subscribe")
        code = main(["follow", CID, "--json", "--socket", server.path], out, err)
    assert (code, out.getvalue(), err.getvalue()) == (130, "", "")


# --- chat ---------------------------------------------------------------------------------------


def chat_handlers() -> dict[str, Any]:
    def send(conn: Conn, params: dict[str, Any]) -> object:
        conn.reply(conn.current_id, {"seq": 1, "queued": 0})
        conn.event(CID, ev(1, "user_message", text=params["text"]))
        turn(conn, 1, "Hi there!", 2)
        return DEFER

    return {
        **base_handlers(last_seq=0),
        "conversations/create": lambda c, p: {"conversation": conv(CID)},
        "messages/send": send,
    }


def test_chat_new_conversation_from_a_pipe_waits_for_the_reply(
    out: Watch, err: io.StringIO, stdin_pipe: tuple[TextIO, int]
) -> None:
    stdin, w = stdin_pipe
    os.write(w, b"hello\n")
    os.close(w)
    with serving(chat_handlers()) as server:
        code = main(["chat", "--title", "T", "--socket", server.path], out, err, stdin)
    assert code == 0
    assert out.getvalue() == "> hello\nHi there!\n"
    assert err.getvalue() == f"new conversation {CID} with agent demo\n"
    assert server.methods() == ["conversations/create", "conversations/subscribe", "messages/send"]
    assert server.requests[0][1]["title"] == "T"


def test_chat_answers_permission_by_number_and_runs_slash_commands(
    out: Watch, stdin_pipe: tuple[TextIO, int]
) -> None:
    stdin, w = stdin_pipe
    replay = [ev(1, "permission_requested", request="r1", options=OPTIONS, title="x", prompt_seq=1)]
    handlers = {
        **base_handlers(last_seq=1, replay=replay),
        "permissions/respond": lambda c, p: {},
        "messages/queue": lambda c, p: {"pending": [{"seq": 9, "text": "later"}]},
    }
    with serving(handlers) as server:

        def type_lines() -> None:
            out.wait_for("(type 1-2 to answer permission r1)")
            os.write(w, b"2\n/queue\n")
            out.wait_for("later")
            os.write(w, b"/quit\n")

        in_thread(type_lines)
        code = main(["chat", CID, "--socket", server.path], out, stdin=stdin)
    assert code == 0
    assert server.methods() == [
        "conversations/get",
        "conversations/subscribe",
        "permissions/respond",
        "messages/queue",
    ]
    assert server.requests[2][1] == {"id": CID, "request": "r1", "option": "deny"}
    assert server.requests[1][1]["after_seq"] == 0  # last 20 of 1 event


@pytest.mark.usefixtures("ctrl_c_raises")
def test_chat_ctrl_c_interrupts_a_turn_then_leaves_when_idle(
    out: Watch, stdin_pipe: tuple[TextIO, int]
) -> None:
    def interrupt(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        conn.event(CID, ev(5, "turn_ended", prompt_seq=3, stop_reason="cancelled"))
        return {"interrupted": True}

    handlers = {
        **base_handlers(),
        "conversations/get": lambda c, p: {"conversation": conv(CID, last_seq=4, status="running")},
        "turns/interrupt": interrupt,
    }
    with serving(handlers) as server:

        def press() -> None:
            wait_sigint_handled()
            ctrl_c()
            out.wait_for("(turn ended: cancelled)")
            ctrl_c()

        in_thread(press)
        code = main(["chat", CID, "--socket", server.path], out, stdin=stdin_pipe[0])
    assert code == 0
    assert server.methods().count("turns/interrupt") == 1  # idle: left without pausing
    assert "(interrupted; the queue is paused" in out.getvalue()


@pytest.mark.usefixtures("ctrl_c_raises")
def test_chat_ctrl_c_when_idle_leaves_at_once(out: Watch, stdin_pipe: tuple[TextIO, int]) -> None:
    with serving(base_handlers()) as server:

        def press() -> None:
            wait_sigint_handled()
            ctrl_c()

        in_thread(press)
        code = main(["chat", CID, "--socket", server.path], out, stdin=stdin_pipe[0])
    assert code == 0
    assert "turns/interrupt" not in server.methods()


def test_chat_survives_a_refused_message(out: Watch, stdin_pipe: tuple[TextIO, int]) -> None:
    def send(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        raise Fail(-32602, "invalid params: text too long")

    stdin, w = stdin_pipe
    os.write(w, b"too much\n/quit\n")
    with serving({**base_handlers(), "messages/send": send}) as server:
        code = main(["chat", CID, "--socket", server.path], out, stdin=stdin)
    assert code == 0
    assert out.getvalue() == "(error: invalid params: text too long)\n"


def test_chat_json_prints_json_objects_only(
    out: Watch, err: io.StringIO, stdin_pipe: tuple[TextIO, int]
) -> None:
    """With --json, stdout is one JSON object per line: notes such as "(queued: 1 turn ahead)"
    and the /commands' messages go to stderr, or come as the methods' results."""
    stdin, w = stdin_pipe
    os.write(w, b"hello\n/queue\n/interrupt\n/resume\n/help\n/quit\n")
    handlers = {
        **base_handlers(),
        "messages/send": lambda c, p: {"seq": 5, "queued": 1},
        "messages/queue": lambda c, p: {"pending": [{"seq": 5, "text": "hello"}]},
        "turns/interrupt": lambda c, p: {"interrupted": False},
        "conversations/resume": lambda c, p: {},
    }
    with serving(handlers) as server:
        code = main(["chat", CID, "--json", "--socket", server.path], out, err, stdin)
    assert code == 0
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"seq": 5, "queued": 1},
        {"pending": [{"seq": 5, "text": "hello"}]},
        {"interrupted": False},
        {},
    ]
    assert "Slash commands: /interrupt, /resume" in err.getvalue()  # /help: for people, on stderr
    assert server.methods()[-1] == "conversations/resume"


def test_chat_says_what_each_line_did(out: Watch, stdin_pipe: tuple[TextIO, int]) -> None:
    """For people: a queued message's number and what runs first, the queue by number, and
    what an interrupt and a resume leave true."""
    stdin, w = stdin_pipe
    os.write(w, b"hello\n/queue\n/interrupt\n/resume\n/quit\n")
    handlers = {
        **base_handlers(),
        "messages/send": lambda c, p: {"seq": 9, "queued": 2, "number": 4, "resumed": True},
        "messages/queue": lambda c, p: {"pending": [{"seq": 9, "text": "hello", "number": 4}]},
        "turns/interrupt": lambda c, p: {"interrupted": False},
        "conversations/resume": lambda c, p: {"resumed": True, "queued": 1},
    }
    with serving(handlers) as server:
        code = main(["chat", CID, "--socket", server.path], out, stdin=stdin)
    assert code == 0
    assert out.getvalue().splitlines() == [
        "(message 4 queued: 2 turns ahead; the queue runs again, in order)",
        "   #4  hello",
        "(no turn was running; the queue is paused until /resume or your next message; "
        "either way the queued messages run first, in order)",
        "(resumed: 1 queued)",
    ]
