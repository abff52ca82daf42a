"""A blocking client of acpd's unix socket: newline-delimited JSON-RPC 2.0.

The CLI starts for every command, so this module imports only the standard library, and the
codec is stdlib `json`, not msgspec: importing msgspec alone (typing_extensions, inspect, uuid,
decimal) costs as much as starting the interpreter, and a CLI reply is a few kilobytes.

One connection carries calls and a subscription at once: the daemon answers requests
concurrently and streams notifications between replies, so `call` matches replies by id and
keeps any notification it reads on the way for `next_notice`.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import time

TYPE_CHECKING = False  # as in daemon.cli.commands: no `typing` import at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

__all__ = [
    "ApiError",
    "Client",
    "ClientError",
    "Notice",
    "Subscription",
    "default_socket_path",
    "dumps",
    "resolve_socket",
]

# Replies and notifications larger than this mean a broken peer, not a big conversation.
MAX_LINE = 64 * 1024 * 1024
# How long a call waits for its reply (and connect for the daemon to accept) before saying the
# daemon is stuck: generous, since a wedged daemon is the only thing it guards against. Streams
# wait for notifications without a limit.
CALL_TIMEOUT = 60.0
_RECV = 256 * 1024

EVENT = "conversation/event"
LAGGED = "conversation/lagged"


def default_socket_path() -> str:
    """CONTRACT.md's default socket, from `daemon.paths` (trio-free by its own promise)."""
    from daemon.paths import default_socket_path as lookup

    return str(lookup())


class ClientError(Exception):
    """The daemon cannot be reached or broke the protocol; the message is one line for people."""


