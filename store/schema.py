"""Opening the SQLite file safely, and the schema as an ordered list of forward migrations.

A file we do not understand is refused before anything is written to it: the header is read
with plain file I/O first, then SQLite's own view (which includes the WAL) is checked on a
read-only connection, and only then is a writable connection opened, WAL mode switched on and
are migrations run. A writable connection must never see a file we refuse: closing the last
connection to a WAL database checkpoints the WAL into the main file and deletes it, which
would rewrite a newer acpd's file as surely as a migration would.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .errors import StoreError

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "connect_checkpointer",
    "connect_reader",
    "connect_writer",
]

APPLICATION_ID = 0x61637064  # b"acpd" in the header: tells our files from other SQLite files
BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 32 * 1024 * 1024  # a burst may grow the WAL; it shrinks back to this
# Pages in the WAL before a commit also checkpoints (and fsyncs the main file). SQLite's 1,000
# put a checkpoint in the 99th percentile of a busy turn's durable appends; 4,000 (16 MB of
# WAL) keeps it out.
WAL_AUTOCHECKPOINT = 4000
# No mmap (mmap_size = 0): an I/O error in a mapped page is SIGBUS, killing the daemon, where
# a read(2) gives an error SQLite reports; the startup bench holds its 100k/100 ratio without.

# Step N takes a file from user_version N to N + 1, in one transaction. Never edit a released
# step: append a new one. Statuses and policies are checked in Python, not with CHECK
# constraints, so adding a value never needs SQLite's table-rebuild dance.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (key, value) VALUES ('conversations', 0)",
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            agent TEXT NOT NULL,
            agent_cmd TEXT NOT NULL,
            cwd TEXT NOT NULL,
            acp_session_id TEXT,
            acp_session_cwd TEXT,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_seq INTEGER NOT NULL DEFAULT 0,
            cursor INTEGER NOT NULL DEFAULT 0,
            queued INTEGER NOT NULL DEFAULT 0,
            permission_policy TEXT NOT NULL
        ) WITHOUT ROWID""",
        # The list order, read backwards: keyset pages are O(limit) at any depth.
        "CREATE INDEX conversations_activity ON conversations (updated_at, id)",
        # Recovery reads only these: O(pending) at startup, not O(stored).
        "CREATE INDEX conversations_running ON conversations (id) WHERE status = 'running'",
        "CREATE INDEX conversations_queued ON conversations (id) WHERE queued > 0",
        # count() must not scan: a counter kept by triggers cannot drift from the table.
        """CREATE TRIGGER conversations_counted AFTER INSERT ON conversations BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'conversations'; END""",
        """CREATE TRIGGER conversations_uncounted AFTER DELETE ON conversations BEGIN
            UPDATE meta SET value = value - 1 WHERE key = 'conversations'; END""",
        """CREATE TABLE events (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            ts REAL NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (conversation_id, seq)
        ) WITHOUT ROWID""",
        # The queue: pending messages and the queued recount touch only user messages.
        """CREATE INDEX events_user_messages ON events (conversation_id, seq)
            WHERE type = 'user_message'""",
        """CREATE TABLE drafts (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            prompt_seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (conversation_id, prompt_seq, kind)
        ) WITHOUT ROWID""",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    (
        # Drafts become append-only parts: a save writes the text since the last one, so a
        # long message costs O(its length) to keep, not a rewrite of all of it every second.
        """CREATE TABLE drafts_parts (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            prompt_seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            part INTEGER NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (conversation_id, prompt_seq, kind, part)
        ) WITHOUT ROWID""",
        """INSERT INTO drafts_parts (conversation_id, prompt_seq, kind, part, text)
            SELECT conversation_id, prompt_seq, kind, 0, text FROM drafts""",
        "DROP TABLE drafts",
        "ALTER TABLE drafts_parts RENAME TO drafts",
    ),
    (
        # The queue becomes a table of its own: the user messages not yet prompted. Queueing
        # a message then writes two pages (its event and its queue row), where keeping a
        # count and two partial indexes in step wrote five: the durable append is the
        # acknowledgement's latency. `queued` is counted from it, recovery reads it
        # (O(pending)), and a conversation's last seq is the larger of `last_seq` (a floor
        # other writes keep) and its newest event.
        """CREATE TABLE queue (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            PRIMARY KEY (conversation_id, seq)
        ) WITHOUT ROWID""",
        """INSERT INTO queue (conversation_id, seq)
            SELECT e.conversation_id, e.seq FROM events AS e
            JOIN conversations AS c ON c.id = e.conversation_id
            WHERE e.type = 'user_message' AND e.seq > c.cursor""",
        "DROP INDEX conversations_queued",
        "DROP INDEX events_user_messages",
        "ALTER TABLE conversations DROP COLUMN queued",
    ),
    (
        # The session's current state as the agent last said it (JSON, NULL until it does),
        # folded from its events in the transaction that appends them (_events.STATE_FOLDS).
        "ALTER TABLE conversations ADD COLUMN modes TEXT",
        "ALTER TABLE conversations ADD COLUMN config_options TEXT",
        "ALTER TABLE conversations ADD COLUMN commands TEXT",
        "ALTER TABLE conversations ADD COLUMN usage TEXT",
        # 1: the title was not given by a person (empty, or the first message's), so the
        # agent's title may replace it. Titles stored before this stay as they are.
        "ALTER TABLE conversations ADD COLUMN title_auto INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # The queue gets an order of its own (steering puts a message first, and people move
        # them): `position`, the line's order, starts as the seq; and `body`, a message as
        # edited (NULL: as its event says). No index on position: a queue is read whole.
        # Messages leave it in any order, so `cursor` becomes the message the latest turn
        # prompted, and `taken` the newest seq that left it (prompted or steered): what
        # `cursor` was so far, as all left in seq order.
        """CREATE TABLE queue_in_line (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            position INTEGER NOT NULL,
            body BLOB,
            PRIMARY KEY (conversation_id, seq)
        ) WITHOUT ROWID""",
        """INSERT INTO queue_in_line (conversation_id, seq, position)
            SELECT conversation_id, seq, seq FROM queue""",
        "DROP TABLE queue",
        "ALTER TABLE queue_in_line RENAME TO queue",
        "ALTER TABLE conversations ADD COLUMN taken INTEGER NOT NULL DEFAULT 0",
        "UPDATE conversations SET taken = cursor",
    ),
    (
        # MCP servers given for this conversation alone (an ACP client's `session/new`), as
        # ACP's JSON list, NULL for none: passed on with the agent's own from config.
        "ALTER TABLE conversations ADD COLUMN mcp_servers TEXT",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

_MAGIC = b"SQLite format 3\x00"


def _header_check(path: Path) -> None:
    """Refuse a foreign or newer file from its 100-byte header, without SQLite touching it."""
    try:
        with path.open("rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror}") from None
    if not header:
        return  # an empty file is a new store
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise StoreError(f"{path} is not an SQLite database; refusing to touch it")
    _check_ids(path, int.from_bytes(header[60:64], "big"), int.from_bytes(header[68:72], "big"))


def _check_ids(path: Path, version: int, app_id: int) -> None:
    if version == 0 and app_id == 0:
        return
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database of another program; refusing to touch it")
    if version > SCHEMA_VERSION:
        raise StoreError(_newer_message(path, version))


def _newer_message(path: Path, version: int) -> str:
    return (
        f"{path} was written by a newer acpd (schema {version}, this acpd knows up to "
        f"{SCHEMA_VERSION}); refusing to open it"
    )


def _connect(target: str, path: Path, *, uri: bool = False) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: the
        # daemon calls from worker threads, one at a time per connection.
        return sqlite3.connect(
            target,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            uri=uri,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from None


def _uri(path: Path, query: str) -> str:
    return f"{path.absolute().as_uri()}?{query}"


def _wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _probe(conn: sqlite3.Connection, path: Path) -> int:
    """SQLite's own view (the WAL included); reading the schema finds a damaged first page."""
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id: int = conn.execute("PRAGMA application_id").fetchone()[0]
        objects: int = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error as exc:
        msg = f"{path} is damaged or not a database ({exc}); refusing to touch it"
        raise StoreError(msg) from None
    _check_ids(path, version, app_id)
    if version == 0 and objects:
        raise StoreError(f"{path} is an SQLite database of another program; refusing to touch it")
    return version


def _probe_readonly(path: Path) -> int:
    """`_probe` on a connection that cannot write: the version the file is at, or StoreError.

    With a WAL beside the file, mode=ro reads it (a newer schema may be only there). Without
    one, immutable=1: mode=ro would create an empty -wal and -shm and, unable to delete them,
    leave them behind; with no WAL the main file is the whole database, so immutable is exact.
    """
    query = "mode=ro" if _wal_of(path).exists() else "immutable=1"
    conn = _connect(_uri(path, query), path, uri=True)
    try:
        return _probe(conn, path)
    finally:
        conn.close()


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA mmap_size = 0")  # see the note at the top; 0 whatever the build's default
    # NORMAL in WAL: a commit is atomic and survives a process crash; durable commits switch
    # to FULL for themselves (see Base._transaction).
    conn.execute("PRAGMA synchronous = NORMAL")


def _migrate(conn: sqlite3.Connection, path: Path, version: int) -> None:
    while version < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another opener may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):  # a newer acpd got in since the read-only probe
                raise StoreError(_newer_message(path, version))
            if version < len(MIGRATIONS):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror}") from None


