"""Who gets a dashboard connection: strangers are bounded apart from token holders.

Anyone on the machine can open TCP connections to a loopback port. A connection is
*pending* from accept until its client has authenticated (a page request never does): pending
ones have a deadline of their own (`pending_timeout`, to finish the HTTP request, the websocket
handshake and `auth`) and a pool of their own (`max_pending`). When the pool is full, a new
connection takes the place of the one that got least far (accepted < request head read <
websocket open), and of those the stalest (no progress for longest): a crowd of idle sockets
makes room for any client that talks, however fast it is refilled, so a token holder always
gets in; displacing one takes completing websocket handshakes faster than it authenticates.
Authenticated connections have their own cap (`max_authenticated`); past it a client is told
so and closed, never someone else.

Nothing here logs per connection: a flood must not become a flood of log writes (on the
daemon's one event loop, with the unix socket waiting behind it). `statistics()` counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import attrs
import trio

__all__ = ["PENDING_TIMEOUT_S", "Admission", "AdmissionStatistics", "Ticket"]

log = logging.getLogger("acpd.dashboard")

PENDING_TIMEOUT_S: Final = 5.0
_QUIET_S: Final = 60.0  # at most one warning about a full pool this often


@attrs.frozen
class AdmissionStatistics:
    pending: int
    authenticated: int
    evicted: int  # pending connections closed to make room for a newer one
    refused: int  # authenticated clients turned away at the cap
    timed_out: int  # pending connections that missed their deadline


@attrs.define(eq=False)
class Ticket:
    """One connection's place; `scope` ends the connection (eviction, deadline)."""

    _admission: Admission
    scope: trio.CancelScope
    last_progress: float
    stage: int = 0  # how far the client got: 0 accepted, 1 head read, 2 websocket open
    authenticated: bool = False

    def progress(self) -> None:
        """The client got a step further (sent its request head, finished the handshake)."""
        self.stage += 1
        self.last_progress = trio.current_time()

    def authenticate(self) -> bool:
        """Move to the authenticated pool: no deadline, no eviction. False (and nothing
        changed) if that pool is full: the caller tells the client and closes."""
        return self._admission._authenticate(self)


@attrs.define(eq=False)
class Admission:
    max_pending: int = 64
    max_authenticated: int = 256
    pending_timeout: float = PENDING_TIMEOUT_S
    _pending: dict[Ticket, None] = attrs.field(factory=dict)  # insertion-ordered set
    _authenticated: int = 0
    _evicted: int = 0
    _refused: int = 0
    _timed_out: int = 0
    _warned_at: float = -math.inf

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            len(self._pending), self._authenticated, self._evicted, self._refused, self._timed_out
        )

    @contextmanager
    def admit(self) -> Iterator[Ticket]:
        """A place for a new connection, for the duration of the block. The block runs in
        the ticket's cancel scope: it ends at the pending deadline, or when a newer
        connection needs the place, unless the client authenticates first."""
        now = trio.current_time()
        if len(self._pending) >= self.max_pending:
            stalest = min(self._pending, key=lambda t: (t.stage, t.last_progress))
            self._evict(stalest)
        ticket = Ticket(self, trio.CancelScope(deadline=now + self.pending_timeout), now)
        self._pending[ticket] = None
        try:
            with ticket.scope:
                yield ticket
            if ticket.scope.cancelled_caught and ticket in self._pending:
                self._timed_out += 1
        finally:
            if ticket.authenticated:
                self._authenticated -= 1
            self._pending.pop(ticket, None)

    def _evict(self, ticket: Ticket) -> None:
        del self._pending[ticket]  # not counted as timed out when its block ends
        ticket.scope.cancel(reason="a newer connection needed its place")
        self._evicted += 1
        self.warn(f"{self.max_pending} unauthenticated connections open: closing the stalest")

    def _authenticate(self, ticket: Ticket) -> bool:
        if ticket.authenticated:
            return True
        if self._authenticated >= self.max_authenticated:
            self._refused += 1
            self.warn(f"{self.max_authenticated} authenticated clients: refusing another")
            return False
        self._pending.pop(ticket, None)
        ticket.authenticated = True
        self._authenticated += 1
        ticket.scope.deadline = math.inf
        return True

    def warn(self, message: str) -> None:
        """Log `message` unless a warning was logged in the last minute (a flood of refusals
        must not become a flood of log writes)."""
        now = trio.current_time()
        if now - self._warned_at >= _QUIET_S:
            self._warned_at = now
            log.warning("dashboard: %s (said at most once a minute)", message)
