"""Storage faults: the file deleted or replaced under an open store, a full disk, a failing one.

What must hold: a write that returns is on the file the next open of the path reads; any
other ends in `StorageUnavailable` saying why (and nothing of it is on that file); the store
stays usable and takes writes again once the fault is gone. Full and failing disks are real
where the machine allows (a small tmpfs, an ext4 loop device shut down; skipped otherwise),
and SQLite's own `max_page_count` gives a deterministic SQLITE_FULL everywhere.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from store import ConversationRecord, StorageUnavailable, Store
from store.errors import DELETED, DISK_FULL, IO_ERROR, READ_ONLY
from tests.fakes.disks import fill, shut_down, shutdown_ext4, small_tmpfs
from tests.store._util import body

GONE = "storage unavailable: the database file was deleted or replaced"


def _other_store(path: Path) -> None:
    """A store of its own at `path` (one conversation), closed: what a backup put back is."""
    with Store.open(path) as other:
        other.create_conversation(title="other", agent="demo", agent_cmd=["x"], cwd="/")


def _unlink(path: Path) -> None:
    path.unlink()


def _unlink_all(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink()


def _move_aside(path: Path) -> None:
    path.rename(path.with_name("aside.sqlite3"))


def _replace(path: Path) -> None:
    _other_store(path.with_name("backup.sqlite3"))
    path.with_name("backup.sqlite3").rename(path)


def _unlink_wal(path: Path) -> None:
    Path(f"{path}-wal").unlink()


FAULTS: dict[str, Callable[[Path], None]] = {
    "deleted": _unlink,
    "deleted with its WAL": _unlink_all,
    "moved aside": _move_aside,
    "replaced": _replace,
    "WAL deleted": _unlink_wal,
}


def _writes(store: Store, conv: ConversationRecord) -> dict[str, Callable[[], object]]:
    c = conv.id
    return {
        "append_user_message": lambda: store.append_user_message(c, body("late")),
        "append_user_messages": lambda: store.append_user_messages(
            [(c, lambda: body("late"), False), (c, lambda: body("later"), False)]
        ),
        "append_events": lambda: store.append_events(c, [("agent_message", b"{}")]),
        "create_conversation": lambda: store.create_conversation(
            title="n", agent="demo", agent_cmd=["x"], cwd="/"
        ),
        "start_turn": lambda: store.start_turn(c, 1, b"{}"),
        "set_status": lambda: store.set_status(c, "paused", durable=True),
        "set_title": lambda: store.set_title(c, "new"),
        "append_draft": lambda: store.append_draft(c, 1, "message", "x"),
        "set_permission_policy": lambda: store.set_permission_policy(c, "deny"),
        "remove_pending": lambda: store.remove_pending(c, 1),
        "end_turn": lambda: store.end_turn(c, [("turn_ended", b"{}")], "idle"),
        "delete_conversation": lambda: store.delete_conversation(c),
        "check_writable": store.check_writable,
    }


@pytest.mark.parametrize("fault", FAULTS)
def test_a_file_gone_from_its_path_takes_no_write(db_path: Path, fault: str) -> None:
    store = Store.open(db_path)
    conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    store.append_user_message(conv.id, body("acknowledged"))
    FAULTS[fault](db_path)
    for name, write in _writes(store, conv).items():
        with pytest.raises(StorageUnavailable) as caught:
            write()
        assert str(caught.value) == GONE, name
        assert caught.value.cause == DELETED
    store.close()
    # What the next start reads: the file at the path, which took none of those writes.
    with Store.open(db_path) as after:
        convs = after.list_conversations()[0]
        assert [c.title for c in convs] == {
            "replaced": ["other"],
            "WAL deleted": ["t"],  # checkpointed into the file at detection
        }.get(fault, [])
        if fault == "WAL deleted":
            assert [e.type for e in after.read_events(conv.id)] == ["user_message"]
            assert after._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_the_check_comes_after_the_commit(db_path: Path, store: Store) -> None:
    """Deleted while the transaction runs: committed (to the orphan), but not acknowledged."""
    conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")

    def unlink_at_commit(statement: str) -> None:
        if statement == "COMMIT" and db_path.exists():
            db_path.unlink()

    store._conn.set_trace_callback(unlink_at_commit)
    with pytest.raises(StorageUnavailable, match="deleted or replaced"):
        store.append_user_message(conv.id, body("a"))
    store._conn.set_trace_callback(None)
    with pytest.raises(StorageUnavailable, match="deleted or replaced"):
        store.append_events(conv.id, [("x", b"{}")])


def test_a_file_put_back_takes_writes_again(db_path: Path, store: Store) -> None:
    conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    aside = db_path.with_name("aside.sqlite3")
    db_path.rename(aside)
    with pytest.raises(StorageUnavailable):
        store.append_user_message(conv.id, body("refused"))
    aside.rename(db_path)
    assert store.append_user_message(conv.id, body("taken")).seq == 1
    with store.reader() as reader:
        assert [e.body for e in reader.read_events(conv.id)] == [body("taken")]


def test_a_file_moved_aside_keeps_everything_and_our_wal_stays_off_a_replacement(
    db_path: Path,
) -> None:
    """Our WAL is named by the path: left there, the next start would apply its frames to
    whatever file is put there. At detection it is checkpointed into our file (which may live
    on elsewhere) and emptied; SIGKILL after that leaves nothing to apply."""
    store = Store.open(db_path)
    conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    seqs = [store.append_user_message(conv.id, body(f"m{i}")).seq for i in range(20)]
    aside = db_path.with_name("aside.sqlite3")
    db_path.rename(aside)
    _other_store(db_path.with_name("backup.sqlite3"))
    db_path.with_name("backup.sqlite3").rename(db_path)
    with pytest.raises(StorageUnavailable):
        store.append_user_message(conv.id, body("refused"))
    assert Path(f"{db_path}-wal").stat().st_size == 0  # nothing left to apply
    store._conn = sqlite3.connect(":memory:")  # as if killed: the real one is never closed
    with Store.open(db_path) as after:
        assert [c.title for c in after.list_conversations()[0]] == ["other"]
        assert after._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with Store.open(aside) as moved:
        assert [e.seq for e in moved.read_events(conv.id)] == seqs


def test_closing_after_a_replacement_no_write_noticed(db_path: Path) -> None:
    """Idle when it happened: no write found out, so closing looks before it closes."""
    store = Store.open(db_path)
    conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    store.append_events(conv.id, [("agent_message", b"{}")] * 50)  # frames in the WAL
    _replace(db_path)
    store.close()
    with Store.open(db_path) as after:
        assert [c.title for c in after.list_conversations()[0]] == ["other"]
        assert after._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _full(store: Store) -> None:
    """SQLite's own limit on the file's pages, at its size now: a write needing one more page
    fails with SQLITE_FULL, as on a full disk (reused pages and WAL room still take some)."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_database_refuses_and_takes_writes_once_there_is_room(
    store: Store, conv: ConversationRecord
) -> None:
    first = store.append_user_message(conv.id, body("before"))
    _full(store)
    big = body("x" * 200_000)
    with pytest.raises(StorageUnavailable) as caught:
        store.append_user_message(conv.id, big)
    assert (str(caught.value), caught.value.cause) == ("storage unavailable: disk full", DISK_FULL)
    with pytest.raises(StorageUnavailable, match="disk full"):
        store.append_events(conv.id, [("agent_message", big)])
    with pytest.raises(StorageUnavailable, match="disk full"):
        store.create_conversation(title="x" * 200_000, agent="d", agent_cmd=["x"], cwd="/")
    assert not store._conn.in_transaction
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    again = store.append_user_message(conv.id, big)
    assert again.seq == first.seq + 1  # the refused ones took no seq
    with store.reader() as reader:
        assert [e.seq for e in reader.read_events(conv.id)] == [first.seq, again.seq]


