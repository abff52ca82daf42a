"""The event log, the queue (append, pending, remove), turns and drafts; the queue's order and
edits are test_queue.py's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Conflict, ConversationRecord, EventRecord, NotFound, Store, StoreError

from ._util import body


def _rec(store: Store, conv_id: str) -> ConversationRecord:
    rec = store.get_conversation(conv_id)
    assert rec is not None
    return rec


def test_append_event_assigns_seq_and_bumps_activity(
    store: Store, conv: ConversationRecord
) -> None:
    ev = store.append_event(conv.id, "agent_message", b'{"text":"x"}', now=conv.created_at + 5)
    assert ev == EventRecord(
        seq=1, type="agent_message", ts=conv.created_at + 5, body=b'{"text":"x"}'
    )
    rec = _rec(store, conv.id)
    assert (rec.last_seq, rec.queued, rec.updated_at) == (1, 0, conv.created_at + 5)


def test_append_events_is_one_group_with_consecutive_seqs(
    store: Store, conv: ConversationRecord
) -> None:
    store.append_event(conv.id, "a", b"{}")
    recs = store.append_events(conv.id, [("b", b'{"n":1}'), ("c", b"{}")], now=9.0)
    assert [(r.seq, r.type, r.ts) for r in recs] == [(2, "b", 9.0), (3, "c", 9.0)]
    assert _rec(store, conv.id).queued == 0
    assert store.append_events(conv.id, []) == []
    assert store.read_events(conv.id) == [store.read_events(conv.id)[0], *recs]


def test_user_messages_only_through_the_durable_append(
    store: Store, conv: ConversationRecord
) -> None:
    """A group commit is not fsynced: a user message there could be acknowledged and lost."""
    store.append_draft(conv.id, 1, "message", "x")
    with pytest.raises(ValueError, match="append_user_message"):
        store.append_event(conv.id, "user_message", body("q"))
    with pytest.raises(ValueError, match="append_user_message"):
        store.append_events(conv.id, [("agent_message", b"{}"), ("user_message", body("q"))])
    with pytest.raises(ValueError, match="append_user_message"):
        store.end_turn(conv.id, [("user_message", body("q"))], "idle")
    rec = _rec(store, conv.id)
    assert (rec.last_seq, rec.queued, rec.status) == (0, 0, "idle")
    assert store.drafts(conv.id) == [(1, "message", "x")]  # end_turn refused before its work


def test_append_rejects_bodies_that_are_not_objects(store: Store, conv: ConversationRecord) -> None:
    for bad in [b"", b"[]", b'"s"', b"{", b"}", b"1", b" {}"]:
        with pytest.raises(ValueError, match="JSON object"):
            store.append_event(conv.id, "x", bad)
        with pytest.raises(ValueError, match="JSON object"):
            store.append_user_message(conv.id, bad)
    with pytest.raises(ValueError, match="JSON object"):
        store.append_events(conv.id, [("ok", b"{}"), ("bad", b"[]")])
    with pytest.raises(ValueError, match="JSON object"):
        store.append_event(conv.id, "x", bytearray(b"{}"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="type"):
        store.append_event(conv.id, "", b"{}")
    assert _rec(store, conv.id).last_seq == 0  # nothing half-written


def test_appends_to_missing_conversation(store: Store) -> None:
    with pytest.raises(NotFound, match="no conversation cnope"):
        store.append_event("cnope", "x", b"{}")
    with pytest.raises(NotFound):
        store.append_user_message("cnope", body("x"))
    with pytest.raises(NotFound):
        store.append_events("cnope", [("x", b"{}")])


def test_seqs_are_per_conversation(store: Store, conv: ConversationRecord) -> None:
    other = store.create_conversation(title="o", agent="demo", agent_cmd=["a"], cwd="/")
    assert store.append_user_message(conv.id, body("a")).seq == 1
    assert store.append_user_message(other.id, body("b")).seq == 1
    assert store.append_user_message(conv.id, body("c")).seq == 2


def test_read_events_pages_by_seq(store: Store, conv: ConversationRecord) -> None:
    recs = store.append_events(conv.id, [("e", b'{"i":%d}' % i) for i in range(10)])
    assert store.read_events(conv.id) == recs
    assert store.read_events(conv.id, after_seq=3, limit=4) == recs[3:7]
    assert store.read_events(conv.id, 10) == []
    assert store.read_events("cnope") == []
    with pytest.raises(ValueError, match="limit"):
        store.read_events(conv.id, limit=0)


def test_read_events_bounded_by_bytes(store: Store, conv: ConversationRecord) -> None:
    sizes = (6, 6, 6, 30, 2)  # bytes of each body
    recs = store.append_events(conv.id, [("e", b"{" + b" " * (n - 2) + b"}") for n in sizes])
    assert store.read_events(conv.id, max_bytes=12) == recs[:2]  # a third would make 18
    assert store.read_events(conv.id, max_bytes=13, limit=1) == recs[:1]  # limit still holds
    assert store.read_events(conv.id, 2, max_bytes=12) == recs[2:3]
    assert store.read_events(conv.id, 3, max_bytes=12) == recs[3:4]  # the first always comes
    assert store.read_events(conv.id, 3, max_bytes=1000) == recs[3:]
    assert store.read_events(conv.id, 5, max_bytes=12) == []


def test_user_messages_queue_and_pending(store: Store, conv: ConversationRecord) -> None:
    m1 = store.append_user_message(conv.id, body("one"), now=50.0)
    store.append_event(conv.id, "note", b"{}")
    m3 = store.append_user_message(conv.id, body("three"))
    assert (m1.seq, m1.type, m1.ts, m1.body) == (1, "user_message", 50.0, body("one"))
    assert store.pending_messages(conv.id) == [m1, m3]
    assert _rec(store, conv.id).queued == 2
    assert store.pending_messages("cnope") == []


def test_a_queued_message_is_activity_once_settled(store: Store, conv: ConversationRecord) -> None:
    """The durable append leaves the row alone; the bump is written by the next other write
    or flush_activity, and the writer's own reads settle it first."""
    t = conv.created_at + 10
    with store.reader() as reader:
        store.append_user_message(conv.id, body("a"), now=t)
        assert _rec(reader, conv.id).updated_at == conv.created_at  # not written yet
        assert _rec(reader, conv.id).queued == 1  # but the message is queued, durably
        store.flush_activity()
        assert _rec(reader, conv.id).updated_at == t
        store.append_user_message(conv.id, body("b"), now=t + 5)
        store.set_title(conv.id, "x")  # any other write carries it
        assert _rec(reader, conv.id).updated_at == t + 5
        store.append_user_message(conv.id, body("c"), now=t + 10)
        assert _rec(store, conv.id).updated_at == t + 10  # the writer's read settles it
        assert _rec(reader, conv.id).updated_at == t + 10
        store.append_user_message(conv.id, body("d"), now=t + 10.5)
        store.flush_activity()  # within the second: nothing to write
        assert _rec(reader, conv.id).updated_at == t + 10
    assert store.list_conversations()[0][0].updated_at == t + 10


