"""A plain `pip install .` gets the whole daemon: every module of the three rooms and the
dashboard's page, not only what an editable install happens to see in the checkout; and the
version `daemon.version` says, which acpd reports without reading the installed metadata."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from daemon.version import ACPD_VERSION

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("protocol", "store", "daemon")


def _shipped(root: Path) -> set[str]:
    """What a wheel must hold: the rooms' modules, type markers and the dashboard's files."""
    out: set[str] = set()
    for room in ROOMS:
        for path in (root / room).rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix in {".py", ".typed"} or "static" in path.parts:
                out.add(path.relative_to(root).as_posix())
    return out


def test_the_wheel_holds_every_module_the_dashboard_and_the_version(tmp_path: Path) -> None:
    # Built from a copy: building in place leaves build/ and *.egg-info in the checkout.
    source = tmp_path / "src"
    source.mkdir()
    for name in (*ROOMS, "pyproject.toml", "README.md"):
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("acpd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
    assert f"\nVersion: {ACPD_VERSION}\n" in zipfile.ZipFile(wheel).read(metadata).decode()
    expected = _shipped(source)
    assert "daemon/engine/supervisor.py" in expected
    assert "daemon/static/index.html" in expected
    assert expected - names == set()
    assert not any(n.startswith("tests/") for n in names)
