"""acpd's version, as installed (looked up once: metadata lookups are slow)."""

from __future__ import annotations

import functools
import importlib.metadata

__all__ = ["acpd_version"]


@functools.cache
def acpd_version() -> str:
    try:
        return importlib.metadata.version("acpd")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
