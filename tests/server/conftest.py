"""Fixtures for the front-door tests."""

from __future__ import annotations

import pytest

from tests.fakes.engine import FakeEngine


@pytest.fixture
def engine() -> FakeEngine:
    fake = FakeEngine()
    fake.add("abc123", n_events=2)
    fake.add("abd456")
    return fake
