"""Checkpoints off the writer's path (store/checkpoint.py): the checkpointer copies the WAL, the
writer's own commits do not below the backstop, and a file that is not the writer's is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from store import ConversationRecord, Store, StoreError
from store.checkpoint import BACKSTOP_PAGES
from store.schema import WAL_AUTOCHECKPOINT

PAGE = 4096


def _fill(store: Store, conv_id: str, pages: int) -> None:
    """Commit about `pages` pages of events, in transactions of 64 pages."""
    body = b'{"text":"' + b"x" * (64 * PAGE - 20) + b'"}'
    for _ in range(pages // 64 + 1):
        store.append_events(conv_id, [("agent_message", body)])


def test_the_checkpointer_copies_the_wal_and_the_next_write_starts_it_over(
    store: Store, conv: ConversationRecord
) -> None:
    checkpointer = store.checkpointer()
    try:
        _fill(store, conv.id, 200)
        first = checkpointer.checkpoint()
        assert first.wal_frames >= 200
        assert first.caught_up
        store.append_events(conv.id, [("b", b"{}")])  # starts the WAL over: all of it copied
        second = checkpointer.checkpoint()
        assert second.caught_up
        assert second.wal_frames < 10
    finally:
        checkpointer.close()


def test_with_a_checkpointer_the_writers_commits_checkpoint_only_past_the_backstop(
    store: Store, conv: ConversationRecord
) -> None:
    assert store._rows("PRAGMA wal_autocheckpoint") == [(WAL_AUTOCHECKPOINT,)]
    checkpointer = store.checkpointer()
    try:
        assert store._rows("PRAGMA wal_autocheckpoint") == [(BACKSTOP_PAGES,)]
        # Past SQLite's own trigger: a commit that checkpointed would have started the WAL
        # over at the next one, leaving far fewer frames than were written.
        _fill(store, conv.id, WAL_AUTOCHECKPOINT + 500)
        assert checkpointer.checkpoint().wal_frames > WAL_AUTOCHECKPOINT
    finally:
        checkpointer.close()


def test_closing_after_the_checkpointer_leaves_no_wal_and_everything_stored(
    db_path: Path, store: Store, conv: ConversationRecord
) -> None:
    checkpointer = store.checkpointer()
    recs = store.append_events(conv.id, [("b", b'{"n":1}')])
    checkpointer.checkpoint()
    checkpointer.close()
    store.close()
    assert not db_path.with_name(db_path.name + "-wal").exists()
    with Store.open(db_path) as again:
        assert [(r.seq, r.body) for r in again.read_events(conv.id)][-1] == (
            recs[0].seq,
            b'{"n":1}',
        )


def test_a_file_put_in_the_writers_place_is_refused_untouched(
    db_path: Path, store: Store, tmp_path: Path
) -> None:
    other = tmp_path / "other.sqlite3"
    with Store.open(other) as s:
        s.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/w")
    db_path.rename(tmp_path / "aside.sqlite3")
    shutil.copyfile(other, db_path)
    before = db_path.read_bytes()
    with pytest.raises(StoreError, match="changed since the writer opened it"):
        store.checkpointer()
    assert db_path.read_bytes() == before
    assert store._rows("PRAGMA wal_autocheckpoint") == [(WAL_AUTOCHECKPOINT,)]  # its own, still
