"""orphans.AgentTracker: an agent's process group is on record from its spawn on."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from daemon.agents import orphans
from daemon.agents._process import group_alive
from daemon.agents.connection import AgentSpec, AgentStartError
from daemon.agents.orphans import AgentTracker, process_start_time
from daemon.agents.peer import PeerHandlers
from daemon.config import Config
from protocol import acp

# An "agent" that never answers initialize: a daemon killed now must still find it.
SILENT = (sys.executable, "-c", "import time; time.sleep(60)")


def _recorded(run: Path) -> list[Path]:
    return sorted(run.glob("agent-*")) if run.exists() else []


@pytest.mark.subprocess
async def test_the_group_is_recorded_before_initialize_answers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    launch = AgentTracker(run).launcher(lambda: Config(stop_grace=0.5))
    spec = AgentSpec(name="silent", argv=SILENT, cwd=str(tmp_path))

    def on_update(_sid: str, _update: acp.SessionUpdate) -> None:
        pass

    async def on_request(_method: str, _raw: msgspec.Raw) -> object:
        return None

    async def start() -> None:
        with pytest.raises(AgentStartError, match="exited during initialize"):
            async with launch(spec, PeerHandlers(on_update=on_update, on_request=on_request)):
                pass

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            while not _recorded(run):  # a real child: poll, bounded above
                await trio.sleep(0.02)
            (entry,) = _recorded(run)
            pid_s, start_time = entry.read_text().split()
            pid = int(pid_s)
            assert entry.name == f"agent-{pid}"
            assert process_start_time(pid) == start_time
            # What the next daemon does after a kill -9 during this start-up.
            assert AgentTracker(run).reap() == 1
            while group_alive(pid):  # SIGKILL is asynchronous
                await trio.sleep(0.02)
    assert _recorded(run) == []


def test_a_stat_line_that_does_not_parse_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    class BadStat:
        def __init__(self, _path: str) -> None:
            pass

        def read_bytes(self) -> bytes:
            fields = ["S", "1", "notanumber"] + ["0"] * 17
            return b"4242 (odd name) " + " ".join(fields).encode()

    def listdir(_path: Any) -> list[str]:
        return ["4242"]

    monkeypatch.setattr(orphans, "process_start_time", lambda _pid: None)  # leader gone
    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(orphans, "Path", BadStat)
    assert orphans._left_running(4242, "100") is False
    assert os.listdir is listdir  # (the patch is what was exercised)
