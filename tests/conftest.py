"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.threads import busy_while_in_threads


@pytest.fixture(autouse=True)
def _threads_are_work() -> Iterator[None]:
    """A store call in its worker thread keeps trio's test clock from jumping past it.

    Its own MonkeyPatch: a test's `monkeypatch.undo()` must not take it away."""
    with pytest.MonkeyPatch.context() as mp:
        busy_while_in_threads(mp)
        yield
