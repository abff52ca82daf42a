"""ACP agents as child processes: the JSON-RPC peer, process plumbing, the connection the
engine drives, the tracker of process groups, and the built-in demo agent.

Knows nothing of conversations or the store: the engine hands it callbacks.
"""
