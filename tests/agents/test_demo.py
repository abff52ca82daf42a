"""The demo agent as a real subprocess, driven through open_agent, and in-process for races.

Subprocess tests use real time only (never autojump_clock): each has a real `fail_after` hang
guard. Both directions of their traffic are checked against the schema, message by message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from daemon.agents import _demo_store
from daemon.agents.connection import AgentConnection, AgentExited
from daemon.agents.demo import DemoAgent
from daemon.agents.launch import connect_agent, open_agent
from protocol import acp
from protocol.framing import LineSplitter
from protocol.jsonrpc import RpcFailure
from tests.fakes.client import RecordingClient, demo_spec
from tests.fakes.wiretap import WireTap
from tests.protocol._schema import assert_valid_traffic


@asynccontextmanager
async def _demo(tmp_path: Path, client: RecordingClient) -> AsyncIterator[AgentConnection]:
    spec = demo_spec(tmp_path / "state", tmp_path)
    async with open_agent(spec, client.handlers()) as conn:
        yield conn


def _check_wire(taps: list[WireTap]) -> list[list[str]]:
    """Every message acpd sent and every message the demo agent sent, against the def for its
    method; the labels of acpd's, per connection."""
    assert taps
    labels = []
    for tap in taps:
        labels.append(assert_valid_traffic(bytes(tap.sent), bytes(tap.received)))
        assert_valid_traffic(bytes(tap.received), bytes(tap.sent), sender="agent")
    return labels


@pytest.mark.subprocess
async def test_full_turn(tmp_path: Path, wire_taps: list[WireTap]) -> None:
    client = RecordingClient()
    with trio.fail_after(20):
        async with _demo(tmp_path, client) as conn:
            info = conn.init.agent_info
            assert isinstance(info, acp.Implementation)
            assert info.name == "acpd-demo"
            assert conn.can_load
            sid = (await conn.new_session(str(tmp_path))).session_id
            assert sid != (await conn.new_session(str(tmp_path))).session_id
            resp = await conn.prompt(sid, "hello world")
            assert resp.stop_reason == "end_turn"
            assert conn.peer.stats.malformed == 0
    tags = client.tags()
    assert tags[:4] == ["AgentThoughtChunk", "Plan", "ToolCall", "ToolCallUpdate"]
    assert tags[4:] == ["AgentMessageChunk"] * len(tags[4:])
    assert len(tags[4:]) >= 3
    assert {sid_ for sid_, _ in client.updates} == {sid}
    (done,) = client.of_type(acp.ToolCallUpdate)
    assert isinstance(done, acp.ToolCallUpdate)
    assert done.status == "completed"
    assert client.text().startswith("You said: hello world (2 words).")
    assert "hello world" in client.text(acp.AgentThoughtChunk)
    assert _check_wire(wire_taps) == [
        ["initialize", "session/new", "session/new", "session/prompt"]
    ]


@pytest.mark.subprocess
async def test_permission(tmp_path: Path, wire_taps: list[WireTap]) -> None:
    client = RecordingClient(answer="allow")
    with trio.fail_after(20):
        async with _demo(tmp_path, client) as conn:
            sid = (await conn.new_session(str(tmp_path))).session_id
            assert (await conn.prompt(sid, "ask me for permission")).stop_reason == "end_turn"
            assert "Permission granted (allow)." in client.text()
            client.answer = "reject"
            assert (await conn.prompt(sid, "Permission again?")).stop_reason == "end_turn"
            assert "Permission denied (reject)." in client.text()
            # Only the word counts: "permissions" asks nothing.
            await conn.prompt(sid, "permissions")
    assert len(client.asked) == 2
    options = [(o.option_id, o.kind) for o in client.asked[0].options]
    assert options == [("allow", "allow_once"), ("reject", "reject_once")]
    assert client.asked[0].session_id == sid
    (labels,) = _check_wire(wire_taps)
    assert labels.count("session/request_permission result") == 2