def _pending(store: Store) -> bool:
    """(A call, not the property: each look is a new one.)"""
    return store.activity_pending


def test_a_bump_the_row_already_covers_is_not_kept(store: Store, conv: ConversationRecord) -> None:
    """Once a bump is written, messages within the activity resolution of it leave nothing
    pending (no write would change the row); past it, they do. A bump found already covered
    (the row newer) covers up to the resolution below it."""
    t = conv.created_at + 10
    store.append_user_message(conv.id, body("a"), now=t)
    assert _pending(store)
    store.flush_activity()
    assert not _pending(store)
    store.append_user_message(conv.id, body("b"), now=t + 0.5)
    store.append_user_message(conv.id, body("c"), now=t + 1.0)
    assert not _pending(store)  # covered: the row says t, within a second
    store.append_user_message(conv.id, body("d"), now=t + 1.5)
    assert _pending(store)
    store.flush_activity()
    assert _rec(store, conv.id).updated_at == t + 1.5
    # A write that sets `updated_at` itself (a turn's start) makes the next bump a no-op:
    # written, it finds the row newer, and that is its floor from then on.
    m = store.pending_messages(conv.id)[0]
    store.start_turn(conv.id, m.seq, b"{}", now=t + 3)
    store.append_user_message(conv.id, body("e"), now=t + 3.2)
    assert _pending(store)  # the bump's floor (t + 1.5) does not cover t + 3.2
    store.flush_activity()
    assert _rec(store, conv.id).updated_at == t + 3
    store.append_user_message(conv.id, body("f"), now=t + 3.9)
    assert not _pending(store)  # covered by the turn's t + 3
    store.append_user_message(conv.id, body("g"), now=t + 4.1)
    assert _pending(store)


