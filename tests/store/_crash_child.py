"""The crash tests' child: write to the store as fast as it can, acknowledging each write.

Run as `python -m tests.store._crash_child DB [--ops SEED] CONV...` from the repo root. Every
acknowledgement is one line, written (one write(2), so it arrives whole or not at all) only
after the store call returned, i.e. after its commit was fsynced: exactly what the daemon
would acknowledge. Every third round also group-commits some non-durable agent output, as a
turn would.

Without `--ops`, it queues user messages: a line "CONV SEQ" each. A write refused by storage
(the file deleted or replaced under it) prints "refused CAUSE" instead, and the child goes on
trying, as the daemon would with the next send.

With `--ops SEED`, it works the queues at random (seeded): each operation is announced by an
intent line ("? OP ...") before it starts and acknowledged ("OP ...") after it returned (CONV
is a conversation id, SEQ a message's seq):

* `A CONV SEQ`: a message queued at the end (intent `? A CONV`);
* `F CONV SEQ`: a message queued first in line, as a steer that fell back (intent `? F CONV`);
* `E CONV SEQ TEXT`: queued message SEQ edited to TEXT;
* `M CONV SEQ BEFORE`: queued message SEQ moved before BEFORE (0: first in line);
* `S CONV SEQ`: queued message SEQ taken off the queue as steered into the running turn (the
  `steered: true` acknowledgement);
* `P CONV SEQ`: the head, SEQ, prompted (start_turn, with the body as read).

It keeps its own view of each queue (it is the only writer), read once at start.

$ACPD_CRASH_AUTOCHECKPOINT, if set, replaces the store's wal_autocheckpoint (pages): a small
value makes the child checkpoint every few appends, so that kills land in checkpoints and in
a WAL being rewritten from its start.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

from store import StorageUnavailable, Store

_KINDS = "AAAFEEMMSPP"  # how often each operation comes


def _say(line: str) -> None:
    os.write(1, f"{line}\n".encode())


def _agent_output(store: Store, conv_id: str, i: int) -> None:
    if i % 3 == 0:
        chunk = b'{"text":"' + b"x" * (i % 700) + b'"}'
        store.append_events(conv_id, [("agent_message", chunk), ("turn_ended", b"{}")])


def appends(store: Store, conv_ids: list[str]) -> None:
    i = 0
    while True:
        conv_id = conv_ids[i % len(conv_ids)]
        try:
            rec = store.append_user_message(conv_id, b'{"text":"m%d"}' % i)
            _say(f"{conv_id} {rec.seq}")
            _agent_output(store, conv_id, i)
        except StorageUnavailable as exc:
            _say(f"refused {exc.cause}")
            time.sleep(0.002)
        i += 1


def operations(store: Store, seed: int, conv_ids: list[str]) -> None:
    rng = random.Random(seed)
    line = {c: [m.seq for m in store.pending_messages(c)] for c in conv_ids}
    bodies = {c: {m.seq: m.body for m in store.pending_messages(c)} for c in conv_ids}
    i = 0
    while True:
        conv_id = conv_ids[i % len(conv_ids)]
        queue, body = line[conv_id], bodies[conv_id]
        kind = rng.choice(_KINDS) if queue else rng.choice("AF")
        if kind in "AF":
            _say(f"? {kind} {conv_id}")
            sent = b'{"text":"m%d-%d"}' % (seed, i)
            rec = store.append_user_message(conv_id, sent, first=kind == "F")
            queue.insert(0 if kind == "F" else len(queue), rec.seq)
            body[rec.seq] = sent
            _say(f"{kind} {conv_id} {rec.seq}")
        elif kind == "E":
            seq = rng.choice(queue)
            text = f"e{seed}-{i}"
            _say(f"? E {conv_id} {seq} {text}")
            body[seq] = b'{"text":"%s"}' % text.encode()
            store.edit_pending(conv_id, seq, body[seq], ("user_message_edited", b"{}"))
            _say(f"E {conv_id} {seq} {text}")
        elif kind == "M":
            seq = rng.choice(queue)
            before = rng.choice([0, *[s for s in queue if s != seq]])
            _say(f"? M {conv_id} {seq} {before}")
            order, _ = store.move_pending(
                conv_id, seq, before or None, lambda o: ("queue_reordered", b"{}")
            )
            line[conv_id] = order
            _say(f"M {conv_id} {seq} {before}")
        elif kind == "S":
            seq = queue[0]
            _say(f"? S {conv_id} {seq}")
            steered = b'{"message_seq":%d}' % seq
            store.take_steered(conv_id, seq, ("user_message_steered", steered))
            queue.pop(0)
            _say(f"S {conv_id} {seq}")
        else:  # P
            seq = queue[0]
            _say(f"? P {conv_id} {seq}")
            turn = b'{"prompt_seq":%d}' % seq
            store.start_turn(conv_id, seq, turn, as_read=body[seq])
            queue.pop(0)
            _say(f"P {conv_id} {seq}")
        _agent_output(store, conv_id, i)
        i += 1


def main() -> None:
    path, args = Path(sys.argv[1]), sys.argv[2:]
    seed = None
    if args[:1] == ["--ops"]:
        seed, args = int(args[1]), args[2:]
    with Store.open(path) as store:
        pages = os.environ.get("ACPD_CRASH_AUTOCHECKPOINT")
        if pages:
            store._conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
        if seed is None:
            appends(store, args)
        else:
            operations(store, seed, args)


if __name__ == "__main__":
    main()