def connect_writer(path: Path) -> sqlite3.Connection:
    """Open or create the store at `path`, in WAL mode, migrated to SCHEMA_VERSION."""
    _header_check(path)
    # A new (missing or empty) file has nothing to refuse; anything else is probed read-only.
    version = _probe_readonly(path) if _has_content(path) else 0
    conn = _connect(str(path), path)
    try:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"cannot use WAL mode for store {path} (got {mode!r})")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            conn.execute("PRAGMA synchronous = FULL")  # a new or migrated file is durable at once
            _migrate(conn, path, version)
            _configure(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def connect_checkpointer(path: Path) -> sqlite3.Connection:
    """A writable connection to an existing, current store in WAL mode, for checkpoints only
    (store/checkpoint.py): it is checked like a reader's and never migrates anything."""
    _header_check(path)
    if not _has_content(path) or _probe_readonly(path) != SCHEMA_VERSION:
        raise StoreError(f"store {path} is not ready (open it for writing first)")
    conn = _connect(str(path), path)
    try:
        try:
            version = _probe(conn, path)
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            _configure(conn)
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # it writes nothing; no need either
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from None
        if version != SCHEMA_VERSION or mode != "wal":
            raise StoreError(f"store {path} is not ready (open it for writing first)")
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing, current store; in WAL it never blocks the writer.

    mode=ro, not just query_only: a read-only connection cannot checkpoint, so even as the
    last one to close it leaves the file and its WAL as they were.
    """
    _header_check(path)
    if not os.path.exists(path):
        raise StoreError(f"no store at {path} (open it for writing first)")
    not_ready = StoreError(f"store {path} is not ready (open it for writing first)")
    if not _has_content(path) or _probe_readonly(path) != SCHEMA_VERSION:
        raise not_ready
    conn = _connect(_uri(path, "mode=ro"), path, uri=True)
    try:
        version = _probe(conn, path)  # again: the writer may have changed it meanwhile
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            _configure(conn)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from None
        if version != SCHEMA_VERSION or mode != "wal":
            raise not_ready
    except BaseException:
        conn.close()
        raise
    return conn
