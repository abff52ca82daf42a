"""Random appends (at the end or first in line), edits, moves, removals, steers and turns
against a model: the queue is exactly the model's line, in order and with its edits; queued
counts it; only its head is ever prompted; last_seq never goes back and seqs are never reused."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from store import Conflict, NotFound, Store

from ._util import body

# fsync is the slow part of a durable commit; tmpfs keeps the many examples cheap.
_TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="acpd-store-", dir=_TMP))
        self.store = Store.open(self.dir / "acpd.sqlite3")
        self.conv_id = self.store.create_conversation(
            title="m", agent="demo", agent_cmd=["x"], cwd="/"
        ).id
        self.user: set[int] = set()  # user messages that exist (queued or not)
        self.line: list[int] = []  # the queue, head first
        self.text: dict[int, str] = {}  # each queued message's text, edits applied
        self.cursor = 0  # the message the latest turn prompted
        self.last_seq = 0
        self.ever: set[int] = set()  # every seq ever handed out
        self.seen_last_seq = 0  # as last read from the store

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir)

    def _given(self, seqs: list[int]) -> None:
        assert not self.ever & set(seqs), "a seq was reused"
        assert seqs == list(range(self.last_seq + 1, self.last_seq + 1 + len(seqs)))
        self.ever |= set(seqs)
        self.last_seq += len(seqs)

    def _pick(self, data: st.DataObject) -> int:
        # Mostly a real user message, sometimes any seq handed out, sometimes one never given.
        choices = sorted(self.user) or [1]
        return data.draw(
            st.one_of(st.sampled_from(choices), st.integers(0, self.last_seq + 2)), label="seq"
        )

    @rule(text=st.text(alphabet="abc", max_size=5), first=st.booleans())
    def send(self, text: str, first: bool) -> None:
        rec = self.store.append_user_message(self.conv_id, body(text), first=first)
        self._given([rec.seq])
        self.user.add(rec.seq)
        self.line.insert(0 if first else len(self.line), rec.seq)
        self.text[rec.seq] = text

    def _refused(self, seq: int) -> type[Exception]:
        return Conflict if seq in self.user else NotFound

    @rule(data=st.data(), text=st.text(alphabet="xyz", max_size=5))
    def edit(self, data: st.DataObject, text: str) -> None:
        seq = self._pick(data)
        if seq in self.line:
            rec = self.store.edit_pending(self.conv_id, seq, body(text), ("edited", b"{}"))
            self._given([rec.seq])
            self.text[seq] = text
        else:
            with pytest.raises(self._refused(seq)):
                self.store.edit_pending(self.conv_id, seq, body(text), ("edited", b"{}"))

    @rule(data=st.data())
    def move(self, data: st.DataObject) -> None:
        seq = self._pick(data)
        before = data.draw(st.one_of(st.none(), st.just(self._pick(data))), label="before")

        def event(order: list[int]) -> tuple[str, bytes]:
            return "reordered", b"{}"

        if seq in self.line and (before is None or before in self.line) and before != seq:
            order, rec = self.store.move_pending(self.conv_id, seq, before, event)
            line = [s for s in self.line if s != seq]
            line.insert(0 if before is None else line.index(before), seq)
            assert order == line
            if line != self.line:
                assert rec is not None
                self._given([rec.seq])
            else:
                assert rec is None
            self.line = line
        else:
            bad = seq if seq not in self.line else before
            assert bad is not None
            with pytest.raises(ValueError if before == seq else self._refused(bad)):
                self.store.move_pending(self.conv_id, seq, before, event)

    @rule(data=st.data())
    def steered(self, data: st.DataObject) -> None:
        seq = self._pick(data)
        if seq in self.line:
            rec = self.store.take_steered(self.conv_id, seq, ("steered", b"{}"))
            self._given([rec.seq])
            self.line.remove(seq)
        else:
            with pytest.raises(self._refused(seq)):
                self.store.take_steered(self.conv_id, seq, ("steered", b"{}"))

    @rule(types=st.lists(st.sampled_from(["agent_message", "tool"]), max_size=4))
    def append_batch(self, types: list[str]) -> None:
        recs = self.store.append_events(self.conv_id, [(t, b"{}") for t in types])
        self._given([r.seq for r in recs])

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        seq = self._pick(data)
        if seq in self.line:
            self.store.remove_pending(self.conv_id, seq)
            self.user.discard(seq)
            self.line.remove(seq)
        else:
            with pytest.raises(self._refused(seq)):
                self.store.remove_pending(self.conv_id, seq)

    @rule(data=st.data(), as_read=st.booleans())
    def start_turn(self, data: st.DataObject, as_read: bool) -> None:
        # The head mostly (what the supervisor does), sometimes any other message.
        seq = data.draw(st.one_of(st.sampled_from(self.line[:1] or [1]), st.just(self._pick(data))))
        turn_body = b'{"prompt_seq":%d}' % seq
        read = body(self.text[seq]) if as_read and seq in self.text else None
        if self.line[:1] == [seq]:
            rec = self.store.start_turn(self.conv_id, seq, turn_body, as_read=read)
            self._given([rec.seq])
            self.cursor = seq
            self.line.pop(0)
        else:
            with pytest.raises(Conflict):
                self.store.start_turn(self.conv_id, seq, turn_body, as_read=read)

    @rule(status=st.sampled_from(["idle", "paused"]))
    def end_turn(self, status: str) -> None:
        recs = self.store.end_turn(self.conv_id, [("turn_ended", b"{}")], status)
        self._given([r.seq for r in recs])

    @precondition(lambda self: self.last_seq % 3 == 0)
    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store.open(self.dir / "acpd.sqlite3")

    @invariant()
    def queue_matches_model(self) -> None:
        rec = self.store.get_conversation(self.conv_id)
        assert rec is not None
        pending = [(e.seq, e.body) for e in self.store.pending_messages(self.conv_id)]
        assert pending == [(s, body(self.text[s])) for s in self.line]
        assert rec.queued == len(self.line)
        assert rec.cursor == self.cursor
        assert rec.last_seq == self.last_seq
        assert rec.last_seq >= self.seen_last_seq  # monotonic, whatever the model says
        self.seen_last_seq = rec.last_seq


TestQueue = QueueMachine.TestCase
TestQueue.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
