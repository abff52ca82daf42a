"""Fixtures for the ACP front door tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio.testing

from tests.server.acp.harness import Front, front


@pytest.fixture
async def f(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> AsyncIterator[Front]:
    """A front-door harness over a real engine. Tests that use it take `autojump_clock` too
    (pytest-trio runs a test on the clock among its own arguments) and have no hang guard,
    as the engine's tests: `conversations/create` checks the cwd in a thread, and while a
    thread runs the mock clock jumps to the next deadline, which a guard would be."""
    async with front(tmp_path) as opened:
        yield opened
