"""SIGKILL a writer at random moments: no acknowledged message is ever lost or duplicated, and
every acknowledged edit, move, steer and prompt is in effect after the crash.

The child (`_crash_child.py`) queues messages at the end and first in line, edits and moves
queued ones, takes some off as steered and prompts the head, acknowledging each operation once
it returned. The parent replays the acknowledged operations on a model of each queue; after
the kill the stored queue (its order and every message's text) must be the model's, or the
model's with the one operation that was in flight (announced, not acknowledged) applied too.
A message acknowledged as steered or prompted is never queued again: nothing prompts it twice.

Each round (seeded by its number, so a failure replays) varies:
- when: the kill comes 0 to 150 ms (log-uniform: many very early) after the first ack;
- checkpoints: SQLite's wal_autocheckpoint of 4,000 pages, or 50-200 pages, so the child
  checkpoints every few appends: kills land in checkpoints (the main file being written and
  fsynced) and in a WAL restarted from its beginning over older frames;
- the WAL's history: the round is checked in place (the check's close checkpoints and deletes
  the WAL, so the next child starts a new one) or on a copy of the files as the kill left
  them, so the next child reopens that WAL, recovers it and goes on writing into it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from store import Store
from store._base import ACTIVITY_RESOLUTION

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 50
MIN_DELAY, MAX_DELAY = 0.0001, 0.15  # seconds of appending after the first acknowledgement
HANG_GUARD = 30.0  # a child that does not acknowledge within this has failed
_WAL_MAGIC = (0x377F0682, 0x377F0683)


def _run_child(
    path: Path, conv_ids: list[str], seed: int, delay: float, pages: int | None
) -> list[str]:
    """Start a child, let it append for `delay` after its first ack, SIGKILL it; its acks.

    `pages`: the child's wal_autocheckpoint (None: the store's own)."""
    env = dict(os.environ)
    env.pop("ACPD_CRASH_AUTOCHECKPOINT", None)
    if pages is not None:
        env["ACPD_CRASH_AUTOCHECKPOINT"] = str(pages)
    child = [sys.executable, "-m", "tests.store._crash_child", str(path), "--ops", str(seed)]
    proc = subprocess.Popen(
        [*child, *conv_ids],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    kill_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                break
            timeout = HANG_GUARD if kill_at is None else kill_at - now
            if not select.select([fd], [], [], timeout)[0]:
                if kill_at is None:
                    pytest.fail("the child acknowledged nothing")
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # the child died on its own: its stderr says why (asserted below)
            data += chunk
            if kill_at is None and any(not ln.startswith(b"?") for ln in data.split(b"\n")[:-1]):
                kill_at = time.monotonic() + delay  # from the first acknowledgement
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    data += rest
    return data.decode().split("\n")[:-1]  # a torn last line was never acknowledged


@attrs.define
class Queue:
    """The model of one conversation's queue, from acknowledged operations."""

    line: list[int] = attrs.Factory(list)  # head first
    text: dict[int, str] = attrs.Factory(dict)  # each queued message's, edits applied
    acked: set[int] = attrs.Factory(set)  # messages whose queueing was acknowledged
    steered: set[int] = attrs.Factory(set)
    prompted: set[int] = attrs.Factory(set)

    def apply(self, op: list[str], new_text: dict[int, str]) -> None:
        """Apply one operation's line (its conversation id removed); `new_text`: the texts
        of messages as sent, for the appends."""
        kind, seq = op[0], int(op[1])
        if kind in "AF":
            assert seq not in self.acked, f"seq {seq} acknowledged twice"
            self.acked.add(seq)
            self.line.insert(0 if kind == "F" else len(self.line), seq)
            self.text[seq] = new_text[seq]
        elif kind == "E":
            self.text[seq] = op[2]
        elif kind == "M":
            before = int(op[2])
            self.line.remove(seq)
            self.line.insert(self.line.index(before) if before else 0, seq)
        else:
            assert self.line[0] == seq, "only the head is steered or prompted here"
            self.line.pop(0)
            del self.text[seq]
            (self.steered if kind == "S" else self.prompted).add(seq)

    def state(self) -> tuple[list[int], dict[int, str]]:
        return list(self.line), dict(self.text)


