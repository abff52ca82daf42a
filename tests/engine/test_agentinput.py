"""AgentInput's routing of a run of updates (a batch's): to the turn in one call when they are
all its session's, else one by one, exactly as `on_update` would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from daemon.engine.agentinput import AgentInput
from protocol import acp


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def updates(self, updates: Sequence[acp.SessionUpdate], seq: int) -> None:
        self.calls.append(("run", ([_text(u) for u in updates], seq)))

    def update(self, update: acp.SessionUpdate, seq: int) -> None:
        self.calls.append(("one", (_text(update), seq)))

    def session_update(self, update: acp.SessionUpdate) -> bool:
        self.calls.append(("state", type(update).__name__))
        return isinstance(update, acp.UsageUpdate)


class _Turn:
    prompt_seq = 7

    def __init__(self, session: str | None) -> None:
        self.session = session
        self.counted = 0

    def taking(self) -> str | None:
        return self.session

    def took(self, count: int) -> None:
        self.counted += count

    def take(self, session_id: str) -> bool:
        if session_id == self.session:
            self.counted += 1
            return True
        return False


def _text(update: acp.SessionUpdate) -> str:
    return acp.content_text(update.content) if isinstance(update, acp.AgentMessageChunk) else "?"


def _note(
    sid: str, update: acp.AgentMessageChunk | acp.UsageUpdate | str
) -> acp.SessionNotification:
    if isinstance(update, str):
        update = acp.AgentMessageChunk(content=acp.TextContent(text=update))
    return acp.SessionNotification(session_id=sid, update=update)


def _input(turn: _Turn | None) -> tuple[AgentInput, _Recorder]:
    recorder = _Recorder()
    return AgentInput(recorder, None, None, lambda: turn), recorder  # type: ignore[arg-type,return-value]


def test_a_run_of_the_turns_session_goes_to_the_recorder_in_one_call() -> None:
    turn = _Turn("s")
    agent_input, recorder = _input(turn)
    agent_input.on_updates([_note("s", "a"), _note("s", "b")])
    assert recorder.calls == [("run", (["a", "b"], 7))]
    assert turn.counted == 2


def test_a_mixed_run_goes_one_by_one_and_others_are_state_or_dropped() -> None:
    turn = _Turn("s")
    agent_input, recorder = _input(turn)
    usage = acp.UsageUpdate(used=1, size=2)
    agent_input.on_updates([_note("s", "a"), _note("old", "b"), _note("old", usage)])
    assert recorder.calls == [
        ("one", ("a", 7)),
        ("state", "AgentMessageChunk"),
        ("state", "UsageUpdate"),
    ]
    assert (turn.counted, agent_input.dropped_updates) == (1, 1)


def test_with_no_turn_taking_updates_each_is_state_or_dropped() -> None:
    for turn in (None, _Turn(None)):
        agent_input, recorder = _input(turn)
        agent_input.on_updates([_note("s", "a"), _note("s", acp.UsageUpdate(used=1, size=2))])
        assert recorder.calls == [("state", "AgentMessageChunk"), ("state", "UsageUpdate")]
        assert agent_input.dropped_updates == 1
