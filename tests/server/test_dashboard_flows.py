"""The dashboard in Chromium against the in-process server and the fake engine, which lets a test
control the stream: a long history paged backwards and a lagging subscriber's recovery,
reopening a conversation and the list following changes, the composer during a send, and queue
actions that come too late.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from protocol.jsonrpc import CONFLICT, RpcFailure
from tests.fakes.engine import FakeEngine
from tests.server.browser import (
    ARTIFACTS,
    browse_in_process,
    open_page,
    require_browser,
    shown_seqs,
)

pytestmark = pytest.mark.subprocess


async def test_history_paging_and_lag_recovery(tmp_path: Path) -> None:
    """Against the in-process server and the fake engine, so the test controls the stream: a
    long history is paged backwards, and a burst that overflows the subscriber's buffer makes
    the page resubscribe after `lagged`, ending with every event shown exactly once."""
    require_browser()
    engine = FakeEngine()  # subscriber buffer: 8 messages
    info = engine.add("conv0001", n_events=250)
    engine.convs["conv0001"] = msgspec.structs.replace(info, title="Long one", last_seq=250)

    def burst(n: int) -> None:
        # One synchronous burst on the trio thread: nothing is sent until it is over.
        trio.from_thread.run_sync(lambda: [engine.publish("conv0001") for _ in range(n)])

    await browse_in_process(tmp_path, engine, "conv0001", partial(_browse_fake, burst=burst))
    subscribes = [c for c in engine.calls if c[0] == "subscribe"]
    assert len(subscribes) >= 2, "the page did not resubscribe after lagging"
    assert subscribes[0][2] == 250


def _browse_fake(link: str, burst: Callable[[int], None]) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1000, "height": 700}) as page:
        page.goto(link)  # `#c=` opens the conversation once connected
        expect(page.locator("#conv-title")).to_have_text("Long one")
        events = page.locator("#events > li")
        expect(events).to_have_count(100)  # the last page only
        assert shown_seqs(page) == list(range(151, 251))
        earlier = page.get_by_role("button", name="Load earlier")
        earlier.click()
        expect(events).to_have_count(200)
        earlier.click()
        expect(events).to_have_count(250)
        expect(earlier).to_be_hidden()
        assert shown_seqs(page) == list(range(1, 251))
        burst(40)  # far past the subscriber's buffer of 8: lagged, then resubscribed
        expect(events).to_have_count(290)
        assert shown_seqs(page) == list(range(1, 291))


async def test_reopening_streams_once_and_the_list_follows(tmp_path: Path) -> None:
    """Choosing the conversation already open (or coming back to it) must not subscribe a
    second time: deltas carry no seq, so each chunk would show twice. And the list follows
    status and queue changes, and deletions, by polling its first page only."""
    require_browser()
    engine = FakeEngine()
    for conv_id, title, at in [("conv0001", "Streaming", "00:02"), ("conv0002", "Other", "00:01"),
                               ("conv0003", "Doomed", "00:00")]:  # fmt: skip
        info = engine.add(conv_id, n_events=3 if conv_id == "conv0001" else 0)
        engine.convs[conv_id] = msgspec.structs.replace(
            info, title=title, last_seq=len(engine.stored[conv_id]),
            updated_at=f"2025-01-01T00:{at}.000Z",
        )  # fmt: skip
    await browse_in_process(tmp_path, engine, "conv0001", partial(_browse_reopen, engine=engine))
    lists = [c for c in engine.calls if c[0] == "list"]
    assert len(lists) >= 2
    assert all(c == ("list", 50, None) for c in lists), lists  # page 1 only, however many


def _browse_reopen(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    from protocol.api import DELTA_METHOD, DeltaParams
    from tests.fakes.engine import _line

    def open_subs() -> list[str]:
        return trio.from_thread.run_sync(
            lambda: sorted(s.conv_id for s in engine.subs if not s.closed)
        )

    def stream(*chunks: str) -> None:
        def push() -> None:
            for sub in engine.subs:
                if sub.conv_id == "conv0001" and not sub.closed:
                    for text in chunks:
                        params = DeltaParams(id="conv0001", prompt_seq=3, kind="message", text=text)
                        sub.send.send_nowait(_line(DELTA_METHOD, params))

        trio.from_thread.run_sync(push)

    def change(conv_id: str, **fields: Any) -> None:
        def apply() -> None:
            engine.convs[conv_id] = msgspec.structs.replace(engine.convs[conv_id], **fields)

        trio.from_thread.run_sync(apply)

    with open_page(viewport={"width": 1000, "height": 700}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Streaming")
        queue = page.locator("#queue-list li")
        expect(queue.first).to_contain_text("later")  # the fake's queue: loaded last
        item = page.locator("#list li", has_text="Streaming").get_by_role("button")
        page.locator("#list li", has_text="Other").get_by_role("button").click()
        expect(page.locator("#conv-title")).to_have_text("Other")
        item.click()  # back again: one subscription, the previous one gone
        expect(page.locator("#conv-title")).to_have_text("Streaming")
        expect(queue.first).to_contain_text("later")
        item.click()  # the one already open: nothing happens
        item.click()
        expect(queue.first).to_contain_text("later")  # a reload (if any) is complete
        expect(page.locator("#events > li")).to_have_count(3)
        stream("1 ", "2 ", "3 ")
        expect(page.locator("#live .msg.streaming .text")).to_have_text("1 2 3 ")
        assert open_subs() == ["conv0001"]

        # The list: a status and queue change, and a deletion, show within a poll or two.
        items = page.locator("#list li")
        expect(items).to_have_count(3)
        change("conv0002", status="running", queued=2,
               updated_at="2025-01-01T00:00:03.000Z")  # fmt: skip
        trio.from_thread.run_sync(lambda: engine.convs.pop("conv0003"))
        expect(items).to_have_count(2)
        expect(items.first).to_contain_text("Other")
        expect(items.first.locator(".badge")).to_have_text("running")
        expect(items.first).to_contain_text("2 queued")
        expect(page.locator("#list-summary")).to_have_text("2 conversations")
        # In line for an agent slot: its place shows, and follows the line.
        change("conv0002", status="waiting", slot_position=2)
        expect(items.first.locator(".badge")).to_have_text("waiting #2")
        change("conv0002", slot_position=1)
        expect(items.first.locator(".badge")).to_have_text("waiting #1")
        page.screenshot(path=str(ARTIFACTS / "dashboard-list-live.png"))
        # Arrow keys, Home and End move the focus through the list.
        items.first.get_by_role("button").focus()
        page.keyboard.press("ArrowDown")
        expect(items.nth(1).get_by_role("button")).to_be_focused()
        page.keyboard.press("Home")
        expect(items.first.get_by_role("button")).to_be_focused()
        page.keyboard.press("End")
        expect(items.nth(1).get_by_role("button")).to_be_focused()


async def test_composer_keeps_what_is_typed_while_a_send_is_in_flight(tmp_path: Path) -> None:
    """The composer empties when a message is sent, not when the daemon acknowledges it: text
    typed while the send is in flight must survive the ack. A failed send puts its text back
    unless something new is in the box; then the error names the unsent text instead."""
    require_browser()
    engine = FakeEngine()
    engine.convs["conv0001"] = msgspec.structs.replace(engine.add("conv0001"), title="Chat")
    await browse_in_process(tmp_path, engine, "conv0001", partial(_browse_composer, engine=engine))
    sent = [c[2] for c in engine.calls if c[0] == "send"]
    assert sent == ["refused", "refused", "typed meanwhile", "typed meanwhile"]


def _browse_composer(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    from protocol.jsonrpc import INVALID_PARAMS, RpcFailure

    def hold_sends(*, fail: bool) -> Callable[[], None]:
        """Make the next sends wait (and fail, if `fail`); returns what lets them go."""

        def setup() -> trio.Event:
            gate = engine.gates["send"] = trio.Event()
            if fail:
                engine.failures["send"] = RpcFailure(INVALID_PARAMS, "refused by the test")
            else:
                engine.failures.pop("send", None)
            return gate

        gate = trio.from_thread.run_sync(setup)
        return lambda: trio.from_thread.run_sync(gate.set)

    with open_page(viewport={"width": 1000, "height": 700}) as page:
        page.goto(link)
        expect(page.locator("#conv-title")).to_have_text("Chat")
        composer = page.get_by_role("textbox", name="Message")
        error = page.locator("#conv-error")

        # A failed send with nothing typed since: its text is back in the box.
        release = hold_sends(fail=True)
        composer.fill("refused")
        composer.press("Enter")
        expect(composer).to_have_value("")
        release()
        expect(error).to_have_text("refused by the test")
        expect(composer).to_have_value("refused")

        # Sent again, and the next message typed before the ack: the ack leaves it be.
        release = hold_sends(fail=False)
        composer.press("Enter")
        expect(composer).to_have_value("")
        composer.fill("typed meanwhile")
        release()
        expect(error).to_be_hidden()  # the ack was handled
        expect(composer).to_have_value("typed meanwhile")

        # A failed send while something new is typed: that stays; the error names the text.
        release = hold_sends(fail=True)
        composer.press("Enter")
        expect(composer).to_have_value("")
        composer.fill("third")
        release()
        expect(error).to_have_text('refused by the test (not sent: "typed meanwhile")')
        expect(composer).to_have_value("third")

        # The same send succeeding: nothing else is touched.
        release = hold_sends(fail=False)
        composer.fill("typed meanwhile")
        composer.press("Enter")
        expect(composer).to_have_value("")
        release()
        expect(error).to_be_hidden()
        expect(composer).to_have_value("")


async def test_queue_actions_that_come_too_late_say_so(tmp_path: Path) -> None:
    """An edit or move refused because the message's turn started meanwhile (-32003): the page
    says so and shows the queue as it is; a refresh never loses what is being typed."""
    require_browser()
    engine = FakeEngine()
    engine.add("conv0001")
    engine.queues["conv0001"] = [(7, "later"), (9, "much later")]
    engine.failures["edit"] = RpcFailure(CONFLICT, "message 7 was already prompted")
    await browse_in_process(tmp_path, engine, "conv0001", partial(_browse_too_late, engine=engine))
    moves = [c for c in engine.calls if c[0] == "move"]
    assert moves == [("move", "conv0001", 9, 7)]


def _browse_too_late(link: str, engine: FakeEngine) -> None:
    from playwright.sync_api import expect

    with open_page(viewport={"width": 1000, "height": 700}) as page:
        page.goto(link)
        queue = page.locator("#queue-list li")
        expect(queue).to_have_count(2)
        expect(queue.first).to_contain_text("#1")  # numbered as people name them
        page.get_by_role("button", name="Move up: much later").click()
        page.get_by_role("button", name="Edit queued message: later", exact=True).click()
        box = page.get_by_role("textbox", name="New text of queued message #1")
        expect(box).to_be_focused()
        box.fill("sooner, please")
        # The page reads the queue again (as it does every few seconds) and draws it anew,
        # all but the box being typed in.
        other = "#queue-list li:nth-child(2)"
        page.eval_on_selector(other, "li => { li.dataset.before = 'yes'; }")
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        page.wait_for_function(f"() => !document.querySelector({other!r}).dataset.before")
        expect(box).to_have_value("sooner, please")
        expect(box).to_be_focused()
        box.press("Enter")
        expect(page.locator("#conv-error")).to_have_text(
            "Too late: message 7 was already prompted."
        )
        expect(queue).to_have_count(2)
