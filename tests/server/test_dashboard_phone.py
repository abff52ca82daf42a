"""The dashboard in Chromium against the in-process server and the fake engine: a phone-sized
screen, notifications and the title's count (a question elsewhere too), and the order of a replayed
history.

The fake engine lets the test make things happen in other conversations (a permission request,
a turn's end, a failure) exactly when it wants; every browser wait is Playwright's own, with a
timeout, and the engine is changed on the trio thread (`trio.from_thread`).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio

from daemon.config import DashboardExposure
from daemon.server.dashboard import serve_dashboard
from daemon.server.dispatch import DaemonInfo, Dispatcher
from tests.fakes.engine import FakeEngine
from tests.server.browser import (
    ARTIFACTS,
    PERMISSION,
    PHONE,
    RECORD_NOTIFICATIONS,
    browse_in_process,
    calls_of,
    change,
    eventually,
    in_thumb_reach,
    no_sideways_scroll,
    open_page,
    publish,
    require_browser,
)
from tests.server.sessiondata import question

LONG_WORD = "x" * 300  # one unbroken word, far wider than a phone


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
    require_browser()
    engine = _engine_for_a_phone()
    await browse_in_process(tmp_path, engine, "conv0001", partial(_phone, engine=engine))


def _phone(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with open_page(viewport=PHONE, is_mobile=True, has_touch=True) as page:
        list_view, conv_view = page.locator("#list"), page.locator("#conv")
        page.goto(link.replace("#c=conv0001&", "#"))  # signed in, nothing chosen: the list
        items = page.locator("#list li")
        expect(items).to_have_count(2)
        expect(conv_view).to_be_hidden()
        no_sideways_scroll(page)
        item = items.first.get_by_role("button")
        box = item.bounding_box()
        assert box is not None
        assert box["height"] >= 44

        item.tap()
        expect(page.locator("#conv-title")).to_contain_text("Conversation 1")
        expect(list_view).to_be_hidden()
        expect(page.locator("#events li.tool .title")).to_contain_text("Read")
        no_sideways_scroll(page)
        in_thumb_reach(page, "#input")
        in_thumb_reach(page, "#composer button[type=submit]")
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-conversation.png"))

        # A permission request: its buttons at the bottom, and still there after scrolling up.
        publish(engine, "conv0001", "permission_requested", **PERMISSION)
        allow = page.locator("#events li.permission").get_by_role("button", name="Allow")
        expect(allow).to_be_visible()
        in_thumb_reach(page, "#events li.permission button.allow")
        page.locator("#timeline").evaluate("t => { t.scrollTop = 0; }")
        expect(page.locator("#events li.msg").first).to_be_in_viewport()
        in_thumb_reach(page, "#events li.permission button.allow")
        no_sideways_scroll(page)
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone-permission.png"))
        allow.tap()
        # The tap's call crosses the browser, the websocket and the daemon's loop: wait for
        # it to arrive (bounded, as `expect` does), rather than assume it already has.
        permits = eventually(lambda: [c for c in engine.calls if c[0] == "permit"])
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
        no_sideways_scroll(page)


async def test_notifications_and_the_title_count(tmp_path: Path) -> None:
    """With notifications allowed (the browser's permission granted, then "Notify me"): a
    permission request, a turn's end and a failure in conversations not on screen each create
    a Notification; the title counts what waits until it is answered or looked at."""
    require_browser()
    engine = FakeEngine()
    for conv_id, title, at in [("conv0001", "Open one", "02"), ("conv0002", "Elsewhere", "01"),
                               ("conv0003", "Fragile", "00")]:  # fmt: skip
        info = engine.add(conv_id)
        engine.convs[conv_id] = msgspec.structs.replace(
            info, title=title, status="running", updated_at=f"2025-01-01T00:00:{at}.000Z"
        )
    await browse_in_process(tmp_path, engine, "conv0001", partial(_notify, engine=engine))


def _notify(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    origin = link.split("#")[0].rstrip("/")
    # bypass_csp: Playwright's polling `wait_for_function` evaluates a string (the page's
    # CSP, rightly, forbids that; the other tests keep it).
    with open_page(permissions=["notifications"], bypass_csp=True) as page:
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
        publish(engine, "conv0002", "permission_requested", **PERMISSION)
        change(engine, "conv0002", open_requests=1)
        expect(page).to_have_title("(1) acpd")
        page.wait_for_function("window.__notes.length === 1")
        assert notes() == [{"title": "Elsewhere: waiting for you", "body": "Asks: Touch a file"}]
        expect(page.locator("#list li", has_text="Elsewhere")).to_contain_text("waits for you")

        # Answered, and the turn ends: the request no longer counts; the unseen end does.
        publish(engine, "conv0002", "permission_resolved", request="r1", outcome="selected",
                 option="allow", by="user")  # fmt: skip
        publish(engine, "conv0002", "turn_ended", prompt_seq=1, stop_reason="end_turn")
        change(engine, "conv0002", open_requests=0, status="idle")
        page.wait_for_function("window.__notes.length === 2")
        assert notes()[1] == {"title": "Elsewhere: done", "body": "Turn ended."}
        expect(page).to_have_title("(1) acpd")

        # A failure elsewhere.
        publish(engine, "conv0003", "error", message="agent exited")
        change(engine, "conv0003", status="failed")
        page.wait_for_function("window.__notes.length === 3")
        assert notes()[2]["title"] == "Fragile: failed"
        expect(page).to_have_title("(2) acpd")

        # Looking at them clears the count; the open one's own turn end is on screen: no
        # notification for it.
        page.locator("#list li", has_text="Elsewhere").get_by_role("button").click()
        expect(page).to_have_title("(1) acpd")
        page.locator("#list li", has_text="Fragile").get_by_role("button").click()
        expect(page).to_have_title("acpd")
        publish(engine, "conv0003", "turn_ended", prompt_seq=2, stop_reason="end_turn")
        change(engine, "conv0003", status="idle")
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
    require_browser()
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
    await browse_in_process(tmp_path, engine, "conv0001", _replay)


def _replay(link: str) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1000, "height": 700}) as page:
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
    require_browser()
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
    with open_page(ignore_https_errors=True) as page:
        page.goto(link)
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        expect(page.locator("#conv-title")).to_have_text("Secure")
        assert page.evaluate("window.isSecureContext") is True
        expect(page.get_by_role("button", name="Notify me")).to_be_enabled()


async def test_questions_elsewhere_count_in_the_title_and_notify(tmp_path: Path) -> None:
    """A question in a conversation not on screen: a notification, and the title counts it
    (the daemon's `open_requests`, which counts questions) until it is answered."""
    require_browser()
    engine = FakeEngine()
    for conv_id, title, at in [("conv0001", "Open one", "02"), ("conv0002", "Elsewhere", "01")]:
        info = engine.add(conv_id)
        engine.convs[conv_id] = msgspec.structs.replace(
            info, title=title, status="running", updated_at=f"2025-01-01T00:00:{at}.000Z"
        )
    await browse_in_process(tmp_path, engine, "conv0001", partial(_elsewhere, engine=engine))


def _elsewhere(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    origin = link.split("#")[0].rstrip("/")
    # bypass_csp: for `wait_for_function` (see the notification test above).
    with open_page(permissions=["notifications"], bypass_csp=True) as page:
        page.context.grant_permissions(["notifications"], origin=origin)
        page.add_init_script(RECORD_NOTIFICATIONS)
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Open one")
        page.get_by_role("button", name="Notify me").click()
        expect(page.locator("#notify")).to_have_attribute("aria-pressed", "true")
        publish(engine, "conv0002", "elicitation_requested", **question("q1", "Which branch?"))
        change(engine, "conv0002", open_requests=1)
        expect(page).to_have_title("(1) acpd")
        page.wait_for_function("window.__notes.length === 1")
        notes = page.evaluate("window.__notes")
        assert notes == [{"title": "Elsewhere: waiting for you", "body": "Asks: Which branch?"}]
        expect(page.locator("#list li", has_text="Elsewhere")).to_contain_text("waits for you")

        # Opened and answered there: the count goes.
        page.locator("#list li", has_text="Elsewhere").get_by_role("button").click()
        card = page.locator("li.question[data-request=q1]")
        card.get_by_role("button", name=re.compile("^Decline")).click()
        assert calls_of(engine, "answer") == [("answer", "conv0002", "q1", "decline", None)]
        publish(engine, "conv0002", "elicitation_resolved", request="q1", action="decline",
                 by="user")  # fmt: skip
        change(engine, "conv0002", open_requests=0)
        expect(card).to_have_class(re.compile("settled"))
        expect(page).to_have_title("acpd")
