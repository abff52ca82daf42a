"""Shared helpers for `tests/bench/bench_*.py` modules (run them with `python -m tests.bench.run`).

A bench module exposes `run(quick: bool) -> list[dict]`; each dict is one table row with the
keys of `row()`.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["measure", "ratio_row", "row"]


def measure(
    fn: Callable[[], object],
    *,
    repeat: int,
    number: int,
    warmup: int | None = None,
    disable_gc: bool = False,
) -> dict[str, Any]:
    """Time `fn()`: `repeat` runs of `number` calls each, after `warmup` untimed calls.

    Returns `{"median", "min", "max", "runs"}` in nanoseconds per call (per-run means). The
    median is the headline figure; min shows the noise floor. GC stays on by default (unlike
    `timeit`): a long-running daemon pays for it too, and it differs between codecs.
    """
    if repeat < 1 or number < 1:
        raise ValueError("repeat and number must be positive")
    for _ in range(max(1, number // 10) if warmup is None else warmup):
        fn()
    per_call: list[float] = []
    clock = time.perf_counter_ns
    gc_was_enabled = gc.isenabled()
    if disable_gc:
        gc.disable()
    try:
        for _ in range(repeat):
            start = clock()
            for _ in range(number):
                fn()
            per_call.append((clock() - start) / number)
    finally:
        if disable_gc and gc_was_enabled:
            gc.enable()
    return {
        "median": statistics.median(per_call),
        "min": min(per_call),
        "max": max(per_call),
        "runs": repeat,
    }


def row(name: str, unit: str, stats: dict[str, Any], note: str = "") -> dict[str, Any]:
    """One table row from `measure()`'s result (or any dict with the same keys)."""
    return {
        "name": name,
        "unit": unit,
        "median": stats.get("median"),
        "min": stats.get("min"),
        "max": stats.get("max"),
        "runs": stats.get("runs"),
        "note": note,
    }


def ratio_row(
    name: str, slow: dict[str, Any], fast: dict[str, Any], note: str = ""
) -> dict[str, Any]:
    """`slow / fast` as a row in unit "x": median over medians, and the worst and best case
    (slowest-fast vs fastest-slow and vice versa) as min and max."""
    return row(
        name,
        "x",
        {
            "median": slow["median"] / fast["median"],
            "min": slow["min"] / fast["max"],
            "max": slow["max"] / fast["min"],
            "runs": min(slow["runs"], fast["runs"]),
        },
        note,
    )
