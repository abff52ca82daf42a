"""Scratch cgroups for tests of the cgroup path (real cgroup v2, root or a delegated tree).

`scratch_cgroup()` makes a cgroup of its own below this process's, optionally marked as
delegated the way systemd marks `Delegate=yes` (so a daemon started in it uses it as it would
under systemd), and on exit kills everything in it and removes it. `cgroups_unavailable()` says
why a test cannot (None if it can).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from daemon.agents import cgroups

__all__ = ["cgroups_unavailable", "enter_cgroup", "scratch_cgroup"]


def _probe() -> str | None:
    own = cgroups.cgroup_of()
    if own is None:
        return "no cgroup v2 hierarchy is mounted"
    probe = own / f"acpd-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot create a cgroup below {own}: {exc.strerror}"
    try:
        if not (probe / "cgroup.kill").exists():
            return "cgroup.kill is missing (Linux before 5.14)"
        try:
            os.setxattr(probe, "trusted.delegate", b"1")
        except OSError:
            try:
                os.setxattr(probe, "user.delegate", b"1")
            except OSError as exc:
                return f"cannot mark a cgroup delegated: {exc.strerror}"
        return None
    finally:
        os.rmdir(probe)


_REASON: list[str | None] = []


def cgroups_unavailable() -> str | None:
    if not _REASON:
        _REASON.append(_probe())
    return _REASON[0]


def _tear_down(path: Path) -> None:
    if not path.exists():
        return
    (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 10
    while cgroups.populated(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    for root, _dirs, _files in os.walk(path, topdown=False):  # the deepest first
        with contextlib.suppress(OSError):
            os.rmdir(root)


@contextlib.contextmanager
def scratch_cgroup(*, delegated: bool = False) -> Iterator[Path]:
    own = cgroups.cgroup_of()
    assert own is not None
    path = own / f"acpd-test-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        if delegated:
            try:
                os.setxattr(path, "trusted.delegate", b"1")
            except OSError:
                os.setxattr(path, "user.delegate", b"1")
        yield path
    finally:
        _tear_down(path)


def enter_cgroup(path: Path) -> None:
    """A `preexec_fn`: the child moves itself into `path` before it execs."""
    fd = os.open(path / "cgroup.procs", os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
