"""Property tests: whatever a client writes on the socket, every reply is a well-formed JSON-RPC
response with a sensible code (never -32603), and the daemon keeps serving.

One daemon (the real engine with a temporary data dir, the dispatcher, the unix server) runs for
the whole module in a thread of its own; each example is one blocking client connection: write,
half-close, read every reply until EOF. `@conv` in a payload stands for a real conversation's id.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from daemon.config import Config
from daemon.engine.opening import open_engine
from daemon.server.dispatch import DaemonInfo, Dispatcher, EngineAPI
from daemon.server.unix import serve_unix
from protocol.api import METHODS

Json = Any
NOTIFICATIONS = {"conversation/event", "conversation/delta", "conversation/lagged"}
# Codes a client's input may earn; -32603 (internal error) would be a bug.
EXPECTED = {-32700, -32600, -32601, -32602, -32001, -32002, -32003}
MAX_LINE = 4096
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

EngineFactory = Callable[[Path], AbstractAsyncContextManager[EngineAPI]]


@asynccontextmanager
async def real_engine(data_dir: Path) -> AsyncIterator[EngineAPI]:
    config = Config(max_line_bytes=MAX_LINE, shutdown_grace=3.0)
    async with open_engine(config, data_dir) as engine:
        yield engine


class Daemon:
    """A daemon on a socket, in its own thread and trio run."""

    def __init__(self, path: Path, data_dir: Path, open_engine: EngineFactory) -> None:
        self.path = path
        self._data_dir = data_dir
        self._open_engine = open_engine
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.conv_id = ""

    def payload(self, data: bytes) -> bytes:
        """`data` with `@conv` replaced by the id of a conversation that exists (again)."""
        if not self.conv_id or "error" in call(self.path, "conversations/get", id=self.conv_id):
            reply = call(self.path, "conversations/create", agent="demo", cwd="/")
            self.conv_id = reply["result"]["conversation"]["id"]
        return data.replace(b"@conv", self.conv_id.encode())

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        async with self._open_engine(self._data_dir) as engine, trio.open_nursery() as nursery:
            info = DaemonInfo(self._data_dir, "0", trio.current_time())
            await nursery.start(partial(serve_unix, self.path, Dispatcher(engine, info)))
            self._scope = nursery.cancel_scope
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()

    def __enter__(self) -> Daemon:
        self._thread.start()
        assert self._ready.wait(30), "daemon did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._scope is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(30)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error


def exchange(path: Path, payload: bytes) -> list[Json]:
    """Write `payload`, half-close, and return every line the daemon sent back, parsed."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # hung up on us after a line too long; its replies are still to read
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # closed with our unread input queued: Linux reports a reset after the data
    data = b"".join(chunks)
    assert not data or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def call(path: Path, method: str, **params: Json) -> Json:
    msg = {"jsonrpc": "2.0", "id": 0, "method": method, "params": params}
    [reply] = exchange(path, json.dumps(msg).encode() + b"\n")
    return reply


def check_replies(replies: list[Json], *, max_responses: int) -> list[Json]:
    responses = []
    for msg in replies:
        assert isinstance(msg, dict)
        assert msg["jsonrpc"] == "2.0"
        if "method" in msg:
            assert msg["method"] in NOTIFICATIONS
            continue
        responses.append(msg)
        assert set(msg) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), msg
        assert msg["id"] is None or isinstance(msg["id"], int | str)
        event(f"error {msg['error']['code']}" if "error" in msg else "result")
        if "error" in msg:
            assert set(msg["error"]) == {"code", "message"}
            assert msg["error"]["code"] in EXPECTED, msg
            assert isinstance(msg["error"]["message"], str)
        else:
            assert isinstance(msg["result"], dict)
    assert len(responses) <= max_responses
    return responses


def still_serving(path: Path) -> None:
    [reply] = exchange(path, b'{"jsonrpc":"2.0","id":"ok","method":"conversations/count"}\n')
    assert reply["id"] == "ok"
    assert isinstance(reply["result"]["count"], int)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "data").mkdir(mode=0o700)
    with Daemon(base / "run" / "acpd.sock", base / "data", real_engine) as daemon:
        yield daemon


# --- strategies ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10)


def _fields(method: str) -> list[msgspec.structs.FieldInfo]:
    # Never let the fuzzer name a command to run.
    return [f for f in msgspec.structs.fields(METHODS[method].params) if f.name != "agent_cmd"]


field_values = (
    json_values
    | st.sampled_from(["@conv", "@conv", "@conv", "c", "", "/", "/nonexistent", "demo", "hi"])
    | st.integers(-2, 2000)
    | st.booleans()
)


def _mostly(draw: st.DrawFn, good: st.SearchStrategy[Json], bad: st.SearchStrategy[Json]) -> Json:
    """Nine times in ten a plausible value, so examples get past the envelope checks."""
    return draw(good) if draw(st.integers(0, 9)) else draw(bad)


@st.composite
def requests(draw: st.DrawFn) -> Json:
    method = _mostly(draw, st.sampled_from(sorted(METHODS)), st.text(max_size=20))
    msg: dict[str, Json] = {"method": method}
    msg["jsonrpc"] = _mostly(draw, st.just("2.0"), json_values)
    if draw(st.integers(0, 9)):
        msg["id"] = draw(ids)
    if method in METHODS and draw(st.integers(0, 9)):
        names = [f.name for f in _fields(method)] + ["bogus"]
        fields = st.dictionaries(st.sampled_from(names), field_values, max_size=5)
        msg["params"] = _mostly(draw, fields, json_values)
    return msg


# --- properties ------------------------------------------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=3 * MAX_LINE))
def test_arbitrary_bytes(daemon: Daemon, payload: bytes) -> None:
    replies = exchange(daemon.path, payload)
    check_replies(replies, max_responses=payload.count(b"\n") + 2)
    still_serving(daemon.path)


@FUZZ
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_arbitrary_json(daemon: Daemon, values: list[Json]) -> None:
    payload = b"".join(json.dumps(v).encode() + b"\n" for v in values)
    responses = check_replies(exchange(daemon.path, payload), max_responses=len(values))
    # Not one of them is a valid request: each earns an error (or, for a response, silence).
    assert all("error" in r for r in responses)
    still_serving(daemon.path)


@FUZZ
@given(msgs=st.lists(requests(), min_size=1, max_size=8))
def test_requests_with_random_params(daemon: Daemon, msgs: list[Json]) -> None:
    payload = daemon.payload(b"".join(json.dumps(m).encode() + b"\n" for m in msgs))
    check_replies(exchange(daemon.path, payload), max_responses=len(msgs))
    still_serving(daemon.path)
