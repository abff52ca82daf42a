"""Default locations (CONTRACT.md "Defaults"). Imported by the CLI, so it must not import trio."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "PrivateDirError",
    "agent_log_path",
    "default_data_dir",
    "default_socket_path",
    "log_dir",
    "private_dir",
]


def _env_path(name: str) -> Path | None:
    # Empty and relative values are ignored, as the XDG base-directory spec asks.
    value = os.environ.get(name, "")
    return Path(value) if value and os.path.isabs(value) else None


def default_socket_path() -> Path:
    """`$ACPD_SOCKET`, else `$XDG_RUNTIME_DIR/acpd/acpd.sock`, else `/tmp/acpd-$UID/acpd.sock`."""
    if value := os.environ.get("ACPD_SOCKET"):
        return Path(value)  # the user's own choice: taken as given, relative or not
    if runtime := _env_path("XDG_RUNTIME_DIR"):
        return runtime / "acpd" / "acpd.sock"
    return Path(f"/tmp/acpd-{os.getuid()}") / "acpd.sock"


def default_data_dir() -> Path:
    """`$ACPD_DATA_DIR`, else `$XDG_DATA_HOME/acpd`, else `~/.local/share/acpd`."""
    if value := os.environ.get("ACPD_DATA_DIR"):
        return Path(value)
    if data_home := _env_path("XDG_DATA_HOME"):
        return data_home / "acpd"
    return Path.home() / ".local" / "share" / "acpd"


def log_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


def agent_log_path(data_dir: Path, conv_id: str) -> Path:
    """Where the stderr of a conversation's agent goes (rotated to `<path>.1`)."""
    return log_dir(data_dir) / "agents" / f"{conv_id}.log"


class PrivateDirError(Exception):
    """A directory is not private enough to use; the message is one line for the user."""


def private_dir(
    directory: Path,
    *,
    what: str,
    risk: str,
    follow_symlinks: bool = True,
    sticky_root_ok: bool = False,
) -> bool:
    """Create `directory` (and any missing parents) 0700, or check that an existing one is
    private enough: ours, and writable by no one else. acpd never changes the mode of a
    directory it did not create. Returns True if it created `directory`.

    `what` names it in messages ("socket directory"), `risk` says what others could do if it
    were writable ("replace the socket"). With `sticky_root_ok`, a root-owned sticky directory
    (/tmp) is accepted: only we may rename or unlink what we put in it.

    Raises `PrivateDirError` (not a directory, not ours, writable by others, or cannot be
    created).
    """
    created = _make_dirs(directory, what)
    if created:
        return True
    try:
        st = os.stat(directory, follow_symlinks=follow_symlinks)
    except OSError as exc:
        raise PrivateDirError(f"cannot use {what} {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PrivateDirError(f"{what} {directory} is not a directory")
    if sticky_root_ok and st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
        return False
    if st.st_uid != os.getuid():
        raise PrivateDirError(
            f"{what} {directory} belongs to uid {st.st_uid}, not to us; refusing to use it: "
            "use a directory of your own"
        )
    mode = stat.S_IMODE(st.st_mode)
    writers = [who for bit, who in ((0o020, "its group"), (0o002, "others")) if mode & bit]
    if writers:
        raise PrivateDirError(
            f"{what} {directory} is writable by {' and '.join(writers)} (mode {mode:04o}), so "
            f"others could {risk}; acpd does not change the mode of a directory it did not "
            f"create: use a directory of your own (or `chmod go-w {directory}`)"
        )
    return False


def _make_dirs(directory: Path, what: str) -> bool:
    """Create the missing directories down to `directory`, each 0700 (whatever the umask);
    False if `directory` existed (or another process created it meanwhile)."""
    missing: list[Path] = []
    path = directory
    while not os.path.lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if path == directory:
                return False  # someone else's after all: checked as an existing one
            continue
        except OSError as exc:
            raise PrivateDirError(f"cannot create {what} {directory}: {exc.strerror}") from None
        os.chmod(path, 0o700)  # ours: mkdir's mode was filtered by the umask
    return bool(missing)
