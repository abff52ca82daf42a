"""Default locations (CONTRACT.md "Defaults"). Imported by the CLI, so it must not import trio."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir", "default_socket_path", "log_dir"]


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