@pytest.mark.subprocess
async def test_cancel_mid_stream_and_during_permission(
    tmp_path: Path, wire_taps: list[WireTap]
) -> None:
    client = RecordingClient(gate=trio.Event())
    with trio.fail_after(20):
        async with _demo(tmp_path, client) as conn, trio.open_nursery() as nursery:
            sid = (await conn.new_session(str(tmp_path))).session_id
            replies: list[acp.PromptResponse] = []

            async def prompt(text: str) -> None:
                replies.append(await conn.prompt(sid, text))

            nursery.start_soon(prompt, "/slow 500")
            await client.wait_updates(3)
            await conn.cancel(sid)
            while not replies:
                await trio.sleep(0.01)
            assert replies[0].stop_reason == "cancelled"
            assert 3 <= len(client.updates) < 500
            # A cancel while the agent waits on a permission request: it stops waiting.
            nursery.start_soon(prompt, "permission please")
            await client.asked_event.wait()
            await conn.cancel(sid)
            while len(replies) < 2:
                await trio.sleep(0.01)
            assert replies[1].stop_reason == "cancelled"
            assert client.gate is not None
            client.gate.set()  # our late answer is dropped by the agent, harmlessly
            # The session goes on.
            assert (await conn.prompt(sid, "/echo still here")).stop_reason == "end_turn"
            assert client.text().endswith("still here")
    (labels,) = _check_wire(wire_taps)
    assert labels.count("session/cancel") == 2
    assert labels.count("session/request_permission result") == 1  # the late answer


@pytest.mark.subprocess
async def test_load_after_restart(tmp_path: Path, wire_taps: list[WireTap]) -> None:
    client = RecordingClient()
    with trio.fail_after(20):
        async with _demo(tmp_path, client) as conn:
            sid = (await conn.new_session(str(tmp_path))).session_id
            await conn.prompt(sid, "/echo hi there")
            await conn.prompt(sid, "/slow 3")
        client = RecordingClient()
        async with _demo(tmp_path, client) as conn:
            with pytest.raises(RpcFailure) as info:
                await conn.prompt(sid, "not loaded yet")
            assert info.value.code == -32002
            await conn.load_session(sid, str(tmp_path))
            # The replay came before the answer.
            assert client.tags() == ["UserMessageChunk", "AgentMessageChunk"] * 2
            assert client.text(acp.UserMessageChunk) == "/echo hi there/slow 3"
            assert client.text() == "hi there1 2 3 "
            assert (await conn.prompt(sid, "/echo more")).stop_reason == "end_turn"
            with pytest.raises(RpcFailure) as info:
                await conn.load_session("demo-unknown", str(tmp_path))
            assert info.value.code == -32002
            with pytest.raises(RpcFailure) as info:
                await conn.load_session("../../etc/passwd", str(tmp_path))
            assert info.value.code == -32002
    assert [labels.count("session/load") for labels in _check_wire(wire_taps)] == [0, 3]


@pytest.mark.subprocess
async def test_hooks_and_unknown_methods(tmp_path: Path) -> None:
    client = RecordingClient()
    with trio.fail_after(20):
        async with _demo(tmp_path, client) as conn:
            sid = (await conn.new_session(str(tmp_path))).session_id
            with pytest.raises(RpcFailure) as info:
                await conn.peer.request("_acpd/unknown", acp.EmptyResult(), acp.EmptyResult)
            assert info.value.code == -32601
            await conn.peer.notify("_acpd/whatever", acp.EmptyResult())  # ignored
            assert (await conn.prompt(sid, "/flood 3000")).stop_reason == "end_turn"
            assert len(client.updates) == 3000
            assert client.batches < 3000  # many lines per read
            assert client.text().startswith("1 2 3 ")
            # /hang: no answer, even to a cancel, until the agent is stopped.
            async with trio.open_nursery() as nursery:
                outcome: list[BaseException | acp.PromptResponse] = []

                async def hang() -> None:
                    try:
                        outcome.append(await conn.prompt(sid, "/hang"))
                    except AgentExited as exc:
                        outcome.append(exc)

                nursery.start_soon(hang)
                await trio.sleep(0.1)
                await conn.cancel(sid)
                await trio.sleep(0.3)
                assert outcome == []
                await conn.stop()
            assert isinstance(outcome[0], AgentExited)


