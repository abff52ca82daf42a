"""One acpd per data dir."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from store import LOCK_FILE, DataDirLock, LockedError, StoreError

REPO = Path(__file__).resolve().parents[2]

_CHILD = """
import sys
from pathlib import Path
from store import DataDirLock, LockedError
try:
    lock = DataDirLock(Path(sys.argv[1]))
    lock.acquire()
except LockedError as exc:
    print(exc, flush=True)
    sys.exit(3)
print("locked", flush=True)
sys.stdin.read()  # hold it until the parent closes our stdin, or kills us
"""


def _child(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_creates_private_data_dir_and_writes_pid(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "data"
    with DataDirLock(data_dir) as lock:
        assert lock.locked
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert (data_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert (data_dir / LOCK_FILE).read_text() == ""  # released: no stale pid


def test_second_acquirer_in_the_same_process_fails(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        with pytest.raises(LockedError) as info:
            DataDirLock(tmp_path).acquire()
        assert str(info.value) == (
            f"another acpd is already running with data dir {tmp_path} (pid {os.getpid()})"
        )
    with DataDirLock(tmp_path):  # free again once released
        pass


def test_acquire_twice_on_one_object_and_release_twice(tmp_path: Path) -> None:
    lock = DataDirLock(tmp_path)
    lock.acquire()
    with pytest.raises(StoreError, match="already locked by this object"):
        lock.acquire()
    lock.release()
    lock.release()


def test_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot lock data dir"):
        DataDirLock(blocker / "data").acquire()


def test_holder_not_yet_written_pid_says_unknown(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        (tmp_path / LOCK_FILE).write_text("")
        with pytest.raises(LockedError, match=r"\(pid unknown\)"):
            DataDirLock(tmp_path).acquire()


@pytest.mark.subprocess
def test_another_process_is_refused_with_our_pid(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        child = _child(tmp_path)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 3
        assert out.strip() == (
            f"another acpd is already running with data dir {tmp_path} (pid {os.getpid()})"
        )


@pytest.mark.subprocess
def test_lock_dies_with_its_process(tmp_path: Path) -> None:
    child = _child(tmp_path)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(LockedError, match=f"pid {child.pid}"):
            DataDirLock(tmp_path).acquire()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    with DataDirLock(tmp_path) as lock:
        assert lock.locked
