"""Argument parsing, one-shot commands against a fake socket, and error formatting."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import commands as cli
from daemon.cli import views
from daemon.cli.conversations import create_params
from daemon.cli.messages import read_text
from protocol import limits
from tests.cli.fakeserver import DEFER, Conn, Fail, conv, hang_guard, serving

HANG_GUARD = 30


def acpd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with hang_guard():
        code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- parsing ------------------------------------------------------------------------------------


def test_every_contract_command_is_there() -> None:
    names = set(cli.COMMANDS)
    for name in ("serve", "new", "send", "follow", "chat", "ls", "show", "queue", "rm",
                 "interrupt", "resume", "permit", "status", "agents"):  # fmt: skip
        assert name in names


def test_client_commands_take_socket_and_json_after_the_command() -> None:
    args = cli.build_parser().parse_args(["ls", "--json", "--socket", "/x.sock", "--limit", "3"])
    assert (args.json, args.socket, args.limit) == (True, "/x.sock", 3)
    args = cli.build_parser().parse_args(["send", "abc", "hello", "world", "--follow"])
    assert (args.id, args.text, args.follow, args.no_run, args.interrupt) == (
        "abc",
        ["hello", "world"],
        True,
        False,
        False,
    )
    args = cli.build_parser().parse_args(["follow", "abc", "--from", "-5"])
    assert args.from_seq == -5


@pytest.mark.parametrize(
    "argv",
    [[], ["nope"], ["send", "abc"], ["ls", "--limit", "x"], ["serve", "--json"], ["show"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = acpd(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("acpd: error: ")  # argparse's own errors too, in our one style
    assert err.count("\n") == 1
    assert "--help`)" in err  # where to read more


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["permit", "abc"], "give OPTION or --cancel"),
        (["permit", "abc", "r1", "opt", "--cancel"], "give OPTION or --cancel"),
        (["new", "--agent", "a", "--agent-cmd", "b"], "exclude each other"),
        (["new", "--agent-cmd", "'unclosed"], "--agent-cmd: No closing quotation"),
        (["new", "--cwd", "/definitely/not/here"], "not a directory"),
        (["serve", "--ws", "127.0.0.1:0", "--no-ws"], "exclude each other"),
        (["chat", "abc", "--agent", "demo"], "are for a new conversation"),
    ],
)
def test_checked_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    code, _, err = acpd(
        capsys, *([*argv, "--socket", str(tmp_path / "s")] if argv[0] != "serve" else argv)
    )
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert err.startswith("acpd: error: ")


def test_read_text_joins_words_or_reads_stdin() -> None:
    assert read_text(["hello", "world"], io.StringIO("unused")) == "hello world"
    assert read_text(["-"], io.StringIO("from\nstdin\n\n")) == "from\nstdin"
    assert read_text(["a", "-"], io.StringIO("x")) == "a -"
    with pytest.raises(cli.UsageError, match="empty"):
        read_text(["-"], io.StringIO(" \n"))


def test_create_params_sends_an_absolute_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert create_params(None, None, None, None) == {"cwd": str(tmp_path)}
    assert create_params(None, "my-agent --flag 'a b'", "sub", "T") == {
        "cwd": str(tmp_path / "sub"),
        "agent_cmd": ["my-agent", "--flag", "a b"],
        "title": "T",
    }


# --- commands against the fake daemon -----------------------------------------------------------


def test_json_prints_the_result_as_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"conversations": [conv()], "total": 1, "next": None}
    with serving({"conversations/list": lambda c, p: result}) as server:
        code, out, err = acpd(capsys, "ls", "--json", "--socket", server.path)
    assert (code, err) == (0, "")
    assert json.loads(out) == result
    assert out.count("\n") == 1
    assert server.requests == [("conversations/list", {"limit": 50})]


def test_ls_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"conversations": [conv("c1"), conv("c2", status="running")], "total": 9, "next": "k"}
    with serving({"conversations/list": lambda c, p: result}) as server:
        code, out, err = acpd(
            capsys, "ls", "--limit", "2", "--before", "z", "--socket", server.path
        )
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "STATUS", "QUEUED", "UPDATED", "AGENT", "TITLE"]
    assert out.splitlines()[2].split()[:2] == ["c2", "running"]
    assert err == "(2 of 9 shown; see --limit, and --before k)\n"
    assert server.requests == [("conversations/list", {"limit": 2, "before": "z"})]


def test_ls_empty(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"conversations": [], "total": 0, "next": None}
    with serving({"conversations/list": lambda c, p: result}) as server:
        code, out, err = acpd(capsys, "ls", "--socket", server.path)
    assert (code, out) == (0, "")
    assert "no conversations" in err


def test_new_prints_the_id_and_sends_cwd(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    with serving({"conversations/create": lambda c, p: {"conversation": conv("new1")}}) as server:
        code, out, _ = acpd(
            capsys, "new", "--agent", "demo", "--title", "T", "--socket", server.path
        )
    assert (code, out) == (0, "new1\n")
    assert server.requests == [
        ("conversations/create", {"cwd": str(tmp_path), "agent": "demo", "title": "T"})
    ]


@pytest.mark.parametrize(
    ("argv", "method", "params", "result", "shown"),
    [
        (["show", "c1"], "conversations/get", {"id": "c1"}, {"conversation": conv("c1")}, "id:"),
        (["queue", "c1"], "messages/queue", {"id": "c1"},
         {"pending": [{"seq": 3, "text": "t", "number": 2}]}, "   #2  t\n"),
        (["interrupt", "c1"], "turns/interrupt", {"id": "c1"}, {"interrupted": True},
         "interrupted; the queue is paused until `acpd resume c1` or the next `acpd send c1`; "
         "either way the queued messages run first, in order\n"),
        (["interrupt", "c1"], "turns/interrupt", {"id": "c1"}, {"interrupted": False},
         "no turn was running; the queue is paused until `acpd resume c1` or the next "
         "`acpd send c1`; either way the queued messages run first, in order\n"),
        (["resume", "c1"], "conversations/resume", {"id": "c1"}, {"resumed": True, "queued": 2},
         "resumed: 2 queued\n"),
        (["resume", "c1"], "conversations/resume", {"id": "c1"}, {"resumed": False, "queued": 0},
         "nothing to resume: the queue was not paused (nothing queued)\n"),
        (["status"], "daemon/status", None, {"version": "0.1.0", "pid": 4, "uptime_s": 2.5},
         "version:  0.1.0\n"),
        (["agents"], "agents/list", None, {"agents": [{"name": "demo", "command": ["py"]}]},
         "AGENT  COMMAND\ndemo   py\n"),
        (["send", "c1", "hi", "there", "--no-run"], "messages/send",
         {"id": "c1", "text": "hi there", "run": False, "interrupt": False},
         {"seq": 7, "queued": 2, "number": 3},
         "queued as message 3, behind 2 turns (paused: `acpd resume c1` or the next "
         "`acpd send c1` runs it)\n"),
        (["send", "c1", "hi", "--no-run"], "messages/send",
         {"id": "c1", "text": "hi", "run": False, "interrupt": False},
         {"seq": 7, "queued": 0, "number": 3},
         "queued as message 3 (paused: `acpd resume c1` or the next `acpd send c1` runs it)\n"),
        (["send", "c1", "hi"], "messages/send",
         {"id": "c1", "text": "hi", "run": True, "interrupt": False},
         {"seq": 7, "queued": 2, "number": 3}, "sent (message 3, queued: 2 turns ahead of it)\n"),
        (["send", "c1", "hi"], "messages/send",
         {"id": "c1", "text": "hi", "run": True, "interrupt": False},
         {"seq": 7, "queued": 2, "number": 3, "resumed": True},
         "sent (message 3, queued: 2 turns ahead of it); the queue runs again, in order\n"),
        (["send", "c1", "hi"], "messages/send",
         {"id": "c1", "text": "hi", "run": True, "interrupt": False},
         {"seq": 7, "queued": 0}, "sent (seq 7, starts now)\n"),  # a daemon without numbers
        (["send", "c1", "hi", "--interrupt"], "messages/send",
         {"id": "c1", "text": "hi", "run": True, "interrupt": True},
         {"seq": 7, "queued": 0, "number": 1}, "sent (message 1, starts now)\n"),
    ],
)  # fmt: skip
def test_one_shot_commands(
    argv: list[str],
    method: str,
    params: dict[str, Any] | None,
    result: dict[str, Any],
    shown: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serving({method: lambda c, p: result}) as server:
        code, out, err = acpd(capsys, *argv, "--socket", server.path)
        assert (code, err) == (0, "")
        assert out.startswith(shown) if shown else out == ""
        code, out, _ = acpd(capsys, *argv, "--socket", server.path, "--json")
        assert code == 0
        assert json.loads(out) == result
    assert server.requests == [(method, params if params is not None else {})] * 2


def test_send_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("line one\nline two\n"))
    with serving({"messages/send": lambda c, p: {"seq": 1, "queued": 0}}) as server:
        code, _, _ = acpd(capsys, "send", "c1", "-", "--socket", server.path)
    assert code == 0
    assert server.requests[0][1]["text"] == "line one\nline two"


# --- errors -------------------------------------------------------------------------------------


def test_api_error_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    def get(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        raise Fail(-32001, "no such conversation: zz")

    with serving({"conversations/get": get}) as server:
        code, out, err = acpd(capsys, "show", "zz", "--socket", server.path)
    assert (code, out, err) == (1, "", "acpd: error: no such conversation: zz\n")


def test_not_running_is_one_line_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    code, out, err = acpd(capsys, "status", "--socket", path)
    assert (code, out) == (1, "")
    assert err == (
        f"acpd: error: acpd is not running (no socket at {path}): start it with `acpd serve`\n"
    )


def test_default_socket_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving({"daemon/status": lambda c, p: {"pid": 1}}) as server:
        monkeypatch.setenv("ACPD_SOCKET", server.path)
        code, out, _ = acpd(capsys, "status", "--json")
    assert (code, out) == (0, '{"pid":1}\n')


def test_internal_error_has_no_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACPD_DEBUG", raising=False)
    with serving({"daemon/status": lambda c, p: {"uptime_s": 1}}) as server:
        monkeypatch.setattr(views, "status", lambda r, s: 1 / 0)
        code, _, err = acpd(capsys, "status", "--socket", server.path)
    assert code == 1
    assert err.startswith("acpd: error: internal error: ZeroDivisionError")
    assert err.count("\n") == 1


def test_keyboard_interrupt_exits_130_quietly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(ctx: cli.Ctx, a: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.COMMANDS["status"], "run", interrupted)
    assert acpd(capsys, "status") == (130, "", "")


def _run_cli(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *argv],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        **kwargs,
    )


@pytest.mark.subprocess
def test_real_process_errors_and_usage(tmp_path: Any) -> None:
    proc = _run_cli("ls", "--socket", str(tmp_path / "s.sock"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("acpd: error: acpd is not running")
    assert "Traceback" not in proc.stderr
    proc = _run_cli("send")
    assert proc.returncode == 2
    assert proc.stderr == (
        "acpd: error: the following arguments are required: ID, TEXT (see `acpd send --help`)\n"
    )
    proc = _run_cli("--help")
    assert proc.returncode == 0
    assert '{"method": ..., "params": ...}' in proc.stdout


@pytest.mark.subprocess
def test_closed_pipe_is_quiet() -> None:
    many = [conv(f"c{i:05}", title="t" * 200) for i in range(2000)]  # far beyond a pipe buffer
    result = {"conversations": many, "total": len(many), "next": None}
    with (
        serving({"conversations/list": lambda c, p: result}) as server,
        subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "ls", "--limit", "1000", "--socket", server.path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc,
    ):
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline().startswith(b"ID")
        proc.stdout.close()  # like `| head -1`
        err = proc.stderr.read()
        assert proc.wait(timeout=HANG_GUARD) == 141
    assert err == b""


def test_module_is_runnable() -> None:
    assert os.path.exists(cli.__file__)
    assert cli.__name__ == "daemon.cli.commands"


@pytest.mark.subprocess
def test_client_commands_import_no_heavy_modules() -> None:
    """`acpd ls` must start fast: no trio, msgspec, attrs or engine behind the client commands."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        "import sys, daemon.cli.commands, daemon.cli.chat; "
        "print(sorted(m for m in ('trio', 'msgspec', 'attrs', 'cattrs', 'daemon.engine.registry') "
        "if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD, cwd=root
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n", "a client command imports heavy modules (daemon/__init__.py?)"


