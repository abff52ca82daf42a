"""Conversation metadata: create, get, resolve, list, count, change, delete, recovery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from store import ConversationRecord, NotFound, Store, new_conversation_id
from store._conversations import (
    ID_AFTER_SQL,
    ID_BEFORE_SQL,
    LIST_AFTER_SQL,
    LIST_FIRST_SQL,
    RECOVERY_SQL,
)
from store.records import decode_page_cursor, encode_page_cursor, unique_prefix_length

from ._util import body


def _new(store: Store, now: float | None = None, **kw: str) -> ConversationRecord:
    return store.create_conversation(
        title=kw.get("title", "t"), agent="demo", agent_cmd=["demo", "--x"], cwd="/w", now=now
    )


def test_create_and_get(store: Store) -> None:
    rec = store.create_conversation(
        title="Fix it",
        agent="custom",
        agent_cmd=["my-agent", "--acp"],
        cwd="/home/u/p",
        permission_policy="deny",
        now=1000.5,
    )
    assert rec == ConversationRecord(
        id=rec.id,
        title="Fix it",
        agent="custom",
        agent_cmd=["my-agent", "--acp"],
        cwd="/home/u/p",
        acp_session_id=None,
        acp_session_cwd=None,
        status="idle",
        created_at=1000.5,
        updated_at=1000.5,
        last_seq=0,
        cursor=0,
        queued=0,
        permission_policy="deny",
    )
    assert store.get_conversation(rec.id) == rec
    assert store.get_conversation("c-nope") is None


def test_create_validates(store: Store) -> None:
    with pytest.raises(ValueError, match="permission_policy"):
        store.create_conversation(
            title="t", agent="a", agent_cmd=["x"], cwd="/", permission_policy="maybe"
        )
    with pytest.raises(ValueError, match="agent_cmd"):
        store.create_conversation(title="t", agent="a", agent_cmd=[], cwd="/")
    assert store.count_conversations() == 0


def test_ids_are_random_from_the_first_character() -> None:
    ids = [new_conversation_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 20 and i == i.lower() and i.isalnum() for i in ids)
    # Time-based ids shared their first 9 characters; random ones spread over the alphabet
    # from the first (32 first characters; 4000 draws miss one with probability ~1e-53).
    assert len({i[0] for i in ids}) == 32
    assert len({i[:2] for i in ids}) > 900  # of 1024


def _insert(store: Store, conv_id: str, title: str = "t", created: float = 1.0) -> None:
    """A conversation with a chosen id (an old time-based one, or a prefix test's)."""
    store._conn.execute(
        "INSERT INTO conversations (id, title, agent, agent_cmd, cwd, status, created_at, "
        "updated_at, permission_policy) VALUES (?, ?, 'demo', '[\"x\"]', '/', 'idle', ?, ?, 'ask')",
        (conv_id, title, created, created),
    )


def test_resolve_id_by_prefix(store: Store) -> None:
    _insert(store, "abcd1", "first")
    _insert(store, "abce2", "second")
    _insert(store, "c0001m8y8xyz00000000a", "old style")
    assert store.resolve_id("abcd1") == [("abcd1", "first")]
    assert store.resolve_id("ABCD") == [("abcd1", "first")]
    assert store.resolve_id("abc") == [("abcd1", "first"), ("abce2", "second")]
    assert store.resolve_id("abc", limit=1) == [("abcd1", "first")]
    assert store.resolve_id("c0001m") == [("c0001m8y8xyz00000000a", "old style")]
    assert store.resolve_id("x") == []
    assert store.resolve_id("abcd10") == []
    assert store.count_prefix("abc", cap=10) == 2
    assert store.count_prefix("", cap=2) == 2  # bounded, however many match
    assert store.count_prefix("zz", cap=10) == 0


def test_resolve_id_returns_at_most_limit(store: Store) -> None:
    for _ in range(5):
        _new(store)
    assert len(store.resolve_id("")) == 2
    assert len(store.resolve_id("", limit=4)) == 4


def test_unique_prefix_length() -> None:
    assert unique_prefix_length("abcdefgh", (None, None), 4) == 4
    assert unique_prefix_length("abcdefgh", ("abcdexxx", None), 4) == 6
    assert unique_prefix_length("abcdefgh", ("ab", "abcdefgz"), 4) == 8
    assert unique_prefix_length("abc", (None, "abcdef"), 4) == 3  # a prefix of another: itself
    assert unique_prefix_length("abcdef", ("abc", None), 4) == 4


def test_short_ids_are_the_shortest_unique_prefixes(store: Store) -> None:
    for conv_id in ("c0001m8y8aaaa", "c0001m8y8abbb", "c0001m8z0cccc", "k3x9zzzz", "k3xazzzz"):
        _insert(store, conv_id)
    got = store.short_ids(["c0001m8y8aaaa", "c0001m8y8abbb", "c0001m8z0cccc", "k3x9zzzz"])
    assert got == {
        "c0001m8y8aaaa": "c0001m8y8aa",
        "c0001m8y8abbb": "c0001m8y8ab",
        "c0001m8z0cccc": "c0001m8z",
        "k3x9zzzz": "k3x9",
    }
    assert store.short_ids(["k3xazzzz"], minimum=2) == {"k3xazzzz": "k3xa"}
    for short in got.values():  # each one resolves to its conversation alone
        assert len(store.resolve_id(short)) == 1
    assert store.short_ids([]) == {}


def test_short_ids_cost_two_primary_key_seeks_per_id(store: Store) -> None:
    assert _plan(store, ID_BEFORE_SQL, ("k",)) == ["SEARCH conversations USING PRIMARY KEY (id<?)"]
    assert _plan(store, ID_AFTER_SQL, ("k",)) == ["SEARCH conversations USING PRIMARY KEY (id>?)"]


def test_list_newest_activity_first_with_keyset_pages(store: Store) -> None:
    recs = [_new(store, now=100.0 + i) for i in range(7)]
    store.append_event(recs[2].id, "note", b"{}", now=500.0)  # activity moves it to the front
    page, nxt = store.list_conversations(limit=3)
    assert [r.id for r in page] == [recs[2].id, recs[6].id, recs[5].id]
    assert page[0].updated_at == 500.0
    assert nxt is not None
    page2, nxt2 = store.list_conversations(limit=3, before=nxt)
    assert [r.id for r in page2] == [recs[4].id, recs[3].id, recs[1].id]
    page3, nxt3 = store.list_conversations(limit=3, before=nxt2)
    assert [r.id for r in page3] == [recs[0].id]
    assert nxt3 is None


def test_list_ties_on_updated_at_break_by_id_without_loss(store: Store) -> None:
    recs = [_new(store, now=100.0) for _ in range(5)]
    seen: list[str] = []
    before: str | None = None
    while True:
        page, before = store.list_conversations(limit=2, before=before)
        seen += [r.id for r in page]
        if before is None:
            break
    assert seen == sorted((r.id for r in recs), reverse=True)


def test_list_exact_multiple_of_limit_ends_with_none(store: Store) -> None:
    for i in range(4):
        _new(store, now=float(i))
    page, nxt = store.list_conversations(limit=2)
    page, nxt = store.list_conversations(limit=2, before=nxt)
    assert len(page) == 2
    assert nxt is None
    assert store.list_conversations(limit=10) == (store.list_conversations(limit=4)[0], None)


def test_list_empty_and_bad_arguments(store: Store) -> None:
    assert store.list_conversations() == ([], None)
    with pytest.raises(ValueError, match="limit"):
        store.list_conversations(limit=0)
    for bad in ["", "nope", "1.5", ":cabc", "nan:cabc", "inf:cabc", "1.5:C!", "1.5:" + "c" * 65]:
        with pytest.raises(ValueError, match="cursor"):
            store.list_conversations(before=bad)


def test_page_cursor_round_trips_exactly() -> None:
    for t in [0.0, 1e-300, 1_732_000_000.123456789, 1 / 3]:
        assert decode_page_cursor(encode_page_cursor(t, "cabc")) == (t, "cabc")


def _plan(store: Store, sql: str, args: tuple[object, ...] = ()) -> list[str]:
    return [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


# Per row, `last_seq` and `queued` are one primary-key seek each (into events and the queue).
_PER_ROW = [
    "CORRELATED SCALAR SUBQUERY 1",
    "SEARCH e USING PRIMARY KEY (conversation_id=?)",
    "CORRELATED SCALAR SUBQUERY 2",
    "SEARCH q USING PRIMARY KEY (conversation_id=?)",
]


def test_list_pages_are_index_range_scans(store: Store) -> None:
    assert _plan(store, LIST_FIRST_SQL, (5,)) == [
        "SCAN c USING INDEX conversations_activity",
        *_PER_ROW,
    ]
    assert _plan(store, LIST_AFTER_SQL, (1.0, "cabc", 5)) == [
        "SEARCH c USING INDEX conversations_activity ((updated_at,id)<(?,?))",
        *_PER_ROW,
    ]


def test_count_follows_creates_and_deletes_and_survives_reopen(store: Store) -> None:
    recs = [_new(store) for _ in range(3)]
    assert store.count_conversations() == 3
    assert store.delete_conversation(recs[0].id)
    assert not store.delete_conversation(recs[0].id)
    assert store.count_conversations() == 2
    with Store.open(store.path) as again:
        assert again.count_conversations() == 2


def test_delete_removes_events_and_drafts(store: Store, conv: ConversationRecord) -> None:
    store.append_user_message(conv.id, body("a"))
    store.append_draft(conv.id, 1, "message", "partial")
    other = _new(store)
    store.append_user_message(other.id, body("b"))
    assert store.delete_conversation(conv.id)
    assert store.get_conversation(conv.id) is None
    assert store.read_events(conv.id) == []
    assert store.drafts(conv.id) == []
    left = store._conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert left == 1
    assert store.read_events(other.id)[0].body == body("b")


def test_set_status_bumps_updated_at_only_on_change(store: Store) -> None:
    c = _new(store, now=10.0)
    store.set_status(c.id, "paused", now=20.0)
    rec = store.get_conversation(c.id)
    assert rec is not None
    assert (rec.status, rec.updated_at) == ("paused", 20.0)
    store.set_status(c.id, "paused", now=30.0)
    rec = store.get_conversation(c.id)
    assert rec is not None
    assert rec.updated_at == 20.0
    store.set_status(c.id, "idle", now=5.0)  # a clock stepping back never reorders backwards
    rec = store.get_conversation(c.id)
    assert rec is not None
    assert (rec.status, rec.updated_at) == ("idle", 20.0)
    with pytest.raises(ValueError, match="status"):
        store.set_status(c.id, "sleeping")


def test_setters(store: Store, conv: ConversationRecord) -> None:
    store.set_acp_session(conv.id, "sess-1", "/w/sub")
    store.set_title(conv.id, "New title")
    store.set_permission_policy(conv.id, "allow")
    rec = store.get_conversation(conv.id)
    assert rec is not None
    assert (rec.acp_session_id, rec.acp_session_cwd) == ("sess-1", "/w/sub")
    assert (rec.title, rec.permission_policy) == ("New title", "allow")
    assert rec.updated_at == conv.updated_at  # metadata edits are not activity
    store.set_acp_session(conv.id, None, None)
    rec = store.get_conversation(conv.id)
    assert rec is not None
    assert rec.acp_session_id is None
    assert rec.acp_session_cwd is None
    with pytest.raises(ValueError, match="permission_policy"):
        store.set_permission_policy(conv.id, "sometimes")


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.set_status("cnope", "idle"),
        lambda s: s.set_acp_session("cnope", "x", "/"),
        lambda s: s.set_title("cnope", "x"),
        lambda s: s.set_permission_policy("cnope", "ask"),
    ],
)
def test_setters_on_missing_conversation(store: Store, call: Callable[[Store], None]) -> None:
    with pytest.raises(NotFound, match="no conversation cnope"):
        call(store)


