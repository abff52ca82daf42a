"""Every `acpd` command, run as a real process against a real daemon process (real time).

The agent behind most conversations is `stub_agent.py` (scripted by the prompt text), so each
turn is deterministic; one test uses the built-in `demo` agent. Every wait is bounded: a
timeout on each subprocess call, and deadlines when reading a running command's output.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.client import Client, ClientError

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]
STUB = shlex.join([sys.executable, str(ROOT / "tests" / "cli" / "stub_agent.py")])
TIMEOUT = 30.0  # per command; a hang guard, far above what any of them takes


def _ctrl_c_as_on_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt even when the suite runs with SIGINT ignored (a background job, some CI
    runners), which children inherit through exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Daemon:
    def __init__(self, tmp: str) -> None:
        self.socket = os.path.join(tmp, "s.sock")
        config = os.path.join(tmp, "config.toml")
        with open(config, "w") as f:
            f.write("# the defaults, not the user's\n")
        self.env = {
            **os.environ,
            "ACPD_CONFIG": config,
            "ACPD_SOCKET": os.path.join(tmp, "not-this.sock"),  # --socket must win
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "serve", "--data-dir", os.path.join(tmp, "data"),
             "--socket", self.socket, "--no-ws"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with Client(self.socket) as client:
                    client.call("daemon/status")
                return
            except ClientError:
                pass
            try:  # the pause between polls, which also notices a daemon that died
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            else:
                _, err = self.proc.communicate()
                pytest.fail(f"acpd serve exited {self.proc.returncode}: {err.decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("acpd serve did not answer daemon/status in time")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "daemon.cli", *args, "--socket", self.socket]

    def run(
        self, *args: str, input: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), input=input, capture_output=True, text=True, timeout=TIMEOUT,
            cwd=cwd or ROOT, env=self.env,
        )  # fmt: skip

    def ok(self, *args: str, input: str | None = None, cwd: Path | None = None) -> str:
        proc = self.run(*args, input=input, cwd=cwd)
        assert proc.returncode == 0, f"acpd {' '.join(args)}: {proc.returncode} {proc.stderr}"
        assert proc.stderr == "" or "Traceback" not in proc.stderr
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def start(self, *args: str, stdin: int | None = subprocess.DEVNULL) -> Running:
        proc = subprocess.Popen(
            self.argv(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=ROOT, env=self.env, preexec_fn=_ctrl_c_as_on_a_terminal,
        )  # fmt: skip
        return Running(proc)

    def new(self, *args: str) -> str:
        return self.ok("new", "--agent-cmd", STUB, *args).strip()


class Running:
    """A command still running: read its output up to some text, with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out = b""

    def read_until(self, text: str) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while text.encode() not in self.out:
                left = deadline - time.monotonic()
                assert left > 0, f"no {text!r} in time; got {self.out.decode()!r}"
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    assert chunk, f"EOF before {text!r}; got {self.out.decode()!r}"
                    self.out += chunk
        return self.out.decode()

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=TIMEOUT)
        self.out += out
        return self.proc.returncode, self.out.decode(), err.decode()


@pytest.fixture(scope="module")
def acpd() -> Iterator[Daemon]:
    # Short, private path: a unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="acpd-e2e-") as tmp:
        daemon = Daemon(tmp)
        try:
            yield daemon
        finally:
            daemon.stop()


def test_status_and_agents(acpd: Daemon) -> None:
    status = acpd.json("status")
    for key in ("version", "pid", "uptime_s", "data_dir", "conversations_stored",
                "conversations_live", "agents_running"):  # fmt: skip
        assert key in status
    assert status["pid"] == acpd.proc.pid
    assert "pid:" in acpd.ok("status")
    agents = acpd.json("agents")["agents"]
    assert "demo" in {a["name"] for a in agents}
    assert re.search(r"^demo\s", acpd.ok("agents"), re.MULTILINE)