# --- options before the command, bounds in our words, smaller fixes ----------------------------


def test_socket_and_json_may_come_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with serving({"daemon/status": lambda c, p: {"pid": 1}}) as server:
        assert acpd(capsys, "--json", "--socket", server.path, "status") == (0, '{"pid":1}\n', "")
        assert acpd(capsys, "--socket", server.path, "status", "--json")[1] == '{"pid":1}\n'
        # After the command wins over before it.
        code, out, _ = acpd(capsys, "--socket", "/nowhere.sock", "status", "--socket", server.path)
    assert (code, out.split()[:2]) == (0, ["pid:", "1"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--json", "serve"], "serve takes no --json: it does not talk to the daemon"),
        (["--json", "install-systemd"],
         "install-systemd takes no --json: it does not talk to the daemon"),
        (["--socket", "/s", "install-systemd"], "install-systemd takes no --socket"),
    ],
)  # fmt: skip
def test_options_before_a_command_that_has_none(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert acpd(capsys, *argv) == (2, "", f"acpd: error: {message}\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ls", "--limit", "5000"], "argument --limit: must be from 1 to 1000, not 5000"),
        (["ls", "--limit", "0"], "argument --limit: must be from 1 to 1000, not 0"),
        (["queue", "c1", "--remove", "0"], "argument --remove: must be at least 1, not 0"),
        (["show", "c" * 200], "argument ID: longer than 128 characters"),
        (["permit", "c1", "r" * 300, "allow"], "argument REQUEST: longer than 256 characters"),
        (["new", "--title", "t" * 2000], "--title: longer than 1024 characters"),
    ],
)
def test_bad_params_are_usage_errors_in_our_words(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    code, _, err = acpd(capsys, *argv, "--socket", str(tmp_path / "never-used.sock"))
    assert code == 2
    assert message in err
    assert "Expected" not in err  # msgspec's wording


def test_a_too_long_message_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("x" * (limits.MAX_TEXT + 1)))
    code, _, err = acpd(capsys, "send", "c1", "-", "--socket", str(tmp_path / "s"))
    assert code == 2
    assert f"longer than {limits.MAX_TEXT} characters" in err


