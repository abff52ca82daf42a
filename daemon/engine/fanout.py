"""Fan-out of a conversation's events and deltas to its subscribers.

Nobody blocks a turn (DESIGN.md): `publish` is synchronous, takes a line encoded once, and
offers it to every subscriber's bounded channel with `send_nowait`. A subscriber that would
block is dropped; its iterator then yields one `conversation/lagged` notice naming the last
event it was given, so the client can resubscribe from there with no gap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import attrs
import trio

from protocol.api import (
    CAUGHT_UP_METHOD,
    ENDED_METHOD,
    LAGGED_METHOD,
    CaughtUpParams,
    LaggedParams,
    StreamedText,
)
from protocol.jsonrpc import Notification, encode_line

__all__ = ["Fanout", "FanoutStatistics", "Subscription", "encode_caught_up"]

# Replay reads the store in pages of this many events.
REPLAY_PAGE = 500

# (after_seq, through_seq, limit) -> (notification lines, last seq covered)
ReplayPage = Callable[[int, int, int], Awaitable[tuple[list[bytes], int]]]


@attrs.define(eq=False)
class _Sink:
    send: trio.MemorySendChannel[bytes]
    deltas: bool
    # Seq of the last event handed to this subscriber's channel: where it must resume after lag.
    last_seq: int
    lagged: bool = False
    on_close: Callable[[], None] | None = None  # once, however it ends


@attrs.frozen
class FanoutStatistics:
    subscribers: int
    lagged: int  # subscribers dropped for falling behind


@attrs.define(eq=False)
class Fanout:
    conv_id: str
    buffer: int
    _sinks: set[_Sink] = attrs.field(factory=set)
    _lagged: int = 0

    @property
    def subscribers(self) -> int:
        return len(self._sinks)

    def statistics(self) -> FanoutStatistics:
        return FanoutStatistics(len(self._sinks), self._lagged)

    def open(
        self,
        *,
        after_seq: int,
        through_seq: int,
        deltas: bool,
        replay: ReplayPage,
        on_close: Callable[[], None] | None = None,
        caught_up: bytes | None = None,
    ) -> Subscription:
        """Register a subscriber now (no checkpoint), so nothing published after this is missed.

        `on_close()` is called once when it is gone: closed, dropped for lag, or `close_all`.
        `caught_up`, a line, is yielded once after the replay and before any live line; with
        it, a subscription we end (not for lag, not closed by its subscriber) yields a last
        `conversation/ended` line.
        """
        send, recv = trio.open_memory_channel[bytes](self.buffer)
        sink = _Sink(send, deltas, last_seq=through_seq, on_close=on_close)
        self._sinks.add(sink)
        return Subscription(
            conv_id=self.conv_id,
            through_seq=through_seq,
            fanout=self,
            sink=sink,
            recv=recv,
            replay_from=after_seq,
            replay=replay,
            caught_up=caught_up,
            says_ended=caught_up is not None,
        )

    def publish_event(self, seq: int, line: bytes) -> None:
        for sink in tuple(self._sinks):
            if seq <= sink.last_seq:
                continue  # already covered by this subscriber's replay
            if self._offer(sink, line):
                sink.last_seq = seq

    def publish_delta(self, line: bytes) -> None:
        for sink in tuple(self._sinks):
            if sink.deltas:
                self._offer(sink, line)

    def _offer(self, sink: _Sink, line: bytes) -> bool:
        try:
            sink.send.send_nowait(line)
        except trio.WouldBlock:
            self._drop(sink, lagged=True)
            return False
        except trio.BrokenResourceError:  # the subscriber went away
            self._drop(sink, lagged=False)
            return False
        return True

    def _drop(self, sink: _Sink, *, lagged: bool) -> None:
        if sink not in self._sinks:
            return
        self._sinks.discard(sink)
        sink.lagged = lagged
        if lagged:
            self._lagged += 1
        sink.send.close()
        if sink.on_close is not None:
            sink.on_close()

    def discard(self, sink: _Sink) -> None:
        self._drop(sink, lagged=False)

    def close_all(self) -> None:
        """The conversation is going away: end every subscription (no lag notice)."""
        for sink in tuple(self._sinks):
            self._drop(sink, lagged=False)


@attrs.define(eq=False)
class Subscription:
    """Replay from the store, then live lines; iteration yields complete notification lines."""

    conv_id: str
    through_seq: int
    fanout: Fanout
    sink: _Sink
    recv: trio.MemoryReceiveChannel[bytes]
    replay_from: int
    replay: ReplayPage
    caught_up: bytes | None = None  # yielded once, between the replay and the live lines
    says_ended: bool = False  # when we end it: a last `conversation/ended` line
    _pending: list[bytes] = attrs.field(factory=list)
    _done: bool = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        if self._pending:
            return self._pending.pop()
        while self.replay_from < self.through_seq:
            lines, upto = await self.replay(self.replay_from, self.through_seq, REPLAY_PAGE)
            # Seqs may have gaps (removed queued messages): jump to what the page covered.
            self.replay_from = upto if lines else self.through_seq
            if lines:
                self._pending = lines[::-1]
                return self._pending.pop()
        if self.caught_up is not None:
            line, self.caught_up = self.caught_up, None
            return line
        try:
            return await self.recv.receive()
        except trio.ClosedResourceError:  # closed by its subscriber
            self._done = True
            raise StopAsyncIteration from None
        except trio.EndOfChannel:  # ended by the fan-out
            self._done = True
            if self.sink.lagged:
                return encode_lagged(self.conv_id, self.sink.last_seq)
            if self.says_ended:
                return encode_lagged(self.conv_id, self.sink.last_seq, method=ENDED_METHOD)
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._done = True
        self.fanout.discard(self.sink)
        self.recv.close()


def encode_lagged(conv_id: str, last_seq: int, *, method: str = LAGGED_METHOD) -> bytes:
    params = LaggedParams(id=conv_id, last_seq=last_seq)
    return bytes(encode_line(Notification(method=method, params=params)))


def encode_caught_up(
    conv_id: str, through_seq: int, streamed: Iterable[tuple[int, str, str]]
) -> bytes:
    """The `conversation/caught_up` line: with each open message's text, (prompt_seq, kind,
    text), that its deltas carried so far and no stored event holds yet (`Recorder.streamed`)."""
    texts = [StreamedText(prompt_seq=p, kind=k, text=t) for p, k, t in streamed if t]
    params = CaughtUpParams(id=conv_id, through_seq=through_seq, streamed=texts)
    return bytes(encode_line(Notification(method=CAUGHT_UP_METHOD, params=params)))
