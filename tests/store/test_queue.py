"""The queue's order and edits: first in line, move, edit, steered, and start_turn's checks."""

from __future__ import annotations

import pytest

from store import Conflict, ConversationRecord, NotFound, Store

from ._util import body
from .test_events import _commit_modes, _statements

EDITED = ("user_message_edited", b"{}")
STEERED = ("user_message_steered", b"{}")


def reordered(order: list[int]) -> tuple[str, bytes]:
    return "queue_reordered", b'{"order":[%s]}' % ",".join(map(str, order)).encode()


def _line(store: Store, conv_id: str) -> list[int]:
    return [m.seq for m in store.pending_messages(conv_id)]


def _queued(store: Store, conv_id: str) -> int:
    rec = store.get_conversation(conv_id)
    assert rec is not None
    return rec.queued


def test_first_in_line_goes_ahead_of_every_queued_one(
    store: Store, conv: ConversationRecord
) -> None:
    a = store.append_user_message(conv.id, body("a"))
    b = store.append_user_message(conv.id, body("b"))
    s1 = store.append_user_message(conv.id, body("s1"), first=True)
    s2 = store.append_user_message(conv.id, body("s2"), first=True)
    c = store.append_user_message(conv.id, body("c"))
    assert _line(store, conv.id) == [s2.seq, s1.seq, a.seq, b.seq, c.seq]
    assert _queued(store, conv.id) == 5
    # Into an empty queue, first is simply the only one.
    other = store.create_conversation(title="o", agent="demo", agent_cmd=["x"], cwd="/")
    only = store.append_user_message(other.id, body("x"), first=True)
    assert _line(store, other.id) == [only.seq]


def test_first_in_line_is_one_durable_commit(store: Store, conv: ConversationRecord) -> None:
    store.append_user_message(conv.id, body("a"))
    assert _commit_modes(
        store, lambda: store.append_user_message(conv.id, body("b"), first=True)
    ) == ["FULL"]
    statements = _statements(store, lambda: store.append_user_message(conv.id, body("c")))
    assert statements == ["BEGIN", "SELECT", "INSERT", "INSERT", "COMMIT"]  # the end: no read


def test_move(store: Store, conv: ConversationRecord) -> None:
    a, b, c, d = (store.append_user_message(conv.id, body(t)).seq for t in "abcd")
    order, rec = store.move_pending(conv.id, c, None, reordered)  # first in line
    assert order == [c, a, b, d] == _line(store, conv.id)
    assert rec is not None
    assert (rec.seq, rec.type, rec.body) == (5, "queue_reordered", b'{"order":[3,1,2,4]}')
    order, rec = store.move_pending(conv.id, a, d, reordered)
    assert order == [c, b, a, d] == _line(store, conv.id)
    order, rec = store.move_pending(conv.id, d, c, reordered)
    assert order == [d, c, b, a] == _line(store, conv.id)
    # Already there: nothing is written.
    assert store.move_pending(conv.id, d, None, reordered) == ([d, c, b, a], None)
    assert store.move_pending(conv.id, b, a, reordered) == ([d, c, b, a], None)
    last = store.get_conversation(conv.id)
    assert last is not None
    assert (last.last_seq, last.queued) == (7, 4)
    # A message queued afterwards goes at the end; one first goes before the new head.
    e = store.append_user_message(conv.id, body("e")).seq
    f = store.append_user_message(conv.id, body("f"), first=True).seq
    assert _line(store, conv.id) == [f, d, c, b, a, e]
    assert _commit_modes(store, lambda: store.move_pending(conv.id, e, f, reordered)) == ["FULL"]


def test_move_errors(store: Store, conv: ConversationRecord) -> None:
    a, b = (store.append_user_message(conv.id, body(t)).seq for t in "ab")
    note = store.append_event(conv.id, "note", b"{}").seq
    store.start_turn(conv.id, a, b"{}")
    with pytest.raises(Conflict, match="already prompted"):
        store.move_pending(conv.id, a, None, reordered)
    with pytest.raises(Conflict, match="already prompted"):
        store.move_pending(conv.id, b, a, reordered)  # before one no longer queued
    with pytest.raises(NotFound, match="no queued message"):
        store.move_pending(conv.id, note, None, reordered)
    with pytest.raises(NotFound, match="no queued message 99"):
        store.move_pending(conv.id, b, 99, reordered)
    with pytest.raises(NotFound, match="no conversation"):
        store.move_pending("cnope", 1, None, reordered)
    with pytest.raises(ValueError, match="before itself"):
        store.move_pending(conv.id, b, b, reordered)
    c = store.append_user_message(conv.id, body("c")).seq
    with pytest.raises(ValueError, match="JSON object"):
        store.move_pending(conv.id, c, None, lambda order: ("queue_reordered", b"nope"))
    assert _line(store, conv.id) == [b, c]  # the failed attempts changed nothing


