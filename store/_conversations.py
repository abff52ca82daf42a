"""Conversation metadata: create, look up, list by activity, count, change, delete, recover.

None of these reads events, so their cost does not grow with the history's length, and list,
count and recovery use indexes or a counter, so it does not grow with the number stored either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from ._base import Base, now_or, require
from .records import (
    POLICIES,
    STATUSES,
    ConversationRecord,
    new_conversation_id,
    unique_prefix_length,
)
from .records import decode_page_cursor as _decode_cursor
from .records import encode_page_cursor as _encode_cursor

__all__ = [
    "COLUMNS",
    "ID_AFTER_SQL",
    "ID_BEFORE_SQL",
    "LIST_AFTER_SQL",
    "LIST_FIRST_SQL",
    "RECOVERY_SQL",
    "ConversationOps",
    "conversation_from_row",
]

# The stored columns, for INSERT.
_STORED = (
    "id, title, agent, agent_cmd, cwd, acp_session_id, acp_session_cwd, status, "
    "created_at, updated_at, last_seq, cursor, permission_policy, title_auto, mcp_servers"
)
# A record's columns, selected from `conversations AS c`. `last_seq` is the larger of the
# stored floor and the newest event, `queued` the count of its queue: each one index seek,
# so a page of the list stays O(limit).
COLUMNS = (
    "c.id, c.title, c.agent, c.agent_cmd, c.cwd, c.acp_session_id, c.acp_session_cwd, c.status, "
    "c.created_at, c.updated_at, "
    "max(c.last_seq, "
    "ifnull((SELECT max(e.seq) FROM events AS e WHERE e.conversation_id = c.id), 0)), "
    "c.cursor, (SELECT count(*) FROM queue AS q WHERE q.conversation_id = c.id), "
    "c.permission_policy, c.modes, c.config_options, c.commands, c.usage, c.title_auto, "
    "c.mcp_servers"
)
_argv_decoder = msgspec.json.Decoder(list[str])
_LIST_ORDER = "ORDER BY c.updated_at DESC, c.id DESC LIMIT ?"
# INDEXED BY pins the plan: O(limit) at any depth must not depend on the planner's stats.
_ACTIVITY = "conversations AS c INDEXED BY conversations_activity"
LIST_FIRST_SQL = f"SELECT {COLUMNS} FROM {_ACTIVITY} {_LIST_ORDER}"
LIST_AFTER_SQL = (
    f"SELECT {COLUMNS} FROM {_ACTIVITY} WHERE (c.updated_at, c.id) < (?, ?) {_LIST_ORDER}"
)
# Filtered by cwd: the same walk down the activity index, skipping other directories. No index
# on cwd (a migration for one filter): a page costs O(rows walked past), at most O(stored).
LIST_CWD_FIRST_SQL = f"SELECT {COLUMNS} FROM {_ACTIVITY} WHERE c.cwd = ? {_LIST_ORDER}"
LIST_CWD_AFTER_SQL = (
    f"SELECT {COLUMNS} FROM {_ACTIVITY} WHERE c.cwd = ? AND (c.updated_at, c.id) < (?, ?) "
    f"{_LIST_ORDER}"
)
# O(pending) however many are stored: one branch reads the partial index of running ones, the
# other the queue. INDEXED BY because, for whole rows, the planner would rather scan the whole
# table. Oldest first, by `created_at` (9th column; ids are random), then id.
RECOVERY_SQL = (
    f"SELECT {COLUMNS} FROM conversations AS c INDEXED BY conversations_running "
    "WHERE c.status = 'running' UNION "
    f"SELECT {COLUMNS} FROM conversations AS c "
    "WHERE c.id IN (SELECT conversation_id FROM queue) AND c.status NOT IN ('paused', 'failed') "
    "ORDER BY 9, 1"
)
GET_SQL = f"SELECT {COLUMNS} FROM conversations AS c WHERE c.id = ?"
# An id's neighbours in id order, for its shortest unique prefix: one primary-key seek each.
ID_BEFORE_SQL = "SELECT max(id) FROM conversations WHERE id < ?"
ID_AFTER_SQL = "SELECT min(id) FROM conversations WHERE id > ?"


def conversation_from_row(row: Any) -> ConversationRecord:
    """A row selected as COLUMNS; `Any` because that is what sqlite3 gives."""
    return ConversationRecord(
        id=row[0],
        title=row[1],
        agent=row[2],
        agent_cmd=_argv_decoder.decode(row[3]),
        cwd=row[4],
        acp_session_id=row[5],
        acp_session_cwd=row[6],
        status=row[7],
        created_at=row[8],
        updated_at=row[9],
        last_seq=row[10],
        cursor=row[11],
        queued=row[12],
        permission_policy=row[13],
        modes=row[14],
        config_options=row[15],
        commands=row[16],
        usage=row[17],
        title_auto=bool(row[18]),
        mcp_servers=row[19],
    )


def _check_choice(name: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(sorted(allowed))}, not {value!r}")


class ConversationOps(Base):
    def _records(self, rows: Iterable[Any]) -> list[ConversationRecord]:
        try:
            return [conversation_from_row(row) for row in rows]
        except msgspec.DecodeError as exc:
            raise self._damaged(f"a row does not decode: {exc}") from None

    def create_conversation(
        self,
        *,
        title: str,
        agent: str,
        agent_cmd: list[str],
        cwd: str,
        permission_policy: str = "ask",
        mcp_servers: str | None = None,
        now: float | None = None,
    ) -> ConversationRecord:
        """Create an idle conversation with no events. Durable: the id may be acknowledged."""
        _check_choice("permission_policy", permission_policy, POLICIES)
        if not agent_cmd or not all(isinstance(arg, str) for arg in agent_cmd):
            raise ValueError("agent_cmd must be a non-empty list of strings")
        now = now_or(now)
        rec = ConversationRecord(
            id=new_conversation_id(),
            title=title,
            agent=agent,
            agent_cmd=list(agent_cmd),
            cwd=cwd,
            acp_session_id=None,
            acp_session_cwd=None,
            status="idle",
            created_at=now,
            updated_at=now,
            last_seq=0,
            cursor=0,
            queued=0,
            permission_policy=permission_policy,
            title_auto=not title,
            mcp_servers=mcp_servers,
        )
        argv, policy = msgspec.json.encode(rec.agent_cmd).decode(), permission_policy
        with self._transaction(durable=True) as conn:
            conn.execute(
                f"INSERT INTO conversations ({_STORED}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec.id, title, agent, argv, cwd, None, None, "idle", now, now, 0, 0, policy,
                 int(rec.title_auto), mcp_servers),
            )  # fmt: skip
        return rec

    def get_conversation(self, conv_id: str) -> ConversationRecord | None:
        self.flush_activity()
        rows = self._rows(GET_SQL, (conv_id,))
        return self._records(rows)[0] if rows else None

    def resolve_id(self, prefix: str, limit: int = 2) -> list[tuple[str, str]]:
        """(id, title) of up to `limit` conversations whose id starts with `prefix`, in id order
        (more than one means ambiguous, unless one is `prefix` itself): a primary-key range."""
        prefix = prefix.lower()
        # U+10FFFF encodes above any byte of an id, so [prefix, prefix + it) is the prefix range.
        rows = self._rows(
            "SELECT id, title FROM conversations WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return [(row[0], row[1]) for row in rows]

    def count_prefix(self, prefix: str, cap: int) -> int:
        """How many ids start with `prefix`, counted up to `cap` (bounded, whatever is stored)."""
        prefix = prefix.lower()
        rows = self._rows(
            "SELECT count(*) FROM (SELECT 1 FROM conversations WHERE id >= ? AND id < ? LIMIT ?)",
            (prefix, prefix + "\U0010ffff", cap),
        )
        count: int = rows[0][0]
        return count

    def short_ids(self, ids: Iterable[str], minimum: int = 4) -> dict[str, str]:
        """Each id's shortest unique prefix, at least `minimum` characters: two primary-key
        seeks per id (its neighbours in id order), so the cost is per id asked about, however
        many are stored. A prefix can only grow as conversations are added."""
        out: dict[str, str] = {}
        for conv_id in ids:
            before = self._rows(ID_BEFORE_SQL, (conv_id,))
            after = self._rows(ID_AFTER_SQL, (conv_id,))
            length = unique_prefix_length(conv_id, (before[0][0], after[0][0]), minimum)
            out[conv_id] = conv_id[:length]
        return out

    def list_conversations(
        self, limit: int = 50, before: str | None = None, *, cwd: str | None = None
    ) -> tuple[list[ConversationRecord], str | None]:
        """A page, newest activity first, and the cursor of the next page (None at the end).
        With `cwd`, only conversations in exactly that directory (see LIST_CWD_FIRST_SQL).

        Keyset pagination on the (updated_at, id) index: any page costs O(limit), however deep.
        A conversation active while someone pages moves to the front (it may be seen twice or,
        if it was ahead, not at all); that is the usual price of keyset paging and is harmless
        for a listing.
        """
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        self.flush_activity()
        after = () if before is None else _decode_cursor(before)
        if cwd is None:
            rows = self._rows(LIST_AFTER_SQL if after else LIST_FIRST_SQL, (*after, limit + 1))
        else:
            sql = LIST_CWD_AFTER_SQL if after else LIST_CWD_FIRST_SQL
            rows = self._rows(sql, (cwd, *after, limit + 1))
        page = self._records(rows[:limit])
        nxt = _encode_cursor(page[-1].updated_at, page[-1].id) if len(rows) > limit else None
        return page, nxt

    def count_conversations(self, *, cwd: str | None = None) -> int:
        """O(1): a counter row that triggers keep in step with the table. With `cwd`, those
        in that directory: a scan, O(stored)."""
        if cwd is not None:
            found: int = self._rows("SELECT count(*) FROM conversations WHERE cwd = ?", (cwd,))[0][
                0
            ]
            return found
        rows = self._rows("SELECT value FROM meta WHERE key = 'conversations'")
        if not rows:
            raise self._damaged("no conversation counter")
        count: int = rows[0][0]
        return count

    def delete_conversation(self, conv_id: str) -> bool:
        """Delete it with its events and drafts; False if there was no such conversation."""
        with self._transaction(durable=True) as conn:
            conn.execute("DELETE FROM drafts WHERE conversation_id = ?", (conv_id,))
            conn.execute("DELETE FROM queue WHERE conversation_id = ?", (conv_id,))
            conn.execute("DELETE FROM events WHERE conversation_id = ?", (conv_id,))
            deleted = conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,)).rowcount
        return deleted > 0

    def set_status(
        self, conv_id: str, status: str, *, durable: bool = False, now: float | None = None
    ) -> None:
        """Set the status; a change (not a repeat) counts as activity for the list order.
        `durable`: fsynced before it returns (a pause that a reply acknowledges)."""
        _check_choice("status", status, STATUSES)
        self._update(
            conv_id,
            "status = ?1, updated_at = CASE WHEN status = ?1 THEN updated_at "
            "ELSE max(updated_at, ?2) END",
            (status, now_or(now)),
            durable=durable,
        )

    def set_acp_session(
        self, conv_id: str, session_id: str | None, session_cwd: str | None
    ) -> None:
        """Remember (or, with None, forget) the agent's session, for session/load."""
        args = (session_id, session_cwd)
        self._update(conv_id, "acp_session_id = ?1, acp_session_cwd = ?2", args)

    def set_title(self, conv_id: str, title: str) -> None:
        self._update(conv_id, "title = ?1", (title,))

    def set_permission_policy(self, conv_id: str, policy: str) -> None:
        """Durable: a user who answered 'deny' must not find 'ask' or 'allow' after a crash."""
        _check_choice("permission_policy", policy, POLICIES)
        self._update(conv_id, "permission_policy = ?1", (policy,), durable=True)

    def _update(
        self, conv_id: str, assignments: str, args: tuple[object, ...], *, durable: bool = False
    ) -> None:
        n = len(args) + 1
        with self._transaction(durable=durable) as conn:
            sql = f"UPDATE conversations SET {assignments} WHERE id = ?{n} RETURNING 1"
            require(conn.execute(sql, (*args, conv_id)).fetchall(), conv_id)

    def conversations_needing_recovery(self) -> list[ConversationRecord]:
        """Running (a turn died with the daemon) or with queued messages and not held back
        (paused or failed), oldest first. O(pending): see RECOVERY_SQL."""
        self.flush_activity()
        return self._records(self._rows(RECOVERY_SQL))
