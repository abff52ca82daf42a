"""`acpd serve` as a real process under storage faults: its database deleted or replaced while
it runs, its disk full. Real time, with hang guards.

What must hold: every refused write is -32005 saying why and what was not stored; the daemon
keeps serving (or, under systemd, exits 1 so that the unit restarts it on the file now at the
path); it logs each outage once and never a traceback, also when its log file's disk is full;
once space is back it takes writes again without a restart; and the next start reads every
acknowledged message and nothing of a file it no longer owns.
"""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from store import Store
from tests.fakes.disks import fill, small_tmpfs
from tests.fakes.engine import LineClient
from tests.server.test_serve import Daemon, running_daemon
from tests.server.test_systemd_serve import systemd_daemon

pytestmark = pytest.mark.subprocess

GONE = "storage unavailable: the database file was deleted or replaced"
GUARD = 60


@pytest.fixture(autouse=True)
def _demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACPD_DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.setenv("ACPD_DEMO_DELAY", "0")


async def call(client: LineClient, method: str, **params: Any) -> dict[str, Any]:
    reply: dict[str, Any] = await client.call(method, params)
    return reply


async def result(client: LineClient, method: str, **params: Any) -> Any:
    reply = await call(client, method, **params)
    assert "result" in reply, reply
    return reply["result"]


async def create(client: LineClient, cwd: Path) -> str:
    conv = await result(client, "conversations/create", agent="demo", cwd=str(cwd))
    conv_id: str = conv["conversation"]["id"]
    return conv_id


def stored_texts(data_dir: Path, conv_id: str) -> list[str]:
    import json

    with Store.open_reader(data_dir / "acpd.sqlite3") as s:
        events = s.read_events(conv_id, 0, 10_000)
    return [json.loads(e.body)["text"] for e in events if e.type == "user_message"]


def assert_quiet(daemon: Daemon) -> None:
    err = daemon.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    assert "Logging error" not in err, err


async def test_deleted_database_refuses_writes_says_so_and_the_next_start_is_clean(
    tmp_path: Path,
) -> None:
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon:
            client = await daemon.connect()
            async with client.stream:
                conv = await create(client, tmp_path)
                await result(client, "messages/send", id=conv, text="acknowledged", run=False)
                for suffix in ("", "-wal", "-shm"):
                    (daemon.data_dir / f"acpd.sqlite3{suffix}").unlink()
                for text in ("refused", "refused again"):
                    reply = await call(client, "messages/send", id=conv, text=text, run=False)
                    assert reply["error"] == {
                        "code": -32005,
                        "message": f"{GONE}; the message was not queued",
                    }
                reply = await call(client, "conversations/create", agent="demo", cwd="/")
                assert reply["error"]["message"] == f"{GONE}; the conversation was not created"
                status = await result(client, "daemon/status")
                assert (status["storage"], status["storage_error"]) == ("deleted or replaced", GONE)
                assert status["counters"]["writes_refused"] >= 3
            # Run by hand, not under systemd: it goes on serving (and refusing) until stopped.
            assert daemon.proc.returncode is None
            assert daemon.stderr.count(b"writes are refused until it is fixed") == 1
            daemon.proc.send_signal(signal.SIGTERM)
            await daemon.proc.wait()
            assert_quiet(daemon)
        async with running_daemon(tmp_path) as again:
            client = await again.connect()
            async with client.stream:
                assert (await result(client, "conversations/count")) == {"count": 0}
                status = await result(client, "daemon/status")
                assert status["storage"] == "ok"


