"""Checkpoints run beside the writer, never in its way (StoreIO.run_checkpoints).

Real threads and the real store: the clock is the real one, and GUARD only bounds a failure."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import pytest
import trio

from daemon.engine.storeio import StoreIO
from store import ConversationRecord, Store, StoreError
from store.checkpoint import Checkpointer, CheckpointResult

GUARD = 10.0  # seconds: a write held up by a checkpoint fails here instead of hanging


class _HeldCheckpointer:
    """Each checkpoint waits in its worker thread until `release` is set, then runs `inner`'s
    (or fails, with none), then sets `done`."""

    def __init__(self, inner: Checkpointer | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.calls = 0
        self._inner = inner

    def checkpoint(self) -> CheckpointResult:
        self.calls += 1
        self.started.set()
        self.release.wait(GUARD)
        try:
            if self._inner is None:
                raise StoreError("store x: checkpoint failed: disk I/O error")
            return self._inner.checkpoint()
        finally:
            self.done.set()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()


def _io(path: Path, checkpointer: object) -> tuple[StoreIO, ConversationRecord]:
    writer = Store.open(path)
    conv = writer.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    io = StoreIO(writer, writer.reader(), writer.reader(), checkpointer)  # type: ignore[arg-type]
    return io, conv


async def test_writes_and_acks_go_through_while_a_checkpoint_runs(tmp_path: Path) -> None:
    held = _HeldCheckpointer(inner=None)
    io, conv = _io(tmp_path / "acpd.sqlite3", held)
    item = [("agent_message", b'{"text":"t"}')]
    try:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(io.run_checkpoints)
                await io.write_bulk(lambda s: s.append_events(conv.id, item))
                await trio.to_thread.run_sync(held.started.wait)  # one is running now
                # The writer is free: output, a state write and a send's ack all commit.
                await io.write_bulk(lambda s: s.append_events(conv.id, item))
                await io.write(lambda s: s.set_status(conv.id, "idle"))
                rec, queued = await io.append_user(conv.id, lambda s: b'{"text":"hi"}')
                assert (rec.type, queued) == ("user_message", 1)
                assert held.calls == 1
                assert not held.done.is_set()
                held.release.set()
                await trio.to_thread.run_sync(held.done.wait)
                nursery.cancel_scope.cancel()
    finally:
        held.release.set()
        io.close()


async def test_the_wal_is_checkpointed_after_writes_and_a_failure_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "acpd.sqlite3"
    writer = Store.open(path)
    conv = writer.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    real = writer.checkpointer()
    watched = _HeldCheckpointer(inner=real)
    watched.release.set()
    io = StoreIO(writer, writer.reader(), writer.reader(), watched)  # type: ignore[arg-type]
    item = [("agent_message", b'{"text":"' + b"x" * 100_000 + b'"}')]
    try:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(io.run_checkpoints, interval=0.01))
                await io.write_bulk(lambda s: s.append_events(conv.id, item))
                await trio.to_thread.run_sync(watched.done.wait)
                nursery.cancel_scope.cancel()
        # Everything written so far is in the main file: the WAL starts over at the next write.
        assert (await trio.to_thread.run_sync(real.checkpoint)).caught_up
    finally:
        io.close()
    assert not path.with_name(path.name + "-wal").exists()  # the writer closed last

    failing = _HeldCheckpointer(inner=None)
    failing.release.set()
    io, conv = _io(tmp_path / "other.sqlite3", failing)
    try:
        with trio.fail_after(GUARD), caplog.at_level(logging.WARNING):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(io.run_checkpoints, interval=0.01))
                for _ in range(3):  # three failed checkpoints, each after a write
                    await io.write_bulk(lambda s: s.append_events(conv.id, item))
                    await trio.to_thread.run_sync(failing.done.wait)
                    failing.done.clear()
                nursery.cancel_scope.cancel()
        assert (failing.calls, io.statistics().checkpoints) == (3, 0)
    finally:
        io.close()
    warnings = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(warnings) == 1
    assert "backstop" in warnings[0].getMessage()
