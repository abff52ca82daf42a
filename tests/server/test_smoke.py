from __future__ import annotations

import trio


async def test_trio_mode_and_autojump(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    await trio.sleep(100)
    assert trio.current_time() - start == 100
