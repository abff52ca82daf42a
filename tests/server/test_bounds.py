"""Huge and negative integers against the real engine and store, through the dispatcher: each
out-of-range param is -32602 (it once reached SQLite and came back -32603, OverflowError), the
JSON-RPC id is echoed whatever its size, and the connection serves on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing

from daemon.server.dispatch import DaemonInfo, Dispatcher
from tests.engine.harness import harness
from tests.protocol.test_api_bounds import HUGE, INTEGER_FIELDS, _valid
from tests.server._dispatch_client import open_client


async def test_every_integer_param_out_of_range_is_invalid_params_on_the_real_engine(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path) as h:
        cid = await h.create()
        dispatcher = Dispatcher(h.e, DaemonInfo(tmp_path, "0", 0.0))
        async with open_client(dispatcher) as client:
            for method, name, _ in INTEGER_FIELDS:
                for value in HUGE:
                    params: dict[str, Any] = {**_valid(method), name: value}
                    if "id" in params:
                        params["id"] = cid
                    err = await client.error(method, params)
                    assert err["code"] == -32602, (method, name, value, err)
            for req_id in (2**63, 2**64, -(2**64), 10**30):
                await client.raw(
                    json.dumps({"jsonrpc": "2.0", "id": req_id, "method": "conversations/count"})
                )
                reply = await client.read()
                assert (reply["id"], reply["result"]) == (req_id, {"count": 1})
            line = '{"jsonrpc": "2.0", "id": %s, "method": "conversations/count"}' % ("9" * 5000)
            await client.raw(line)
            reply = await client.read()
            assert (reply["id"], reply["error"]["code"]) == (None, -32600)
            assert (await client.call("conversations/count")) == {"count": 1}
