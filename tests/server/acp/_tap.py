"""Run a command between our stdin/stdout and its own, keeping a copy of each direction.

    python _tap.py DIR -- CMD ARG...

Writes DIR/<pid>.in (what came to the command's stdin) and DIR/<pid>.out (what it wrote to
stdout), byte for byte, so a test can check every message `acpd acp` sent an ACP client that
spawned it. Ends when the command does, with its exit status; SIGTERM is passed on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import BinaryIO


def _pump(src: int, dst: BinaryIO | int, copy: BinaryIO, close: BinaryIO | None) -> None:
    while True:
        data = os.read(src, 65536)
        if not data:
            break
        copy.write(data)
        copy.flush()
        try:
            if isinstance(dst, int):
                os.write(dst, data)
            else:
                dst.write(data)
                dst.flush()
        except BrokenPipeError:
            break
    if close is not None:
        close.close()


def main() -> int:
    where, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        raise SystemExit("usage: _tap.py DIR -- CMD ARG...")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    base = os.path.join(where, str(proc.pid))
    assert proc.stdin is not None
    assert proc.stdout is not None
    with open(base + ".in", "wb") as seen_in, open(base + ".out", "wb") as seen_out:
        feed = threading.Thread(
            target=_pump, args=(0, proc.stdin, seen_in, proc.stdin), daemon=True
        )
        feed.start()
        _pump(proc.stdout.fileno(), 1, seen_out, None)
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
