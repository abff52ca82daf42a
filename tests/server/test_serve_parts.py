"""The pieces of `acpd serve` that need no daemon: paths, logging, the data dir."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import logs
from daemon.paths import default_data_dir, default_socket_path
from tests.fakes.disks import fill, small_tmpfs


def test_default_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACPD_SOCKET", "XDG_RUNTIME_DIR", "ACPD_DATA_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/u")
    assert default_socket_path() == Path(f"/tmp/acpd-{os.getuid()}/acpd.sock")
    assert default_data_dir() == Path("/home/u/.local/share/acpd")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "relative/ignored")
    monkeypatch.setenv("XDG_DATA_HOME", "")
    assert default_socket_path() == Path(f"/tmp/acpd-{os.getuid()}/acpd.sock")
    assert default_data_dir() == Path("/home/u/.local/share/acpd")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg/data")
    assert default_socket_path() == Path("/run/user/7/acpd/acpd.sock")
    assert default_data_dir() == Path("/xdg/data/acpd")
    monkeypatch.setenv("ACPD_SOCKET", "/s.sock")
    monkeypatch.setenv("ACPD_DATA_DIR", "/d")
    assert default_socket_path() == Path("/s.sock")
    assert default_data_dir() == Path("/d")


@pytest.mark.subprocess
def test_paths_does_not_import_trio() -> None:
    code = "import sys, daemon.paths; sys.exit('trio' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("acpd.x", level, __file__, 1, msg, (), exc_info)


def test_journal_format() -> None:
    fmt = logs.JournalFormatter()
    assert fmt.format(_record(logging.INFO, "ready")) == "<6>acpd.x: ready"
    assert fmt.format(_record(logging.DEBUG, "d")) == "<7>acpd.x: d"
    assert fmt.format(_record(logging.WARNING, "w")) == "<4>acpd.x: w"
    assert fmt.format(_record(logging.CRITICAL, "c")) == "<2>acpd.x: c"
    lines = fmt.format(_record(logging.ERROR, "failed", exc=True)).splitlines()
    assert lines[0] == "<3>acpd.x: failed"
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_stderr_is_journal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert not logs.stderr_is_journal(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.stderr_is_journal(stream)
        # Inherited by a shell, but our stderr is somewhere else (a terminal): not the journal.
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not logs.stderr_is_journal(stream)
    monkeypatch.setenv("JOURNAL_STREAM", "8:9")
    assert not logs.stderr_is_journal(io.StringIO())  # no file descriptor at all


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in logs._installed:
        root.removeHandler(handler)
        handler.close()
    logs._installed.clear()
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging(tmp_path: Path) -> None:
    human, journal = io.StringIO(), io.StringIO()
    logs.setup_logging(tmp_path, stream=human, journal=False)
    logging.getLogger("acpd.t").info("hello")
    assert human.getvalue().endswith(" INFO    acpd.t: hello\n")
    assert human.getvalue()[:4].isdigit()  # a timestamp first
    # Set up again: replaced, not doubled.
    logs.setup_logging(tmp_path, stream=journal, journal=True)
    logging.getLogger("acpd.t").warning("again")
    assert journal.getvalue() == "<4>acpd.t: again\n"
    assert human.getvalue().count("\n") == 1
    log_file = tmp_path / "logs" / "acpd.log"
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    assert log_file.read_text().count("acpd.t:") == 2
    handler = next(h for h in logs._installed if isinstance(h, logging.FileHandler))
    assert isinstance(handler, logging.handlers.RotatingFileHandler)
    assert (handler.maxBytes, handler.backupCount) == (5 * 1024 * 1024, 3)


def test_main_no_longer_exports_notify() -> None:
    import daemon.server.serve

    assert not hasattr(daemon.server.serve, "notify")
    assert "notify" not in daemon.server.serve.__all__


def test_prepare_data_dir_creates_it_private_and_never_changes_one_it_did_not_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.server.serve import DataDirError, prepare_data_dir

    prepare_data_dir(tmp_path / "absent" / "data")  # made, with its parent, 0700
    for made in (tmp_path / "absent", tmp_path / "absent" / "data"):
        assert made.stat().st_mode & 0o777 == 0o700
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    prepare_data_dir(data)  # ours, and no one else may write: used as it is
    assert data.stat().st_mode & 0o777 == 0o755
    os.chmod(data, 0o775)
    with pytest.raises(DataDirError, match=r"is writable by its group \(mode 0775\)"):
        prepare_data_dir(data)
    assert data.stat().st_mode & 0o777 == 0o775
    (tmp_path / "file").touch()
    with pytest.raises(DataDirError, match="is not a directory"):
        prepare_data_dir(tmp_path / "file")
    os.chmod(data, 0o755)
    owner = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    with pytest.raises(DataDirError, match=f"belongs to uid {owner}, not to us; refusing"):
        prepare_data_dir(data)
    assert data.stat().st_mode & 0o777 == 0o755  # not ours: untouched


@pytest.mark.usefixtures("restore_logging")
def test_a_full_disk_drops_and_counts_log_records_without_tracebacks(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The logging module's own reaction is a "--- Logging error ---" traceback on stderr for
    every record it cannot write; ours is to drop and count it, and to go on once there is
    room again."""
    with small_tmpfs(tmp_path / "fs", 256 * 1024) as fs:
        console = io.StringIO()
        logs.setup_logging(fs, stream=console, journal=False)
        log = logging.getLogger("acpd.t")
        log.info("before")
        filler = fill(fs)
        dropped = logs.dropped_records()
        for i in range(50):
            log.warning("record %d %s", i, "x" * 4096)
        assert logs.dropped_records() - dropped >= 40  # the first may fit in what was left
        assert console.getvalue().count("record ") == 50  # the console still has them all
        filler.unlink()
        log.warning("after")
        err = capfd.readouterr().err
        assert "Logging error" not in err
        assert "Traceback" not in err
        text = (fs / "logs" / "acpd.log").read_text(errors="replace")
        assert "acpd.t: before" in text
        assert text.endswith("acpd.t: after\n")
        for handler in logs._installed:
            handler.close()  # before the file system goes
