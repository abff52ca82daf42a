"""The peer's requests we are serving: one task each, at most `MAX_SERVING` at once, each
answered exactly once (its result, its error, or -32800 when `$/cancel_request` cancelled it).

A permission request may wait minutes for a person, so each runs in a task of its own; the
cap bounds those tasks, and the read loop answers the excess BUSY at once (`AgentPeer`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
import trio

from daemon.agents.calls import AgentExited
from protocol.jsonrpc import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    REQUEST_CANCELLED,
    ErrorResponse,
    RequestId,
    Response,
    RpcError,
    RpcFailure,
    encode_line,
)

__all__ = ["MAX_SERVING", "RequestHandler", "Serving"]

# Requests from the agent served at once (each holds a task; a permission request may wait
# minutes for a person). Past it, a request is answered BUSY at once, so the agent sees why.
MAX_SERVING: Final = 64

RequestHandler = Callable[[str, msgspec.Raw], Awaitable[object]]


class Serving:
    """The requests in progress by id, with the scope that cancels each."""

    def __init__(
        self,
        handler: RequestHandler | None,
        write: Callable[[bytes | bytearray], Awaitable[None]],
        log: logging.Logger,
    ) -> None:
        self._handler = handler
        self._write = write  # the peer's: raises AgentExited once the connection is gone
        self._log = log
        self._serving: dict[RequestId, trio.CancelScope] = {}
        self._answering = 0  # requests received and not yet answered
        self._quiet = trio.Event()  # poked when a request in progress has been answered

    def in_progress(self, req_id: RequestId) -> bool:
        return req_id in self._serving

    @property
    def full(self) -> bool:
        return len(self._serving) >= MAX_SERVING

    def start(
        self, nursery: trio.Nursery, req_id: RequestId, method: str, params: msgspec.Raw
    ) -> None:
        scope = trio.CancelScope()
        self._serving[req_id] = scope
        self._answering += 1
        nursery.start_soon(self._serve, req_id, method, params, scope)

    def cancel(self, req_id: RequestId) -> None:
        """`$/cancel_request`: the request, if still being served, is answered -32800."""
        scope = self._serving.get(req_id)
        if scope is not None:
            scope.cancel(reason="$/cancel_request")

    async def wait_answered(self) -> None:
        """Until every request received so far has been answered."""
        while self._answering:
            self._quiet = trio.Event()
            await self._quiet.wait()

    async def _serve(
        self, req_id: RequestId, method: str, params: msgspec.Raw, scope: trio.CancelScope
    ) -> None:
        try:
            await self._serve_one(req_id, method, params, scope)
        finally:
            self._answering -= 1
            self._quiet.set()

    async def _serve_one(
        self, req_id: RequestId, method: str, params: msgspec.Raw, scope: trio.CancelScope
    ) -> None:
        data: bytes | bytearray | None = None
        try:
            with scope:
                if self._handler is None:
                    raise RpcFailure(METHOD_NOT_FOUND, f"method not found: {method}")
                result = await self._handler(method, params)
                data = encode_line(Response(id=req_id, result=result))
        except RpcFailure as exc:
            data = encode_line(ErrorResponse(id=req_id, error=exc.to_error()))
        except AgentExited:
            return  # the handler found the connection gone: nobody to answer
        except Exception:
            self._log.exception("handler for %s failed", method)
            error = RpcError(INTERNAL_ERROR, f"internal error handling {method}")
            data = encode_line(ErrorResponse(id=req_id, error=error))
        finally:
            self._serving.pop(req_id, None)
        if scope.cancelled_caught:
            error = RpcError(REQUEST_CANCELLED, "request cancelled")
            data = encode_line(ErrorResponse(id=req_id, error=error))
        assert data is not None
        try:
            await self._write(data)
        except AgentExited:
            pass
