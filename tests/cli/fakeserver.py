"""A test double of the daemon's socket: JSON-RPC lines on a unix socket, served by threads.

Each method maps to a handler `(conn, params) -> result`; a handler may push notifications
with `conn.notify(...)` before returning (so they reach the client ahead of the reply), raise
`Fail` for an error reply, or return `DEFER` and reply later with `conn.reply(...)`. Every
request is recorded in `server.requests` as `(method, params)`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

DEFER = object()

Handler = Callable[["Conn", dict[str, Any]], Any]


class Fail(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.current_id: object = None

    def send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg).encode() + b"\n"
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the client went away; the test sees that on its side

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def event(self, conv_id: str, event: dict[str, Any]) -> None:
        self.notify("conversation/event", {"id": conv_id, "event": event})

    def delta(self, conv_id: str, prompt_seq: int, text: str, kind: str = "message") -> None:
        params = {"id": conv_id, "prompt_seq": prompt_seq, "kind": kind, "text": text}
        self.notify("conversation/delta", params)

    def reply(self, req_id: object, result: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": req_id, "result": result})


class FakeServer:
    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.conns: list[Conn] = []
        self.received = threading.Condition()
        self._dir = tempfile.mkdtemp(prefix="acpd-cli-")
        self.path = os.path.join(self._dir, "s.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._spawn(self._accept)

    def _spawn(self, fn: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = Conn(sock)
            self.conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: Conn) -> None:
        buf = b""
        while True:
            try:
                data = conn.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._handle(conn, json.loads(line))

    def _handle(self, conn: Conn, msg: dict[str, Any]) -> None:
        method, params, req_id = msg["method"], msg.get("params", {}), msg.get("id")
        with self.received:
            self.requests.append((method, params))
            self.received.notify_all()
        handler = self.handlers.get(method)
        conn.current_id = req_id
        try:
            if handler is None:
                raise Fail(-32601, f"method not found: {method}")
            result = handler(conn, params)
        except Fail as exc:
            error = {"code": exc.code, "message": exc.message}
            conn.send({"jsonrpc": "2.0", "id": req_id, "error": error})
            return
        if result is not DEFER:
            conn.reply(req_id, result)

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> dict[str, Any]:
        """Block until `count` requests for `method` have arrived; the last one's params."""
        with self.received:
            ok = self.received.wait_for(lambda: self.methods().count(method) >= count, timeout)
        assert ok, f"no {method} request #{count} within {timeout}s; got {self.requests}"
        return [p for m, p in self.requests if m == method][count - 1]

    def methods(self) -> list[str]:
        return [m for m, _ in self.requests]

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self._listener.close()
        for conn in self.conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


@contextmanager
def serving(handlers: Mapping[str, Handler]) -> Iterator[FakeServer]:
    server = FakeServer(handlers)
    server.start()
    try:
        yield server
    finally:
        server.close()


def conv(conv_id: str = "c0ffee01", **over: Any) -> dict[str, Any]:
    """A `conversation` object as the daemon returns it."""
    base: dict[str, Any] = {
        "id": conv_id,
        "short_id": conv_id[:4],
        "title": "fix the tests",
        "agent": "demo",
        "cwd": "/tmp",
        "status": "idle",
        "created_at": "2025-01-02T03:04:05.000Z",
        "updated_at": "2025-01-02T03:04:05.000Z",
        "last_seq": 0,
        "queued": 0,
        "live": False,
        "permissions": [],
    }
    base.update(over)
    return base


def ev(seq: int, type_: str, **body: Any) -> dict[str, Any]:
    return {"seq": seq, "type": type_, "ts": "2025-01-02T03:04:05.000Z", **body}


class Hung(Exception):
    """Raised in the main thread by `hang_guard`; `acpd`'s main reports it as an internal error."""


@contextmanager
def hang_guard(seconds: float = 20.0) -> Iterator[None]:
    """Interrupt the main thread with `Hung` if the block runs longer than `seconds`."""

    def hung(signum: int, frame: object) -> None:
        raise Hung(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
