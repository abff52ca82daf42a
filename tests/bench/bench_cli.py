"""CLI: `acpd ls --json` against a daemon holding 100,000 conversations vs `python -c pass`.

A real daemon (`python -m daemon.server serve --no-ws`) serves a data dir holding a copy of
bench_store's cached 100k store, with its queue emptied so start-up has no recovery work. Then,
interleaved run by run so all three see the same machine: `python -c pass` (the floor: an
interpreter start), `python -m daemon.cli ls --json --socket S`, and the installed `acpd`
script with the same arguments when there is one. Wall time of the whole process, spawn to
exit. Target: `acpd ls --json` within 2x of `python -c pass`. Last, the daemon's share: the same
`conversations/list` call from an already connected client.

Run: `python -m tests.bench.run --only cli`, or `python -m tests.bench.bench_cli`.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon.cli.client import Client
from tests.bench._common import ratio_row, row, running_daemon, stats
from tests.bench.bench_store import BIG, _store_of

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0  # any one process; a hang guard


def _acpd_script() -> str | None:
    """The `acpd` console script of this interpreter's environment, else on PATH."""
    beside = Path(sys.executable).parent / "acpd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("acpd")


def _data_dir(tmp: Path) -> Path:
    data = tmp / "data"
    data.mkdir(mode=0o700)
    db = data / "acpd.sqlite3"
    shutil.copyfile(_store_of(BIG), db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DELETE FROM queue")  # nothing for startup to recover
    finally:
        conn.close()
    return data


@contextmanager
def _daemon(tmp: Path) -> Iterator[str]:
    """A real daemon over the 100k data dir; yields its socket path once it answers."""
    with running_daemon(_data_dir(tmp), tmp / "acpd.sock") as daemon:
        with Client(daemon.socket) as client:
            stored = client.call("daemon/status")["conversations_stored"]
        if stored != BIG:
            raise RuntimeError(f"daemon holds {stored} conversations")
        yield daemon.socket


# As installed: with bytecode caching on (an environment may turn it off, and then every run
# would compile the CLI's modules again, a cost no installed `acpd` pays).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(argv: list[str]) -> tuple[float, bytes]:
    """Wall time (ms) of one process, spawn to exit, and its stdout."""
    start = time.perf_counter_ns()
    proc = subprocess.run(
        argv, capture_output=True, timeout=TIMEOUT, cwd=ROOT, check=False, env=_ENV
    )
    took = (time.perf_counter_ns() - start) / 1e6
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return took, proc.stdout


def _check_listing(out: bytes) -> None:
    result = json.loads(out)
    if result["total"] != BIG or len(result["conversations"]) != 50:
        raise RuntimeError(f"unexpected listing: total {result['total']}")


def run(quick: bool) -> list[dict[str, Any]]:
    runs = 5 if quick else 30
    with tempfile.TemporaryDirectory(prefix="acpd-bench-cli-") as tmp, _daemon(Path(tmp)) as sock:
        ls = ["ls", "--json", "--socket", sock]
        commands: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -m daemon.cli ls --json": [sys.executable, "-m", "daemon.cli", *ls],
        }
        script = _acpd_script()
        if script is not None:
            commands["acpd ls --json (script)"] = [script, *ls]
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv in commands.values():  # warm the page cache and the daemon's code paths
            for _ in range(2):
                _, out = _timed(argv)
                if "ls" in argv:
                    _check_listing(out)
        for _ in range(runs):  # interleaved: every command sees the same machine
            for name, argv in commands.items():
                samples[name].append(_timed(argv)[0])
        # The daemon's share: the same request from a connected client, no process start.
        with Client(sock) as client:
            rtt = []
            for _ in range(runs * 5):
                start = time.perf_counter_ns()
                client.call("conversations/list", {"limit": 50})
                rtt.append((time.perf_counter_ns() - start) / 1e6)
    figures = {name: stats(s) for name, s in samples.items()}
    floor = figures["python -c pass"]
    rows = [
        row(name, "ms", st, f"{BIG:,} stored, 50 listed" if name != "python -c pass" else "floor")
        for name, st in figures.items()
    ]
    for name in commands:
        if name != "python -c pass":
            rows.append(ratio_row(f"{name} / python -c pass", figures[name], floor, "goal <= 2x"))
    rows.append(row("conversations/list round trip", "ms", stats(rtt),
                    "the daemon's share: one connected client, limit 50"))  # fmt: skip
    if script is None:
        rows.append(row("acpd ls --json (script)", "ms", {}, "no `acpd` script installed"))
    return rows


if __name__ == "__main__":
    from tests.bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
