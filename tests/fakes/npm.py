"""Real third-party agents from npm, installed once into a cache for the tests that run them.

`npm_install(package)` installs `package` (name@version) into `$XDG_CACHE_HOME/acpd-tests/npm-
<name>-<version>` (default `~/.cache/acpd-tests`), through a temporary directory renamed into
place, so an interrupted or concurrent install never leaves a half-made one; npm's own cache
(`~/.npm`) is reused without revalidation (`--prefer-offline`). Later runs find it there and
install nothing. `Unavailable` says why it cannot be (no node/npm, no network); `skip_or_fail`
skips with that reason, except where real agents are required (`CI=1` or
`ACPD_REQUIRE_REAL_AGENTS=1`): there the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["CACHE", "REQUIRE_VARS", "Unavailable", "npm_install", "skip_or_fail"]

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "acpd-tests"
REQUIRE_VARS = ("CI", "ACPD_REQUIRE_REAL_AGENTS")


class Unavailable(Exception):
    """The package cannot be installed or run here; the message says why."""


def required() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in REQUIRE_VARS)


def skip_or_fail(why: str) -> NoReturn:
    if required():
        pytest.fail(f"{why} ({' or '.join(f'{v}=1' for v in REQUIRE_VARS)}: real agents required)")
    pytest.skip(why)


def prefix_for(package: str) -> Path:
    return CACHE / ("npm-" + re.sub(r"[^A-Za-z0-9.@-]+", "-", package.lstrip("@")))


def npm_install(package: str, entry: str) -> Path:
    """The path of `entry` (relative to the install prefix) once `package` is installed."""
    prefix = prefix_for(package)
    target = prefix / entry
    if target.exists():
        return target
    if shutil.which("node") is None or (npm := shutil.which("npm")) is None:
        raise Unavailable(f"node and npm are needed for {package}")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".npm-"))
    try:
        # Few, short retries: without a network, npm's defaults take over a minute to give up.
        cmd = [npm, "install", "--prefix", str(tmp), "--prefer-offline", "--no-audit",
               "--no-fund", "--no-save", "--fetch-retries=1", "--fetch-retry-mintimeout=2000",
               "--fetch-retry-maxtimeout=10000", package]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"npm install {package} timed out (no network?)") from None
        if proc.returncode != 0 or not (tmp / entry).exists():
            # npm's first error line is its error code (ECONNREFUSED, E404, ...).
            said = [ln for ln in proc.stderr.splitlines() if ln.startswith("npm error ")]
            last = (said or proc.stderr.strip().splitlines() or ["?"])[0]
            raise Unavailable(f"npm install {package} failed (no network?): {last}")
        try:
            tmp.rename(prefix)
        except OSError:  # another run got there first
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
