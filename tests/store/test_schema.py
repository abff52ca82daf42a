"""Opening a store file and migrating it forward, one step at a time."""

from __future__ import annotations

import sqlite3
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
