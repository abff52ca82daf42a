"""The front door's connections to the daemon: its socket API, as a JSON-RPC client.

Each connection is an `AgentPeer` (symmetric enough to be a client of the daemon too) over a
stream that `connect()` opens: the unix socket in production, an in-memory pair in tests.
Errors are mapped once, here, into what an ACP client should be told: the daemon's own
errors pass through as they are (its -32001 "no such conversation" becomes ACP's -32002
"resource not found"), a daemon that cannot be reached or goes away is -32603 with a message
that says what to do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import attrs
import msgspec
import trio

from daemon.agents.peer import AgentExited, AgentPeer
from protocol.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    NOT_FOUND,
    RESOURCE_NOT_FOUND,
    RpcFailure,
)

__all__ = ["Connector", "DaemonConn", "DaemonGone", "checked", "open_daemon_conn"]

log = logging.getLogger("acpd.acp")

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)

Connector = Callable[[], Awaitable[trio.abc.Stream]]
NotificationHandler = Callable[[str, msgspec.Raw], None]

# The daemon's notifications can be long (a stored agent message is up to 1 Mi characters,
# JSON-escaped); a line over this is dropped by the peer, so it is set far above any of them.
MAX_LINE: Final = 64 * 1024 * 1024


class DaemonGone(RpcFailure):
    """The daemon cannot be reached, or the connection to it ended."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL_ERROR, message)


def checked(tp: Callable[..., S], **fields: Any) -> S:
    """`tp(**fields)` for params of the socket API, their own checks (a relative cwd, a blank
    text) failing as -32602, as the daemon would answer."""
    try:
        return tp(**fields)
    except ValueError as exc:
        raise RpcFailure(INVALID_PARAMS, f"invalid params: {exc}") from None


def _ignore_updates(_sid: str, _update: object) -> None:
    pass  # the daemon sends no session/update


@attrs.define(eq=False)
class DaemonConn:
    """One connection to the daemon. `call` is a request; notifications go to the handler
    given to `open_daemon_conn`, in the order they arrive, from the read loop."""

    peer: AgentPeer
    where: str

    @property
    def alive(self) -> bool:
        return self.peer.running

    async def wait_closed(self) -> None:
        """Block until the connection has ended (the daemon went away or closed it)."""
        await self.peer.wait_finished()

    async def call(self, method: str, params: msgspec.Struct | dict[str, Any], tp: type[T]) -> T:
        try:
            return await self.peer.request(method, params, tp)
        except AgentExited:
            raise DaemonGone(f"lost the connection to the acpd daemon ({self.where})") from None
        except RpcFailure as exc:
            if exc.code == NOT_FOUND:
                raise RpcFailure(RESOURCE_NOT_FOUND, exc.message) from None
            raise


@asynccontextmanager
async def open_daemon_conn(
    connect: Connector, where: str, on_notification: NotificationHandler | None = None
) -> AsyncIterator[DaemonConn]:
    """Connect to the daemon and serve the connection for the duration of the block.

    Raises `DaemonGone` if it cannot connect. Resource handling: leaving the block closes the
    connection (the daemon then ends its subscriptions on it).
    """
    try:
        stream = await connect()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DaemonGone(
            f"the acpd daemon is not running ({where}: {reason}); start it with `acpd serve` "
            "or `systemctl --user start acpd`"
        ) from None
    async with stream, trio.open_nursery() as nursery:
        peer = AgentPeer(
            stream,
            on_update=_ignore_updates,
            on_notification=on_notification,
            max_line=MAX_LINE,
            log=log,
        )
        await nursery.start(peer.run)
        try:
            yield DaemonConn(peer, where)
        finally:
            nursery.cancel_scope.cancel(reason="daemon connection closed")
