"""The crash test's child: queue user messages as fast as it can, acknowledging each one.

Run as `python -m tests.store._crash_child DB CONV...` from the repo root. A line "CONV SEQ"
is written (one write(2), so it arrives whole or not at all) only after append_user_message
has returned, i.e. after the commit was fsynced: exactly what the daemon would acknowledge.
Every third round also group-commits some non-durable agent output, as a turn would.

$ACPD_CRASH_AUTOCHECKPOINT, if set, replaces the store's wal_autocheckpoint (pages): a small
value makes the child checkpoint every few appends, so that kills land in checkpoints and in
a WAL being rewritten from its start.

A write refused by storage (the file deleted or replaced under it) prints "refused CAUSE"
instead, and the child goes on trying, as the daemon would with the next send.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from store import StorageUnavailable, Store


def main() -> None:
    path, conv_ids = Path(sys.argv[1]), sys.argv[2:]
    with Store.open(path) as store:
        pages = os.environ.get("ACPD_CRASH_AUTOCHECKPOINT")
        if pages:
            store._conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
        i = 0
        while True:
            conv_id = conv_ids[i % len(conv_ids)]
            try:
                rec = store.append_user_message(conv_id, b'{"text":"m%d"}' % i)
                os.write(1, f"{conv_id} {rec.seq}\n".encode())
                if i % 3 == 0:
                    chunk = b'{"text":"' + b"x" * (i % 700) + b'"}'
                    store.append_events(conv_id, [("agent_message", chunk), ("turn_ended", b"{}")])
            except StorageUnavailable as exc:
                os.write(1, f"refused {exc.cause}\n".encode())
                time.sleep(0.002)
            i += 1


if __name__ == "__main__":
    main()
