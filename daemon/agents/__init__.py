"""ACP agents as child processes: the JSON-RPC peer, process plumbing, the connection the
engine drives, agents' process trees (process groups, cgroups, the subreaper) and their tracker,
and the built-in demo agent.

`peer` (JSON-RPC 2.0 over a stream: the read loop, writes), `calls` (our requests waiting for
their answers), `serving` (the agent's requests being served, capped); `connection` (the agent
the engine drives), `requests` (the ACP requests of a session), `launch` (spawn, initialize,
stop), `session` (authentication, MCP servers, resume, load or new), `auth`, `environment`,
`_process` (environment, stderr, group signals), `detail` (an error's detail), `agentlog`
(stderr on disk); `tree`, `cgroups`, `subreaper`, `orphans` (process trees, and leftovers
after kill -9), `memory` (agents' RSS); `demo` and `_demo_store` (the demo agent).

Knows nothing of conversations or the store: the engine hands it callbacks.
"""
