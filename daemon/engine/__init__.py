"""The engine: conversations as durable logs with one supervisor each, hydrated on demand.

`registry` (the `Engine`: the lazy map of supervisors and the write side), `reads` (its read
side: never hydrates), `apierrors` (its refusals as JSON-RPC errors), `opening` (open, recover,
stop), `creation` (a new conversation), `shutdown` (every conversation stopped by one
deadline), `recovery` (turns a dead daemon or supervisor left open); `supervisor` (one per
conversation: hydration and commands), `queueloop` (its turns, in order), `gate` (whether the
queue runs, and the failure policy), `wakeups` (wake-ups and the idle policy), `agentinput`
(what the agent's read loop hands it), `steering` (steer, edit, move, remove), `turn` (a prompt
and interrupt-and-drain), `slot` (one conversation's agent: its lifecycle), `agentsession` (its
ACP session: the agents' spec and the session's set-up), `failures` (an agent's failures said
and counted), `slots` (the `max_agents` table); `recorder` (updates to deltas and durable
events), `updates` (updates as event bodies), `eventlog` (seq-ordered durable writes, then
fan-out), `fanout` (subscribers); `asks`, `permissions`, `questions` (what agents ask of
people), `choices` (modes and options put back); `storeio` (the store from trio).
"""

from daemon.engine.fanout import Subscription as Subscription
from daemon.engine.opening import open_engine as open_engine
from daemon.engine.registry import Engine as Engine