def test_streamed_events_move_activity_to_within_a_second(
    store: Store, conv: ConversationRecord
) -> None:
    """A group commit writes the row only when it is a second stale (its pages are then the
    event's alone); turn starts and ends set it exactly."""
    t = conv.created_at
    m = store.append_user_message(conv.id, body("go"), now=t + 0.1)
    store.start_turn(conv.id, m.seq, b"{}", now=t + 0.2)
    assert _rec(store, conv.id).updated_at == t + 0.2
    store.append_event(conv.id, "agent_message", b"{}", now=t + 0.9)
    assert _rec(store, conv.id).updated_at == t + 0.2  # within the second: not written
    store.append_event(conv.id, "agent_message", b"{}", now=t + 1.5)
    assert _rec(store, conv.id).updated_at == t + 1.5
    store.end_turn(conv.id, [("turn_ended", b"{}")], "idle", now=t + 1.6)
    rec = _rec(store, conv.id)
    assert (rec.updated_at, rec.last_seq) == (t + 1.6, 5)


def test_a_failed_write_keeps_the_bump_for_the_next(store: Store, conv: ConversationRecord) -> None:
    m = store.append_user_message(conv.id, body("a"), now=conv.created_at + 10)
    with pytest.raises(Conflict):
        store.start_turn(conv.id, m.seq + 5, b"{}")  # rolled back, bump included
    with store.reader() as reader:
        assert _rec(reader, conv.id).updated_at == conv.created_at
        store.flush_activity()
        assert _rec(reader, conv.id).updated_at == conv.created_at + 10


def test_a_bump_lost_to_a_crash_is_recovered_on_open(db_path: Path) -> None:
    store = Store.open(db_path)
    a = store.create_conversation(title="a", agent="demo", agent_cmd=["x"], cwd="/", now=1.0)
    b = store.create_conversation(title="b", agent="demo", agent_cmd=["x"], cwd="/", now=2.0)
    store.append_user_message(a.id, body("queued"), now=30.0)
    m = store.append_user_message(b.id, body("prompted"), now=20.0)
    store.start_turn(b.id, m.seq, b"{}", now=21.0)  # carries both bumps...
    store.append_user_message(a.id, body("queued too"), now=40.0)
    store._conn.close()  # ...but not this one: the process dies before any other write
    with Store.open(db_path) as s, s.reader() as reader:
        got = {c.id: c.updated_at for c in reader.list_conversations()[0]}
        assert got == {a.id: 40.0, b.id: 21.0}
        assert _rec(reader, a.id).queued == 2


def test_remove_pending(store: Store, conv: ConversationRecord) -> None:
    m1, m2, m3 = (store.append_user_message(conv.id, body(t)) for t in "abc")
    store.remove_pending(conv.id, m2.seq)
    assert store.pending_messages(conv.id) == [m1, m3]
    rec = _rec(store, conv.id)
    assert (rec.queued, rec.last_seq) == (2, 3)
    store.remove_pending(conv.id, m3.seq)  # the newest: last_seq still never goes back
    assert store.append_user_message(conv.id, body("d")).seq == 4
    assert [e.seq for e in store.read_events(conv.id)] == [1, 4]  # gaps, never reuse