async def test_cancel_while_the_prompt_is_being_saved(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session/cancel that arrives before the turn's first update (here: while the prompt
    is written to the history) is not lost: the turn ends at once, `cancelled`.

    In-process, but real time: the saves run in threads, which autojump_clock would race.
    """
    saving, release = trio.Event(), trio.Event()
    real_save = DemoAgent._save

    async def gated_save(self: DemoAgent, file: _demo_store.SessionFile) -> None:
        if file.history and not release.is_set():
            saving.set()
            await release.wait()
        await real_save(self, file)

    monkeypatch.setattr(DemoAgent, "_save", gated_save)
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(DemoAgent(theirs, state_dir=tmp_path, delay=0.05).run)
    client = RecordingClient()
    replies: list[acp.PromptResponse] = []
    with trio.fail_after(20):
        async with (
            connect_agent(ours, client.handlers()) as conn,
            trio.open_nursery() as inner,
        ):
            sid = (await conn.new_session(str(tmp_path))).session_id

            async def prompt(text: str) -> None:
                replies.append(await conn.prompt(sid, text))

            inner.start_soon(prompt, "/slow 20")
            await saving.wait()
            await conn.cancel(sid)
            await trio.testing.wait_all_tasks_blocked()  # the agent has read the cancel
            release.set()
            while not replies:
                await trio.sleep(0.01)
            assert replies[0].stop_reason == "cancelled"
            assert client.updates == []  # not one chunk of the cancelled turn
            # The cancel was for that turn only: the next one runs to the end.
            assert (await conn.prompt(sid, "/slow 2")).stop_reason == "end_turn"
            assert client.text() == "1 2 "
    saved = _demo_store.load(tmp_path, sid)
    assert [(e.role, e.text) for e in saved.history] == [
        ("user", "/slow 20"),
        ("user", "/slow 2"),
        ("agent", "1 2 "),
    ]


def test_state_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:

    env = {"HOME": str(tmp_path)}
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _demo_store.default_dir(env) == tmp_path / ".local/state/acpd-demo"
    env["XDG_STATE_HOME"] = "/state"
    assert _demo_store.default_dir(env) == Path("/state/acpd-demo")
    env["ACPD_DEMO_DIR"] = "/demo"
    assert _demo_store.default_dir(env) == Path("/demo")
    file = _demo_store.SessionFile(session_id="demo-1", cwd="/", history=[])
    _demo_store.save(tmp_path / "s", file)
    assert _demo_store.load(tmp_path / "s", "demo-1") == file
    assert msgspec.json.decode((tmp_path / "s" / "demo-1.json").read_bytes())["cwd"] == "/"


async def test_cancel_read_in_the_same_batch_as_its_prompt(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The peer hands the cancel (a notification, handled in line) over before the prompt's
    task starts: the agent must still apply it to that prompt."""
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(DemoAgent(theirs, state_dir=tmp_path, delay=0.05).run)
    splitter = LineSplitter()
    lines: list[bytes] = []

    async def reply(id_: int) -> dict[str, object]:
        while True:
            for line in lines:
                msg = json.loads(line)
                if msg.get("id") == id_:
                    return dict(msg)
            lines.extend(splitter.feed(await ours.receive_some(65536)))

    def line(msg: dict[str, object]) -> bytes:
        return json.dumps({"jsonrpc": "2.0", **msg}).encode() + b"\n"

    with trio.fail_after(20):
        await ours.send_all(line({"id": 1, "method": "session/new",
                                  "params": {"cwd": str(tmp_path), "mcpServers": []}}))  # fmt: skip
        sid = (await reply(1))["result"]["sessionId"]  # type: ignore[index]
        prompt = {"sessionId": sid, "prompt": [{"type": "text", "text": "/slow 20"}]}
        await ours.send_all(  # one write, so one read: the prompt, then its cancel
            line({"id": 2, "method": "session/prompt", "params": prompt})
            + line({"method": "session/cancel", "params": {"sessionId": sid}})
        )
        assert (await reply(2))["result"] == {"stopReason": "cancelled"}


@pytest.mark.subprocess
async def test_steering(tmp_path: Path) -> None:
    client = RecordingClient()
    with trio.fail_after(20):
        async with _demo(tmp_path, client) as conn:
            assert conn.can_steer  # advertised: `_meta.steering.supported`
            sid = (await conn.new_session(str(tmp_path))).session_id
            idle = await conn.steer(sid, "nobody listens")
            assert (idle.outcome, idle.reason) == ("promptRequired", "noRunningTurn")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.prompt, sid, "/slow 30")
                await client.wait_updates(2)  # the turn runs
                assert (await conn.steer(sid, "go left")).outcome == "injected"
                assert (await conn.steer(sid, "and up")).outcome == "injected"
            text = client.text()
            # Said in the running turn, in order, between two of its chunks; nothing lost.
            assert "(steered: go left) (steered: and up) " in text
            assert text.replace("(steered: go left) (steered: and up) ", "") == "".join(
                f"{i} " for i in range(1, 31)
            )
            assert "nobody listens" not in text
            # Taken as the turn ends, it is still said before the answer; or it was not taken.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.prompt, sid, "/slow 1")
                await client.wait_updates(len(client.updates) + 1)
                outcome = (await conn.steer(sid, "last")).outcome
            assert outcome in ("injected", "promptRequired")
            assert ("(steered: last)" in client.text()) == (outcome == "injected")
            with pytest.raises(RpcFailure) as info:
                await conn.steer("no-such-session", "x")
            assert info.value.code == -32002
