"""Our requests to the peer that wait for their answers, by id, and the end that fails them.

The peer numbers its own requests from 0 just as we do (ACP.md §1), so these ids are ours
alone and never meet the ids of requests we serve (`serving.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from protocol.jsonrpc import Envelope

__all__ = ["AgentExited", "Calls"]


class AgentExited(Exception):
    """The peer's stream ended or broke: nothing more can be sent to or received from it."""


class Calls:
    """Each waiting request's one-shot channel, its method (for messages), and the callback
    run the moment its answer is read (`AgentPeer.request(on_answer=)`)."""

    def __init__(self) -> None:
        self._next_id = 0
        self._waiting: dict[int, trio.MemorySendChannel[Envelope]] = {}
        self._on_answer: dict[int, Callable[[], None]] = {}
        self._methods: dict[int, str] = {}

    def next_id(self) -> int:
        req_id = self._next_id
        self._next_id += 1
        return req_id

    def wait_for(
        self, req_id: int, method: str, on_answer: Callable[[], None] | None
    ) -> trio.MemoryReceiveChannel[Envelope]:
        """Where the answer to `req_id` will arrive; `done(req_id)` when no longer waited for."""
        send, recv = trio.open_memory_channel[Envelope](1)
        self._waiting[req_id] = send
        self._methods[req_id] = method
        if on_answer is not None:
            self._on_answer[req_id] = on_answer
        return recv

    def done(self, req_id: int) -> None:
        self._waiting.pop(req_id, None)
        self._methods.pop(req_id, None)
        self._on_answer.pop(req_id, None)

    def waiting_method(self, req_id: object) -> str | None:
        """The method of our request `req_id` if its answer is still awaited, else None."""
        if not isinstance(req_id, int) or req_id not in self._waiting:
            return None
        return self._methods.get(req_id, "a request")

    def answer(self, env: Envelope, on_error: Callable[[str], None]) -> bool:
        """Hand `env` to the request it answers; False if none waits for it (no id, or one
        we stopped waiting for). `on_error(name)` is told of an `on_answer` that raised."""
        rid = env.id
        if not isinstance(rid, int) or (send := self._waiting.pop(rid, None)) is None:
            return False
        on_answer = self._on_answer.pop(rid, None)
        if on_answer is not None:
            try:
                on_answer()
            except Exception:
                on_error("on_answer")
        try:
            send.send_nowait(env)
        except trio.BrokenResourceError:  # the waiter is gone already
            pass
        send.close()
        return True

    def end(self) -> None:
        """The connection ended: every waiter's receive ends (and raises `AgentExited`)."""
        waiting, self._waiting = self._waiting, {}
        for send in waiting.values():
            send.close()