def test_remove_pending_errors(store: Store, conv: ConversationRecord) -> None:
    m1 = store.append_user_message(conv.id, body("a"))
    note = store.append_event(conv.id, "note", b"{}")
    m3 = store.append_user_message(conv.id, body("b"))
    store.start_turn(conv.id, m1.seq, b"{}")
    with pytest.raises(Conflict, match="already prompted"):
        store.remove_pending(conv.id, m1.seq)
    with pytest.raises(NotFound, match="no queued message"):
        store.remove_pending(conv.id, note.seq)  # not a user message
    with pytest.raises(NotFound, match="no queued message 99"):
        store.remove_pending(conv.id, 99)
    with pytest.raises(NotFound, match="no conversation"):
        store.remove_pending("cnope", 1)
    store.remove_pending(conv.id, m3.seq)
    with pytest.raises(NotFound):
        store.remove_pending(conv.id, m3.seq)  # already removed
    assert _rec(store, conv.id).queued == 0


def test_start_turn(store: Store, conv: ConversationRecord) -> None:
    m1, m2 = (store.append_user_message(conv.id, body(t)) for t in "ab")
    ev = store.start_turn(conv.id, m1.seq, b'{"prompt_seq":1}', now=77.0)
    assert ev == EventRecord(seq=3, type="turn_started", ts=77.0, body=b'{"prompt_seq":1}')
    rec = _rec(store, conv.id)
    assert (rec.cursor, rec.queued, rec.status, rec.last_seq) == (1, 1, "running", 3)
    assert store.pending_messages(conv.id) == [m2]


def test_start_turn_takes_only_the_head(store: Store, conv: ConversationRecord) -> None:
    """Messages are prompted in line, one at a time: none is skipped (or counted prompted)."""
    seqs = [store.append_user_message(conv.id, body(t)).seq for t in "abcd"]
    with pytest.raises(Conflict, match="not next in line"):
        store.start_turn(conv.id, seqs[2], b"{}")
    rec = _rec(store, conv.id)
    assert (rec.cursor, rec.queued, rec.last_seq) == (0, 4, 4)  # nothing changed
    store.start_turn(conv.id, seqs[0], b"{}")
    rec = _rec(store, conv.id)
    assert (rec.cursor, rec.queued) == (1, 3)
    assert [e.seq for e in store.pending_messages(conv.id)] == seqs[1:]


def test_start_turn_conflicts(store: Store, conv: ConversationRecord) -> None:
    m1 = store.append_user_message(conv.id, body("a"))
    note = store.append_event(conv.id, "note", b"{}")
    store.start_turn(conv.id, m1.seq, b"{}")
    with pytest.raises(Conflict, match="already prompted"):
        store.start_turn(conv.id, m1.seq, b"{}")  # at most once
    with pytest.raises(Conflict, match="no queued message"):
        store.start_turn(conv.id, note.seq, b"{}")
    with pytest.raises(Conflict, match="no queued message"):
        store.start_turn(conv.id, 99, b"{}")
    with pytest.raises(NotFound):
        store.start_turn("cnope", 1, b"{}")
    with pytest.raises(ValueError, match="JSON object"):
        store.start_turn(conv.id, 99, b"nope")
    rec = _rec(store, conv.id)
    assert (rec.cursor, rec.last_seq) == (1, 3)  # the failed attempts changed nothing