def test_a_real_full_disk(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", 2 * 1024 * 1024) as fs:
        path = fs / "acpd.sqlite3"
        store = Store.open(path)
        conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
        acked = [store.append_user_message(conv.id, body("before")).seq]
        filler = fill(fs)
        refused = None
        for i in range(2000):  # room left in the WAL and in free pages takes a few first
            try:
                acked.append(store.append_user_message(conv.id, body(f"{i:04}" * 500)).seq)
            except StorageUnavailable as exc:
                refused = exc
                break
        assert refused is not None, "the disk never filled"
        assert refused.cause == DISK_FULL, refused.detail
        filler.unlink()
        acked.append(store.append_user_message(conv.id, body("after")).seq)
        store.close()
        with Store.open(path) as after:
            stored = [e.seq for e in after.read_events(conv.id, limit=10_000)]
            assert stored == acked
            assert after._conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_real_failing_disk(tmp_path: Path) -> None:
    with shutdown_ext4(tmp_path / "fs") as fs:
        store = Store.open(fs / "acpd.sqlite3")
        conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
        store.append_user_message(conv.id, body("before"))
        shut_down(fs)
        for _ in range(3):  # and not "damaged" afterwards: it is the disk, not the file
            with pytest.raises(StorageUnavailable) as caught:
                store.append_user_message(conv.id, body("after"))
            assert (str(caught.value), caught.value.cause) == (
                "storage unavailable: I/O error",
                IO_ERROR,
            )
        store.close()


def _sqlite_error(code: int) -> sqlite3.Error:
    exc = sqlite3.OperationalError("some failure")
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = f"code {code}"
    return exc


@pytest.mark.parametrize(
    ("code", "fs", "cause"),
    [
        (13, "roomy", DISK_FULL),  # SQLITE_FULL
        (10 | (4 << 8), "roomy", IO_ERROR),  # SQLITE_IOERR_FSYNC...
        (10 | (4 << 8), "full", DISK_FULL),  # ...on a full disk: ENOSPC at fsync
        (10 | (3 << 8), "read-only", READ_ONLY),  # SQLITE_IOERR_WRITE: EROFS
        (14, "roomy", IO_ERROR),  # SQLITE_CANTOPEN (a journal, the WAL)
        (8, "roomy", READ_ONLY),  # SQLITE_READONLY
        (8 | (4 << 8), "roomy", DELETED),  # SQLITE_READONLY_DBMOVED: SQLite noticed first
    ],
)
def test_what_sqlite_says_becomes_a_cause(
    store: Store, monkeypatch: pytest.MonkeyPatch, code: int, fs: str, cause: str
) -> None:
    real = os.statvfs(store.path.parent)
    free = 0 if fs == "full" else 10**6
    flags = os.ST_RDONLY if fs == "read-only" else 0
    fake = os.statvfs_result((real.f_bsize, 4096, 10**6, free, free, 100, 100, 100, flags, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    got = store._error(_sqlite_error(code))
    assert isinstance(got, StorageUnavailable)
    assert got.cause == cause


def test_damage_after_an_io_error_is_the_disk(store: Store) -> None:
    assert "damaged" in str(store._error(_sqlite_error(11)))  # SQLITE_CORRUPT, on its own
    store._error(_sqlite_error(10 | (1 << 8)))  # SQLITE_IOERR_READ
    after = store._error(_sqlite_error(11))
    assert isinstance(after, StorageUnavailable)
    assert after.cause == IO_ERROR


def test_copying_a_store_is_no_fault(db_path: Path, store: Store, tmp_path: Path) -> None:
    """A backup taken beside a running store changes nothing the check looks at."""
    conv = store.create_conversation(title="t", agent="demo", agent_cmd=["x"], cwd="/")
    shutil.copyfile(db_path, tmp_path / "copy.sqlite3")
    with store.reader():
        pass  # a reader opened and closed meanwhile: the WAL stays the same file
    assert store.append_user_message(conv.id, body("a")).seq == 1