def _check(path: Path, conv_ids: list[str], models: dict[str, Queue], pending: list[str]) -> int:
    """Reopen and check everything; returns how many events are stored. `pending` is the
    operation in flight at the kill (its intent line, or []), which may or may not be in."""
    total = 0
    with Store.open(path) as store:
        assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert store._conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for conv_id in conv_ids:
            rec = store.get_conversation(conv_id)
            assert rec is not None
            events = store.read_events(conv_id, limit=10**9)
            seqs = [e.seq for e in events]
            # Strictly increasing, no duplicates, no gaps (nothing was removed).
            assert seqs == list(range(1, rec.last_seq + 1))
            user = {e.seq: json.loads(e.body)["text"] for e in events if e.type == "user_message"}
            model = models[conv_id]
            assert model.acked <= user.keys(), sorted(model.acked - user.keys())
            queue = store.pending_messages(conv_id)
            assert rec.queued == len(queue)
            stored = ([m.seq for m in queue], {m.seq: json.loads(m.body)["text"] for m in queue})
            expected = [model.state()]
            if pending[1:2] == [conv_id]:
                # The operation in flight may have committed: the model with it applied too.
                kind = pending[0]
                op = [kind, *pending[2:]]
                if kind in "AF":  # its seq: the newest message, if it was never acknowledged
                    last = max(user)
                    op = [kind, str(last if last not in model.acked else 0)]
                if op[1] != "0":
                    other = copy.deepcopy(model)
                    other.apply(op, user)
                    expected.append(other.state())
            assert stored in expected, (stored, expected)
            # Acknowledged steers and prompts are recorded, and never queued again.
            steered = {
                json.loads(e.body)["message_seq"]
                for e in events
                if e.type == "user_message_steered"
            }
            started = {json.loads(e.body)["prompt_seq"] for e in events if e.type == "turn_started"}
            assert model.steered <= steered
            assert model.prompted <= started
            assert not (steered | started) & set(stored[0]), "a message prompted twice"
            # Activity the crash cut off was re-derived from the queue at open (exactly, for
            # the messages queued); other events move it to within ACTIVITY_RESOLUTION.
            queued = set(stored[0])
            queued_ts = [e.ts for e in events if e.seq in queued]
            assert rec.updated_at >= max(queued_ts, default=rec.created_at)
            newest = max((e.ts for e in events), default=rec.created_at)
            assert rec.updated_at >= newest - ACTIVITY_RESOLUTION
            # From here on the model is what is stored (the operation in flight included).
            model.line, model.text = stored
            total += len(events)
    return total


def _sent_texts(path: Path, conv_ids: list[str]) -> dict[str, dict[int, str]]:
    """Every user message's text as sent, by conversation and seq (read-only: the store as
    the kill left it, WAL included)."""
    with Store.open_reader(path) as store:
        return {
            c: {
                e.seq: json.loads(e.body)["text"]
                for e in store.read_events(c, limit=10**9)
                if e.type == "user_message"
            }
            for c in conv_ids
        }


def _wal_restarts(path: Path) -> int:
    """The WAL header's checkpoint sequence number: how often the WAL was restarted from its
    beginning, its old frames left to be overwritten (0 if there is no WAL)."""
    try:
        header = Path(f"{path}-wal").read_bytes()[:32]
    except FileNotFoundError:
        return 0
    if len(header) < 32 or int.from_bytes(header[:4], "big") not in _WAL_MAGIC:
        return 0
    return int.from_bytes(header[12:16], "big")


def _check_copy(
    path: Path, conv_ids: list[str], models: dict[str, Queue], pending: list[str]
) -> int:
    """`_check` on a copy of the files, leaving the originals (and their WAL) for the next child."""
    copy = path.parent / "check" / path.name
    copy.parent.mkdir()
    try:
        for suffix in ("", "-wal"):  # not -shm: the copy must rebuild it from the WAL
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        return _check(copy, conv_ids, models, pending)
    finally:
        shutil.rmtree(copy.parent)


@pytest.mark.subprocess
def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    path = tmp_path / "acpd.sqlite3"
    with Store.open(path) as store:
        conv_ids = [
            store.create_conversation(title=f"c{i}", agent="demo", agent_cmd=["x"], cwd="/").id
            for i in range(2)
        ]
    models = {c: Queue() for c in conv_ids}
    last_total = 0
    most_restarts = 0
    kinds: set[str] = set()
    for round_no in range(ROUNDS):
        rng = random.Random(round_no)
        delay = math.exp(rng.uniform(math.log(MIN_DELAY), math.log(MAX_DELAY)))
        delay = 0.0 if round_no % 10 == 5 else delay
        pages = None if round_no % 3 == 0 else rng.choice((50, 100, 200))
        in_place = round_no % 4 == 3 or round_no == ROUNDS - 1
        lines = _run_child(path, conv_ids, round_no, delay, pages)
        assert any(not line.startswith("?") for line in lines), "nothing was acknowledged"
        pending: list[str] = []
        texts = _sent_texts(path, conv_ids)
        for line in lines:
            words = line.split()
            if words[0] == "?":
                pending = words[1:]
                continue
            assert words[:2] == pending[:2], (pending, line)
            pending = []
            kinds.add(words[0])
            models[words[1]].apply([words[0], *words[2:]], texts[words[1]])
        most_restarts = max(most_restarts, _wal_restarts(path))
        total = (_check if in_place else _check_copy)(path, conv_ids, models, pending)
        assert total > last_total
        last_total = total
    assert kinds == set("AFEMSP"), f"only {sorted(kinds)} ran"
    # The rounds did reach what they are for: a WAL written over its own older frames.
    assert most_restarts >= 2, f"the WAL was restarted only {most_restarts} times"


# --- the database deleted or replaced under the writer ------------------------------------------

FAULT_ROUNDS = 16
REFUSAL_WAIT = 5.0  # seconds for the child's next write to be refused


