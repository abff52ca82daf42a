"""ACP agents as child processes: the JSON-RPC peer, process plumbing, the connection the
engine drives, agents' process trees (process groups, cgroups, the subreaper) and their tracker,
and the built-in demo agent.

Knows nothing of conversations or the store: the engine hands it callbacks.
"""
