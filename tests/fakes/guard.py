"""A hang guard for trio tests (trio-websocket's `fail_after` decorator)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import trio

__all__ = ["hang_guard"]

P = ParamSpec("P")
R = TypeVar("R")


def hang_guard(
    seconds: float = 60,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Fail the test if its body runs longer than `seconds` on trio's clock (virtual seconds
    under autojump_clock: free, yet a deadlock still fails instead of hanging)."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            with trio.fail_after(seconds):
                return await fn(*args, **kwargs)

        return guarded

    return decorate
