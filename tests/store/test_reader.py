"""The reader connection: sees commits, refuses writes, never blocks the writer."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from store import Store, StoreError

from ._util import body


def test_reader_needs_an_opened_store(db_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        Store.open_reader(db_path)
    db_path.write_bytes(b"")
    with pytest.raises(StoreError, match="not ready"):
        Store.open_reader(db_path)
    assert db_path.read_bytes() == b""


def test_reader_sees_commits_and_refuses_writes(store: Store) -> None:
    with store.reader() as r:
        assert r.readonly
        assert r.count_conversations() == 0
        c = store.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
        assert r.count_conversations() == 1
        assert r.get_conversation(c.id) == c
        with pytest.raises(StoreError, match="read-only"):
            r.append_user_message(c.id, body("x"))
        with pytest.raises(StoreError, match="read-only"):
            r.delete_conversation(c.id)
        assert store.get_conversation(c.id) is not None


def test_reader_in_a_long_read_never_blocks_the_writer(store: Store) -> None:
    c = store.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
    with store.reader() as r:
        r._conn.execute("BEGIN")  # hold a read snapshot open, as a slow reader would
        assert r.read_events(c.id) == []
        ev = store.append_user_message(c.id, body("during"))  # no busy wait: WAL
        assert r.read_events(c.id) == []  # the snapshot is stable...
        r._conn.execute("COMMIT")
        assert r.read_events(c.id) == [ev]  # ...and the next one sees the commit


def test_connections_may_move_between_threads(store: Store) -> None:
    """The daemon calls from a pool of worker threads, one at a time per connection."""
    c = store.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
    reader = store.reader()
    seen: list[int] = []

    def work() -> None:
        store.append_user_message(c.id, body("from a thread"))
        seen.append(reader.count_conversations())
        reader.close()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [1]
    assert [e.seq for e in store.pending_messages(c.id)] == [1]


def test_paths_that_need_quoting_in_a_uri(tmp_path: Path) -> None:
    odd = tmp_path / "a b?c#d%20é" / "acpd.sqlite3"
    odd.parent.mkdir()
    with Store.open(odd) as s, Store.open_reader(odd) as r:
        c = s.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
        assert r.get_conversation(c.id) == c
    assert sorted(os.listdir(odd.parent)) == ["acpd.sqlite3"]
