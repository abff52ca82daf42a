"""One acpd per data dir: an exclusive flock on `acpd.lock`, released when the process dies.

flock belongs to the open file description, so a second acquirer fails even in the same
process, and the kernel drops the lock with the last descriptor however the holder exits.
O_CLOEXEC keeps agent processes from inheriting (and so outliving us with) the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from .errors import LockedError, StoreError

__all__ = ["LOCK_FILE", "DataDirLock"]

LOCK_FILE = "acpd.lock"


class DataDirLock:
    """`with DataDirLock(data_dir):` holds the data dir for this process (creating it 0700)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write our pid into the file; LockedError if another holds it."""
        if self._fd is not None:
            raise StoreError(f"data dir {self.data_dir} is already locked by this object")
        try:
            if not self.data_dir.is_dir():
                self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self.data_dir, 0o700)  # mkdir's mode is filtered by the umask
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot lock data dir {self.data_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"cannot lock data dir {self.data_dir}: {exc.strerror}") from None
            raise LockedError(
                f"another acpd is already running with data dir {self.data_dir} (pid {holder})"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from None
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: unlinking it would race a new acquirer."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)  # no stale pid for the next reader of the file
            finally:
                os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    # The holder may be between flock and writing its pid: say so rather than guess.
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"
