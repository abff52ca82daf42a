"""The blocking client: replies matched by id among notifications, errors, subscriptions."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from typing import Any

import pytest

from daemon.cli.client import ApiError, Client, ClientError, Notice, Subscription
from tests.cli.fakeserver import DEFER, Conn, Fail, FakeServer, ev, serving


def test_call_returns_result_and_keeps_notifications_read_on_the_way() -> None:
    def status(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        conn.notify(
            "conversation/delta", {"id": "c", "prompt_seq": 1, "kind": "message", "text": "a"}
        )
        conn.event("c", ev(2, "turn_started", prompt_seq=1))
        return {"pid": 7}

    with serving({"daemon/status": status}) as server, Client(server.path) as client:
        assert client.call("daemon/status") == {"pid": 7}
        assert client.has_buffered()
        first = client.next_notice(0)
        second = client.next_notice(0)
        assert first is not None
        assert first.method == "conversation/delta"
        assert second is not None
        assert second.params["event"]["seq"] == 2
        assert client.next_notice(0) is None
    assert server.requests == [("daemon/status", {})]


def test_replies_out_of_order_are_matched_by_id() -> None:
    # The daemon runs requests concurrently: replies come in any order.
    held: list[tuple[Conn, object]] = []

    def slow(conn: Conn, params: dict[str, Any]) -> object:
        held.append((conn, conn.current_id))
        return DEFER

    def fast(conn: Conn, params: dict[str, Any]) -> object:
        slow_conn, slow_id = held[0]
        slow_conn.reply(slow_id, {"which": "slow"})  # another call's reply comes first
        conn.reply(conn.current_id, {"which": "fast"})
        return DEFER

    with serving({"slow": slow, "fast": fast}) as server, Client(server.path) as client:
        # Send "slow" by hand, so the fast call is what reads both replies.
        client._sock.sendall(b'{"jsonrpc":"2.0","id":99,"method":"slow"}\n')
        server.wait_for("slow")
        assert client.call("fast") == {"which": "fast"}
        assert client._replies[99]["result"] == {"which": "slow"}  # kept, not lost


def test_error_reply_raises_api_error() -> None:
    def get(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        raise Fail(-32001, f"no such conversation: {params['id']}")

    with serving({"conversations/get": get}) as server, Client(server.path) as client:
        with pytest.raises(ApiError) as info:
            client.call("conversations/get", {"id": "nope"})
        assert info.value.code == -32001
        assert str(info.value) == "no such conversation: nope"
        # The connection lives on after an error.
        with pytest.raises(ApiError, match="method not found"):
            client.call("whatever")


def test_missing_socket_says_how_to_start_the_daemon(tmp_path: Any) -> None:
    path = str(tmp_path / "none.sock")
    with pytest.raises(ClientError) as info:
        Client(path)
    assert str(info.value) == (
        f"acpd is not running (no socket at {path}): start it with `acpd serve`"
    )


def test_stale_socket_file_is_reported_as_stale() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()  # the file stays, nobody listens: ECONNREFUSED
        with pytest.raises(ClientError) as info:
            Client(path)
        assert str(info.value) == (
            f"a stale socket is at {path} (no daemon answers); start one with `acpd serve`"
        )


def test_daemon_closing_the_connection_is_a_client_error() -> None:
    def bye(conn: Conn, params: dict[str, Any]) -> object:
        conn.sock.shutdown(socket.SHUT_RDWR)
        return DEFER

    with (
        serving({"bye": bye}) as server,
        Client(server.path) as client,
        pytest.raises(ClientError, match="closed the connection"),
    ):
        client.call("bye")


def test_malformed_line_is_a_client_error() -> None:
    def junk(conn: Conn, params: dict[str, Any]) -> object:
        conn.sock.sendall(b"{nope\n")
        return DEFER

    with (
        serving({"junk": junk}) as server,
        Client(server.path) as client,
        pytest.raises(ClientError, match="malformed line"),
    ):
        client.call("junk")


def test_next_notice_times_out_and_then_gets_a_later_notice() -> None:
    ready = threading.Event()
    conns: list[Conn] = []

    def sub(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        conns.append(conn)
        ready.set()
        return {"through_seq": 0}

    with serving({"conversations/subscribe": sub}) as server, Client(server.path) as client:
        client.call("conversations/subscribe", {"id": "c"})
        assert client.next_notice(0.01) is None
        # A notice split over two writes is assembled before it is handed out.
        conns[0].sock.sendall(b'{"jsonrpc":"2.0","method":"x","par')
        assert client.next_notice(0) is None
        conns[0].sock.sendall(b'ams":{"a":1}}\n')
        notice = client.next_notice(10)
        assert notice is not None
        assert (notice.method, notice.params) == ("x", {"a": 1})


def test_notice_json_is_the_notification_minus_jsonrpc() -> None:
    notice = Notice("conversation/event", {"id": "c", "event": {"seq": 1, "text": "é"}})
    assert notice.to_json() == (
        '{"method":"conversation/event","params":{"id":"c","event":{"seq":1,"text":"é"}}}'
    )


def test_subscription_resubscribes_after_lag_and_skips_events_seen() -> None:
    subscribes: list[dict[str, Any]] = []

    def sub(conn: Conn, params: dict[str, Any]) -> object:
        subscribes.append(params)
        conn.reply(conn.current_id, {"through_seq": 3})
        if len(subscribes) == 1:
            for seq in (1, 2, 3):
                conn.event("c", ev(seq, "user_message", text=str(seq)))
            conn.notify("conversation/lagged", {"id": "c", "last_seq": 2})
        else:  # the replay after the lag repeats seq 3: not yielded twice
            conn.event("c", ev(3, "user_message", text="3"))
            conn.event("c", ev(4, "user_message", text="4"))
        return DEFER

    with serving({"conversations/subscribe": sub}) as server, Client(server.path) as client:
        subscription = Subscription(client, "c", after_seq=0)
        assert subscription.start() == 3
        got = []
        for notice in subscription:
            got.append(notice.params.get("event", {}).get("seq", notice.method))
            if got[-1] == 4:
                break
    assert got == [1, 2, 3, "conversation/lagged", 4]
    assert subscribes == [
        {"id": "c", "after_seq": 0, "deltas": True},
        {"id": "c", "after_seq": 3, "deltas": True},
    ]
    assert server.methods() == ["conversations/subscribe"] * 2


def test_calls_work_while_streaming() -> None:
    """A permission answer is a call made in the middle of reading notifications."""

    def sub(conn: Conn, params: dict[str, Any]) -> object:
        conn.reply(conn.current_id, {"through_seq": 0})
        conn.event("c", ev(1, "permission_requested", request="r1", options=[]))
        return DEFER

    def respond(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        conn.event("c", ev(2, "permission_resolved", request="r1", outcome="selected"))
        return {}

    handlers = {"conversations/subscribe": sub, "permissions/respond": respond}
    with serving(handlers) as server, Client(server.path) as client:
        subscription = Subscription(client, "c")
        subscription.start()
        first = subscription.next(10)
        assert first is not None
        assert first.params["event"]["type"] == "permission_requested"
        assert client.call("permissions/respond", {"id": "c", "request": "r1", "option": "a"}) == {}
        second = subscription.next(10)
        assert second is not None
        assert second.params["event"]["type"] == "permission_resolved"


def test_fake_server_shuts_down_cleanly() -> None:
    server = FakeServer({})
    server.start()
    server.close()
    assert not os.path.exists(server.path)


def test_a_call_without_reply_times_out_with_one_line() -> None:
    with (
        serving({"daemon/status": lambda c, p: DEFER}) as server,
        Client(server.path, timeout=0.2) as client,
        pytest.raises(ClientError) as info,
    ):
        client.call("daemon/status")
    assert str(info.value).startswith("acpd did not answer daemon/status within 0.2s")
    assert "\n" not in str(info.value)


def test_streams_wait_without_the_call_timeout() -> None:
    def status(conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        return {"pid": 1}

    with serving({"daemon/status": status}) as server, Client(server.path, timeout=0.2) as client:
        assert client.call("daemon/status") == {"pid": 1}
        assert client.next_notice(0.5) is None  # its own timeout, not the call's: no error


def test_refusal_is_read_even_when_sending_failed() -> None:
    """The daemon refuses and hangs up before reading our (large) request: the send fails,
    yet the reason it sent first is what we report."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen()
        closed = threading.Event()

        def refuse() -> None:
            conn, _ = listener.accept()
            conn.sendall(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32004,'
                         b'"message":"unauthorized: wrong user"}}\n')  # fmt: skip
            conn.close()
            closed.set()

        thread = threading.Thread(target=refuse, daemon=True)
        thread.start()
        with Client(path) as client:
            assert closed.wait(10)
            with pytest.raises(ClientError, match="acpd rejected a request: unauthorized"):
                client.call("messages/send", {"id": "c", "text": "x" * (4 << 20)})
        thread.join(10)
        listener.close()
