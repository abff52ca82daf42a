"""Files the store refuses (newer schema, garbage, damage) and leaves alone."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
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


def _newer_only_in_the_wal(db_path: Path) -> tuple[bytes, bytes]:
    """A store whose newer schema is only in its WAL, with no connection open: the state a
    newer acpd killed before its first checkpoint leaves. Returns (main file, WAL) bytes."""
    with Store.open(db_path) as s:
        s.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/")
    with Store.open(db_path) as s:  # a checkpointed, current main file...
        holder = sqlite3.connect(db_path)  # ...and a WAL that stays: no checkpoint on close
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("CREATE TABLE future (x)")
        holder.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        holder.commit()
        orphan = db_path.parent / "orphan"
        orphan.mkdir()
        for suffix in ("", "-wal"):  # not -shm: whoever opens it next rebuilds it
            (orphan / (db_path.name + suffix)).write_bytes(Path(f"{db_path}{suffix}").read_bytes())
        holder.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        Path(f"{db_path}{suffix}").write_bytes((orphan / (db_path.name + suffix)).read_bytes())
    assert _pragma_header_version(db_path) == SCHEMA_VERSION  # the main file looks current
    return db_path.read_bytes(), Path(f"{db_path}-wal").read_bytes()


def _pragma_header_version(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[60:64], "big")


@pytest.mark.parametrize("opener", [Store.open, Store.open_reader], ids=["writer", "reader"])
def test_newer_schema_only_in_the_wal_is_refused_without_a_write(
    db_path: Path, opener: Callable[[Path], Store]
) -> None:
    """No other connection is open: the refusing one would be the last to close, and a
    writable connection closing last checkpoints the WAL into the main file and deletes it."""
    main, wal = _newer_only_in_the_wal(db_path)
    for _ in range(2):  # and the file is as refusable the second time
        with pytest.raises(StoreError, match="newer acpd"):
            opener(db_path)
        assert db_path.read_bytes() == main
        assert Path(f"{db_path}-wal").read_bytes() == wal


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


def _filled(db_path: Path) -> list[str]:
    with Store.open(db_path) as s:
        ids = [
            s.create_conversation(title="t" * 200, agent="demo", agent_cmd=["a"], cwd="/").id
            for _ in range(60)
        ]
        for c in ids[:5]:
            s.append_events(c, [("agent_message", b'{"t":"' + b"x" * 400 + b'"}')] * 30)
    return ids


def _assert_one_line_damage_error(info: pytest.ExceptionInfo[StoreError], path: Path) -> None:
    msg = str(info.value)
    assert f"store {path} is damaged" in msg
    assert "\n" not in msg
    assert info.type is StoreError
    chained = info.value.__cause__ or (
        not info.value.__suppress_context__ and info.value.__context__
    )
    assert not chained, "a StoreError, not an sqlite3 error's traceback"


def _damage_calls(
    s: Store, ids: list[str], *, queue_intact: bool = False
) -> list[Callable[[], object]]:
    """Reads, then (for a writer) writes. With the queue intact, pending_messages (which reads
    only the queue, empty here) has nothing damaged to meet."""
    reads: list[Callable[[], object]] = [
        s.count_conversations,
        s.list_conversations,
        s.conversations_needing_recovery,
        lambda: s.get_conversation(ids[3]),
        lambda: s.read_events(ids[0]),
    ]
    if not queue_intact:
        reads.append(lambda: s.pending_messages(ids[0]))
    if s.readonly:
        return reads
    return [
        *reads,
        lambda: s.append_user_message(ids[0], body("x")),
        lambda: s.create_conversation(title="t", agent="demo", agent_cmd=["a"], cwd="/"),
    ]


def test_damage_beyond_the_schema_page_is_a_one_line_store_error(db_path: Path) -> None:
    """Open does not read every page (that would be O(stored)), so damage elsewhere shows up
    later, and must then be a StoreError people can read, naming the file."""
    ids = _filled(db_path)
    data = db_path.read_bytes()
    assert len(data) > 10 * 4096
    with sqlite3.connect(db_path) as conn:  # open reads the queue (to recover activity)
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'queue'").fetchone()
    queue_page = slice((root - 1) * 4096, root * 4096)
    damaged = bytearray(data[:4096] + b"\xa5" * (len(data) - 4096))
    damaged[queue_page] = data[queue_page]
    db_path.write_bytes(damaged)
    with Store.open(db_path) as s:  # the schema page and the (empty) queue's are intact
        for call in _damage_calls(s, ids, queue_intact=True):
            with pytest.raises(StoreError) as info:
                call()
            _assert_one_line_damage_error(info, db_path)
    damaged[queue_page] = b"\xa5" * 4096
    db_path.write_bytes(damaged)
    with pytest.raises(StoreError) as info:
        Store.open(db_path)
    _assert_one_line_damage_error(info, db_path)


def test_file_truncated_under_open_stores_is_a_one_line_store_error(db_path: Path) -> None:
    ids = _filled(db_path)
    with Store.open(db_path) as s, s.reader() as r:
        for conn in (s._conn, r._conn):  # no mmap: a short file must not be SIGBUS
            assert conn.execute("PRAGMA mmap_size").fetchone() in (None, (0,))
        assert r.count_conversations() == len(ids)
        os.truncate(db_path, 3 * 4096)
        for store in (r, s):
            for call in _damage_calls(store, ids)[1:]:  # count is one cached page
                with pytest.raises(StoreError) as info:
                    call()
                _assert_one_line_damage_error(info, db_path)


def test_refuses_truncated_file_and_leaves_it_alone(db_path: Path) -> None:
    _filled(db_path)
    short = db_path.read_bytes()[: 5 * 4096]
    db_path.write_bytes(short)
    for opener in (Store.open, Store.open_reader):
        with pytest.raises(StoreError, match="damaged or not a database"):
            opener(db_path)
        assert db_path.read_bytes() == short


def test_rows_that_do_not_decode_are_a_store_error(db_path: Path) -> None:
    """Damage SQLite's checks miss (a valid page, a wrong value) is still a StoreError."""
    ids = _filled(db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE conversations SET agent_cmd = '[1' WHERE id = ?", (ids[0],))
    conn.execute("DELETE FROM meta")
    conn.commit()
    conn.close()
    with Store.open(db_path) as s:
        calls: list[Callable[[], object]] = [
            lambda: s.get_conversation(ids[0]),
            lambda: s.list_conversations(limit=100),
            s.count_conversations,
        ]
        for call in calls:
            with pytest.raises(StoreError) as info:
                call()
            _assert_one_line_damage_error(info, db_path)
        assert s.get_conversation(ids[1]) is not None  # the other rows are fine


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


def test_reader_refuses_newer_schema(db_path: Path) -> None:
    _newer_db(db_path)
    with pytest.raises(StoreError, match="newer acpd"):
        Store.open_reader(db_path)
