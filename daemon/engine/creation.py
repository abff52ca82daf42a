"""A new conversation: the agent it runs (a configured one by name, or a command line), a cwd
that exists, and its row stored with the daemon's permission policy, counted for
`daemon/status` (stored.py). Nothing is hydrated: a conversation goes live with its first use.
"""

from __future__ import annotations

import os

import msgspec
import trio

from daemon.config import Config
from daemon.engine.apierrors import unstored
from daemon.engine.stored import StoredCount
from daemon.engine.storeio import StoreIO
from protocol import acp
from protocol.jsonrpc import INVALID_PARAMS, RpcFailure
from store import ConversationRecord, StorageUnavailable

__all__ = ["create_conversation"]


async def create_conversation(
    io: StoreIO,
    config: Config,
    stored: StoredCount,
    *,
    agent: str | None,
    agent_cmd: list[str] | None,
    cwd: str,
    title: str | None,
    mcp_servers: list[acp.McpServer] | None,
) -> ConversationRecord:
    agents = config.all_agents()
    if agent_cmd:
        name, argv = agent or "custom", list(agent_cmd)
    else:
        name = agent or config.default_agent
        if name not in agents:
            known = ", ".join(sorted(agents))
            raise RpcFailure(INVALID_PARAMS, f"unknown agent {name!r} (known: {known})")
        argv = list(agents[name].command)
    if not os.path.isabs(cwd) or not await trio.Path(cwd).is_dir():
        raise RpcFailure(INVALID_PARAMS, f"cwd must be an existing absolute directory: {cwd}")
    policy = config.permission_policy
    servers = msgspec.json.encode(mcp_servers).decode() if mcp_servers else None
    try:
        with stored.changing() as counted:
            rec = await io.write(
                lambda s: s.create_conversation(
                    title=title or "",
                    agent=name,
                    agent_cmd=argv,
                    cwd=cwd,
                    permission_policy=policy,
                    mcp_servers=servers,
                )
            )
            counted(1)
    except StorageUnavailable as exc:
        raise unstored(exc, "the conversation was not created") from None
    return rec
