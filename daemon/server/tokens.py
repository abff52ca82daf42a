"""The dashboard's secrets on disk: its access token, and the single-use login codes that
`acpd dashboard --open` hands a browser in its place.

Standard library only: the daemon serves them (`dashboard.py`) and the CLI, which never
imports trio, reads the token and mints codes. Both are the data dir's user's alone (0600
files; the codes in a 0700 directory): whoever may read them may use the daemon already.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Final

__all__ = [
    "CODES_DIR",
    "CODE_TTL_S",
    "TOKEN_FILE",
    "claim_login_code",
    "create_login_code",
    "load_or_create_token",
    "read_token",
]

log = logging.getLogger("acpd.dashboard")

TOKEN_FILE: Final = "dashboard.token"
CODES_DIR: Final = "dashboard-codes"  # single-use codes for `acpd dashboard --open`
CODE_TTL_S: Final = 60.0
CODE_CLOCK_SLACK_S: Final = 5.0  # a code "from the future" (the clock was set back) still works


def read_token(data_dir: Path) -> str:
    """The token the daemon of `data_dir` serves with (it creates it). Raises OSError."""
    return (data_dir / TOKEN_FILE).read_text(encoding="ascii").strip()


def _usable(token: str) -> bool:
    return len(token) >= 32 and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)


def load_or_create_token(data_dir: Path) -> str:
    """The token in `data_dir/dashboard.token`, created (0600) at first use and reused after.

    A token file that others could read, or that is damaged, is replaced by a new one.
    Raises OSError.
    """
    path = data_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        with open(fd, encoding="ascii", errors="replace") as file:
            st = os.fstat(file.fileno())
            token = file.read(4096).strip()
        if st.st_uid == os.getuid() and not st.st_mode & 0o077 and _usable(token):
            return token
        log.warning("%s was damaged or readable by others: replacing it", path)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover tmp file keeps its old mode through O_CREAT
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)  # whole or not at all: a crash never leaves half a token
    return token


def create_login_code(data_dir: Path) -> str:
    """A single-use code that the page exchanges for the token (`auth {code}`), valid for
    `CODE_TTL_S`: what `acpd dashboard --open` puts in the link it hands to a browser.

    A browser's command line is readable by every local user (/proc/PID/cmdline) for as long
    as the browser runs; a code there is worth nothing once the page has used it, or after a
    minute. It is an empty 0600 file named by the code in `data_dir/dashboard-codes/` (0700):
    whoever may read the token file may mint codes, nobody else. Expired codes are pruned.
    Raises OSError.
    """
    codes = data_dir / CODES_DIR
    try:
        os.mkdir(codes, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(codes)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(errno.EPERM, "not a private directory of ours", str(codes))
    now = time.time()
    for entry in os.scandir(codes):
        try:
            if entry.stat(follow_symlinks=False).st_mtime < now - CODE_TTL_S:
                os.unlink(entry.path)
        except OSError:
            pass  # claimed or pruned meanwhile
    code = secrets.token_urlsafe(32)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(codes / code, flags, 0o600))
    return code


def claim_login_code(data_dir: Path, code: str) -> bool:
    """Use up `code`: True if it was made by `create_login_code` less than `CODE_TTL_S` ago
    and not used before. Whoever removes the file first has it; a used code is gone."""
    if not _usable(code):  # also keeps `code` a plain file name
        return False
    path = data_dir / CODES_DIR / code
    try:
        st = os.lstat(path)
        os.unlink(path)
    except OSError:
        return False
    age = time.time() - st.st_mtime
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == os.getuid()
        and not st.st_mode & 0o077
        and -CODE_CLOCK_SLACK_S <= age <= CODE_TTL_S
    )
