"""Issue 19 in the command line, against the fake daemon: ids as `ls` shows them, what each
command says it did, open permission requests in `show` and `permit`, one error style."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import commands as cli
from daemon.cli import render, views
from tests.cli.fakeserver import Conn, Fail, conv, hang_guard, serving


def acpd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with hang_guard():
        code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- ids as `ls` shows them ---------------------------------------------------------------------

CONVS = [
    conv("k3x9a0b1c2d3e4f5g6h7", short_id="k3x9"),
    conv("c0001m8y8abcdefghjkmn", short_id="c0001m8y8ab", status="running"),
]


def test_ls_highlights_the_shortest_unique_prefix_on_a_terminal() -> None:
    text = views.conversations(CONVS, style=render.Style(True))
    rows = text.splitlines()[1:]
    bold = "\x1b[1;35m"
    dim = "\x1b[2m"
    reset = "\x1b[0m"
    assert rows[0].startswith(f"{bold}k3x9{reset}{dim}a0b1{reset}   ")  # 8 shown, 4 picked out
    assert rows[1].startswith(f"{bold}c0001m8y8ab{reset}  ")  # an old id: all 11 needed
    # The columns line up as they do without styling.
    plain = views.conversations(CONVS).splitlines()
    unstyled = [r.replace(bold, "").replace(dim, "").replace(reset, "") for r in rows]
    assert unstyled == plain[1:]
    assert plain[1].startswith("k3x9a0b1     idle")


def test_ls_is_plain_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"conversations": CONVS, "total": 2, "next": None}
    with serving({"conversations/list": lambda c, p: result}) as server:
        code, out, _ = acpd(capsys, "ls", "--socket", server.path)
    assert code == 0
    assert "\x1b[" not in out
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "k3x9a0b1", "c0001m8y8ab"]


# --- what each command says it did --------------------------------------------------------------


def test_rm_deletes_the_conversation_it_names(capsys: pytest.CaptureFixture[str]) -> None:
    handlers = {
        "conversations/get": lambda c, p: {"conversation": conv("k3x9full", title="old work")},
        "conversations/delete": lambda c, p: {},
    }
    with serving(handlers) as server:
        code, out, err = acpd(capsys, "rm", "k3x9", "--socket", server.path)
        assert (code, out, err) == (0, "removed conversation k3x9full (old work)\n", "")
        assert server.requests == [
            ("conversations/get", {"id": "k3x9"}),
            ("conversations/delete", {"id": "k3x9full"}),  # what was shown is what goes
        ]
        assert acpd(capsys, "rm", "k3x9", "--json", "--socket", server.path)[1] == "{}\n"


PENDING = {
    "pending": [{"seq": 7, "text": "two", "number": 2}, {"seq": 9, "text": "3", "number": 3}]
}


def test_queue_remove_takes_the_number_people_see(capsys: pytest.CaptureFixture[str]) -> None:
    handlers = {"messages/queue": lambda c, p: PENDING, "messages/remove": lambda c, p: {}}
    with serving(handlers) as server:
        code, out, _ = acpd(capsys, "queue", "c1", "--remove", "3", "--socket", server.path)
        assert (code, out) == (0, "removed message 3\n")
        assert server.requests[-1] == ("messages/remove", {"id": "c1", "seq": 9})
        code, out, err = acpd(capsys, "queue", "c1", "--remove", "9", "--socket", server.path)
    assert (code, out) == (1, "")
    assert err == "acpd: error: no message 9 in the queue of c1 (queued: 2, 3)\n"


def test_queue_remove_of_a_message_that_started_meanwhile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def remove(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        raise Fail(-32003, "message 7 was already prompted")

    handlers = {"messages/queue": lambda c, p: PENDING, "messages/remove": remove}
    with serving(handlers) as server:
        code, _, err = acpd(capsys, "queue", "c1", "--remove", "2", "--socket", server.path)
    assert (code, err) == (1, "acpd: error: message 2 has started already: too late to remove\n")


def test_status_shows_the_socket_the_daemon_serves(capsys: pytest.CaptureFixture[str]) -> None:
    status = {"version": "1", "pid": 2, "uptime_s": 3, "socket": "/run/user/1/acpd/acpd.sock"}
    with serving({"daemon/status": lambda c, p: status}) as server:
        code, out, _ = acpd(capsys, "status", "--socket", server.path)
    assert code == 0
    assert "socket:   /run/user/1/acpd/acpd.sock\n" in out  # not the path the client used


# --- open permission requests -------------------------------------------------------------------


def _request(request: str, title: str = "touch /tmp/x") -> dict[str, Any]:
    return {
        "request": request,
        "title": title,
        "prompt_seq": 5,
        "deadline": "2025-01-02T03:09:05.000Z",
        "options": [
            {"option_id": "allow", "name": "Allow", "kind": "allow_once"},
            {"option_id": "deny", "name": "Reject", "kind": "reject_once"},
        ],
    }


def _asking(*requests: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversations/get": lambda c, p: {
            "conversation": conv("k3x9full", short_id="k3x9", permissions=list(requests))
        },
        "permissions/respond": lambda c, p: {},
    }


def test_show_lists_open_requests_with_numbered_options() -> None:
    shown = views.conversation(
        {"conversation": conv(short_id="c0ff", permissions=[_request("p5-1")])}
    )
    assert "permissions" not in shown.split("?")[0]  # not a raw field line
    assert shown.endswith(
        "? permission p5-1: touch /tmp/x (until 2025-01-02T03:09:05.000Z)\n"
        "    1) Allow  [allow]\n"
        "    2) Reject  [deny]\n"
        "answer with: acpd permit c0ff OPTION (a number above, or --cancel)"
    )
    two = views.conversation(
        {"conversation": conv(short_id="c0ff", permissions=[_request("p5-1"), _request("p5-2")])}
    )
    assert two.endswith("answer with: acpd permit c0ff REQUEST OPTION (or --cancel)")
    assert "answer with" not in views.conversation({"conversation": conv()})


def test_permit_without_request_answers_the_only_open_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serving(_asking(_request("p5-1"))) as server:
        code, out, err = acpd(capsys, "permit", "k3x9", "2", "--socket", server.path)
        assert (code, out, err) == (0, "answered p5-1: deny (Reject)\n", "")
        assert server.requests[-1] == (
            "permissions/respond",
            {"id": "k3x9full", "request": "p5-1", "option": "deny"},
        )
        code, out, _ = acpd(capsys, "permit", "k3x9", "--cancel", "--socket", server.path)
        assert (code, out) == (0, "answered p5-1: cancelled\n")
        assert server.requests[-1][1] == {"id": "k3x9full", "request": "p5-1", "cancelled": True}
        code, _, err = acpd(capsys, "permit", "k3x9", "3", "--socket", server.path)
        assert (code, err) == (2, "acpd: error: request p5-1 has options 1 to 2, not 3\n")


def test_permit_names_the_open_requests_when_it_cannot_choose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serving(_asking(_request("p5-1", "rm -rf build"), _request("p5-2", "git push"))) as server:
        code, out, err = acpd(capsys, "permit", "k3x9", "1", "--socket", server.path)
        assert (code, out) == (1, "")
        assert err == (
            "acpd: error: 2 permission requests are open in k3x9: p5-1 (rm -rf build), "
            "p5-2 (git push); name one: acpd permit k3x9 REQUEST OPTION\n"
        )
        code, out, _ = acpd(capsys, "permit", "k3x9", "p5-2", "1", "--socket", server.path)
        assert (code, out) == (0, "answered p5-2: allow (Allow)\n")
    with serving(_asking()) as server:
        code, _, err = acpd(capsys, "permit", "k3x9", "1", "--socket", server.path)
    assert (code, err) == (1, "acpd: error: no permission request is open in k3x9\n")


# --- one error style ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["ls", "--bogus"], ["send"], ["follow", "c1", "--from", "x"], ["nope"], []],
)
def test_argparse_errors_are_one_line_in_our_style(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = acpd(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("acpd: error: ")
    assert err.count("\n") == 1
    assert "usage:" not in err
    if argv and argv[0] in cli.COMMANDS:
        assert err.endswith(f"(see `acpd {argv[0]} --help`)\n")


def test_serve_config_errors_are_in_the_same_style(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[agents.claude]\nenv = { A = 1 }\n")
    code, out, err = acpd(
        capsys, "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"),
        "--socket", str(tmp_path / "s.sock"), "--no-ws",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith(f"acpd: error: {config}: agents.claude.env.A: expected a string")
    assert err.count("\n") == 1
    assert not os.path.exists(tmp_path / "d")  # nothing made before the config was read
