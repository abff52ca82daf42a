"""Opening, migrating and refusing store files; the reader connection."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from store import SCHEMA_VERSION, Store, StoreError
from store import schema as schema_mod

from ._util import body


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        value: object = conn.execute(f"PRAGMA {name}").fetchone()[0]
        return value
    finally:
        conn.close()


@pytest.mark.parametrize("existing", [False, True], ids=["missing", "empty-file"])
def test_open_creates_from_version_0(db_path: Path, existing: bool) -> None:
    if existing:
        db_path.write_bytes(b"")
    with Store.open(db_path) as s:
        assert s.count_conversations() == 0
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION
    assert _pragma(db_path, "application_id") == schema_mod.APPLICATION_ID


def test_reopen_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    with Store.open(db_path) as s:
        c = s.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
        s.append_user_message(c.id, body("hi"))
    with Store.open(db_path) as s:
        rec = s.get_conversation(c.id)
        assert rec is not None
        assert rec.last_seq == 1
        assert rec.queued == 1
        assert [e.body for e in s.read_events(c.id)] == [body("hi")]
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION


def test_forward_migration_steps_run_in_order_once(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store.open(db_path).close()  # at the current version
    step = ("CREATE TABLE extra (x INTEGER)", "INSERT INTO extra VALUES (42)")
    monkeypatch.setattr(schema_mod, "MIGRATIONS", [*schema_mod.MIGRATIONS, step])
    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    for _ in range(2):  # the second open finds nothing to do
        with Store.open(db_path) as s:
            assert s._conn.execute("SELECT x FROM extra").fetchall() == [(42,)]
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION + 1


def test_failed_migration_rolls_back(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(db_path).close()
    step = ("CREATE TABLE extra (x INTEGER)", "INSERT INTO nowhere VALUES (1)")
    monkeypatch.setattr(schema_mod, "MIGRATIONS", [*schema_mod.MIGRATIONS, step])
    with pytest.raises(StoreError, match="no such table: nowhere"):
        Store.open(db_path)
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchall() == []
    finally:
        conn.close()


def _newer_db(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA application_id = {schema_mod.APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_refuses_newer_schema_and_leaves_file_alone(db_path: Path) -> None:
    before = _newer_db(db_path)
    with pytest.raises(StoreError) as info:
        Store.open(db_path)
    msg = str(info.value)
    assert str(db_path) in msg
    assert "newer acpd" in msg
    assert "\n" not in msg
    assert db_path.read_bytes() == before
    assert sorted(os.listdir(db_path.parent)) == [db_path.name]


def test_refuses_newer_schema_found_only_in_the_wal(db_path: Path) -> None:
    """The header can lag behind the WAL; SQLite's own view is checked before any write."""
    with Store.open(db_path) as s:
        s.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
        holder = sqlite3.connect(db_path)  # keeps the WAL from being checkpointed on close
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreError, match="newer acpd"):
            Store.open(db_path)
        holder.close()


def test_refuses_garbage_and_leaves_file_alone(db_path: Path) -> None:
    garbage = os.urandom(8192)
    db_path.write_bytes(garbage)
    with pytest.raises(StoreError, match="not an SQLite database") as info:
        Store.open(db_path)
    assert str(db_path) in str(info.value)
    assert db_path.read_bytes() == garbage
    assert sorted(os.listdir(db_path.parent)) == [db_path.name]


def test_refuses_short_garbage(db_path: Path) -> None:
    db_path.write_bytes(b"hello")
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store.open(db_path)
    assert db_path.read_bytes() == b"hello"


def test_refuses_damaged_schema_page_and_leaves_file_alone(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    data = bytearray(db_path.read_bytes())
    data[100:4096] = os.urandom(3996)  # the schema's b-tree page, after the valid header
    db_path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged or not a database"):
        Store.open(db_path)
    assert db_path.read_bytes() == bytes(data)


def test_refuses_other_programs_database(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    before = db_path.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        Store.open(db_path)
    assert db_path.read_bytes() == before
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA application_id = 7")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    before = db_path.read_bytes()
    with pytest.raises(StoreError, match="another program"):
        Store.open(db_path)
    assert db_path.read_bytes() == before


def test_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open store"):
        Store.open(tmp_path / "missing-dir" / "acpd.sqlite3")


def test_close_is_idempotent_and_later_calls_raise_store_error(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count_conversations()
    with pytest.raises(StoreError, match="closed"):
        store.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")


# --- the reader ----------------------------------------------------------------------------


def test_reader_needs_an_opened_store(db_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        Store.open_reader(db_path)
    db_path.write_bytes(b"")
    with pytest.raises(StoreError, match="not ready"):
        Store.open_reader(db_path)
    assert db_path.read_bytes() == b""


def test_reader_refuses_newer_schema(db_path: Path) -> None:
    _newer_db(db_path)
    with pytest.raises(StoreError, match="newer acpd"):
        Store.open_reader(db_path)


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
