"""A subscriber in a process of its own: `python -m tests.bench._subscriber SOCKET ID`.

Subscribes to conversation ID with deltas, prints "ready" once the subscription is answered,
then reads everything flat out until the daemon closes the connection. A process, not a thread
of the benchmark: a thread draining a flood would take the interpreter's lock from the thread
timing the sends, and the benchmark would measure itself.
"""

from __future__ import annotations

import json
import socket
import sys


def main(path: str, conv_id: str) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    params = {"id": conv_id, "deltas": True}
    request = {"jsonrpc": "2.0", "id": 1, "method": "conversations/subscribe", "params": params}
    sock.sendall(json.dumps(request).encode() + b"\n")
    seen = b""
    while b"\n" not in seen:  # the subscription's own answer comes first
        data = sock.recv(1 << 16)
        if not data:
            return
        seen += data
    print("ready", flush=True)
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