def test_new_show_ls_rm(acpd: Daemon, tmp_path: Path) -> None:
    conv_id = acpd.ok("new", "--agent-cmd", STUB, "--title", "e2e title", cwd=tmp_path).strip()
    assert re.fullmatch(r"\S+", conv_id)
    shown = acpd.json("show", conv_id[:-1])["conversation"]  # a prefix will do
    assert (shown["id"], shown["title"], shown["cwd"]) == (conv_id, "e2e title", str(tmp_path))
    assert "id:" in acpd.ok("show", conv_id)
    listed = acpd.json("ls", "--limit", "1000")
    assert conv_id in [c["id"] for c in listed["conversations"]]
    short = shown["short_id"]
    assert conv_id.startswith(short)
    assert len(short) >= 4
    # Not a terminal: plain, at least 8 characters of the id, its unique prefix among them.
    shown_id = conv_id[: max(8, len(short))]
    assert re.search(rf"^{shown_id}\s+idle\s", acpd.ok("ls", "--limit", "1000"), re.MULTILINE)
    assert acpd.json("show", short)["conversation"]["id"] == conv_id
    assert acpd.ok("rm", short) == f"removed conversation {conv_id} (e2e title)\n"
    gone = acpd.run("show", conv_id)
    assert gone.returncode == 1
    assert gone.stderr.startswith("acpd: error: ")
    assert gone.stderr.count("\n") == 1


def test_send_follow_prints_the_reply_once(acpd: Daemon) -> None:
    conv_id = acpd.new()
    out = acpd.ok("send", conv_id, "hello", "there", "--follow")
    assert out == "echo: hello there\n"
    out = acpd.ok("send", conv_id, "-", "--follow", input="from stdin\n")
    assert out == "echo: from stdin\n"
    out = acpd.ok("send", conv_id, "plan it", "--follow")
    assert "(thinking) let me think" in out
    assert "  - plan: [~] look" in out
    assert "  - tool: read file [completed]" in out
    assert out.endswith("echo: plan it\n")


def test_send_follow_json(acpd: Daemon) -> None:
    conv_id = acpd.new()
    lines = [
        json.loads(x) for x in acpd.ok("send", conv_id, "hi", "--follow", "--json").splitlines()
    ]
    seq = lines[0]["seq"]
    assert lines[0] == {"seq": seq, "queued": 0, "number": 1, "resumed": False}
    assert all(set(x) == {"method", "params"} for x in lines[1:])
    last = lines[-1]["params"]["event"]
    assert (last["type"], last["prompt_seq"]) == ("turn_ended", seq)
    text = "".join(x["params"]["text"] for x in lines[1:] if x["method"] == "conversation/delta")
    assert text == "echo: hi"


def test_send_without_follow_and_queue_remove_resume(acpd: Daemon) -> None:
    conv_id = acpd.new()
    out = acpd.ok("send", conv_id, "staged", "--no-run")
    staged = acpd.json("queue", conv_id)["pending"]
    assert out == (
        f"queued as message 1 (paused: `acpd resume {conv_id}` or the next "
        f"`acpd send {conv_id}` runs it)\n"
    )
    assert acpd.json("show", conv_id)["conversation"]["status"] == "paused"
    assert [(m["text"], m["number"]) for m in staged] == [("staged", 1)]
    assert re.search(r"^\s+#1  staged$", acpd.ok("queue", conv_id), re.MULTILINE)
    out = acpd.ok("send", conv_id, "second", "--no-run")
    assert out.startswith("queued as message 2, behind 1 turn (paused: ")
    first_seq = staged[0]["seq"]
    assert acpd.ok("queue", conv_id, "--remove", "1") == "removed message 1\n"
    assert [m["text"] for m in acpd.json("queue", conv_id)["pending"]] == ["second"]
    missing = acpd.run("queue", conv_id, "--remove", "1")
    assert (missing.returncode, missing.stderr) == (
        1,
        f"acpd: error: no message 1 in the queue of {conv_id} (queued: 2)\n",
    )
    follow = acpd.start("follow", conv_id, "--from", str(first_seq))
    assert acpd.ok("resume", conv_id) == "resumed: 1 queued\n"
    follow.read_until("echo: second")
    follow.proc.send_signal(signal.SIGINT)
    code, _, err = follow.finish()
    assert (code, err) == (130, "")
    assert acpd.json("queue", conv_id) == {"pending": []}


