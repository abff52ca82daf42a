"""The dashboard in Chromium against the in-process server and the fake engine: a phone-sized
screen, notifications and the title's count, and the order of a replayed history.

The fake engine lets the test make things happen in other conversations (a permission request,
a turn's end, a failure) exactly when it wants; every browser wait is Playwright's own, with a
timeout, and the engine is changed on the trio thread (`trio.from_thread`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import trio

from daemon.config import DashboardExposure
from daemon.server.dashboard import serve_dashboard
from daemon.server.dispatch import DaemonInfo, Dispatcher
from tests.fakes.engine import FakeEngine
from tests.server.test_dashboard_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    WAIT_MS,
    _browse_in_process,
    _require_browser,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

PHONE = {"width": 390, "height": 844}
LONG_WORD = "x" * 300  # one unbroken word, far wider than a phone
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
def _page(**context: Any) -> Iterator[Page]:
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


def _on_trio(fn: Callable[[], Any]) -> Any:
    return trio.from_thread.run_sync(fn)


def _eventually(fn: Callable[[], list[Any]], timeout: float = 10.0) -> list[Any]:
    """`fn()` run on the daemon's loop until it gives something (at most `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not (found := _on_trio(fn)) and time.monotonic() < deadline:
        time.sleep(0.02)  # a browser round trip: polled, bounded, like playwright's expect
    result: list[Any] = found
    return result


def _change(engine: FakeEngine, conv_id: str, **fields: Any) -> None:
    def apply() -> None:
        info = engine.convs[conv_id]
        last_seq = len(engine.stored[conv_id])
        engine.convs[conv_id] = msgspec.structs.replace(info, last_seq=last_seq, **fields)

    _on_trio(apply)


def _publish(engine: FakeEngine, conv_id: str, type_: str, **body: Any) -> None:
    _on_trio(lambda: engine.publish(conv_id, type_, **body))


def _no_sideways_scroll(page: Page) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
    )
    assert max(widths[:2]) <= widths[2], f"scrolls sideways: {widths}"


