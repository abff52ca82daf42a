"""Fixtures for the agent-room tests."""

from __future__ import annotations

import pytest

from tests.agents.farend import Seen
from tests.fakes.wiretap import WireTap, tap_agent_connections


@pytest.fixture
def wire_taps(monkeypatch: pytest.MonkeyPatch) -> list[WireTap]:
    """One `WireTap` per agent connection opened in the test, in order."""
    return tap_agent_connections(monkeypatch)


@pytest.fixture
def seen() -> Seen:
    """What an AgentPeer under test delivered (tests/agents/farend.py)."""
    return Seen()
