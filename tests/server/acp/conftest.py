"""Fixtures for the ACP front door tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio.testing

from tests.server.acp.harness import Front, front


@pytest.fixture
async def f(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> AsyncIterator[Front]:
    """A front-door harness, opened outside the test's hang guard (the store opens in a
    thread, which the mock clock would count as time)."""
    async with front(tmp_path) as opened:
        yield opened