def _in_thumb_reach(page: Page, selector: str) -> None:
    """In the bottom third of the screen, and at least 44 px high (a finger, not a cursor)."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["y"] >= PHONE["height"] * 2 / 3, (selector, box)
    assert box["y"] + box["height"] <= PHONE["height"], (selector, box)
    assert box["height"] >= 44, (selector, box)


def _engine_for_a_phone() -> FakeEngine:
    engine = FakeEngine()
    for i, conv_id in enumerate(["conv0001", "conv0002"]):
        info = engine.add(conv_id)
        engine.convs[conv_id] = msgspec.structs.replace(
            info, title=f"Conversation {i + 1} {LONG_WORD}", cwd=f"/home/someone/{LONG_WORD}",
            updated_at=f"2025-01-01T00:00:0{2 - i}.000Z",
        )  # fmt: skip
    for i in range(40):  # enough to scroll
        engine.publish("conv0001", "agent_message", text=f"line {i} {LONG_WORD}", prompt_seq=0)
    engine.publish("conv0001", "tool_call", tool_call_id="t1", title=f"Read {LONG_WORD}",
                   status="completed", prompt_seq=0)  # fmt: skip
    engine.convs["conv0001"] = msgspec.structs.replace(engine.convs["conv0001"], last_seq=41)
    return engine


async def test_a_phone_sized_screen(tmp_path: Path) -> None:
    """At 390x844: no sideways scroll however long the words; the list and a conversation are
    two views (tap, then Back or the back gesture); the composer and a permission request's
    buttons sit at the bottom, finger-sized, even while reading further up."""
    _require_browser()
    engine = _engine_for_a_phone()
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_phone, engine=engine))


def _phone(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with _page(viewport=PHONE, is_mobile=True, has_touch=True) as page:
        list_view, conv_view = page.locator("#list"), page.locator("#conv")
        page.goto(link.replace("#c=conv0001&", "#"))  # signed in, nothing chosen: the list
        items = page.locator("#list li")
        expect(items).to_have_count(2)
        expect(conv_view).to_be_hidden()
        _no_sideways_scroll(page)
        item = items.first.get_by_role("button")
        box = item.bounding_box()
        assert box is not None
        assert box["height"] >= 44

        item.tap()
        expect(page.locator("#conv-title")).to_contain_text("Conversation 1")
        expect(list_view).to_be_hidden()
        expect(page.locator("#events li.tool .title")).to_contain_text("Read")
        _no_sideways_scroll(page)
        _in_thumb_reach(page, "#input")
        _in_thumb_reach(page, "#composer button[type=submit]")
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-conversation.png"))

        # A permission request: its buttons at the bottom, and still there after scrolling up.
        _publish(engine, "conv0001", "permission_requested", **PERMISSION)
        allow = page.locator("#events li.permission").get_by_role("button", name="Allow")
        expect(allow).to_be_visible()
        _in_thumb_reach(page, "#events li.permission button.allow")
        page.locator("#timeline").evaluate("t => { t.scrollTop = 0; }")
        expect(page.locator("#events li.msg").first).to_be_in_viewport()
        _in_thumb_reach(page, "#events li.permission button.allow")
        _no_sideways_scroll(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-permission.png"))
        allow.tap()
        # The tap's call crosses the browser, the websocket and the daemon's loop: wait for
        # it to arrive (bounded, as `expect` does), rather than assume it already has.
        permits = _eventually(lambda: [c for c in engine.calls if c[0] == "permit"])
        assert permits == [("permit", "conv0001", "r1", "allow", False)]

        # Back to the list, by the button and by the phone's back gesture (history).
        page.get_by_role("button", name="Back to the conversations").tap()
        expect(list_view).to_be_visible()
        expect(conv_view).to_be_hidden()
        items.nth(1).get_by_role("button").tap()
        expect(page.locator("#conv-title")).to_contain_text("Conversation 2")
        page.go_back()
        expect(list_view).to_be_visible()
        expect(conv_view).to_be_hidden()
        page.go_forward()
        expect(page.locator("#conv-title")).to_contain_text("Conversation 2")
        expect(list_view).to_be_hidden()
        _no_sideways_scroll(page)


async def test_notifications_and_the_title_count(tmp_path: Path) -> None:
    """With notifications allowed (the browser's permission granted, then "Notify me"): a
    permission request, a turn's end and a failure in conversations not on screen each create
    a Notification; the title counts what waits until it is answered or looked at."""
    _require_browser()
    engine = FakeEngine()
    for conv_id, title, at in [("conv0001", "Open one", "02"), ("conv0002", "Elsewhere", "01"),
                               ("conv0003", "Fragile", "00")]:  # fmt: skip
        info = engine.add(conv_id)
        engine.convs[conv_id] = msgspec.structs.replace(
            info, title=title, status="running", updated_at=f"2025-01-01T00:00:{at}.000Z"
        )
    await _browse_in_process(tmp_path, engine, "conv0001", partial(_notify, engine=engine))


def _notify(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    origin = link.split("#")[0].rstrip("/")
    # bypass_csp: Playwright's polling `wait_for_function` evaluates a string (the page's
    # CSP, rightly, forbids that; the other tests keep it).
    with _page(permissions=["notifications"], bypass_csp=True) as page:
        page.context.grant_permissions(["notifications"], origin=origin)
        page.add_init_script(RECORD_NOTIFICATIONS)
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Open one")
        expect(page.locator("#list li")).to_have_count(3)
        expect(page).to_have_title("acpd")
        toggle = page.get_by_role("button", name="Notify me")
        toggle.click()  # the gesture that may ask for permission
        expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")

        def notes() -> list[dict[str, str]]:
            return page.evaluate("window.__notes")  # type: ignore[no-any-return]

        # A permission request elsewhere: a notification, a badge, a count in the title.
        _publish(engine, "conv0002", "permission_requested", **PERMISSION)
        _change(engine, "conv0002", open_requests=1)
        expect(page).to_have_title("(1) acpd")
        page.wait_for_function("window.__notes.length === 1")
        assert notes() == [{"title": "Elsewhere: waiting for you", "body": "Asks: Touch a file"}]
        expect(page.locator("#list li", has_text="Elsewhere")).to_contain_text("waits for you")

        # Answered, and the turn ends: the request no longer counts; the unseen end does.
        _publish(engine, "conv0002", "permission_resolved", request="r1", outcome="selected",
                 option="allow", by="user")  # fmt: skip
        _publish(engine, "conv0002", "turn_ended", prompt_seq=1, stop_reason="end_turn")
        _change(engine, "conv0002", open_requests=0, status="idle")
        page.wait_for_function("window.__notes.length === 2")
        assert notes()[1] == {"title": "Elsewhere: done", "body": "Turn ended."}
        expect(page).to_have_title("(1) acpd")

        # A failure elsewhere.
        _publish(engine, "conv0003", "error", message="agent exited")
        _change(engine, "conv0003", status="failed")
        page.wait_for_function("window.__notes.length === 3")
        assert notes()[2]["title"] == "Fragile: failed"
        expect(page).to_have_title("(2) acpd")

        # Looking at them clears the count; the open one's own turn end is on screen: no
        # notification for it.
        page.locator("#list li", has_text="Elsewhere").get_by_role("button").click()
        expect(page).to_have_title("(1) acpd")
        page.locator("#list li", has_text="Fragile").get_by_role("button").click()
        expect(page).to_have_title("acpd")
        _publish(engine, "conv0003", "turn_ended", prompt_seq=2, stop_reason="end_turn")
        _change(engine, "conv0003", status="idle")
        expect(page.locator("#events li.meta", has_text="turn ended")).to_have_count(1)
        expect(page).to_have_title("acpd")
        assert len(notes()) == 3
        page.screenshot(path=str(ARTIFACTS / "dashboard-notifications.png"))

        # Off again: nothing more is shown.
        page.get_by_role("button", name="Notifying").click()
        expect(page.locator("#notify")).to_have_attribute("aria-pressed", "false")


async def test_a_replay_keeps_the_live_order(tmp_path: Path) -> None:
    """Read back from the store, a conversation shows what the live view showed: a message that
    waited in the queue where its turn started (fetched when it is older than the page), not at
    its seq; a message still queued only in the queue panel; tool calls by title, also when
    the event with the title is on an earlier page; tool output a stored event carries."""
    _require_browser()
    engine = FakeEngine()
    engine.convs["conv0001"] = msgspec.structs.replace(engine.add("conv0001"), title="Replay")
    pub = partial(engine.publish, "conv0001")
    pub("user_message", text="first")  # 1
    pub("turn_started", prompt_seq=1)  # 2
    pub("tool_call", tool_call_id="t1", title="Run the tests", status="in_progress",
        prompt_seq=1)  # 3  # fmt: skip
    pub("user_message", text="queued meanwhile")  # 4: sent while turn 1 ran
    for i in range(120):  # 5..124: the first page (the last 100) starts at 25
        pub("agent_message", text=f"part {i}", prompt_seq=1)
    pub(
        "tool_call",
        tool_call_id="t1",
        title="",
        status="completed",
        prompt_seq=1,
        content=[{"type": "content", "content": {"type": "text", "text": "3 passed"}}],
    )  # 125
    pub("turn_ended", prompt_seq=1, stop_reason="end_turn")  # 126
    pub("turn_started", prompt_seq=4)  # 127
    pub("agent_message", text="the reply to the queued one", prompt_seq=4)  # 128
    pub("turn_ended", prompt_seq=4, stop_reason="end_turn")  # 129
    pub("user_message", text="still queued")  # 130
    engine.queues["conv0001"] = [(130, "still queued")]
    engine.convs["conv0001"] = msgspec.structs.replace(
        engine.convs["conv0001"], last_seq=130, queued=1, status="paused"
    )
    await _browse_in_process(tmp_path, engine, "conv0001", _replay)


def _replay(link: str) -> None:
    from playwright.sync_api import expect

    with _page(viewport={"width": 1000, "height": 700}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Replay")
        users = page.locator("#events li.msg.user")
        expect(users).to_have_count(1)
        expect(users.first).to_contain_text("queued meanwhile")
        texts = page.locator("#events > li:visible").all_inner_texts()
        at = next(i for i, t in enumerate(texts) if "queued meanwhile" in t)
        assert "turn ended" in texts[at - 1], texts[at - 2 : at + 2]
        assert "the reply to the queued one" in texts[at + 1]
        expect(page.locator("#queue-list li")).to_have_count(1)
        expect(page.locator("#queue-list li").first).to_contain_text("still queued")
        expect(page.locator("#queue-title")).to_have_text(
            "The queue is paused: Resume, or send a message, to run the 1 queued."
        )

        tool = page.locator("#events li.tool")
        expect(tool).to_have_count(1)
        expect(tool.locator(".title")).to_have_text("tool call")  # its title is further back
        expect(tool.locator(".tool-output pre")).to_have_text("3 passed")
        page.get_by_role("button", name="Load earlier").click()
        expect(page.locator("#earlier")).to_be_hidden()
        expect(tool.locator(".title")).to_have_text("Run the tests")
        expect(tool).to_have_attribute("data-status", "completed")  # the newer status stays
        expect(users).to_have_count(2)
        expect(users.first).to_contain_text("first")
        texts = page.locator("#events > li:visible").all_inner_texts()
        first = next(t for t in texts if "queued meanwhile" in t or "the reply" in t)
        assert first.startswith("you")


async def test_the_page_over_https(tmp_path: Path) -> None:
    """Served with a certificate, the page connects its websocket by wss:// (allowed by its
    CSP) and is a secure context, so notifications may be turned on."""
    _require_browser()
    trustme = pytest.importorskip("trustme", reason="a test dependency: pip install -e '.[test]'")
    leaf = trustme.CA().issue_cert("box.test", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    exposure = DashboardExposure(tls_cert=cert, tls_key=key)
    engine = FakeEngine()
    engine.convs["conv0001"] = msgspec.structs.replace(engine.add("conv0001"), title="Secure")
    dispatcher = Dispatcher(engine, DaemonInfo(tmp_path, "0", 0.0))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5):
            url = await nursery.start(
                partial(serve_dashboard, exposure=exposure), "127.0.0.1:0", dispatcher, tmp_path
            )
        assert url.startswith("https://127.0.0.1:")
        token = (tmp_path / "dashboard.token").read_text().strip()
        await trio.to_thread.run_sync(_secure, f"{url}#c=conv0001&token={token}")
        nursery.cancel_scope.cancel()


def _secure(link: str) -> None:
    from playwright.sync_api import expect

    # The test's CA is not the browser's: its certificate errors are waved through here.
    with _page(ignore_https_errors=True) as page:
        page.goto(link)
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        expect(page.locator("#conv-title")).to_have_text("Secure")
        assert page.evaluate("window.isSecureContext") is True
        expect(page.get_by_role("button", name="Notify me")).to_be_enabled()
