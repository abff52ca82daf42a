"""Opening, migrating and refusing store files; the reader connection."""

from __future__ import annotations

import os
import sqlite3
import threading
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


def _old_store(db_path: Path, version: int) -> sqlite3.Connection:
    """A raw connection to a new store at an earlier schema version, as that acpd made it."""
    mp = pytest.MonkeyPatch()
    mp.setattr(schema_mod, "MIGRATIONS", schema_mod.MIGRATIONS[:version])
    mp.setattr(schema_mod, "SCHEMA_VERSION", version)
    try:
        return schema_mod.connect_writer(db_path)
    finally:
        mp.undo()


_V1_CONVERSATION = (
    "INSERT INTO conversations (id, title, agent, agent_cmd, cwd, status, created_at, "
    "updated_at, last_seq, cursor, queued, permission_policy) "
    "VALUES (?, 't', 'demo', '[\"x\"]', '/', ?, 1.0, 2.0, ?, ?, ?, 'ask')"
)


def test_version_1_drafts_become_parts(db_path: Path) -> None:
    conn = _old_store(db_path, 1)
    with conn:
        conn.execute(_V1_CONVERSATION, ("c1", "running", 0, 0, 0))
        conn.execute(
            "INSERT INTO drafts (conversation_id, prompt_seq, kind, text) VALUES (?, 1, ?, ?)",
            ("c1", "message", "half a "),
        )
    conn.close()
    assert _pragma(db_path, "user_version") == 1
    with Store.open(db_path) as s:
        assert s.drafts("c1") == [(1, "message", "half a ")]
        s.append_draft("c1", 1, "message", "reply")
        assert s.drafts("c1") == [(1, "message", "half a reply")]
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION


def test_version_2_queue_becomes_a_table(db_path: Path) -> None:
    """The unprompted user messages (seq > cursor) become the queue; counts, seqs, recovery
    and the next appends carry on as before."""
    conn = _old_store(db_path, 2)
    events = [
        ("c1", 1, "user_message"),  # prompted
        ("c1", 2, "turn_started"),
        ("c1", 3, "user_message"),  # queued
        ("c1", 4, "agent_message"),
        ("c1", 5, "user_message"),  # queued
        ("c2", 1, "user_message"),  # prompted, nothing queued
    ]
    with conn:
        conn.execute(_V1_CONVERSATION, ("c1", "running", 6, 1, 2))  # seq 6 was removed
        conn.execute(_V1_CONVERSATION, ("c2", "idle", 1, 1, 0))
        conn.executemany(
            "INSERT INTO events (conversation_id, seq, type, ts, body) VALUES (?, ?, ?, 3.0, ?)",
            [(*e, body(f"{e[0]}-{e[1]}")) for e in events],
        )
    conn.close()
    with Store.open(db_path) as s:
        c1, c2 = s.get_conversation("c1"), s.get_conversation("c2")
        assert c1 is not None
        assert c2 is not None
        assert (c1.queued, c1.last_seq, c1.cursor) == (2, 6, 1)
        assert (c2.queued, c2.last_seq) == (0, 1)
        assert [m.seq for m in s.pending_messages("c1")] == [3, 5]
        assert s.pending_messages("c2") == []
        assert [r.id for r in s.conversations_needing_recovery()] == ["c1"]
        assert s.append_user_message("c1", body("next")).seq == 7  # the removed 6 stays a gap
        assert s.start_turn("c1", 3, b"{}").seq == 8
        assert [m.seq for m in s.pending_messages("c1")] == [5, 7]
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION


def test_version_4_queue_gets_its_own_order(db_path: Path) -> None:
    """The queue keeps its seq order as positions, bodies as their events say; new messages
    go after them, a first one before, and the order can change from there."""
    conn = _old_store(db_path, 4)
    with conn:
        conn.execute(
            "INSERT INTO conversations (id, title, agent, agent_cmd, cwd, status, created_at, "
            "updated_at, last_seq, cursor, permission_policy) "
            "VALUES ('c1', 't', 'demo', '[\"x\"]', '/', 'idle', 1.0, 2.0, 0, 1, 'ask')"
        )
        conn.executemany(
            "INSERT INTO events (conversation_id, seq, type, ts, body) "
            "VALUES ('c1', ?, 'user_message', 3.0, ?)",
            [(seq, body(f"m{seq}")) for seq in (1, 2, 3)],
        )
        conn.executemany("INSERT INTO queue (conversation_id, seq) VALUES ('c1', ?)", [(2,), (3,)])
    conn.close()
    with Store.open(db_path) as s:
        assert [(m.seq, m.body) for m in s.pending_messages("c1")] == [
            (2, body("m2")),
            (3, body("m3")),
        ]
        assert s.append_user_message("c1", body("last")).seq == 4
        assert s.append_user_message("c1", body("first"), first=True).seq == 5
        assert [m.seq for m in s.pending_messages("c1")] == [5, 2, 3, 4]
        order, _ = s.move_pending("c1", 4, 2, lambda o: ("queue_reordered", b"{}"))
        assert order == [5, 4, 2, 3] == [m.seq for m in s.pending_messages("c1")]
        rec = s.get_conversation("c1")
        assert rec is not None
        assert (rec.queued, rec.last_seq) == (4, 6)
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION


def test_version_3_gains_the_session_state_and_keeps_titles(db_path: Path) -> None:
    """Rows from before hold no state (null) and keep their titles from the agent's."""
    conn = _old_store(db_path, 3)
    with conn:
        conn.execute(
            "INSERT INTO conversations (id, title, agent, agent_cmd, cwd, status, created_at, "
            "updated_at, last_seq, cursor, permission_policy) "
            "VALUES ('c1', 'old title', 'demo', '[\"x\"]', '/', 'idle', 1.0, 2.0, 0, 0, 'ask')"
        )
    conn.close()
    with Store.open(db_path) as s:
        c1 = s.get_conversation("c1")
        assert c1 is not None
        assert (c1.modes, c1.config_options, c1.commands, c1.usage) == (None,) * 4
        assert not c1.title_auto
        s.append_events("c1", [("title", b'{"title":"the agent\'s"}'), ("usage", b'{"used":1}')])
        c1 = s.get_conversation("c1")
        assert c1 is not None
        assert (c1.title, c1.usage) == ("old title", '{"used":1}')
        new = s.create_conversation(title="", agent="demo", agent_cmd=["x"], cwd="/")
        assert new.title_auto
        s.set_title(new.id, "first message")  # the engine's name: still no person's
        s.end_turn(new.id, [("title", b'{"title":"Named"}')], "idle")  # folds in end_turn too
        named = s.get_conversation(new.id)
        assert named is not None
        assert (named.title, named.title_auto) == ("Named", True)
        s.append_event(new.id, "title", b'{"title":null}')  # cleared: the name stays
        again = s.get_conversation(new.id)
        assert again is not None
        assert again.title == "Named"
    assert _pragma(db_path, "user_version") == SCHEMA_VERSION


# A realistic later step: a new column backfilled from existing rows, and the events table
# rebuilt (SQLite's create-copy-drop-rename dance) with a column derived from each row.
_STEP_WITH_ROWS = (
    "ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
    "UPDATE conversations SET pinned = 1 WHERE id IN (SELECT conversation_id FROM queue)",
    """CREATE TABLE events_new (
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        ts REAL NOT NULL,
        body BLOB NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID""",
    "INSERT INTO events_new SELECT conversation_id, seq, type, ts, body, length(body) FROM events",
    "DROP TABLE events",
    "ALTER TABLE events_new RENAME TO events",
)


def test_migration_step_carries_existing_rows(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(db_path) as s:
        a = s.create_conversation(title="a", agent="demo", agent_cmd=["x", "-y"], cwd="/a")
        b = s.create_conversation(title="b", agent="demo", agent_cmd=["x"], cwd="/b")
        m1 = s.append_user_message(a.id, body("one"))
        s.append_user_message(a.id, body("two"))
        s.start_turn(a.id, m1.seq, b"{}")
        s.append_events(a.id, [("agent_message", b'{"text":"hi"}')])
        s.append_draft(a.id, m1.seq, "message", "draft")
        s.append_event(b.id, "note", b"{}")
        before = {
            c: (s.get_conversation(c), s.read_events(c), s.pending_messages(c), s.drafts(c))
            for c in (a.id, b.id)
        }
        recovery = s.conversations_needing_recovery()
    monkeypatch.setattr(schema_mod, "MIGRATIONS", [*schema_mod.MIGRATIONS, _STEP_WITH_ROWS])
    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store.open(db_path) as s:
        conn = s._conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        for c, (rec, events, pending, drafts) in before.items():
            assert (s.get_conversation(c), s.read_events(c)) == (rec, events)
            assert (s.pending_messages(c), s.drafts(c)) == (pending, drafts)
        assert s.conversations_needing_recovery() == recovery
        assert s.count_conversations() == 2  # the counter and its triggers came through
        pinned = conn.execute("SELECT id, pinned FROM conversations ORDER BY title").fetchall()
        assert pinned == [(a.id, 1), (b.id, 0)]
        sizes = conn.execute("SELECT size, length(body) FROM events").fetchall()
        assert len(sizes) == sum(len(events) for _, events, _, _ in before.values())
        assert all(size == n for size, n in sizes)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # ...and the store works on the new layout: seqs go on, the cascade still holds.
        assert s.append_user_message(b.id, body("three")).seq == 2
        assert s.delete_conversation(a.id)
        assert conn.execute(
            "SELECT count(*) FROM events WHERE conversation_id = ?", (a.id,)
        ).fetchone() == (0,)
        assert s.count_conversations() == 1


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