def test_follow_replays_and_json_lines(acpd: Daemon) -> None:
    conv_id = acpd.new()
    acpd.ok("send", conv_id, "one", "--follow")
    follow = acpd.start("follow", conv_id)
    out = follow.read_until("echo: one\n")
    assert out == "#1 > one\necho: one\n"
    follow.proc.send_signal(signal.SIGINT)
    assert follow.finish()[0] == 130
    follow = acpd.start("follow", conv_id, "--json", "--from", "-1")
    line = json.loads(follow.read_until("\n").splitlines()[0])
    assert line["params"]["event"]["type"] == "turn_ended"
    follow.proc.send_signal(signal.SIGINT)
    code, _, err = follow.finish()
    assert (code, err) == (130, "")


def test_interrupt_and_resume(acpd: Daemon) -> None:
    conv_id = acpd.new()
    sender = acpd.start("send", conv_id, "wait for it", "--follow")
    sender.read_until("waiting")
    assert acpd.ok("interrupt", conv_id).startswith("interrupted; the queue is paused")
    code, out, _ = sender.finish()
    assert code == 0
    assert out.endswith("(turn ended: cancelled)\n")
    assert acpd.json("interrupt", conv_id) == {"interrupted": False}
    assert acpd.json("resume", conv_id) == {"resumed": True, "queued": 0}
    assert acpd.ok("send", conv_id, "after", "--follow") == "echo: after\n"


def test_permission_answered_with_permit(acpd: Daemon) -> None:
    conv_id = acpd.new()
    sender = acpd.start("send", conv_id, "ask first", "--follow")
    out = sender.read_until("OPTION\n")
    match = re.search(rf"answer with: acpd permit --socket \S+ {conv_id} (\S+) OPTION", out)
    assert match, out
    assert "    1) Allow  [allow]" in out
    bad = acpd.run("permit", conv_id, match.group(1), "nonsense")
    assert bad.returncode == 1
    assert bad.stderr.startswith("acpd: error: ")
    assert acpd.ok("permit", conv_id, match.group(1), "1") == (
        f"answered {match.group(1)}: allow (Allow)\n"
    )
    code, out, _ = sender.finish()
    assert code == 0
    assert out.endswith("permission: allow\n")


def test_permission_cancelled_with_permit(acpd: Daemon) -> None:
    conv_id = acpd.new()
    sender = acpd.start("send", conv_id, "ask again", "--follow", "--json")
    request = None
    while request is None:
        for line in sender.read_until("permission_requested").splitlines():
            event = json.loads(line).get("params", {}).get("event", {})
            if event.get("type") == "permission_requested":
                request = event["request"]
    assert acpd.json("permit", conv_id, request, "--cancel") == {}
    code, out, _ = sender.finish()
    assert code == 0
    assert '"permission_resolved"' in out


def test_chat_from_a_pipe(acpd: Daemon) -> None:
    conv_id = acpd.new()
    out = acpd.ok("chat", conv_id, input="hello chat\n")
    assert out.endswith("#1 > hello chat\necho: hello chat\n")
    proc = acpd.run("chat", "--agent-cmd", STUB, input="brand new\n")
    assert proc.returncode == 0
    assert proc.stderr.startswith("new conversation ")
    assert proc.stdout == "#1 > brand new\necho: brand new\n"


def test_chat_ctrl_c_interrupts_then_leaves(acpd: Daemon) -> None:
    conv_id = acpd.new()
    chat = acpd.start("chat", conv_id, stdin=subprocess.PIPE)
    assert chat.proc.stdin is not None
    chat.proc.stdin.write(b"wait here\n")
    chat.proc.stdin.flush()
    chat.read_until("waiting")
    chat.proc.send_signal(signal.SIGINT)
    chat.read_until("(turn ended: cancelled)")
    chat.proc.send_signal(signal.SIGINT)
    code, out, err = chat.finish()
    assert code == 0, err
    assert "(interrupted; the queue is paused" in out


class Terminal:
    """A command on a pseudo-terminal: stdin and stdout are a tty, as for a person."""

    def __init__(self, acpd: Daemon, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            acpd.argv(*args), stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=acpd.env,
            preexec_fn=_ctrl_c_as_on_a_terminal,
        )  # fmt: skip
        os.close(slave)
        self.out = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, text: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while text.encode() not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in time; got {self.out.decode()!r}"
            readable, _, _ = select.select([self.master], [], [], left)
            if readable:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the command has exited
                    chunk = b""
                assert chunk, f"EOF before {text!r}; got {self.out.decode()!r}"
                self.out += chunk
        return self.out.decode()

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            os.close(self.master)


