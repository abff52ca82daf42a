"""The engine: conversations as durable logs with one supervisor each, hydrated on demand.

`registry` (the `Engine`: the lazy map of supervisors and the read side), `conversation` (one
supervisor: the queue, turns, the agent), `recorder` (updates to deltas and durable events),
`eventlog` (seq-ordered durable writes, then fan-out), `fanout` (subscribers), `permissions`,
`storeio` (the store from trio).
"""

from daemon.engine.fanout import Subscription as Subscription
from daemon.engine.registry import Engine as Engine
from daemon.engine.registry import open_engine as open_engine
