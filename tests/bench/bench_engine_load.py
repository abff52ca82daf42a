"""Engine under load (issue 18): agent slots, the control path, shutdown; through a real daemon.

- Send ack beside a flood: `messages/send` round trips on one conversation (the demo agent,
  `/echo`, so each send also runs a short turn) while another conversation's agent floods
  chunks flat out to a subscriber; the same sends with that agent idle, for the ratio.
- `daemon/status` while 200 conversations start agents at once, with `max_agents` 8 and 200:
  its round trips from another client, from the first send until every turn has ended; the
  sends' own round trips too.
- 1,000 conversations given one message each: the most agent processes alive at once (polled
  from `daemon/status` and from the agents' run files), the time until every turn has ended,
  and the daemon's RSS (peak: VmHWM).
- SIGTERM with 50 live agents: idle, with a turn streaming in each, and hung (deaf to the
  cancel and to SIGTERM, with a drain_timeout longer than the grace): signal to exit.

`python -m tests.bench.bench_engine_load [--quick] [--compare DIR]` runs them here and, with
`--compare`, also on the checkout in DIR (e.g. `git archive main | tar -x -C DIR`), row by
row in the same sitting. The uncapped 1,000-agent run is never made: on a machine with less
than ~30 GB it would exhaust memory (the reason for the cap); a checkout without `max_agents`
runs that row with 200 conversations instead. Run with `python -m tests.bench.run --only engine`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon.cli.client import Client
from tests.bench._common import ROOT, Daemon, ratio_row, row, running_daemon, stats, subscriber

FLOOD = [sys.executable, str(Path(__file__).with_name("_flood_agent.py"))]
DEMO = [sys.executable, "-m", "daemon.agents.demo"]
POLL = 0.01  # between two `daemon/status` calls of the poller


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode() + b"\n"


@contextmanager
def _daemon(root: Path, tmp: Path, name: str, config: str = "") -> Iterator[Daemon]:
    data = tmp / name
    data.mkdir(mode=0o700)
    env = {"ACPD_DEMO_DIR": str(tmp / f"{name}-demo"), "ACPD_DEMO_DELAY": "0.01"}
    with running_daemon(data, tmp / f"{name}.sock", env=env, config=config, root=root) as d:
        yield d


def _has_slots(root: Path) -> bool:
    # A checkout's config is one module (older) or a package whose `settings` holds `Config`.
    config = root / "daemon" / "config"
    source = config / "settings.py" if config.is_dir() else config.with_suffix(".py")
    return "max_agents" in source.read_text()


def _create(client: Client, tmp: Path, argv: list[str], title: str) -> str:
    new = {"agent_cmd": argv, "cwd": str(tmp), "title": title}
    cid: str = client.call("conversations/create", new)["conversation"]["id"]
    return cid


def _status_of(client: Client, cid: str) -> str:
    status: str = client.call("conversations/get", {"id": cid})["conversation"]["status"]
    return status


def _wait_all_done(client: Client, count: int, *, timeout: float = 900.0) -> None:
    """Until every conversation has no queued message and no turn or start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        convs = client.call("conversations/list", {"limit": 1000})["conversations"]
        busy = [c for c in convs if c["queued"] or c["status"] not in ("idle", "paused", "failed")]
        if len(convs) >= count and not busy:
            return
        time.sleep(0.1)
    raise RuntimeError("the conversations did not finish in time")


