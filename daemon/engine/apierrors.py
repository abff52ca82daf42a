"""The engine's refusals as JSON-RPC errors: an unknown conversation, storage that refused a
write (saying what was not done), text that cannot be a message, the queue's conflicts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from protocol.jsonrpc import CONFLICT, INVALID_PARAMS, NOT_FOUND, STORAGE_UNAVAILABLE, RpcFailure
from protocol.limits import MAX_TEXT
from store import Conflict, NotFound, StorageUnavailable

__all__ = ["check_text", "no_such", "queue_errors", "unstored"]


def no_such(conv_id: str) -> RpcFailure:
    return RpcFailure(NOT_FOUND, f"no such conversation: {conv_id}")


def unstored(exc: StorageUnavailable, what: str) -> RpcFailure:
    """-32005, saying why (`exc`) and what was not stored: "storage unavailable: disk full;
    the message was not queued"."""
    return RpcFailure(STORAGE_UNAVAILABLE, f"{exc}; {what}")


def check_text(text: str) -> None:
    if not text.strip():
        raise RpcFailure(INVALID_PARAMS, "text must not be empty")
    if len(text) > MAX_TEXT:
        raise RpcFailure(INVALID_PARAMS, f"text longer than {MAX_TEXT} characters")


@contextmanager
def queue_errors(conv_id: str, unchanged: str) -> Iterator[None]:
    """The store's refusals of a queue operation, as API errors; `unchanged` says what was
    not done, should storage refuse it."""
    try:
        yield
    except Conflict as exc:
        # Already prompted (or steered), or being steered right now.
        raise RpcFailure(CONFLICT, str(exc).replace(f" in {conv_id}", "")) from None
    except NotFound as exc:
        raise RpcFailure(NOT_FOUND, str(exc)) from None
    except StorageUnavailable as exc:
        raise unstored(exc, unchanged) from None
