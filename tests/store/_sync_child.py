"""test_fsync's child: every write operation once, each after a marker the tracer can see.

Run as `python -m tests.store._sync_child DB` from the repo root, under strace. Before each
operation it calls chdir("/acpd-mark/NAME"), which fails (nothing is there) but shows up in the
trace in order with the fsync(2)/fdatasync(2) calls, so the parent can tell which operation
made which sync. Nothing else in the process calls chdir.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from store import Store

MARK = "/acpd-mark/"


def mark(name: str) -> None:
    try:
        os.chdir(MARK + name)
    except OSError:
        pass


def main() -> None:
    with Store.open(Path(sys.argv[1])) as s:
        conv = s.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
        cid = conv.id
        m1 = s.append_user_message(cid, b'{"text":"warm-up"}')
        ops: list[tuple[str, Callable[[], object]]] = [
            ("create_conversation",
             lambda: s.create_conversation(title="u", agent="demo", agent_cmd=["x"], cwd="/")),
            ("append_user_message", lambda: s.append_user_message(cid, b'{"text":"a"}')),
            ("append_user_message", lambda: s.append_user_message(cid, b'{"text":"b"}')),
            ("remove_pending", lambda: s.remove_pending(cid, m1.seq + 2)),
            ("start_turn", lambda: s.start_turn(cid, m1.seq, b"{}")),
            ("append_user_message",
             lambda: s.append_user_message(cid, b'{"text":"c"}', first=True)),
            ("move_pending",
             lambda: s.move_pending(cid, m1.seq + 1, None, lambda o: ("queue_reordered", b"{}"))),
            ("edit_pending", lambda: s.edit_pending(cid, m1.seq + 1, b'{"text":"a2"}',
                                                    ("user_message_edited", b"{}"))),
            ("take_steered",
             lambda: s.take_steered(cid, m1.seq + 1, ("user_message_steered", b"{}"))),
            ("set_permission_policy", lambda: s.set_permission_policy(cid, "deny")),
            ("end_turn", lambda: s.end_turn(cid, [("turn_ended", b"{}")], "idle")),
            ("append_event", lambda: s.append_event(cid, "agent_message", b"{}")),
            ("append_events", lambda: s.append_events(cid, [("a", b"{}"), ("b", b"{}")])),
            ("append_draft", lambda: s.append_draft(cid, 1, "message", "x")),
            ("clear_drafts", lambda: s.clear_drafts(cid)),
            ("set_status", lambda: s.set_status(cid, "paused")),
            ("set_title", lambda: s.set_title(cid, "v")),
            ("set_acp_session", lambda: s.set_acp_session(cid, "sess", "/")),
            ("delete_conversation", lambda: s.delete_conversation(cid)),
        ]  # fmt: skip
        for name, op in ops:
            mark(name)
            op()
        mark("close")
    mark("end")


if __name__ == "__main__":
    main()
