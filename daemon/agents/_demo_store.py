"""The demo agent's session files: one JSON document per session, so `session/load` works
across process restarts. Sync and small; the agent calls it through `trio.to_thread`."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import msgspec

__all__ = ["Entry", "SessionFile", "default_dir", "load", "save"]

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str  # "user" | "agent"
    text: str


class SessionFile(msgspec.Struct, forbid_unknown_fields=True):
    session_id: str
    cwd: str
    history: list[Entry] = msgspec.field(default_factory=list)


def default_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """`$ACPD_DEMO_DIR`, else `$XDG_STATE_HOME/acpd-demo`, else `~/.local/state/acpd-demo`."""
    if env.get("ACPD_DEMO_DIR"):
        return Path(env["ACPD_DEMO_DIR"])
    state = env.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(state) / "acpd-demo"


def _path(directory: Path, session_id: str) -> Path:
    # Session ids come from the client: never let one name a path outside the directory.
    if not _SAFE_ID.fullmatch(session_id):
        raise KeyError(session_id)
    return directory / f"{session_id}.json"


def load(directory: Path, session_id: str) -> SessionFile:
    """Raises KeyError for an unknown (or unreadable) session."""
    try:
        data = _path(directory, session_id).read_bytes()
        return msgspec.json.decode(data, type=SessionFile)
    except (OSError, msgspec.DecodeError):
        raise KeyError(session_id) from None


def save(directory: Path, session: SessionFile) -> None:
    """Write atomically (temp file, then rename), so a crash never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = _path(directory, session.session_id)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(session))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
