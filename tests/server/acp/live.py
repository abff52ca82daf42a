"""A real `acpd serve` (demo agent) for the end-to-end tests of `acpd acp`, and the tapped
command line that SDK clients spawn as their agent, whose traffic is then schema-checked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.client import Client, ClientError
from tests.protocol._schema import assert_valid, assert_valid_sent, requests_in

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 60.0  # hang guard of each step: far above what any takes


class LiveDaemon:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.socket = str(tmp / "s.sock")
        self.taps = tmp / "taps"
        self.taps.mkdir()
        self.work = tmp / "work"
        self.work.mkdir()
        config = tmp / "config.toml"
        config.write_text("# the defaults, not the user's\n")
        self.env = {
            **os.environ,
            "ACPD_CONFIG": str(config),
            "ACPD_SOCKET": str(tmp / "not-this.sock"),  # --socket must win
            "ACPD_DEMO_DIR": str(tmp / "demo"),
            "ACPD_DEMO_DELAY": "0.02",
        }
        self.log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "serve", "--data-dir", str(tmp / "data"),
             "--socket", self.socket, "--no-ws"],
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with Client(self.socket) as client:
                    client.call("daemon/status")
                return
            except ClientError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"acpd serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
            assert time.monotonic() < deadline, "acpd serve did not start"
            time.sleep(0.02)

    def acp_argv(self) -> list[str]:
        """`acpd acp` as an ACP client spawns it, through the tap."""
        tap = str(Path(__file__).with_name("_tap.py"))
        return [sys.executable, tap, str(self.taps), "--", sys.executable, "-m", "daemon.cli",
                "acp", "--socket", self.socket]  # fmt: skip

    def acpd(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args, "--socket", self.socket],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=self.env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with Client(self.socket) as client:
            return client.call(method, params)

    def wait_turns(self, conv: str, n: int) -> list[dict[str, Any]]:
        """The conversation's events once `n` turns have ended (polled, bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            events = self.call("conversations/events", {"id": conv, "limit": 1000})["events"]
            if sum(e["type"] == "turn_ended" for e in events) >= n:
                return list(events)
            assert time.monotonic() < deadline, f"{n} turns did not end: {events}"
            time.sleep(0.05)

    def check_traffic(self) -> int:
        """Every message each tapped `acpd acp` sent is valid ACP; returns how many."""
        checked = 0
        for out in sorted(self.taps.glob("*.out")):
            sent, received = out.read_bytes(), out.with_suffix(".in").read_bytes()
            assert sent.endswith(b"\n") or not sent, "a partial line was sent"
            requests = requests_in(received)
            for line in sent.splitlines():
                msg = json.loads(line)
                if "error" in msg and msg.get("id") not in requests:
                    assert_valid(msg["error"], "Error")
                else:
                    assert_valid_sent(msg, sender="agent", requests=requests)
                checked += 1
        return checked

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    daemon = LiveDaemon(tmp_path_factory.mktemp("acp-live"))
    try:
        yield daemon
        assert daemon.check_traffic() > 0
    finally:
        daemon.stop()
