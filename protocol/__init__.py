"""acpd's wire formats: JSON-RPC 2.0 (`jsonrpc`), ACP types (`acp`), line framing (`framing`),
acpd's own API (`api`), its stored events (`events`) and their bounds (`limits`).

Sans-IO: never imports trio. Deliberately empty, so the CLI can import `protocol.limits`
without msgspec.
"""