async def test_a_backup_put_back_under_a_running_daemon_comes_back_as_it_was(
    tmp_path: Path,
) -> None:
    """The daemon's WAL is named by the path: applied to the backup at the next start, it
    would mix the daemon's newer pages into it. Found out at the first write after the swap,
    it is emptied then, so even a kill -9 right after leaves the backup as it was."""
    backup = tmp_path / "backup.sqlite3"
    with trio.fail_after(GUARD):
        async with running_daemon(tmp_path) as daemon:
            client = await daemon.connect()
            async with client.stream:
                conv = await create(client, tmp_path)
                await result(client, "messages/send", id=conv, text="in the backup", run=False)
                src = sqlite3.connect(f"{(daemon.data_dir / 'acpd.sqlite3').as_uri()}?mode=ro")
                with src, sqlite3.connect(backup) as dst:
                    src.backup(dst)
                src.close()
                for i in range(20):  # in the daemon's WAL, not in the backup
                    await result(client, "messages/send", id=conv, text=f"later {i}", run=False)
                backup.rename(daemon.data_dir / "acpd.sqlite3")
                reply = await call(client, "messages/send", id=conv, text="refused", run=False)
                assert reply["error"]["message"] == f"{GONE}; the message was not queued"
            daemon.proc.send_signal(signal.SIGKILL)
            await daemon.proc.wait()
        assert stored_texts(daemon.data_dir, conv) == ["in the backup"]
        with Store.open(daemon.data_dir / "acpd.sqlite3") as s:
            assert s._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_under_systemd_a_deleted_database_restarts_the_daemon(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with systemd_daemon(tmp_path) as daemon:
            await daemon.notes.wait_for("READY=1")
            client = await daemon.connect()
            await create(client, tmp_path)
            (tmp_path / "data" / "acpd.sqlite3").unlink()
            # The next write finds out (nobody writing, the daemon's look every few seconds
            # would: tests/engine/test_storage.py).
            async with client.stream:
                reply = await call(client, "conversations/create", agent="demo", cwd="/")
                assert reply["error"]["code"] == -32005
            with trio.fail_after(15):
                code = await daemon.proc.wait()
            assert code == 1  # Restart=on-failure starts it again, on a new file
            await daemon.notes.wait_for("STOPPING=1")
            assert b"stopping, for systemd to restart acpd" in daemon.stderr
            assert b"Traceback" not in daemon.stderr


async def test_a_full_disk_refuses_with_its_cause_quietly_and_takes_writes_once_freed(
    tmp_path: Path,
) -> None:
    big = "x" * 200_000
    with trio.fail_after(GUARD), small_tmpfs(tmp_path / "data", 4 * 1024 * 1024):
        async with running_daemon(tmp_path) as daemon:
            client = await daemon.connect()
            async with client.stream:
                conv = await create(client, tmp_path)
                acked = ["before"]
                await result(client, "messages/send", id=conv, text="before", run=False)
                filler = fill(daemon.data_dir)
                refusal = None
                for i in range(100):  # the WAL's room takes a few first
                    reply = await call(client, "messages/send", id=conv, text=f"{i}{big}",
                                        run=False)  # fmt: skip
                    if "error" in reply:
                        refusal = reply["error"]
                        break
                    acked.append(f"{i}{big}")
                assert refusal == {
                    "code": -32005,
                    "message": "storage unavailable: disk full; the message was not queued",
                }
                status = await result(client, "daemon/status")
                assert (status["storage"], status["storage_error"]) == (
                    "disk full",
                    "storage unavailable: disk full",
                )
                # Its log file is on that disk too: what does not fit is dropped and counted
                # (tests/server/test_serve_parts.py), never a traceback (assert_quiet).
                assert status["counters"]["log_records_dropped"] >= 0
                filler.unlink()  # room again: taken at once (or by the probe within 5 s)
                await result(client, "messages/send", id=conv, text="after", run=False)
                acked.append("after")
                assert (await result(client, "daemon/status"))["storage"] == "ok"
            assert daemon.stderr.count(b"storage unavailable: disk full: writes are refused") == 1
            assert b"storage available again" in daemon.stderr
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.proc.wait() == 0
            assert_quiet(daemon)
        assert stored_texts(daemon.data_dir, conv) == acked
