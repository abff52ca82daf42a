"""acpd's version, written here once: pyproject.toml takes it from this file (setuptools reads
it without importing), so the installed metadata says the same. Not looked up in that metadata
at run time: `importlib.metadata` costs `acpd serve` some 7 ms of imports (email parsing among
them) and a search of sys.path before it is ready."""

from __future__ import annotations

from typing import Final

__all__ = ["ACPD_VERSION"]

ACPD_VERSION: Final = "0.1.0"
