"""What the owner of an `AgentPeer` hears from it: the callbacks it is given (`PeerHandlers`;
`AgentPeer`'s docstring says when each is called), what a dropped line seemed to be, and the
peer's counters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import msgspec

from daemon.agents.serving import RequestHandler
from protocol import acp

__all__ = [
    "DroppedHandler",
    "DroppedMessage",
    "NotificationHandler",
    "PeerHandlers",
    "PeerStats",
    "UpdateHandler",
    "UpdatesHandler",
]

UpdateHandler = Callable[[str, acp.SessionUpdate], None]
UpdatesHandler = Callable[[list[acp.SessionNotification]], None]
NotificationHandler = Callable[[str, msgspec.Raw], None]


@attrs.frozen
class DroppedMessage:
    """A line from the peer dropped for its length: what it seemed to be (`protocol.peek`)."""

    size: int  # bytes
    limit: int  # the cap it was over
    kind: str  # response | request | notification | unknown
    method: str | None  # of a request or notification, if it could be read
    failed_request: str | None  # the method of our request this failed, if it answered one


DroppedHandler = Callable[[DroppedMessage], None]


@attrs.frozen
class PeerHandlers:
    """What a peer's owner hears from it (see `AgentPeer` for when each is called)."""

    on_update: UpdateHandler
    on_updates: UpdatesHandler | None = None
    on_request: RequestHandler | None = None
    on_batch_end: Callable[[], None] | None = None
    wait_for_space: Callable[[], Awaitable[None]] | None = None
    on_dropped: DroppedHandler | None = None


@attrs.define(eq=False)
class PeerStats:
    lines: int = 0  # complete lines received
    notifications: int = 0  # incoming notifications of any method (malformed ones included)
    malformed: int = 0  # undecodable lines, and known session/update variants that don't fit
    oversized: int = 0  # lines over max_line, dropped
    unknown_responses: int = 0  # responses with a missing id or one we are not waiting for
    requests_in: int = 0  # requests from the peer
    requests_refused: int = 0  # answered BUSY: MAX_SERVING were being served
    callback_errors: int = 0  # on_update/on_notification/on_batch_end raised (a bug: logged)