class _Poller:
    """`daemon/status` from its own connection every POLL seconds, in a thread: round trips
    (ms), the most agents seen running, and the most agent run files seen."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.samples: list[float] = []
        self.peak_agents = 0
        self.peak_groups = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with Client(self._daemon.socket) as client:
            while not self._stop.is_set():
                start = time.perf_counter_ns()
                result = client.call("daemon/status")
                self.samples.append((time.perf_counter_ns() - start) / 1e6)
                self.peak_agents = max(self.peak_agents, result["agents_running"])
                run = Path(result["data_dir"]) / "run"
                try:
                    groups = sum(1 for n in os.listdir(run) if n.startswith("agent-"))
                except OSError:
                    groups = 0
                self.peak_groups = max(self.peak_groups, groups)
                time.sleep(POLL)


# --- send ack beside a flood ----------------------------------------------------------------


def send_ack_beside_flood(root: Path, tmp: Path, samples: int) -> tuple[list[float], list[float]]:
    """(idle, flooding) `messages/send` round trips in ms."""
    with _daemon(root, tmp, "ack") as daemon, Client(daemon.socket) as client:
        flood = _create(client, tmp, FLOOD, "flood")
        quiet = _create(client, tmp, DEMO, "quiet")
        with subscriber(daemon, flood):
            for cid, text in ((flood, "10"), (quiet, "/echo warm")):  # both agents up
                client.call("messages/send", {"id": cid, "text": text})
            while {_status_of(client, flood), _status_of(client, quiet)} != {"idle"}:
                time.sleep(0.01)

            def sample() -> list[float]:
                out: list[float] = []
                for i in range(samples):
                    start = time.perf_counter_ns()
                    client.call("messages/send", {"id": quiet, "text": f"/echo {i}"})
                    out.append((time.perf_counter_ns() - start) / 1e6)
                    time.sleep(0.005)  # a person types slower; each send runs a short turn
                return out

            idle = sample()
            client.call("messages/send", {"id": flood, "text": "50000000"})
            time.sleep(0.3)  # streaming now
            busy = sample()
            if _status_of(client, flood) != "running":
                raise RuntimeError("the flood ended before the samples did")
            client.call("conversations/delete", {"id": flood})
    return idle, busy


# --- daemon/status while many conversations start agents ------------------------------------


def status_while_starting(
    root: Path, tmp: Path, count: int, max_agents: int | None, name: str
) -> tuple[_Poller, list[float], float]:
    """(the poller, send round trips in ms, seconds until every turn ended)."""
    config = f"max_agents = {max_agents}\n" if max_agents is not None else ""
    with _daemon(root, tmp, name, config) as daemon, Client(daemon.socket) as client:
        ids = [_create(client, tmp, DEMO, f"c{i}") for i in range(count)]
        sends: list[float] = []
        with _Poller(daemon) as poller:
            began = time.perf_counter()
            for cid in ids:
                start = time.perf_counter_ns()
                client.call("messages/send", {"id": cid, "text": "/echo hi"})
                sends.append((time.perf_counter_ns() - start) / 1e6)
            _wait_all_done(client, count)
            took = time.perf_counter() - began
    return poller, sends, took


def thousand(root: Path, tmp: Path, count: int, name: str) -> tuple[_Poller, float, int, int]:
    """(the poller, seconds until every turn ended, daemon peak RSS KiB, RSS KiB at the end)."""
    with _daemon(root, tmp, name) as daemon, Client(daemon.socket) as client:
        ids = [_create(client, tmp, DEMO, f"c{i}") for i in range(count)]
        with _Poller(daemon) as poller:
            began = time.perf_counter()
            for cid in ids:
                client.call("messages/send", {"id": cid, "text": "/echo hi"})
            _wait_all_done(client, count)
            took = time.perf_counter() - began
        status = Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines()
        fields = {k: v for k, _, v in (line.partition(":") for line in status)}
        hwm, rss = int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])
    return poller, took, hwm, rss


# --- SIGTERM with many live agents -----------------------------------------------------------


# The demo agent deaf to SIGTERM, with a child in its group that outlives it (as a real agent's
# tool would), deaf too: stopping the group takes the SIGKILL.
STUBBORN = ["sh", "-c", "trap '' TERM; sleep 300 & exec " + " ".join(map(shlex.quote, DEMO))]
# What each conversation's turn does when SIGTERM comes: none (idle agents), a stream that
# honours the cancel, or a hang that ignores it (and SIGTERM, and drains for longer than the
# grace: only the kill ends it).
TURNS = {"idle": None, "streaming": "/slow 10000", "hung": "/hang"}


def sigterm(root: Path, tmp: Path, count: int, *, turn: str, name: str) -> tuple[float, int]:
    """(seconds from SIGTERM to exit, agent groups left alive) with `count` live agents."""
    config = f"max_agents = {count}\n" if _has_slots(root) else ""
    if turn == "hung":
        config += "drain_timeout = 30.0\n"
    argv = STUBBORN if turn == "hung" else DEMO
    leftover = 0
    with _daemon(root, tmp, name, config) as daemon:
        with Client(daemon.socket) as client:
            ids = [_create(client, tmp, argv, f"c{i}") for i in range(count)]
            for cid in ids:
                client.call("messages/send", {"id": cid, "text": "/echo hi"})
            _wait_all_done(client, count)
            if (text := TURNS[turn]) is not None:  # /slow: 100 s of chunks at 0.01 s each
                for cid in ids:
                    client.call("messages/send", {"id": cid, "text": text})
                while any(_status_of(client, cid) != "running" for cid in ids):
                    time.sleep(0.05)
            running = client.call("daemon/status")["agents_running"]
            if running != count:
                raise RuntimeError(f"{running} agents running, expected {count}")
        groups = _children(daemon.proc.pid)  # each agent leads a process group of its own
        start = time.perf_counter()
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.wait(timeout=120)
        took = time.perf_counter() - start
        for pgid in groups:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                continue
            leftover += 1
            os.killpg(pgid, signal.SIGKILL)
    return took, leftover


def _children(pid: int) -> list[int]:
    """Pids of `pid`'s children (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                out.append(int(name))
    return out


