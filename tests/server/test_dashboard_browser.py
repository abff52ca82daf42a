"""The dashboard end to end: a real daemon process, the demo agent, headless Chromium.

Playwright's sync API drives the browser from a worker thread (`trio.to_thread`), so the trio
side can manage the daemon meanwhile; the browser thread asks it to stop and restart the daemon
through `trio.from_thread`. Every browser wait is an event-driven Playwright wait with its own
timeout (no sleeps); `fail_after` guards the daemon's side. Chromium is Debian's
(`scripts/install-system-deps`); without it the test skips and says why.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from daemon.server.tokens import create_login_code
from tests.fakes.engine import LineClient
from tests.server.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    WAIT_MS,
    require_browser,
    shown_seqs,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.subprocess

EXTRA_CONVERSATIONS = 55  # more than one page of the list (50)


@attrs.define(eq=False)
class Daemon:
    tmp: Path
    port: int = 0  # 0 until the first start: then the same port again, so the page reconnects
    proc: trio.Process | None = None
    stderr: bytearray = attrs.field(factory=bytearray)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def data_dir(self) -> Path:
        return self.tmp / "data"

    @property
    def socket(self) -> Path:
        return self.tmp / "run" / "acpd.sock"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        defaults = self.tmp / "defaults.toml"
        defaults.touch()
        env.update(
            ACPD_CONFIG=str(defaults),  # the defaults, whatever the host has
            ACPD_DEMO_DIR=str(self.tmp / "demo"),
            ACPD_DEMO_DELAY="0.1",
        )
        return env

    async def start(self, nursery: trio.Nursery) -> str:
        """Start the daemon; returns the dashboard URL it logged."""
        cmd = [sys.executable, "-m", "daemon.server", "serve", "--data-dir", str(self.data_dir),
               "--socket", str(self.socket), "--ws", f"127.0.0.1:{self.port}"]  # fmt: skip
        self.stderr = bytearray()
        self.proc = await nursery.start(partial(
            trio.run_process, cmd, stderr=subprocess.PIPE, check=False, env=self.env(), cwd=REPO,
        ))  # fmt: skip
        nursery.start_soon(self._drain, self.proc)
        await self.wait_for(b"ready")
        found = re.search(rb"dashboard at (http://127\.0\.0\.1:(\d+)/)", self.stderr)
        assert found is not None, f"no dashboard in the log:\n{self.stderr.decode()}"
        self.port = int(found[2])
        return found[1].decode()

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert await self.proc.wait() == 0, self.stderr.decode()

    async def _drain(self, proc: trio.Process) -> None:
        assert proc.stderr is not None
        async for chunk in proc.stderr:
            self.stderr += chunk
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, needle: bytes) -> None:
        assert self.proc is not None
        while needle not in self.stderr:
            if self.proc.returncode is not None:
                raise AssertionError(f"daemon exited: {self.stderr.decode()}")
            await self._changed.wait()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        client = LineClient(await trio.open_unix_socket(str(self.socket)))
        async with client.stream:
            reply = await client.call(method, params)
        assert "result" in reply, reply
        return reply["result"]


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Daemon, trio.Nursery]]:
    daemon = Daemon(tmp_path)
    async with trio.open_nursery() as nursery:
        try:
            yield daemon, nursery
        finally:
            if daemon.proc is not None and daemon.proc.returncode is None:
                daemon.proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(15) as cleanup:
                    cleanup.shield = True
                    await daemon.proc.wait()


async def test_dashboard_end_to_end(tmp_path: Path) -> None:
    require_browser()
    async with running(tmp_path) as (daemon, nursery):
        with trio.fail_after(20):
            url = await daemon.start(nursery)
            status = await daemon.call("daemon/status")
            assert status["dashboard_url"] == url
            for i in range(EXTRA_CONVERSATIONS):  # so that the list has a second page
                params = {"cwd": str(tmp_path), "title": f"old {i}"}
                await daemon.call("conversations/create", params)
        token = (daemon.data_dir / "dashboard.token").read_text().strip()
        # As `acpd dashboard --open` does: a single-use code, never the token, on the browser's
        # command line; the page trades it for the token.
        code = create_login_code(daemon.data_dir)

        async def restart() -> None:
            with trio.fail_after(20):
                await daemon.stop()
                await daemon.start(nursery)

        def stop_and_start() -> None:
            trio.from_thread.run(restart)

        await trio.to_thread.run_sync(
            partial(browse, f"{url}#code={code}", token, tmp_path, stop_and_start)
        )


def browse(link: str, token: str, cwd: Path, restart: Callable[[], None]) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # CSP violations and failed loads show up as console errors; refused reconnects
            # while the daemon restarts are expected.
            page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                    and "ERR_CONNECTION_REFUSED" not in m.text else None)  # fmt: skip
            try:
                _scenario(page, link, token, cwd, restart)
            finally:
                page.screenshot(path=str(ARTIFACTS / "dashboard-e2e.png"))
        finally:
            browser.close()
    assert errors == [], errors


def _scenario(page: Page, link: str, token: str, cwd: Path, restart: Callable[[], None]) -> None:
    from playwright.sync_api import expect

    # The code leaves the address bar; the token it was traded for stays in sessionStorage
    # (this tab only), for reconnects.
    page.goto(link)
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    assert "code=" not in page.url
    assert page.evaluate("sessionStorage.getItem('acpd.token')") == token

    # The list is paged: 50 first, the rest behind "More".
    items = page.locator("#list li")
    expect(items).to_have_count(50)
    page.get_by_role("button", name="More").click()
    expect(items).to_have_count(EXTRA_CONVERSATIONS)
    expect(page.locator("#more")).to_be_hidden()

    # A new conversation with the demo agent.
    page.get_by_role("button", name="New conversation").click()
    page.locator("#new-agent").select_option("demo")
    page.locator("#new-cwd").fill(str(cwd))
    page.locator("#new-title").fill("Dashboard test")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#conv-title")).to_have_text("Dashboard test")
    expect(items.first).to_contain_text("Dashboard test")  # newest activity first
    composer = page.get_by_role("textbox", name="Message")
    expect(composer).to_be_focused()

    # Send with Enter; the reply streams in and is then shown once, as the stored message.
    composer.fill("hello dashboard")
    composer.press("Enter")
    expect(composer).to_have_value("")
    agent_messages = page.locator("#events li.msg.agent")
    expect(agent_messages).to_have_count(1)
    expect(agent_messages.first).to_contain_text("hello dashboard")
    expect(page.locator("#conv-status")).to_have_text("idle")
    expect(page.locator("#live > *")).to_have_count(0)

    # A slow turn streams; messages sent meanwhile are queued: shown in the queue panel,
    # removable, and never in the timeline above the reply that streams.
    user_messages = page.locator("#events li.msg.user")
    composer.fill("/slow 60")
    composer.press("Enter")
    streaming = page.locator("#live .msg.streaming .text")
    expect(streaming).to_contain_text("3 ")
    expect(page.locator("#conv-status")).to_have_text("running")
    composer.fill("first queued")
    composer.press("Enter")
    composer.fill("second queued, then removed")
    composer.press("Enter")
    queue = page.locator("#queue-list li")
    expect(queue).to_have_count(2)
    expect(page.locator("#queue-title")).to_have_text(
        "Queued (2): each runs when the turn before it ends."
    )
    expect(streaming).to_contain_text("5 ")  # still streaming, below the last user message
    expect(user_messages).to_have_count(2)
    expect(user_messages.last).to_contain_text("/slow 60")
    page.screenshot(path=str(ARTIFACTS / "dashboard-e2e-running.png"))
    page.get_by_role("button", name="Remove queued message: second queued").click()
    expect(queue).to_have_count(1)
    expect(queue.first).to_contain_text("first queued")
    # Removed: never in the timeline as a message; a line says which one left the queue.
    expect(page.locator("#events li.meta.removed")).to_have_text(
        "message 4 removed from the queue: “second queued, then removed”"
    )

    # Esc interrupts: the turn ends cancelled, the queue pauses, the partial reply shows once,
    # and the page says what a send does now.
    composer.press("Escape")
    expect(page.locator("#events li.meta.warn", has_text="cancelled")).to_be_visible()
    expect(page.locator("#conv-status")).to_have_text("paused")
    expect(page.locator("#live > *")).to_have_count(0)
    expect(agent_messages).to_have_count(2)
    expect(agent_messages.nth(1)).to_contain_text("1 2 3")
    expect(queue).to_have_count(1)
    expect(page.locator("#queue-title")).to_have_text(
        "Interrupted. The queue is paused: Resume, or send a message, to run the 1 queued."
    )

    # A message sent now resumes the queue: the queued one runs first, then the new one, each
    # shown where its turn starts.
    composer.fill("/echo sent while paused")
    composer.press("Enter")
    expect(agent_messages).to_have_count(4)
    expect(agent_messages.nth(2)).to_contain_text("first queued")
    expect(agent_messages.nth(3)).to_contain_text("sent while paused")
    expect(page.locator("#queue")).to_be_hidden()
    expect(page.locator("#conv-status")).to_have_text("idle")
    texts = page.locator("#events li.msg").all_inner_texts()
    firsts = [i for i, t in enumerate(texts) if "first queued" in t]
    pauses = [i for i, t in enumerate(texts) if "sent while paused" in t]
    assert (len(firsts), len(pauses)) == (2, 2), texts  # each: the message, then its reply
    assert (firsts[1], pauses[0], pauses[1]) == (firsts[0] + 1, firsts[1] + 1, pauses[0] + 1), texts

    # The Interrupt button does what Esc does; Resume with nothing queued just unpauses.
    interrupt = page.get_by_role("button", name="Interrupt")
    expect(interrupt).to_be_disabled()
    composer.fill("/slow 60")
    composer.press("Enter")
    expect(page.locator("#live .msg.streaming .text")).to_contain_text("2 ")
    interrupt.click()
    expect(page.locator("#events li.meta.warn", has_text="cancelled")).to_have_count(2)
    expect(page.locator("#conv-status")).to_have_text("paused")
    expect(agent_messages).to_have_count(5)
    expect(page.locator("#queue-title")).to_have_text(
        "Interrupted. The queue is paused. Nothing is queued: a message you send runs at once."
    )
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#conv-status")).to_have_text("idle")

    # A permission request: buttons with a deadline; the answer reaches the agent.
    composer.fill("may I have your permission?")
    composer.press("Enter")
    card = page.locator("#events li.permission")
    expect(card.locator(".deadline")).to_contain_text("answer by")
    page.screenshot(path=str(ARTIFACTS / "dashboard-e2e-permission.png"))
    card.get_by_role("button", name=re.compile("^Allow")).click()
    expect(card).to_have_class(re.compile("settled"))
    expect(card.locator(".deadline")).to_contain_text("answered: Allow")
    expect(agent_messages).to_have_count(6)
    expect(page.locator("#conv-status")).to_have_text("idle")

    # Steering, and the queue's other verbs: while a turn runs, queued messages are edited in
    # place and reordered, and a steer goes into the running turn (the demo agent steers).
    steer = page.get_by_role("button", name="Steer")
    expect(steer).to_be_disabled()  # nothing runs: nothing to steer
    composer.fill("/slow 60")
    composer.press("Enter")
    expect(page.locator("#live .msg.streaming .text")).to_contain_text("2 ")
    expect(steer).to_be_enabled()
    composer.fill("/echo alpha")
    composer.press("Enter")
    composer.fill("/echo beta")
    composer.press("Enter")
    expect(queue).to_have_count(2)
    page.get_by_role("button", name="Edit queued message: /echo beta").click()
    box = page.get_by_role("textbox", name=re.compile("^New text of queued message"))
    box.fill("/echo beta, edited")
    box.press("Enter")
    expect(queue.nth(1)).to_contain_text("/echo beta, edited")
    page.get_by_role("button", name="Move up: /echo beta, edited").click()
    expect(queue.first).to_contain_text("/echo beta, edited")
    expect(page.get_by_role("button", name="Move up: /echo beta, edited")).to_be_disabled()
    composer.fill("go left")
    steer.click()
    expect(page.locator("#events li.msg.user.steered")).to_contain_text("go left")
    expect(page.locator("#live .msg.streaming .text")).to_contain_text("(steered: go left)")
    expect(queue).to_have_count(2)  # a steer the agent took is not queued
    page.screenshot(path=str(ARTIFACTS / "dashboard-e2e-steer.png"))
    # The queue runs in its new order, with the new text; the steer never on its own.
    expect(agent_messages).to_have_count(9)
    expect(agent_messages.nth(6)).to_contain_text("(steered: go left)")
    expect(agent_messages.nth(7)).to_contain_text("beta, edited")
    expect(agent_messages.nth(8)).to_contain_text("alpha")
    expect(page.locator("#queue")).to_be_hidden()
    expect(steer).to_be_disabled()

    # The daemon restarts, a permission request open: the page reconnects by itself and
    # resubscribes from the last seq; the request's card stops offering its buttons and says
    # how it ended.
    composer.fill("a last permission, please")
    composer.press("Enter")
    card = page.locator("#events li.permission").last
    expect(card.get_by_role("button", name=re.compile("^Allow"))).to_be_visible()
    seqs_before = shown_seqs(page)
    restart()
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    expect(card).to_have_class(re.compile("settled"))
    expect(card.get_by_role("button")).to_have_count(0)
    # (A daemon that stops cancels the turn, and so its requests, and records it.)
    expect(card.locator(".deadline")).to_have_text("cancelled: the turn was interrupted")
    composer.fill("/echo after the restart")
    composer.press("Enter")
    expect(agent_messages).to_have_count(10)
    expect(agent_messages.nth(9)).to_contain_text("after the restart")
    expect(page.locator("#conv-status")).to_have_text("idle")
    expect(page.locator("#queue")).to_be_hidden()
    seqs = shown_seqs(page)
    assert seqs[: len(seqs_before)] == seqs_before
    assert len(seqs) == len(set(seqs)), "an event was shown twice"
    # In seq order, except that a message shows where its turn started (after what ran
    # before it): the other events alone are in order.
    others = [int(s) for s in page.eval_on_selector_all(
        "#events li[data-seq]:not(.user)", "els => els.map(e => e.dataset.seq)")]  # fmt: skip
    assert others == sorted(others), "an event was shown out of order"