def test_end_turn_appends_clears_drafts_and_sets_status(
    store: Store, conv: ConversationRecord
) -> None:
    m1 = store.append_user_message(conv.id, body("a"))
    store.start_turn(conv.id, m1.seq, b"{}")
    store.append_draft(conv.id, m1.seq, "message", "Hel")
    later = conv.created_at + 60
    recs = store.end_turn(
        conv.id, [("agent_message", b'{"text":"Hello"}'), ("turn_ended", b"{}")], "idle", now=later
    )
    assert [(r.seq, r.type) for r in recs] == [(3, "agent_message"), (4, "turn_ended")]
    rec = _rec(store, conv.id)
    assert (rec.status, rec.last_seq, rec.updated_at) == ("idle", 4, later)
    assert store.drafts(conv.id) == []
    assert store.end_turn(conv.id, [], "paused") == []
    assert _rec(store, conv.id).status == "paused"


def test_end_turn_errors_change_nothing(store: Store, conv: ConversationRecord) -> None:
    store.append_draft(conv.id, 1, "message", "x")
    with pytest.raises(ValueError, match="status"):
        store.end_turn(conv.id, [("turn_ended", b"{}")], "done")
    with pytest.raises(ValueError, match="JSON object"):
        store.end_turn(conv.id, [("turn_ended", b"")], "idle")
    with pytest.raises(NotFound):
        store.end_turn("cnope", [("turn_ended", b"{}")], "idle")
    with pytest.raises(NotFound):
        store.end_turn("cnope", [], "idle")
    assert _rec(store, conv.id).last_seq == 0
    assert store.drafts(conv.id) == [(1, "message", "x")]


def test_drafts_append_list_clear(store: Store, conv: ConversationRecord) -> None:
    store.append_draft(conv.id, 3, "thought", "hmm")
    store.append_draft(conv.id, 3, "message", "Hel")
    store.append_draft(conv.id, 1, "message", "old")
    store.append_draft(conv.id, 3, "message", "lo")
    store.append_draft(conv.id, 3, "message", "")
    store.append_draft(conv.id, 3, "message", ", world")
    expected = [(1, "message", "old"), (3, "message", "Hello, world"), (3, "thought", "hmm")]
    assert store.drafts(conv.id) == expected
    store.clear_drafts(conv.id)
    assert store.drafts(conv.id) == []
    store.clear_drafts(conv.id)  # idempotent
    store.clear_drafts("cnope")
    with pytest.raises(ValueError, match="kind"):
        store.append_draft(conv.id, 3, "tool", "x")
    with pytest.raises(NotFound):
        store.append_draft("cnope", 1, "message", "x")