def test_chat_on_a_terminal(acpd: Daemon) -> None:
    conv_id = acpd.new()
    term = Terminal(acpd, "chat", conv_id)
    term.read_until("/help")
    term.type("hello\r")
    out = term.read_until("echo: hello\r\n")
    assert "> hello" not in out  # the terminal showed what was typed; not echoed twice
    term.type("ask now\r")
    term.read_until("(type 1-2 to answer permission")
    term.type("2\r")
    term.read_until("permission: deny")
    term.type("\x04")  # Ctrl-D
    assert term.finish() == 0


def test_send_follow_asks_on_a_terminal(acpd: Daemon) -> None:
    conv_id = acpd.new()
    term = Terminal(acpd, "send", conv_id, "ask here", "--follow")
    term.read_until("answer 1-2 (Enter: leave it open): ")
    term.type("1\r")
    assert "\x1b[" in term.read_until("permission: allow")  # styled for a terminal
    assert term.finish() == 0


def test_default_demo_agent(acpd: Daemon) -> None:
    conv_id = acpd.ok("new").strip()
    assert acpd.json("show", conv_id)["conversation"]["agent"] == "demo"
    assert acpd.ok("send", conv_id, "hello demo", "--follow").strip()


def test_errors_are_one_line(acpd: Daemon, tmp_path: Path) -> None:
    missing = acpd.run("show", "no-such-conversation")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert re.fullmatch(r"acpd: error: [^\n]+\n", missing.stderr)
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "ls", "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "acpd is not running" in proc.stderr


def test_an_agent_that_cannot_be_found_is_refused_at_new(acpd: Daemon) -> None:
    before = acpd.json("ls")["total"]
    proc = acpd.run("new", "--agent-cmd", "acpd-no-such-agent --acp")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        "acpd: error: agent failed to start: command not found: acpd-no-such-agent\n"
    )
    assert acpd.json("ls")["total"] == before


def test_options_before_the_command_and_bounds(acpd: Daemon) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--json", "--socket", acpd.socket, "ls"],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=acpd.env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == acpd.json("ls")["total"]
    proc = acpd.run("ls", "--limit", "5000")
    assert proc.returncode == 2
    assert "argument --limit: must be from 1 to 1000, not 5000" in proc.stderr
    conv_id = acpd.new()
    proc = acpd.run("interrupt", conv_id)
    assert proc.stdout.startswith("no turn was running; the queue is paused until `acpd resume")
    assert acpd.json("show", conv_id)["conversation"]["status"] == "paused"


def test_steer_edit_and_move_with_the_demo_agent(acpd: Daemon) -> None:
    conv_id = acpd.ok("new").strip()  # the demo agent, which steers
    running = acpd.start("send", conv_id, "/slow 40", "--follow")
    running.read_until("1 2 ")  # its turn runs
    steered = acpd.ok("send", conv_id, "--steer", "go left")
    assert steered == "steered (message 2 went into the running turn)\n"
    acpd.ok("send", conv_id, "/echo b")
    acpd.ok("send", conv_id, "/echo c")
    assert acpd.ok("queue", conv_id, "--edit", "4", "/echo C") == "edited message 4\n"
    assert acpd.ok("queue", conv_id, "--move", "4") == "moved message 4; the queue: #4 #3\n"
    assert acpd.ok("queue", conv_id).splitlines() == ["   #4  /echo C", "   #3  /echo b"]
    code, out, err = running.finish()
    assert (code, err) == (0, "")
    assert "(steered: go left)" in out  # the demo's turn took it
    assert acpd.ok("send", conv_id, "/echo done", "--follow") == "done\n"  # after the queue
    follow = acpd.start("follow", conv_id)
    shown = follow.read_until("> /echo done")
    follow.proc.send_signal(signal.SIGINT)
    assert follow.finish()[0] == 130
    lines = shown.splitlines()
    assert "#2 > go left (steer)" in lines
    assert "(message 2 went into the running turn)" in lines
    assert "(message 4 edited: /echo C)" in lines
    assert "(queue reordered: #4 #3)" in lines
    # Prompted in the new order, with the new text; the steer never on its own.
    said = [line for line in lines if line in ("C", "b", "go left")]
    assert said == ["C", "b"]
