"""Default locations (CONTRACT.md "Defaults"). Imported by the CLI, so it must not import trio."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PrivateDirError", "default_data_dir", "default_socket_path", "log_dir", "make_private"]


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


class PrivateDirError(Exception):
    """A directory cannot be made ours only; the message is one line for the user."""


def make_private(
    directory: Path, *, what: str = "", follow_symlinks: bool = True, sticky_root_ok: bool = False
) -> int | None:
    """Make the existing `directory` 0700 if it is ours and wider: returns the mode it had then,
    else None. `what` ("data dir ") starts the messages. With `sticky_root_ok`, a root-owned
    sticky directory (/tmp) is accepted as it is: only we may rename or unlink what we put in
    it. Raises `PrivateDirError` if it is not a directory, not ours, or cannot be changed.
    """
    try:
        st = os.stat(directory, follow_symlinks=follow_symlinks)
    except OSError as exc:
        raise PrivateDirError(f"cannot use {what}{directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PrivateDirError(f"{what}{directory} is not a directory")
    if sticky_root_ok and st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
        return None
    if st.st_uid != os.getuid():
        raise PrivateDirError(
            f"{what}{directory} belongs to uid {st.st_uid}, not to us; refusing to use it"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 == 0:
        return None
    try:
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise PrivateDirError(f"cannot make {what}{directory} private: {exc.strerror}") from None
    return mode
