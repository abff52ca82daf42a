"""Fixtures for the agent-room tests."""

from __future__ import annotations

import pytest

from tests.fakes.wiretap import WireTap, tap_agent_connections


@pytest.fixture
def wire_taps(monkeypatch: pytest.MonkeyPatch) -> list[WireTap]:
    """One `WireTap` per agent connection opened in the test, in order."""
    return tap_agent_connections(monkeypatch)
