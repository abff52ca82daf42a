"""Real storage faults for tests, where this machine allows them.

- `small_tmpfs(path, size)`: a tmpfs of `size` bytes mounted on `path`, and `fill(dir)` to fill
  it: the kernel's own ENOSPC, so SQLite's and the logging module's real behaviour on a full
  disk is what is tested, not a guess at it.
- `shutdown_ext4(path)`: an ext4 file system in a loop device mounted on `path`, then
  `shut_down(path)` (the EXT4_IOC_SHUTDOWN ioctl, what `xfs_io -x -c shutdown` does): every
  later read or write on it fails with EIO, as a dying disk's would.

Both need root (mount(2)); where that or the kernel does not allow them, the test is skipped
with the reason. Mounts made here are undone on exit, lazily if something still holds them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "shut_down", "shutdown_ext4", "small_tmpfs"]

_EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
_EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a file system for this test needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount for this test: {done.stderr.strip()}")


def _umount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if done.returncode != 0:  # still in use (a daemon that failed to stop): detach it anyway
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes on `path` (created), mode 0700."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in `directory` until its file system is full (ENOSPC); returns it.
    Delete it to make room again."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]  # the last few bytes too
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def shutdown_ext4(path: Path, size: int = 16 * 1024 * 1024) -> Iterator[Path]:
    """An ext4 file system of `size` bytes in a loop device, mounted on `path`."""
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("no mkfs.ext4 on this machine")
    image = path.with_name(path.name + ".img")
    with open(image, "wb") as f:
        f.truncate(size)
    try:
        done = subprocess.run(
            ["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {done.stderr.strip()}")
        path.mkdir(parents=True, exist_ok=True)
        _mount("-o", "loop", str(image), str(path))
        try:
            yield path
        finally:
            _umount(path)
    finally:
        image.unlink(missing_ok=True)


def shut_down(path: Path) -> None:
    """From now on every I/O on the ext4 file system mounted on `path` fails with EIO."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, _EXT4_IOC_SHUTDOWN, struct.pack("I", _EXT4_GOING_FLAGS_NOLOGFLUSH))
    except OSError as exc:
        pytest.skip(f"cannot shut down {path}: {exc.strerror}")
    finally:
        os.close(fd)
