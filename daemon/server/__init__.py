"""The front doors: the JSON-RPC dispatcher and its transports (unix socket, dashboard
websocket), systemd's runtime side, and `serve`, the daemon's entry point."""
