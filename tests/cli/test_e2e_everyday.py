"""Issue 19 end to end, as real processes against a real daemon: what a send does to a paused
queue, open permission requests in `show` and `permit` without a request id, short ids, and the
directory rules of `acpd serve`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli.client import Client
from tests.cli.test_e2e import ROOT, TIMEOUT, Daemon

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def acpd() -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="acpd-e2e-") as tmp:
        daemon = Daemon(tmp)
        try:
            yield daemon
        finally:
            daemon.stop()


def _prompted(acpd: Daemon, conv_id: str) -> list[str]:
    """The texts of the user messages, in the order their turns started."""
    with Client(acpd.socket) as client:
        events = client.call("conversations/events", {"id": conv_id, "limit": 1000})["events"]
    texts = {e["seq"]: e["text"] for e in events if e["type"] == "user_message"}
    return [texts[e["prompt_seq"]] for e in events if e["type"] == "turn_started"]


def test_a_send_after_an_interrupt_runs_the_queued_messages_first(acpd: Daemon) -> None:
    conv_id = acpd.new()
    sender = acpd.start("send", conv_id, "wait for it", "--follow")
    sender.read_until("waiting")
    assert acpd.ok("send", conv_id, "queued one") == (
        "sent (message 2, queued: 1 turn ahead of it)\n"
    )
    assert acpd.ok("send", conv_id, "queued two") == (
        "sent (message 3, queued: 2 turns ahead of it)\n"
    )
    assert acpd.ok("interrupt", conv_id) == (
        f"interrupted; the queue is paused until `acpd resume {conv_id}` or the next "
        f"`acpd send {conv_id}`; either way the queued messages run first, in order\n"
    )
    code, out, _ = sender.finish()
    assert (code, out.endswith("(turn ended: cancelled)\n")) == (0, True)
    # What the line said is so: paused, nothing started since.
    shown = acpd.json("show", conv_id)["conversation"]
    assert (shown["status"], shown["queued"]) == ("paused", 2)
    assert _prompted(acpd, conv_id) == ["wait for it"]
    follow = acpd.start("follow", conv_id)
    assert acpd.ok("send", conv_id, "new one") == (
        "sent (message 4, queued: 2 turns ahead of it); the queue runs again, in order\n"
    )
    follow.read_until("echo: new one")
    follow.proc.send_signal(signal.SIGINT)
    assert follow.finish()[0] == 130
    assert _prompted(acpd, conv_id) == ["wait for it", "queued one", "queued two", "new one"]


def test_show_lists_open_requests_and_permit_finds_the_only_one(acpd: Daemon) -> None:
    conv_id = acpd.new()
    short = acpd.json("show", conv_id)["conversation"]["short_id"]
    sender = acpd.start("send", conv_id, "ask first", "--follow")
    sender.read_until("OPTION\n")
    (asking,) = acpd.json("show", conv_id)["conversation"]["permissions"]
    request = asking["request"]
    shown = acpd.ok("show", conv_id)
    assert f"? permission {request}: touch /tmp/x (until " in shown
    assert "    1) Allow  [allow]\n    2) Reject  [deny]\n" in shown
    assert shown.endswith(
        f"answer with: acpd permit {short} OPTION (a number above, or --cancel)\n"
    )
    assert acpd.ok("permit", short, "2") == f"answered {request}: deny (Reject)\n"
    code, out, _ = sender.finish()
    assert (code, out.endswith("permission: deny\n")) == (0, True)
    assert acpd.json("show", conv_id)["conversation"]["permissions"] == []
    none = acpd.run("permit", conv_id, "1")
    assert (none.returncode, none.stderr) == (
        1,
        f"acpd: error: no permission request is open in {short}\n",
    )


def test_ids_are_picked_out_by_a_few_characters(acpd: Daemon) -> None:
    made = [acpd.new() for _ in range(3)]
    listed = acpd.json("ls", "--limit", "1000")["conversations"]
    shorts = {c["id"]: c["short_id"] for c in listed}
    for conv_id in made:
        assert 4 <= len(shorts[conv_id]) < len(conv_id)
        assert acpd.json("show", shorts[conv_id])["conversation"]["id"] == conv_id
    # Every id starts with one of 32 characters: with enough of them two share the first.
    everyone = [c["id"] for c in listed]
    while len({i[0] for i in everyone}) == len(everyone):
        everyone.append(acpd.new())
    first = next(i[0] for i in everyone if sum(j[0] == i[0] for j in everyone) > 1)
    ambiguous = acpd.run("show", first)
    assert ambiguous.returncode == 1
    assert re.fullmatch(
        rf"acpd: error: ambiguous id prefix '{first}': {first}\S* \(.*\)(, {first}\S* \(.*\))+"
        r"( and \d+ more)?; give more characters\n",
        ambiguous.stderr,
    )


# --- directories acpd did not create ------------------------------------------------------------


def _serve(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`acpd serve` that must refuse to start (a hang guard if it does not)."""
    env = {**os.environ, "ACPD_CONFIG": os.devnull}
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "serve", "--no-ws", *args],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=env,
    )  # fmt: skip


def test_serve_never_changes_the_mode_of_a_directory_it_did_not_create(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o775)  # a group's directory
    proc = _serve(
        tmp_path, "--data-dir", str(tmp_path / "data"), "--socket", str(shared / "x.sock")
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        f"acpd: error: socket directory {shared} is writable by its group (mode 0775), so "
        "others could replace the socket; acpd does not change the mode of a directory it did "
        f"not create: use a directory of your own (or `chmod go-w {shared}`)\n"
    )
    assert (shared.stat().st_mode & 0o777) == 0o775
    assert not (shared / "x.sock").exists()
    data = tmp_path / "open-data"
    data.mkdir()
    os.chmod(data, 0o777)
    proc = _serve(tmp_path, "--data-dir", str(data), "--socket", str(tmp_path / "own" / "s.sock"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        f"acpd: error: data dir {data} is writable by its group and others (mode 0777), so "
    )
    assert (data.stat().st_mode & 0o777) == 0o777
    assert os.listdir(data) == []
    assert json.dumps(proc.stderr).count("\\n") == 1
