"""SIGKILL a writer at random moments: no acknowledged message is ever lost or duplicated."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import Store

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 50
MAX_DELAY = 0.1  # seconds of appending after the first acknowledgement, at most
HANG_GUARD = 30.0  # a child that does not acknowledge within this has failed


def _run_child(path: Path, conv_ids: list[str], delay: float) -> list[str]:
    """Start a child, let it append for `delay` after its first ack, SIGKILL it; its acks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store._crash_child", str(path), *conv_ids],
        cwd=REPO,
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
            if kill_at is None and b"\n" in data:
                kill_at = time.monotonic() + delay
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    data += rest
    return data.decode().split("\n")[:-1]  # a torn last line was never acknowledged


def _check(path: Path, conv_ids: list[str], acked: dict[str, set[int]]) -> int:
    """Reopen and check everything; returns how many events are stored."""
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
            user = {e.seq for e in events if e.type == "user_message"}
            assert acked[conv_id] <= user, sorted(acked[conv_id] - user)
            assert rec.queued == len(user) == len(store.pending_messages(conv_id))
            total += len(events)
    return total


@pytest.mark.subprocess
def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    path = tmp_path / "acpd.sqlite3"
    with Store.open(path) as store:
        conv_ids = [
            store.create_conversation(title=f"c{i}", agent="demo", agent_cmd=["x"], cwd="/").id
            for i in range(2)
        ]
    acked: dict[str, set[int]] = {c: set() for c in conv_ids}
    last_total = 0
    for round_no in range(ROUNDS):
        delay = random.Random(round_no).uniform(0.0, MAX_DELAY)
        lines = _run_child(path, conv_ids, delay)
        assert lines, "every round acknowledges at least one message"
        for line in lines:
            conv_id, seq = line.split()
            assert int(seq) not in acked[conv_id], f"seq {seq} acknowledged twice"
            acked[conv_id].add(int(seq))
        total = _check(path, conv_ids, acked)
        assert total > last_total
        last_total = total
