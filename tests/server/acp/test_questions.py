"""The agent's questions through the front door: offered to every attached client, the first
answer wins, the others are withdrawn with `$/cancel_request`; open ones are offered again to a
client that loads or resumes the session mid-turn."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from protocol import acp
from tests.engine.harness import next_event, wait_turn_ended
from tests.fakes.agent import AskPermission, Chunk, Reply, Sleep
from tests.server.acp.harness import Client, Front

OPTIONS = (
    acp.PermissionOption(option_id="yes", name="Yes", kind="allow_once"),
    acp.PermissionOption(option_id="no", name="No", kind="reject_once"),
)


def asked(c: Client) -> bool:
    return any(a["method"] == "session/request_permission" for a in c.asked)


async def two_attached(f: Front, tmp_path: Path) -> tuple[Client, Client, str]:
    first, second = await f.client(), await f.client()
    await first.initialize()
    await second.initialize()
    sid = await first.new(tmp_path)
    await second.call("session/resume", {"sessionId": sid, "cwd": str(tmp_path)})
    return first, second, sid


async def test_the_first_answer_wins_and_the_other_client_is_withdrawn(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    first, second, sid = await two_attached(f, tmp_path)
    first.answer, second.answer = "wait", "no"
    f.h.script(AskPermission(options=OPTIONS, then_text="done", tool_call_id="edit-1"), Reply())
    assert await first.prompt(sid, "please") == {"stopReason": "end_turn"}
    assert f.h.agent.permission_answers == [
        acp.RequestPermissionResponse(outcome=acp.SelectedOutcome(option_id="no"))
    ]
    await first.wait_for(lambda c: c.withdrawn)
    assert first.withdrawn == ["session/request_permission"]
    assert second.withdrawn == []
    request = first.asked[0]
    assert request["sessionId"] == sid
    assert request["toolCall"] == {"toolCallId": "edit-1", "title": "May I?"}
    assert [o["optionId"] for o in request["options"]] == ["yes", "no"]
    events = await f.h.events(sid)
    resolved = [e for e in events if e["type"] == "permission_resolved"]
    assert [(r["outcome"], r["option"], r["by"]) for r in resolved] == [("selected", "no", "user")]


async def test_an_answer_from_the_terminal_withdraws_every_client(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    first, second, sid = await two_attached(f, tmp_path)
    first.answer = second.answer = "wait"
    f.h.script(AskPermission(options=OPTIONS), Reply())
    sub = await f.h.e.subscribe(sid, after_seq=0, deltas=False)
    await f.e.send(sid, "go", run=True, interrupt=False)
    request = (await next_event(sub, "permission_requested"))["request"]
    sub.close()
    await first.wait_for(asked)
    await second.wait_for(asked)
    await f.e.permit(sid, request=request, option="yes", cancelled=False)
    await first.wait_for(lambda c: c.withdrawn)
    await second.wait_for(lambda c: c.withdrawn)
    await wait_turn_ended(f.h, sid)
    assert f.h.agent.permission_answers == [
        acp.RequestPermissionResponse(outcome=acp.SelectedOutcome(option_id="yes"))
    ]


async def test_a_client_that_answers_cancelled_cancels_the_question(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    client.answer = None
    f.h.script(AskPermission(options=OPTIONS), Reply())
    assert await client.prompt(sid, "go") == {"stopReason": "end_turn"}
    assert f.h.agent.permission_answers == [
        acp.RequestPermissionResponse(outcome=acp.CancelledOutcome())
    ]


async def test_resume_mid_turn_offers_the_open_question_and_streams_on(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    watcher = await f.client()
    await watcher.initialize()
    sid = await watcher.new(tmp_path)
    watcher.answer = "wait"
    f.h.script(Chunk("before "), AskPermission(options=OPTIONS, then_text="after"), Reply())
    await f.e.send(sid, "go", run=True, interrupt=False)
    await watcher.wait_for(asked)
    late = await f.client()
    await late.initialize()
    late.answer = "yes"
    await late.call("session/resume", {"sessionId": sid, "cwd": str(tmp_path)})
    await wait_turn_ended(f.h, sid)
    await late.wait_for(lambda c: c.text() == "after")
    # No replay for resume: what came before is not shown, only what came after it.
    assert late.kinds() == ["agent_message_chunk"]
    assert asked(late)
    assert watcher.withdrawn == ["session/request_permission"]
    assert f.h.agent.permission_answers == [
        acp.RequestPermissionResponse(outcome=acp.SelectedOutcome(option_id="yes"))
    ]


async def test_load_mid_turn_replays_then_asks_what_is_still_open(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    sid = (await f.e.create(agent=None, agent_cmd=None, cwd=str(tmp_path), title=None)).id
    # An earlier turn's question was answered: it is history, never asked again.
    f.h.script(AskPermission(options=OPTIONS, tool_call_id="old"), Reply())
    sub = await f.h.e.subscribe(sid, after_seq=0, deltas=False)
    await f.e.send(sid, "one", run=True, interrupt=False)
    old = await next_event(sub, "permission_requested")
    await f.e.permit(sid, request=old["request"], option="yes", cancelled=False)
    await wait_turn_ended(f.h, sid)
    f.h.script(Chunk("stream"), Sleep(1), Chunk("ing"), AskPermission(options=OPTIONS), Reply())
    await f.e.send(sid, "two", run=True, interrupt=False)
    await trio.sleep(0.5)  # "stream" is out, as a delta only
    client = await f.client()
    client.answer = "yes"
    await client.initialize()
    await client.call("session/load", {"sessionId": sid, "cwd": str(tmp_path), "mcpServers": []})
    assert client.text() == "stream"  # replayed up to now, the open message included
    await client.wait_for(asked)
    await wait_turn_ended(f.h, sid, 2)
    await client.wait_for(lambda c: c.text() == "streaming")
    assert [a["toolCall"]["toolCallId"] for a in client.asked] == ["perm-1"]
    sub.close()


async def test_questions_of_a_detached_session_are_withdrawn(
    f: Front, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    client = await f.client()
    await client.initialize()
    sid = await client.new(tmp_path)
    client.answer = "wait"
    f.h.script(AskPermission(options=OPTIONS), Reply())
    await f.e.send(sid, "go", run=True, interrupt=False)
    await client.wait_for(asked)
    await client.call("session/close", {"sessionId": sid})
    await client.wait_for(lambda c: c.withdrawn)
    # The question stays open for the others (here: nobody, until it times out).
    assert f.h.agent.permission_answers == []
    await f.e.interrupt(sid)
    await wait_turn_ended(f.h, sid)
