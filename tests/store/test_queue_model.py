"""Random appends, removals and turns against a model: queued counts exactly the pending
messages, the cursor and last_seq never go back, and seqs are never reused."""

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
        self.user: set[int] = set()  # user messages that exist (prompted or not)
        self.cursor = 0
        self.last_seq = 0
        self.ever: set[int] = set()  # every seq ever handed out
        self.seen = (0, 0)  # (cursor, last_seq) as last read from the store

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

    @rule(text=st.text(alphabet="abc", max_size=5))
    def send(self, text: str) -> None:
        rec = self.store.append_user_message(self.conv_id, body(text))
        self._given([rec.seq])
        self.user.add(rec.seq)

    @rule(types=st.lists(st.sampled_from(["agent_message", "tool"]), max_size=4))
    def append_batch(self, types: list[str]) -> None:
        recs = self.store.append_events(self.conv_id, [(t, b"{}") for t in types])
        self._given([r.seq for r in recs])

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        seq = self._pick(data)
        if seq in self.user and seq > self.cursor:
            self.store.remove_pending(self.conv_id, seq)
            self.user.discard(seq)
        else:
            with pytest.raises(Conflict if seq in self.user else NotFound):
                self.store.remove_pending(self.conv_id, seq)

    @rule(data=st.data())
    def start_turn(self, data: st.DataObject) -> None:
        seq = self._pick(data)
        turn_body = b'{"prompt_seq":%d}' % seq
        if seq in self.user and seq > self.cursor:
            rec = self.store.start_turn(self.conv_id, seq, turn_body)
            self._given([rec.seq])
            self.cursor = seq
        else:
            with pytest.raises(Conflict):
                self.store.start_turn(self.conv_id, seq, turn_body)

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
        pending = sorted(s for s in self.user if s > self.cursor)
        assert [e.seq for e in self.store.pending_messages(self.conv_id)] == pending
        assert rec.queued == len(pending)
        assert rec.cursor == self.cursor
        assert rec.last_seq == self.last_seq
        assert rec.cursor >= self.seen[0]  # monotonic, whatever the model says
        assert rec.last_seq >= self.seen[1]
        self.seen = (rec.cursor, rec.last_seq)


TestQueue = QueueMachine.TestCase
TestQueue.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