def _read_available(fd: int, timeout: float) -> bytes:
    """What the pipe holds now (waiting up to `timeout` for the first byte), b"" at EOF."""
    data = b""
    while select.select([fd], [], [], timeout)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
        timeout = 0
    return data


def _consolidated_copy(path: Path, dest: Path) -> None:
    """A copy of the store as its files are this moment (the writer is stopped), folded into
    one file at `dest`: what restoring a fresh backup puts at the path."""
    work = dest.parent / "copying"
    work.mkdir()
    for suffix in ("", "-wal"):
        if Path(f"{path}{suffix}").exists():
            shutil.copyfile(f"{path}{suffix}", f"{work / path.name}{suffix}")
    Store.open(work / path.name).close()  # the last connection folds the WAL in
    os.replace(work / path.name, dest)
    shutil.rmtree(work)


def _fault(kind: str, path: Path) -> Path | None:
    """Do it; returns where our file still lives, if anywhere."""
    if kind == "deleted":
        path.unlink()
    elif kind == "deleted with its WAL":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif kind == "moved aside":
        aside = path.with_name("aside.sqlite3")
        path.rename(aside)
        return aside
    else:  # "replaced by a copy"
        _consolidated_copy(path, path.with_name("copy.sqlite3"))
        path.with_name("copy.sqlite3").rename(path)
    return None


def _user_seqs(path: Path, conv_ids: list[str]) -> dict[str, set[int]]:
    with Store.open(path) as store:
        assert store._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {
            c: {e.seq for e in store.read_events(c, limit=10**9) if e.type == "user_message"}
            for c in conv_ids
            if store.get_conversation(c) is not None
        }


@pytest.mark.subprocess
@pytest.mark.parametrize("round_no", range(FAULT_ROUNDS))
def test_a_deleted_or_replaced_database_acknowledges_nothing_more(
    tmp_path: Path, round_no: int
) -> None:
    """The file deleted, moved aside or replaced at a random moment while the child appends
    (the child stopped meanwhile, so "before" and "after" are exact): every acknowledgement
    after it is one whose commit came before it (at most one, in flight), and what the next
    start reads is exactly what it should: a fresh file, or the copy put in its place, never
    with our old WAL applied to it. A file moved aside keeps every acknowledged message."""
    rng = random.Random(1000 + round_no)
    kind = ("deleted", "deleted with its WAL", "moved aside", "replaced by a copy")[round_no % 4]
    path = tmp_path / "acpd.sqlite3"
    with Store.open(path) as store:
        conv_ids = [
            store.create_conversation(title=f"c{i}", agent="demo", agent_cmd=["x"], cwd="/").id
            for i in range(2)
        ]
    env = dict(os.environ)
    env.pop("ACPD_CRASH_AUTOCHECKPOINT", None)
    if round_no % 3:
        env["ACPD_CRASH_AUTOCHECKPOINT"] = str(rng.choice((50, 100)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store._crash_child", str(path), *conv_ids],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        before = _read_available(fd, HANG_GUARD)
        assert before, "the child acknowledged nothing"
        deadline = time.monotonic() + rng.uniform(0, 0.03)
        while (left := deadline - time.monotonic()) > 0:
            before += _read_available(fd, left)
        proc.send_signal(signal.SIGSTOP)
        before += _read_available(fd, 0.05)  # the pipe as the stop left it
        aside = _fault(kind, path)
        proc.send_signal(signal.SIGCONT)
        after = b""
        give_up = time.monotonic() + REFUSAL_WAIT
        while b"refused" not in after and (left := give_up - time.monotonic()) > 0:
            after += _read_available(fd, left)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    lines = before.decode().split("\n")
    assert lines[-1] == "", "the stop cut a line in two"
    acked: dict[str, set[int]] = {c: set() for c in conv_ids}
    for line in lines[:-1]:
        conv_id, seq = line.split()
        acked[conv_id].add(int(seq))
    later = after.decode().split("\n")
    refusals = [i for i, line in enumerate(later) if line.startswith("refused")]
    assert refusals, f"no write was refused after the fault: {later[:5]}..."
    first_refusal = refusals[0]
    assert later[first_refusal] == "refused deleted or replaced"
    in_flight = later[:first_refusal]
    assert len(in_flight) <= 1, in_flight
    assert not any(line and not line.startswith("refused") for line in later[first_refusal:])
    for line in in_flight:
        conv_id, seq = line.split()
        acked[conv_id].add(int(seq))
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    at_path = _user_seqs(path, conv_ids)  # the next start, creating the file if need be
    if kind == "replaced by a copy":
        # The copy holds every commit before the fault, so every acknowledgement; at most one
        # more (committed, then found the file replaced before it could be acknowledged).
        for conv_id in conv_ids:
            assert acked[conv_id] <= at_path[conv_id]
        extra = sum(len(at_path[c] - acked[c]) for c in conv_ids)
        assert extra <= 1
    else:
        assert at_path == {}  # a fresh file: nothing of ours applied to it
    if aside is not None:
        kept = _user_seqs(aside, conv_ids)
        for conv_id in conv_ids:
            assert acked[conv_id] <= kept[conv_id]
        assert sum(len(kept[c] - acked[c]) for c in conv_ids) <= 1
