"""Issue 17 in the command line, against the fake daemon: `send --steer`, chat's `/steer`,
`queue --edit` and `--move`, and how streams show steers, edits and moves."""

from __future__ import annotations

import io
import os
from typing import Any, TextIO

import pytest

from daemon.cli import render
from tests.cli.fakeserver import Conn, Fail, ev, serving
from tests.cli.test_everyday import PENDING, acpd
from tests.cli.test_streams import (  # noqa: F401 (fixtures)
    CID,
    Watch,
    base_handlers,
    main,
    out,
    stdin_pipe,
)

SENT = {"seq": 12, "queued": 0, "number": 5, "resumed": False}


@pytest.mark.parametrize(
    ("result", "said"),
    [
        ({**SENT, "steered": True}, "steered (message 5 went into the running turn)\n"),
        (
            {**SENT, "queued": 1, "steered": False},
            "sent (message 5, next in line: the agent did not take it into the running turn)\n",
        ),
        (
            {**SENT, "steered": False},
            "sent (message 5, starts now: no turn was running to steer)\n",
        ),
    ],
)
def test_send_steer(capsys: pytest.CaptureFixture[str], result: dict[str, Any], said: str) -> None:
    with serving({"messages/send": lambda c, p: result}) as server:
        argv = ["send", "c1", "go", "left", "--steer", "--socket", server.path]
        assert acpd(capsys, *argv)[:2] == (0, said)
        sent = ("messages/send", {"id": "c1", "text": "go left", "steer": True})
        assert server.requests == [sent]


@pytest.mark.parametrize("other", ["--no-run", "--interrupt"])
def test_send_steer_is_for_now(capsys: pytest.CaptureFixture[str], other: str) -> None:
    code, _, err = acpd(capsys, "send", "c1", "x", "--steer", other, "--socket", "/nowhere")
    assert code == 2
    assert "--steer goes with neither --no-run nor --interrupt" in err


def test_queue_edit_and_move_take_the_numbers_people_see(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handlers = {
        "messages/queue": lambda c, p: PENDING,  # #2 at seq 7, #3 at seq 9
        "messages/edit": lambda c, p: {},
        "messages/move": lambda c, p: {"order": [9, 7]},
    }
    with serving(handlers) as server:
        path = server.path
        code, printed, _ = acpd(capsys, "queue", "c1", "--edit", "3", "say it", "--socket", path)
        assert (code, printed) == (0, "edited message 3\n")
        assert server.requests[-1] == ("messages/edit", {"id": "c1", "seq": 9, "text": "say it"})
        code, printed, _ = acpd(capsys, "queue", "c1", "--move", "3", "--socket", path)
        assert (code, printed) == (0, "moved message 3; the queue: #3 #2\n")
        assert server.requests[-1] == ("messages/move", {"id": "c1", "seq": 9})
        code, printed, _ = acpd(
            capsys, "queue", "c1", "--move", "3", "--before", "2", "--json", "--socket", path
        )
        assert (code, printed) == (0, '{"order":[9,7]}\n')
        assert server.requests[-1] == ("messages/move", {"id": "c1", "seq": 9, "before": 7})
        code, _, err = acpd(capsys, "queue", "c1", "--edit", "4", "x", "--socket", path)
        assert (code, err) == (1, "acpd: error: no message 4 in the queue of c1 (queued: 2, 3)\n")


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        ("message 9 was already prompted", "message 3 has started already: too late to edit"),
        (
            "message 9 is being steered into the running turn",
            "message 3 is being steered into the running turn: try again shortly",
        ),
    ],
)
def test_queue_edit_refused(capsys: pytest.CaptureFixture[str], refusal: str, said: str) -> None:
    def edit(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        raise Fail(-32003, refusal)

    handlers = {"messages/queue": lambda c, p: PENDING, "messages/edit": edit}
    with serving(handlers) as server:
        code, _, err = acpd(capsys, "queue", "c1", "--edit", "3", "x", "--socket", server.path)
    assert (code, err) == (1, f"acpd: error: {said}\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--edit", "3"], "argument --edit: expected 2 arguments"),
        (["--edit", "three", "x"], "--edit N TEXT: N is a message number, not 'three'"),
        (["some"], "unrecognized arguments: some"),
        (["--edit", "3", "x", "--move", "2"], "give one of --remove, --edit and --move"),
        (["--remove", "3", "--move", "2"], "give one of --remove, --edit and --move"),
        (["--before", "2"], "--before goes with --move"),
        (["--edit", "3", " "], "the message is empty"),
        (["--move", "0"], "argument --move: must be at least 1, not 0"),
    ],
)
def test_queue_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = acpd(capsys, "queue", "c1", *argv, "--socket", "/nowhere")
    assert code == 2
    assert message in err


def test_chat_steer(out: Watch, stdin_pipe: tuple[TextIO, int]) -> None:  # noqa: F811
    """`/steer TEXT` says what happened; a steer taken has no turn of its own to wait for, so a
    piped chat ends without one."""
    stdin, w = stdin_pipe
    os.write(w, b"/steer go left\n/steer\n")
    os.close(w)
    handlers = {**base_handlers(), "messages/send": lambda c, p: {**SENT, "steered": True}}
    with serving(handlers) as server:
        code = main(["chat", CID, "--socket", server.path], out, stdin=stdin)
        sent = ("messages/send", {"id": CID, "text": "go left", "steer": True})
        assert server.requests[-1] == sent
    assert code == 0
    assert out.getvalue().splitlines() == [
        "(steered (message 5 went into the running turn))",
        "(/steer TEXT: into the running turn if the agent takes it)",
    ]


def test_streams_show_steers_edits_and_moves() -> None:
    shown = io.StringIO()
    renderer = render.Renderer(shown)
    for event in (
        ev(3, "user_message", text="b", number=2),
        ev(4, "user_message", text="c", number=3),
        ev(5, "user_message", text="left", number=4, steer=True),
        ev(6, "user_message_steered", message_seq=5, prompt_seq=1, outcome="injected"),
        ev(7, "user_message_edited", message_seq=4, text="c, better"),
        ev(8, "queue_reordered", order=[4, 3, 99]),
    ):
        renderer.event(event)
    assert shown.getvalue().splitlines() == [
        "#2 > b",
        "#3 > c",
        "#4 > left (steer)",
        "(message 4 went into the running turn)",
        "(message 3 edited: c, better)",
        "(queue reordered: #3 #2 seq 99)",
    ]
