"""Shared helpers for `tests/bench/bench_*.py` modules (run them with `python -m tests.bench.run`).

A bench module exposes `run(quick: bool) -> list[dict]`; each dict is one table row with the
keys of `row()`.
"""

from __future__ import annotations

import gc
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Daemon", "measure", "ratio_row", "row", "running_daemon", "stats", "subscriber"]

ROOT = Path(__file__).resolve().parents[2]
DAEMON_TIMEOUT = 60.0  # start-up or stop of a benchmark daemon: a hang guard


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


def stats(samples: list[float]) -> dict[str, Any]:
    """`{"median", "min", "max", "runs", "p99"}` of raw samples (in their own unit)."""
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "runs": len(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


class Daemon:
    """A real `acpd serve` started by `running_daemon`."""

    def __init__(self, proc: subprocess.Popen[bytes], socket: str, ready_ms: float) -> None:
        self.proc = proc
        self.socket = socket
        self.ready_ms = ready_ms  # spawn to the first answered `daemon/status`

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


@contextmanager
def running_daemon(
    data: Path,
    sock: Path,
    *,
    env: dict[str, str] | None = None,
    config: str = "",
    root: Path = ROOT,
) -> Iterator[Daemon]:
    """`acpd serve --no-ws` on `data`, on the defaults whatever the host's config (or on
    `config`, TOML text); yields once it answers `daemon/status`, then stops it with SIGTERM.
    `root` is the checkout the daemon runs from (another one, to compare with)."""
    from daemon.cli.client import Client, ClientError

    environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    config_file = data.parent / f"{data.name}.toml"
    config_file.write_text(config)  # empty: the defaults, whatever the host's config says
    environ["ACPD_CONFIG"] = str(config_file)
    environ.update(env or {})
    log = data.parent / f"{data.name}.stderr"
    start = time.perf_counter_ns()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.server", "serve", "--data-dir", str(data),
             "--socket", str(sock), "--no-ws"],
            cwd=root, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + DAEMON_TIMEOUT
        while True:
            try:
                with Client(str(sock)) as client:
                    client.call("daemon/status")
                break
            except ClientError:
                pass
            try:  # the pause between polls, which also notices a daemon that died
                proc.wait(timeout=0.002)
            except subprocess.TimeoutExpired:
                pass
            else:
                tail = log.read_text()[-2000:]
                raise RuntimeError(f"acpd serve exited {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise RuntimeError("acpd serve did not answer daemon/status in time")
        yield Daemon(proc, str(sock), (time.perf_counter_ns() - start) / 1e6)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DAEMON_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def subscriber(daemon: Daemon, conv_id: str, root: Path = ROOT) -> Iterator[None]:
    """A client in a process of its own (`_subscriber.py`) subscribed to `conv_id` with
    deltas and draining everything; yields once the subscription is answered."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench._subscriber", daemon.socket, conv_id],
        cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        if proc.stdout.readline() != b"ready\n":
            raise RuntimeError("the subscriber process did not subscribe")
        yield
    finally:
        proc.kill()
        proc.wait()
