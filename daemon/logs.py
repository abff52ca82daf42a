"""Logging set-up: stderr for people or for the journal, plus a bounded rotating file.

Under systemd (`JOURNAL_STREAM` names our stderr) lines carry a syslog priority prefix such as
`<6>` and no timestamp, since journald adds both time and priority fields from them.

A record a handler cannot write (the log file's disk is full, stderr is gone) is dropped and
counted (`dropped_records`, in `daemon/status`), never reported with the logging module's
"--- Logging error ---" traceback on stderr: that would be noise about noise, and on a full
disk every record would make one. The file handler reopens its file at the next record, so
logging resumes by itself once there is room again.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Final, TextIO

from daemon.paths import log_dir

__all__ = ["JournalFormatter", "dropped_records", "setup_logging", "stderr_is_journal"]

LOG_FILE_BYTES: Final = 5 * 1024 * 1024
LOG_FILE_COUNT: Final = 3
_HUMAN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_JOURNAL = "%(name)s: %(message)s"
# sd-daemon(3) priorities, highest level first.
_PRIORITIES: Final = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
# Handlers we installed, so a second set-up (tests, re-exec) replaces rather than doubles them.
_installed: list[logging.Handler] = []
_dropped = 0


def dropped_records() -> int:
    """Log records a handler could not write since the process started."""
    return _dropped


def _drop() -> None:
    global _dropped
    _dropped += 1


class _QuietStreamHandler(logging.StreamHandler[TextIO]):
    def handleError(self, record: logging.LogRecord) -> None:
        _drop()


class _QuietFileHandler(logging.handlers.RotatingFileHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        _drop()
        # What the failed write left in the stream's buffer would come out first (or fail
        # again) at the next record: start that one on a fresh stream instead.
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class JournalFormatter(logging.Formatter):
    """`<N>name: message`, where N is the syslog priority of the record's level."""

    def __init__(self) -> None:
        super().__init__(_JOURNAL)

    def format(self, record: logging.LogRecord) -> str:
        prio = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        # A traceback spans lines; journald splits on newlines, so each line gets the prefix.
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).split("\n"))


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when `JOURNAL_STREAM` (`dev:inode`) names the stream we log to (systemd.exec(5))."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):  # no real file descriptor (captured in tests)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def setup_logging(
    data_dir: Path | None,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    journal: bool | None = None,
) -> None:
    """Log to `stream` (stderr) and, with a data dir, to `data_dir/logs/acpd.log` (5 MiB x 3).

    `journal` forces the journal format on or off; by default it follows `JOURNAL_STREAM`.
    """
    stream = stream or sys.stderr
    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed.clear()

    console = _QuietStreamHandler(stream)
    is_journal = stderr_is_journal(stream) if journal is None else journal
    console.setFormatter(JournalFormatter() if is_journal else logging.Formatter(_HUMAN))
    _installed.append(console)
    if data_dir is not None:
        logs = log_dir(data_dir)
        logs.mkdir(mode=0o700, exist_ok=True)
        rotating = _QuietFileHandler(
            logs / "acpd.log", maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_COUNT,
            encoding="utf-8",
        )  # fmt: skip
        rotating.setFormatter(logging.Formatter(_HUMAN))
        _installed.append(rotating)
    for handler in _installed:
        root.addHandler(handler)
    root.setLevel(level)
