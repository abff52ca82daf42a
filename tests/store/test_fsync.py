"""The fsyncs themselves, seen by strace: a durable write syncs the WAL before it returns.

The statement-trace test (test_events.py) checks that we ask SQLite for synchronous=FULL; this
checks that the kernel is asked to sync, so a build or setting that drops the sync (e.g.
synchronous=OFF, a SQLITE_NO_SYNC build, a durable op made non-durable) fails here. SQLite's C
code cannot be monkeypatched and its VFS is not reachable from Python, hence the tracer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._sync_child import MARK

REPO = Path(__file__).resolve().parents[2]
DURABLE = {
    "create_conversation",
    "append_user_message",
    "remove_pending",
    "edit_pending",
    "move_pending",
    "take_steered",
    "start_turn",
    "set_permission_policy",
    "end_turn",
    "delete_conversation",
}
NOT_DURABLE = {
    "append_event",
    "append_events",
    "append_draft",
    "clear_drafts",
    "set_status",
    "set_title",
    "set_acp_session",
}
# `PID chdir("/acpd-mark/NAME") = -1 ENOENT ...` and `PID fdatasync(4</dir/acpd.sqlite3-wal>) = 0`
_MARK_RE = re.compile(r'chdir\("' + re.escape(MARK) + r'(\w+)"\)')
_SYNC_RE = re.compile(r"\b(fsync|fdatasync)\(\d+<([^>]*)>\)\s+=\s+0")


def _strace() -> str:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed: cannot see the fsync calls")
    probe = subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace denied?): {probe.stderr.decode()[:200]}")
    return strace


def _syncs_by_operation(tmp_path: Path) -> list[tuple[str, list[str]]]:
    """(operation, [path of each successful fsync/fdatasync]) in the order the child ran them."""
    trace = tmp_path / "strace.txt"
    cmd = [_strace(), "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,chdir", "-o", str(trace)]
    child = [sys.executable, "-m", "tests.store._sync_child", str(tmp_path / "acpd.sqlite3")]
    done = subprocess.run([*cmd, *child], cwd=REPO, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    sections: list[tuple[str, list[str]]] = [("startup", [])]
    for line in trace.read_text().splitlines():
        if m := _MARK_RE.search(line):
            sections.append((m.group(1), []))
        elif m := _SYNC_RE.search(line):
            sections[-1][1].append(m.group(2))
    return sections


@pytest.mark.subprocess
def test_durable_writes_sync_the_wal_and_others_do_not(tmp_path: Path) -> None:
    sections = _syncs_by_operation(tmp_path)
    names = [name for name, _ in sections]
    assert names[-1] == "end", "the child did not run to the end"
    assert set(names) >= DURABLE | NOT_DURABLE
    wal = str(tmp_path / "acpd.sqlite3-wal")
    for name, paths in sections:
        if name in DURABLE:
            assert wal in paths, f"{name} returned without syncing the WAL (synced: {paths})"
        elif name in NOT_DURABLE:
            # The control: this test can tell a sync from none. A group commit may skip the
            # fsync; if one ever shows up here, the durable check above proves nothing.
            assert paths == [], f"{name} is meant to group-commit but synced {paths}"