class ApiError(Exception):
    """The daemon answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.message!r})"


class Notice:
    """One notification: `method` and its `params` object."""

    __slots__ = ("method", "params")

    def __init__(self, method: str, params: dict[str, Any]) -> None:
        self.method = method
        self.params = params

    def to_json(self) -> str:
        """`{"method", "params"}`: the notification minus `jsonrpc`, as `--json` prints it."""
        return dumps({"method": self.method, "params": self.params})

    def __repr__(self) -> str:
        return f"Notice({self.method!r}, {self.params!r})"


def dumps(obj: object) -> str:
    """Compact JSON with UTF-8 text left readable, the way the daemon writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class Client:
    """A blocking connection to the daemon.

    Error handling: a missing socket, or a stale one nobody answers on, raises `ClientError`
    with a hint to start the daemon; the daemon closing the connection, or a malformed line,
    raises `ClientError`, as does a call not answered within `timeout` seconds (None: wait for
    ever); a JSON-RPC error reply raises `ApiError`.
    """

    def __init__(self, path: str, *, timeout: float | None = CALL_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
        except TimeoutError:
            self._sock.close()
            raise ClientError(self._stuck("accept the connection")) from None
        except FileNotFoundError:
            self._sock.close()
            raise ClientError(
                f"acpd is not running (no socket at {path}): start it with `acpd serve`"
            ) from None
        except ConnectionRefusedError:
            # The file is there, but nothing listens on it: a daemon that died without
            # removing it (or a socket unit that is stopped). `acpd serve` replaces it.
            self._sock.close()
            raise ClientError(
                f"a stale socket is at {path} (no daemon answers); start one with `acpd serve`"
            ) from None
        except OSError as exc:
            self._sock.close()
            raise ClientError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        self._buf = bytearray()
        self._next_id = 1
        self._replies: dict[int, dict[str, Any]] = {}
        self._notices: collections.deque[Notice] = collections.deque()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        """The socket's descriptor, for `selectors`; check `has_buffered()` before waiting."""
        return self._sock.fileno()

    def has_buffered(self) -> bool:
        """True if a notice can be had without reading the socket."""
        return bool(self._notices) or b"\n" in self._buf

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and wait for its reply; notifications read meanwhile are kept."""
        req_id = self._next_id
        self._next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            msg["params"] = params
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(dumps(msg).encode() + b"\n")
        except TimeoutError:
            raise ClientError(self._stuck(f"read the {method} request")) from None
        except OSError as exc:
            # The daemon may have said why it hung up (a refusal) before we got to read it.
            self._read_leftovers()
            raise ClientError(f"connection to acpd lost: {exc.strerror or exc}") from None
        while req_id not in self._replies:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._read(left):
                raise ClientError(self._stuck(f"answer {method}"))
        reply = self._replies.pop(req_id)
        if (error := reply.get("error")) is not None:
            if not isinstance(error, dict):
                raise ClientError(f"malformed error reply from acpd: {error!r}")
            raise ApiError(int(error.get("code", 0)), str(error.get("message", "error")))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise ClientError(f"malformed reply from acpd to {method}: {result!r}")
        return result

    def _stuck(self, what: str) -> str:
        return (
            f"acpd did not {what} within {self.timeout:g}s; it may be stuck "
            f"(socket {self.path}; its log is in the data dir's logs/)"
        )

    def _read_leftovers(self) -> None:
        """Parse whatever the daemon sent before the connection broke; raises `ClientError`
        for an error reply to no request (e.g. "unauthorized"), else returns."""
        try:
            self._sock.setblocking(False)
            while data := self._sock.recv(_RECV):
                self._buf += data
        except OSError:
            pass
        self._parse_lines()

    def next_notice(self, timeout: float | None = None) -> Notice | None:
        """The next notification; None if `timeout` seconds pass first (0 means don't wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._notices:
            if b"\n" in self._buf:
                self._parse_lines()
            elif deadline is None:
                self._read(None)
            elif not self._read(max(0.0, deadline - time.monotonic())):
                return None
        return self._notices.popleft()

    def _read(self, timeout: float | None) -> bool:
        """Read once from the socket and parse whole lines; False if the timeout passed."""
        try:
            self._sock.settimeout(timeout)
            data = self._sock.recv(_RECV)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError as exc:
            raise ClientError(f"connection to acpd lost: {exc.strerror or exc}") from None
        if not data:
            raise ClientError("acpd closed the connection")
        self._buf += data
        if len(self._buf) > MAX_LINE and b"\n" not in self._buf:
            raise ClientError("acpd sent a line longer than the client accepts")
        self._parse_lines()
        return True

    def _parse_lines(self) -> None:
        end = self._buf.rfind(b"\n")
        if end < 0:
            return
        chunk = bytes(self._buf[:end])
        del self._buf[: end + 1]
        for line in chunk.split(b"\n"):
            if line.strip():
                self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            raise ClientError(f"malformed line from acpd: {line[:200]!r}") from None
        if not isinstance(msg, dict):
            raise ClientError(f"malformed message from acpd: {line[:200]!r}")
        method = msg.get("method")
        if isinstance(method, str):
            if "id" not in msg:  # the daemon makes no requests of its clients
                params = msg.get("params")
                self._notices.append(Notice(method, params if isinstance(params, dict) else {}))
            return
        req_id = msg.get("id")
        if isinstance(req_id, int):
            self._replies[req_id] = msg
        elif (error := msg.get("error")) is not None:
            # A reply with a null id: the daemon could not read a request of ours at all.
            message = error.get("message", "error") if isinstance(error, dict) else error
            raise ClientError(f"acpd rejected a request: {message}")


class Subscription:
    """A conversation's events and deltas on a `Client`: replay after `after_seq`, then live.

    On `conversation/lagged` (the daemon dropped us for falling behind) it resubscribes from the
    last event seen and still yields the lagged notice, so a renderer can say so; events already
    seen are never yielded twice.
    """

    def __init__(
        self, client: Client, conv_id: str, *, after_seq: int = 0, deltas: bool = True
    ) -> None:
        self.client = client
        self.conv_id = conv_id
        self.last_seq = after_seq
        self.deltas = deltas
        self.through_seq = 0

    def start(self) -> int:
        result = self.client.call(
            "conversations/subscribe",
            {"id": self.conv_id, "after_seq": self.last_seq, "deltas": self.deltas},
        )
        self.through_seq = int(result.get("through_seq", 0))
        return self.through_seq

    def next(self, timeout: float | None = None) -> Notice | None:
        """The next notice worth handling; None if `timeout` passes first."""
        while True:
            notice = self.client.next_notice(timeout)
            if notice is None:
                return None
            if notice.method == EVENT:
                event = notice.params.get("event")
                seq = event.get("seq") if isinstance(event, dict) else None
                if not isinstance(seq, int):
                    continue
                if seq <= self.last_seq:
                    continue  # replayed again after a resubscribe
                self.last_seq = seq
            elif notice.method == LAGGED:
                last = notice.params.get("last_seq")
                if isinstance(last, int):
                    self.last_seq = max(self.last_seq, last)
                self.start()
            return notice

    def __iter__(self) -> Iterator[Notice]:
        while True:
            notice = self.next()
            assert notice is not None
            yield notice


def resolve_socket(explicit: str | None) -> str:
    """`--socket` if given, else the CONTRACT default; `~` expanded for people."""
    return os.path.expanduser(explicit) if explicit else default_socket_path()
