"""AgentConnection over in-process fakes (connect_agent), with virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from daemon.agents._process import StderrRing
from daemon.agents.connection import AgentConnection, AgentExited, AgentStartError, agent_env
from daemon.agents.launch import connect_agent
from protocol import acp
from protocol.jsonrpc import RpcFailure
from tests.fakes.agent import (
    AskPermission,
    Chunk,
    Exit,
    FakeAgent,
    Hang,
    IgnoreCancel,
    Reply,
    ReplyError,
    Sleep,
    Thought,
    Tool,
    WaitForCancel,
)
from tests.fakes.client import RecordingClient
from tests.fakes.wiretap import WireTap
from tests.protocol._schema import assert_valid_traffic


@asynccontextmanager
async def _connected(
    nursery: trio.Nursery, client: RecordingClient, **fake: Any
) -> AsyncIterator[tuple[AgentConnection, FakeAgent]]:
    ours, theirs = trio.testing.memory_stream_pair()
    agent = FakeAgent(theirs, **fake)
    agent.start(nursery)
    # A hang guard for the whole test, in virtual seconds (a cancel scope cannot bound only
    # the start-up: the connection's nursery opens inside it).
    with trio.fail_after(100):
        async with connect_agent(ours, client.handlers()) as conn:
            yield conn, agent


async def test_initialize_and_capabilities(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    caps = {"load_session": False, "resume": True, "close": True}
    async with _connected(nursery, RecordingClient(), **caps) as (conn, agent):
        assert (conn.can_load, conn.can_resume, conn.can_close) == (False, True, True)
        assert conn.process is None
        assert conn.returncode is None
        (method, params), *_ = agent.received
        assert method == "initialize"
        assert isinstance(params, acp.InitializeRequest)
        assert params.protocol_version == 1
        assert params.client_capabilities.terminal is False
        assert params.client_capabilities.fs == acp.FileSystemCapability()
        assert isinstance(params.client_info, acp.Implementation)
        assert params.client_info.name == "acpd"
    async with _connected(nursery, RecordingClient()) as (conn, _):
        assert (conn.can_load, conn.can_resume, conn.can_close) == (True, False, False)


async def test_initialize_errors_are_start_errors(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    with pytest.raises(AgentStartError, match="speaks ACP protocol version 2; acpd speaks 1"):
        async with _connected(nursery, RecordingClient(), protocol_version=2):
            pytest.fail("must not get here")
    with pytest.raises(AgentStartError, match="failed to initialize: go away"):
        async with _connected(nursery, RecordingClient(), init_error=RpcFailure(-32603, "go away")):
            pytest.fail("must not get here")


async def test_sessions(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    client = RecordingClient()
    replay = [("user", "hi"), ("agent", "hello")]
    async with _connected(nursery, client, resume=True, load_replay=replay) as (conn, agent):
        resp = await conn.new_session("/work")
        assert resp.session_id == "sess-1"
        assert agent.params("session/new") == [acp.NewSessionRequest(cwd="/work", mcp_servers=[])]
        await conn.load_session("old", "/work")
        # The replay arrived before load returned.
        assert client.tags() == ["UserMessageChunk", "AgentMessageChunk"]
        assert {sid for sid, _ in client.updates} == {"old"}
        await conn.resume_session("old", "/work")
        (resume,) = agent.params("session/resume")
        assert isinstance(resume, acp.ResumeSessionRequest)
        assert resume.session_id == "old"
        agent.load_error = RpcFailure(-32002, "no such session")
        with pytest.raises(RpcFailure, match="no such session"):
            await conn.load_session("gone", "/work")


async def test_full_turn(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    client = RecordingClient()
    async with _connected(nursery, client) as (conn, agent):
        sid = (await conn.new_session("/w")).session_id
        agent.script(
            Thought("hmm"),
            Tool("t1", "Read", "in_progress"),
            Sleep(2),
            Tool("t1", "Read", "completed"),
            Chunk("hel"),
            Chunk("lo"),
            Reply("end_turn"),
        )
        start = trio.current_time()
        resp = await conn.prompt(sid, "say hello")
        assert resp.stop_reason == "end_turn"
        assert trio.current_time() - start == 2
        assert client.tags() == [
            "AgentThoughtChunk",
            "ToolCall",
            "ToolCallUpdate",
            "AgentMessageChunk",
            "AgentMessageChunk",
        ]
        assert agent.prompts == ["say hello"]
        # No script queued: the prompt is echoed.
        client.updates.clear()
        assert (await conn.prompt(sid, "again")).stop_reason == "end_turn"
        assert [client.text()] == ["again"]
        assert client.batches > 0


async def test_permission_round_trip(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = RecordingClient(answer="allow")
    async with _connected(nursery, client) as (conn, agent):
        sid = (await conn.new_session("/w")).session_id
        agent.script(AskPermission(then_text="done"), Reply())
        assert (await conn.prompt(sid, "do it")).stop_reason == "end_turn"
        (answer,) = agent.permission_answers
        assert answer == acp.RequestPermissionResponse(
            outcome=acp.SelectedOutcome(option_id="allow")
        )
        assert [o.option_id for o in client.asked[0].options] == ["allow", "reject"]


async def test_cancel_during_wait(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client = RecordingClient()
    async with _connected(nursery, client) as (conn, agent):
        sid = (await conn.new_session("/w")).session_id
        agent.script(Chunk("a"), WaitForCancel(), Chunk("late"))
        async with trio.open_nursery() as inner:
            result: list[acp.PromptResponse] = []

            async def prompt() -> None:
                result.append(await conn.prompt(sid, "x"))

            inner.start_soon(prompt)
            await trio.testing.wait_all_tasks_blocked()
            assert agent.turn_running
            await conn.cancel(sid)
        assert result[0].stop_reason == "cancelled"
        assert agent.cancels == 1
        assert agent.methods[-1] == "session/cancel"
        # Updates sent after the cancel but before the reply still arrive (ACP.md §9).
        assert client.tags() == ["AgentMessageChunk", "AgentMessageChunk"]
        # A plain script is cut short by a cancel.
        agent.script(Chunk("a"), Sleep(100), Chunk("never"))
        with trio.move_on_after(1):
            await conn.prompt(sid, "y")  # abandon the wait; the reply is still coming
        await conn.cancel(sid)
        await trio.testing.wait_all_tasks_blocked()
        assert not agent.turn_running


async def test_ignored_cancel_and_errors(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    async with _connected(nursery, RecordingClient()) as (conn, agent):
        sid = (await conn.new_session("/w")).session_id
        agent.script(IgnoreCancel(), Sleep(5), Reply("end_turn"))
        async with trio.open_nursery() as inner:
            inner.start_soon(conn.prompt, sid, "x")
            await trio.testing.wait_all_tasks_blocked()
            await conn.cancel(sid)
        assert trio.current_time() >= 5
        agent.script(ReplyError(-32603, "The operation was aborted"))
        with pytest.raises(RpcFailure, match="aborted"):
            await conn.prompt(sid, "x")
        agent.script(Hang())
        with trio.move_on_after(30) as scope:
            await conn.prompt(sid, "x")
        assert scope.cancelled_caught


async def test_exit_mid_turn(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    async with _connected(nursery, RecordingClient()) as (conn, agent):
        sid = (await conn.new_session("/w")).session_id
        agent.script(Chunk("a"), Exit())
        with pytest.raises(AgentExited):
            await conn.prompt(sid, "x")
        with trio.fail_after(1):
            await conn.wait_exited()
        assert conn.stderr_tail() == ""
        with pytest.raises(AgentExited):
            await conn.new_session("/w")


async def test_body_errors_are_not_wrapped(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    with pytest.raises(KeyError):
        async with _connected(nursery, RecordingClient()):
            raise KeyError("mine")
    conns: list[AgentConnection] = []

    async def crash_in_body() -> None:
        async with _connected(nursery, RecordingClient()) as (conn, agent):
            conns.append(conn)
            agent.script(Exit())
            await conn.new_session("/w")
            await conn.prompt("sess-1", "x")

    with pytest.raises(AgentExited):
        await crash_in_body()
    await conns[0].stop()  # idempotent after the block stopped it


async def test_leaving_closes_the_stream(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    async with _connected(nursery, RecordingClient()) as (conn, agent):
        pass
    with trio.fail_after(1):
        await agent.peer.wait_finished()  # the fake saw EOF
        await conn.wait_exited()


def test_agent_env_is_an_allow_list() -> None:
    base = {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_ALL": "C",
        "XDG_STATE_HOME": "/s",
        "NODE_OPTIONS": "--x",
        "npm_config_cache": "/c",
        "SECRET_TOKEN": "no",
        "PYTHONPATH": "no",
        "NOTIFY_SOCKET": "/run/n",
        "LISTEN_FDS": "3",
        "LISTEN_PID": "1",
        "LISTEN_FDNAMES": "x",
        "WATCHDOG_USEC": "1",
    }
    env = agent_env({"OPENAI_API_KEY": "k", "NOTIFY_SOCKET": "/evil"}, base)
    assert env == {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_ALL": "C",
        "XDG_STATE_HOME": "/s",
        "NODE_OPTIONS": "--x",
        "npm_config_cache": "/c",
        "OPENAI_API_KEY": "k",
    }


def test_stderr_ring_keeps_the_last_lines() -> None:
    ring = StderrRing(limit=100)
    for i in range(50):
        ring.add(f"line {i:03d} of the agent's stderr\n".encode())
    text = ring.text()
    assert len(text) <= 100
    assert text.startswith("line ")  # cut at a line boundary
    assert text.endswith("line 049 of the agent's stderr")
    ring = StderrRing(limit=100)
    ring.add("é".encode() * 30)  # a short, unterminated tail is kept whole
    assert ring.text() == "é" * 30


async def test_everything_we_send_is_schema_valid(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, wire_taps: list[WireTap]
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    agent = FakeAgent(theirs, resume=True)
    agent.start(nursery)
    client = RecordingClient()
    with trio.fail_after(100):
        async with connect_agent(ours, client.handlers()) as conn:
            sid = (await conn.new_session("/w")).session_id
            await conn.load_session(sid, "/w")
            await conn.resume_session(sid, "/w")
            agent.script(AskPermission(), WaitForCancel())
            async with trio.open_nursery() as inner:
                inner.start_soon(conn.prompt, sid, "hi")
                await client.asked_event.wait()
                await trio.testing.wait_all_tasks_blocked()
                client.answer = None
                await conn.cancel(sid)
            agent.script(AskPermission(), Reply())
            await conn.prompt(sid, "again")  # answered "cancelled"
            # A request for a capability acpd did not advertise: answered with an error.
            read = acp.ReadTextFileRequest(session_id=sid, path="/w/a.py")
            with pytest.raises(RpcFailure):
                await agent.peer.request(acp.FS_READ, read, acp.ReadTextFileResponse)
    (tap,) = wire_taps
    # Each message against the def for its method (a response: for the request it answers).
    assert assert_valid_traffic(bytes(tap.sent), bytes(tap.received)) == [
        "initialize",
        "session/new",
        "session/load",
        "session/resume",
        "session/prompt",
        "session/request_permission result",
        "session/cancel",
        "session/prompt",
        "session/request_permission result",
        "fs/read_text_file error",
    ]