def test_the_api_decodes_with_the_bounds_the_cli_checks() -> None:
    import msgspec

    from protocol import api, limits

    def bound(tp: Any, field: str) -> int:
        info = msgspec.inspect.type_info(tp)
        assert isinstance(info, msgspec.inspect.StructType)
        kind = next(f.type for f in info.fields if f.name == field)
        while isinstance(kind, msgspec.inspect.UnionType):
            kind = next(t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType))
        value = getattr(kind, "max_length", None) or getattr(kind, "le", None)
        assert isinstance(value, int)
        return value

    assert bound(api.IdParams, "id") == limits.MAX_ID
    assert bound(api.PermitParams, "request") == limits.MAX_NAME
    assert bound(api.CreateParams, "agent") == limits.MAX_NAME
    assert bound(api.CreateParams, "title") == limits.MAX_TITLE
    assert bound(api.CreateParams, "cwd") == limits.MAX_PATH
    assert bound(api.SendParams, "text") == limits.MAX_TEXT
    assert bound(api.ListParams, "limit") == limits.MAX_LIST_LIMIT


def test_invalid_params_from_the_daemon_are_restated(capsys: pytest.CaptureFixture[str]) -> None:
    def get(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        raise Fail(-32602, "invalid params: Expected `int` >= 1 - at `$.limit`")

    with serving({"conversations/list": get}) as server:
        code, _, err = acpd(capsys, "ls", "--socket", server.path)
    assert (code, err) == (1, "acpd: error: the daemon refused limit: expected int >= 1\n")


def test_status_without_dashboard_says_off(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"version": "1", "pid": 2, "uptime_s": 3, "dashboard_url": None}
    with serving({"daemon/status": lambda c, p: result}) as server:
        code, out, _ = acpd(capsys, "status", "--socket", server.path)
    assert code == 0
    assert "dashboard_url: off" in out
    assert "None" not in out


def _constant(result: dict[str, Any], conn: Any, params: Any) -> dict[str, Any]:
    return result


def test_status_names_a_storage_outage(capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"version": "1", "storage": "ok", "storage_error": None}
    down = {"version": "1", "storage": "disk full",
            "storage_error": "storage unavailable: disk full"}  # fmt: skip
    for result in (ok, down):
        with serving({"daemon/status": functools.partial(_constant, result)}) as server:
            code, out, _ = acpd(capsys, "status", "--socket", server.path)
        assert code == 0
        assert f"{result['storage']}\n" in out.split("storage:", 1)[1]
        assert "None" not in out
    assert "storage_error: storage unavailable: disk full" in out


def test_a_wedged_daemon_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.cli import client

    monkeypatch.setattr(client, "CALL_TIMEOUT", 0.2)
    with serving({"conversations/list": lambda c, p: DEFER}) as server:
        code, out, err = acpd(capsys, "ls", "--socket", server.path)
    assert (code, out) == (1, "")
    assert err.startswith("acpd: error: acpd did not answer conversations/list within 0.2s")
    assert err.count("\n") == 1


def test_dashboard_open_hands_the_browser_a_single_use_code_not_the_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    from daemon.server import tokens

    token = tokens.load_or_create_token(tmp_path)
    opened: list[str] = []

    def browser(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr(webbrowser, "open", browser)
    status = {"dashboard_url": "http://127.0.0.1:7421/", "data_dir": str(tmp_path)}
    with serving({"daemon/status": functools.partial(_constant, status)}) as server:
        code, out, _ = acpd(capsys, "dashboard", "--open", "--socket", server.path)
    assert (code, out) == (0, f"http://127.0.0.1:7421/#token={token}\n")  # printed: for you
    (url,) = opened  # opened: what every local user can read on the browser's command line
    assert token not in url
    assert url.startswith("http://127.0.0.1:7421/#code=")
    code_ = url.split("#code=", 1)[1]
    assert tokens.claim_login_code(tmp_path, code_)
    assert not tokens.claim_login_code(tmp_path, code_)  # single use
