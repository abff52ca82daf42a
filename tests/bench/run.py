"""Run acpd's benchmarks: `python -m tests.bench.run [--quick] [--json FILE] [--only NAME]`.

Imports every `tests/bench/bench_*.py`, calls its `run(quick: bool) -> list[dict]` and prints
one table (name, unit, median, min, max, runs, note). `--only codec` runs `bench_codec` only
(repeatable; a name may also be a prefix). `--json FILE` also writes the rows (a JSON list),
each tagged with its module as `bench`.

A module that fails to import or run is reported as a row and makes the exit status 1; the
others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).parent
PREFIX = "bench_"
COLUMNS = ("name", "unit", "median", "min", "max", "runs", "note")


def discover() -> list[str]:
    """Short names (`codec` for `bench_codec.py`) of the bench modules, sorted."""
    return sorted(
        m.name.removeprefix(PREFIX)
        for m in pkgutil.iter_modules([str(BENCH_DIR)])
        if m.name.startswith(PREFIX)
    )


def select(names: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return names
    chosen = [n for n in names if any(n == o or n.startswith(o) for o in only)]
    unknown = [o for o in only if not any(n == o or n.startswith(o) for n in names)]
    if unknown:
        raise SystemExit(f"no bench module for {', '.join(unknown)} (have: {', '.join(names)})")
    return chosen


def run_module(short: str, quick: bool) -> tuple[list[dict[str, Any]], bool]:
    """(rows, ok) for one module."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"{__package__ or 'tests.bench'}.{PREFIX}{short}")
        rows = list(module.run(quick))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        note = f"FAILED: {type(exc).__name__}: {exc}"
        return [{"name": short, "unit": "", "note": note, "bench": short}], False
    for r in rows:
        r.setdefault("bench", short)
    print(f"# {short}: {len(rows)} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return rows, True


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(COLUMNS)]
    numeric = {"median", "min", "max", "runs"}

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if c in numeric else v.ljust(w)
            for c, v, w in zip(COLUMNS, values, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(COLUMNS)), line(["-" * w for w in widths])]
    out.extend(line(c) for c in cells)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (smoke test)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the rows as JSON")
    parser.add_argument(
        "--only", metavar="NAME", action="append", help="run only this module (repeatable)"
    )
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    ok = True
    for short in select(discover(), args.only):
        module_rows, module_ok = run_module(short, args.quick)
        rows.extend(module_rows)
        ok = ok and module_ok
    print(f"# python {platform.python_version()} on {platform.machine()}", file=sys.stderr)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