def test_edit(store: Store, conv: ConversationRecord) -> None:
    a = store.append_user_message(conv.id, body("a"), now=5.0)
    b = store.append_user_message(conv.id, body("b"))
    rec = store.edit_pending(conv.id, b.seq, body("b2"), EDITED)
    assert (rec.seq, rec.type) == (3, "user_message_edited")
    pending = store.pending_messages(conv.id)
    assert [(m.seq, m.body) for m in pending] == [(a.seq, body("a")), (b.seq, body("b2"))]
    store.edit_pending(conv.id, b.seq, body("b3"), EDITED)
    assert store.pending_messages(conv.id)[1].body == body("b3")
    # The log keeps what was sent, and every edit after it.
    events = store.read_events(conv.id)
    assert [(e.seq, e.type) for e in events] == [
        (1, "user_message"),
        (2, "user_message"),
        (3, "user_message_edited"),
        (4, "user_message_edited"),
    ]
    assert events[1].body == body("b")
    # A moved message keeps its edit, and the prompt checks the text it was read with.
    store.move_pending(conv.id, b.seq, None, reordered)
    head = store.pending_messages(conv.id)[0]
    assert (head.seq, head.body) == (b.seq, body("b3"))
    with pytest.raises(Conflict, match="edited since"):
        store.start_turn(conv.id, b.seq, b"{}", as_read=body("b"))
    store.start_turn(conv.id, b.seq, b"{}", as_read=body("b3"))
    with pytest.raises(Conflict, match="already prompted"):
        store.edit_pending(conv.id, b.seq, body("late"), EDITED)
    assert _commit_modes(store, lambda: store.edit_pending(conv.id, a.seq, body("a2"), EDITED)) == [
        "FULL"
    ]


def test_edit_errors(store: Store, conv: ConversationRecord) -> None:
    a = store.append_user_message(conv.id, body("a")).seq
    note = store.append_event(conv.id, "note", b"{}").seq
    with pytest.raises(NotFound, match="no queued message"):
        store.edit_pending(conv.id, note, body("x"), EDITED)
    with pytest.raises(NotFound, match="no conversation"):
        store.edit_pending("cnope", 1, body("x"), EDITED)
    with pytest.raises(ValueError, match="JSON object"):
        store.edit_pending(conv.id, a, b"nope", EDITED)
    with pytest.raises(ValueError, match="append_user_message"):
        store.edit_pending(conv.id, a, body("x"), ("user_message", b"{}"))
    assert store.pending_messages(conv.id)[0].body == body("a")
    assert store.read_events(conv.id)[-1].seq == note


def test_take_steered(store: Store, conv: ConversationRecord) -> None:
    a = store.append_user_message(conv.id, body("a")).seq
    s = store.append_user_message(conv.id, body("steer"), first=True).seq
    rec = store.take_steered(conv.id, s, STEERED)
    assert (rec.seq, rec.type) == (3, "user_message_steered")
    assert _line(store, conv.id) == [a]
    stored = store.get_conversation(conv.id)
    assert stored is not None
    assert (stored.cursor, stored.queued, stored.status) == (0, 1, "idle")  # not a turn
    for op in (
        lambda: store.take_steered(conv.id, s, STEERED),
        lambda: store.start_turn(conv.id, s, b"{}"),
        lambda: store.edit_pending(conv.id, s, body("x"), EDITED),
        lambda: store.move_pending(conv.id, s, None, reordered),
        lambda: store.remove_pending(conv.id, s),
    ):
        with pytest.raises(Conflict, match="already prompted"):
            op()
    assert _commit_modes(store, lambda: store.take_steered(conv.id, a, STEERED)) == ["FULL"]


def test_remove_keeps_the_order_of_the_rest(store: Store, conv: ConversationRecord) -> None:
    a, b, c = (store.append_user_message(conv.id, body(t)).seq for t in "abc")
    store.move_pending(conv.id, c, None, reordered)
    store.remove_pending(conv.id, a)
    assert _line(store, conv.id) == [c, b]
    assert _queued(store, conv.id) == 2


def test_the_newest_user_message_whatever_order_they_left_in(
    store: Store, conv: ConversationRecord
) -> None:
    """Message numbers count from the newest user message still stored: moves and steers
    take messages off the queue out of seq order, and none of that makes an older one newest."""
    a, b = (store.append_user_message(conv.id, body(t)).seq for t in "ab")
    store.move_pending(conv.id, b, None, reordered)
    store.start_turn(conv.id, b, b"{}")
    assert store.newest_user_message_seq(conv.id) == b  # a, older, is still queued
    store.start_turn(conv.id, a, b"{}")
    rec = store.get_conversation(conv.id)
    assert rec is not None
    assert rec.cursor == a  # the message the latest turn prompted...
    assert store.newest_user_message_seq(conv.id) == b  # ...but b is still the newest
    s = store.append_user_message(conv.id, body("s"), first=True).seq
    store.take_steered(conv.id, s, STEERED)
    assert store.newest_user_message_seq(conv.id) == s
    c = store.append_user_message(conv.id, body("c")).seq
    assert store.newest_user_message_seq(conv.id) == c
