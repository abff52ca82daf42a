"""Fixtures shared by the engine tests that run a real daemon (see realdaemon.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.agents._process import group_alive
from tests.engine.realdaemon import DELAY


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[int]]:
    """The demo agent's settings for every daemon started here, and a list of agent process
    groups that are SIGKILLed at teardown if a failed test left them running."""
    monkeypatch.setenv("ACPD_DEMO_DELAY", str(DELAY))
    monkeypatch.setenv("ACPD_DEMO_DIR", str(tmp_path / "demo-sessions"))
    seen: list[int] = []
    yield seen
    for pgid in seen:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