def test_events_and_the_drafts_they_store_commit_together(
    store: Store, conv: ConversationRecord, db_path: Path
) -> None:
    """The events that store a turn's text and the dropping of its drafts are one transaction:
    apart, a crash between them leaves drafts that recovery stores a second time."""
    store.append_draft(conv.id, 1, "message", "Hello")
    saved = [("agent_message", b'{"text":"Hello","prompt_seq":1}')]
    # Another connection makes dropping drafts fail, as a full disk could at that statement.
    other = sqlite3.connect(db_path)
    other.execute(
        "CREATE TRIGGER no_clear BEFORE DELETE ON drafts BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    other.commit()
    with pytest.raises(StoreError):
        store.append_events(conv.id, saved, clear_drafts=True)
    assert store.read_events(conv.id, 0, 10) == []  # nothing of it landed
    assert store.drafts(conv.id) == [(1, "message", "Hello")]
    other.execute("DROP TRIGGER no_clear")
    other.commit()
    other.close()
    (rec,) = store.append_events(conv.id, saved, clear_drafts=True)
    assert [r.seq for r in store.read_events(conv.id, 0, 10)] == [rec.seq]
    assert store.drafts(conv.id) == []
    assert store.append_events(conv.id, [], clear_drafts=True) == []  # drafts alone: fine


def test_failed_transaction_rolls_back_and_store_stays_usable(
    store: Store, conv: ConversationRecord
) -> None:
    store.append_user_message(conv.id, body("a"))
    store._conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(StoreError, match="boom"):
        store.append_events(conv.id, [("x", b"{}"), ("y", b"{}")])
    rec = _rec(store, conv.id)
    assert (rec.last_seq, rec.queued) == (1, 1)  # the seq bump was rolled back too
    assert not store._conn.in_transaction
    store._conn.execute("DROP TRIGGER boom")
    assert store.append_event(conv.id, "x", b"{}").seq == 2


def _statements(store: Store, fn: Callable[[], object]) -> list[str]:
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        store._conn.set_trace_callback(None)
    return [s.split()[0] + (" " + s.split()[-1] if s.startswith("PRAGMA") else "") for s in seen]


def _commit_modes(store: Store, fn: Callable[[], object]) -> list[str]:
    """The synchronous mode in force at each COMMIT that `fn` runs."""
    value = store._conn.execute("PRAGMA synchronous").fetchone()[0]
    mode, modes = {1: "NORMAL", 2: "FULL"}[value], []
    for statement in _statements(store, fn):
        if statement.startswith("PRAGMA"):
            mode = statement.split()[1]
        elif statement == "COMMIT":
            modes.append(mode)
    return modes


def test_each_commit_runs_in_the_mode_it_needs(store: Store, conv: ConversationRecord) -> None:
    """Durable commits under FULL, the others under NORMAL; FULL is the resting mode, so
    nothing runs between a durable append's BEGIN and its fsync but its own statements."""
    assert _commit_modes(store, lambda: store.append_user_message(conv.id, body("a"))) == ["FULL"]
    second = _statements(store, lambda: store.append_user_message(conv.id, body("b")))
    assert second == ["BEGIN", "SELECT", "INSERT", "INSERT", "COMMIT"]  # no PRAGMA
    assert _commit_modes(store, lambda: store.append_event(conv.id, "x", b"{}")) == ["NORMAL"]
    with pytest.raises(Conflict):
        store.start_turn(conv.id, 99, b"{}")  # rolled back, under FULL
    assert _commit_modes(store, lambda: store.set_title(conv.id, "t")) == ["NORMAL"]
    assert _commit_modes(store, lambda: store.start_turn(conv.id, 1, b"{}")) == ["FULL"]
    assert _commit_modes(store, lambda: store.append_draft(conv.id, 1, "message", "x")) == [
        "NORMAL"
    ]
    ended = _commit_modes(store, lambda: store.end_turn(conv.id, [("turn_ended", b"{}")], "idle"))
    assert ended == ["FULL"]
    assert _commit_modes(store, lambda: store.remove_pending(conv.id, 2)) == ["FULL"]
    assert _commit_modes(store, store.flush_activity) == []  # nothing pending: no transaction
    with pytest.raises(StoreError):
        store.append_draft("cnope", 1, "message", "x")  # a failed NORMAL one goes back too
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_which_statements_commit_a_message(store: Store, conv: ConversationRecord) -> None:
    store.set_title(conv.id, "t")  # a NORMAL commit last: the mode is back to FULL after it
    # The durable append: read the last seq, insert the event and its queue row; no UPDATE.
    durable = ["BEGIN", "SELECT", "INSERT", "INSERT", "COMMIT"]
    assert _statements(store, lambda: store.append_user_message(conv.id, body("a"))) == durable
    # The next other write carries the message's activity bump (the first UPDATE; within a
    # second of the row's time it changes nothing, and the row's time is read, once, so that
    # the next messages within that second leave no bump at all).
    assert _statements(store, lambda: store.append_event(conv.id, "x", b"{}")) == [
        "PRAGMA NORMAL",
        "BEGIN",
        "UPDATE",
        "SELECT",
        "SELECT",
        "INSERT",
        "UPDATE",
        "COMMIT",
        "PRAGMA FULL",
    ]
    assert _statements(store, lambda: store.append_event(conv.id, "x", b"{}")) == [
        "PRAGMA NORMAL",
        "BEGIN",
        "SELECT",
        "INSERT",
        "UPDATE",
        "COMMIT",
        "PRAGMA FULL",
    ]
