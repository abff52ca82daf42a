"""Fixtures for the store tests: a fresh store file per test, and a conversation in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import ConversationRecord, Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "acpd.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(db_path) as s:
        yield s


@pytest.fixture
def conv(store: Store) -> ConversationRecord:
    return store.create_conversation(title="t", agent="demo", agent_cmd=["demo-agent"], cwd="/w")