def test_recovery_finds_running_and_runnable_queued_only(store: Store) -> None:
    # Created in this order, a second apart; ids are random, so only created_at orders them.
    queued, idle, running_q, paused_q, failed_q, running = (
        _new(store, now=1000.0 + i) for i in range(6)
    )
    for c in (queued, paused_q, failed_q, running_q, running):
        store.append_user_message(c.id, body("m"))
    store.start_turn(running.id, 1, b"{}")  # running, nothing else queued
    store.append_user_message(running_q.id, body("m2"))
    store.start_turn(running_q.id, 1, b"{}")  # running, one more queued
    store.set_status(paused_q.id, "paused")
    store.set_status(failed_q.id, "failed")
    got = [r.id for r in store.conversations_needing_recovery()]
    assert got == [queued.id, running_q.id, running.id]  # oldest first, whatever the ids
    assert idle.id not in got


def test_recovery_reads_only_the_running_index_and_the_queue(store: Store) -> None:
    details = _plan(store, RECOVERY_SQL)
    assert "SCAN c USING INDEX conversations_running" in details
    assert "SCAN queue" in details  # the queue holds only pending messages
    assert "SEARCH c USING PRIMARY KEY (id=?)" in details
    assert not any(d.startswith("SCAN c") and "INDEX" not in d for d in details)
