"""Chromium against the dashboard, for the browser tests: launching it, a page, running code on
the trio side from the browser's thread, and changing the fake engine as a test goes.

Playwright's sync API drives the browser from a worker thread (`trio.to_thread`); the engine is
changed on the trio thread (`trio.from_thread`). Every wait is bounded. Chromium is Debian's
(`scripts/install-system-deps`); without it a test skips and says why.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

from daemon.server.dashboard import serve_dashboard
from daemon.server.dispatch import DaemonInfo, Dispatcher
from tests.fakes.engine import FakeEngine

if TYPE_CHECKING:
    from playwright.sync_api import Page


REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
WAIT_MS = 15_000  # each browser wait; the whole test stays well under a minute


def require_browser() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("no chromium: run scripts/install-system-deps (apt-get install chromium)")
    pytest.importorskip(
        "playwright.sync_api", reason="no playwright: run scripts/install-system-deps"
    )


async def browse_in_process(
    tmp_path: Path, engine: FakeEngine, conv_id: str, browse: Callable[[str], None]
) -> None:
    """Serve the dashboard in process over `engine` and run `browse(link)` in a worker thread,
    with a link that signs in and opens `conv_id`."""
    dispatcher = Dispatcher(engine, DaemonInfo(tmp_path, "0", 0.0))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5):
            url = await nursery.start(serve_dashboard, "127.0.0.1:0", dispatcher, tmp_path)
        token = (tmp_path / "dashboard.token").read_text().strip()
        await trio.to_thread.run_sync(browse, f"{url}#c={conv_id}&token={token}")
        nursery.cancel_scope.cancel()


PHONE = {"width": 390, "height": 844}
# Records every notification the page creates, then creates it as usual.
RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      window.__notes.push({ title, body: options?.body ?? "" });
    }
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Recorded;
})();
"""


PERMISSION = {
    "request": "r1", "title": "Touch a file", "prompt_seq": 1,
    "options": [{"option_id": "allow", "name": "Allow", "kind": "allow_once"},
                {"option_id": "reject", "name": "Reject", "kind": "reject_once"}],
    "deadline": "2999-01-01T00:00:00.000Z",
}  # fmt: skip


@contextmanager
def open_page(**context: Any) -> Iterator[Page]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(**context)
            page = ctx.new_page()
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            yield page
            assert errors == [], errors
        finally:
            browser.close()


def on_trio(fn: Callable[[], Any]) -> Any:
    return trio.from_thread.run_sync(fn)


def eventually(fn: Callable[[], list[Any]], timeout: float = 10.0) -> list[Any]:
    """`fn()` run on the daemon's loop until it gives something (at most `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not (found := on_trio(fn)) and time.monotonic() < deadline:
        time.sleep(0.02)  # a browser round trip: polled, bounded, like playwright's expect
    result: list[Any] = found
    return result


def change(engine: FakeEngine, conv_id: str, **fields: Any) -> None:
    def apply() -> None:
        info = engine.convs[conv_id]
        last_seq = len(engine.stored[conv_id])
        engine.convs[conv_id] = msgspec.structs.replace(info, last_seq=last_seq, **fields)

    on_trio(apply)


def publish(engine: FakeEngine, conv_id: str, type_: str, **body: Any) -> None:
    on_trio(lambda: engine.publish(conv_id, type_, **body))


def no_sideways_scroll(page: Page) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(widths[:2]) <= widths[2], f"scrolls sideways: {widths}"


def in_thumb_reach(page: Page, selector: str) -> None:
    """In the bottom third of the screen, and at least 44 px high (a finger, not a cursor)."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["y"] >= PHONE["height"] * 2 / 3, (selector, box)
    assert box["y"] + box["height"] <= PHONE["height"], (selector, box)
    assert box["height"] >= 44, (selector, box)


def raw_json(value: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value))


def calls_of(engine: FakeEngine, method: str) -> list[tuple[object, ...]]:
    """The fake engine's calls of `method`, once at least one has arrived (bounded wait)."""
    return eventually(lambda: [c for c in engine.calls if c[0] == method])


def shown_seqs(page: Page) -> list[int]:
    """The seqs of the events the page shows, in its order."""
    return [int(s) for s in page.eval_on_selector_all(
        "#events li[data-seq]", "els => els.map(e => e.dataset.seq)")]  # fmt: skip