# --- the table -------------------------------------------------------------------------------


def _one(value: float) -> dict[str, Any]:
    return {"median": value, "min": value, "max": value, "runs": 1}


def rows_for(root: Path, label: str, quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    slots = _has_slots(root)
    with tempfile.TemporaryDirectory(prefix="acpd-bench-load-") as d:
        tmp = Path(d)
        idle, busy = send_ack_beside_flood(root, tmp, 100 if quick else 400)
        si, sb = stats(idle), stats(busy)
        rows.append(row(f"[{label}] send ack, other conversations idle", "ms", si,
                        f"p99 {si['p99']:.2f}"))  # fmt: skip
        rows.append(row(f"[{label}] send ack, another conversation flooding", "ms", sb,
                        f"p99 {sb['p99']:.2f} (goal <= 5)"))  # fmt: skip
        p99 = sb["p99"] / si["p99"]
        rows.append(ratio_row(f"[{label}] send ack flooding / idle", sb, si,
                              f"p99 ratio {p99:.2f} (goal <= 2)"))  # fmt: skip
        count = 50 if quick else 200
        for cap in (8, count) if slots else (None,):
            poller, sends, took = status_while_starting(root, tmp, count, cap, f"start-{cap}")
            st, ss = stats(poller.samples), stats(sends)
            what = f"max_agents {cap}" if cap is not None else "no cap"
            rows.append(row(f"[{label}] daemon/status while {count} start, {what}", "ms", st,
                            f"p99 {st['p99']:.2f} (goal <= 20); peak agents "
                            f"{poller.peak_agents}"))  # fmt: skip
            rows.append(row(f"[{label}] send while {count} start, {what}", "ms", ss,
                            f"p99 {ss['p99']:.2f}; all turns ended in {took:.1f} s"))  # fmt: skip
        many = (200 if quick else 1000) if slots else (50 if quick else 200)
        poller, took, hwm, rss = thousand(root, tmp, many, "many")
        what = "default max_agents" if slots else "no cap"
        rows.append(row(f"[{label}] {many:,} conversations x 1 message ({what}): peak agents",
                        "agents", _one(poller.peak_agents),
                        f"run files seen at once: {poller.peak_groups}"))  # fmt: skip
        rows.append(row(f"[{label}] {many:,} x 1 message: every turn ended", "s", _one(took)))
        rows.append(row(f"[{label}] {many:,} x 1 message: daemon peak RSS", "KiB", _one(hwm),
                        f"at the end {rss:,} KiB"))  # fmt: skip
        count = 20 if quick else 50
        for turn, what in (("idle", "idle"), ("streaming", "each streaming a turn"),
                           ("hung", "hung, deaf to cancel and SIGTERM")):  # fmt: skip
            took, left = sigterm(root, tmp, count, turn=turn, name=f"term-{turn}")
            rows.append(row(f"[{label}] SIGTERM to exit, {count} live agents {what}", "s",
                            _one(took), f"shutdown_grace 10; groups left: {left}"))  # fmt: skip
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    return rows_for(ROOT, "here", quick)


def main(argv: list[str]) -> None:
    from tests.bench.run import table

    quick = "--quick" in argv
    compare = Path(argv[argv.index("--compare") + 1]) if "--compare" in argv else None
    rows: list[dict[str, Any]] = []
    if compare is not None:
        rows += rows_for(compare.resolve(), "before", quick)
    rows += rows_for(ROOT, "after" if compare is not None else "here", quick)
    print(f"# {os.cpu_count()} CPUs; {subprocess.getoutput('uptime')}", file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
