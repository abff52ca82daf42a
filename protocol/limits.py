"""Bounds on what clients send the daemon: one definition, read by the API's decoders
(`protocol.api`) and by the CLI, which checks them first to say so in its own words.

Plain integers and no imports: the CLI imports this without msgspec or trio.
"""

from __future__ import annotations

from typing import Final

MAX_ID: Final = 128  # conversation ids (and prefixes of them)
MAX_NAME: Final = 256  # agent names, permission request and option ids, cursors
MAX_TITLE: Final = 1024
MAX_PATH: Final = 4096
# A user message: non-empty, and far below the line cap so the JSON escaping of a maximal
# text (up to 6 bytes per character) still has room.
MAX_TEXT: Final = 256 * 1024
MAX_LIST_LIMIT: Final = 1000  # conversations/list `limit`
MAX_EVENTS_LIMIT: Final = 1000  # conversations/events `limit`
# Sequence numbers and other counts: SQLite's INTEGER is 64-bit signed.
MAX_SEQ: Final = 2**63 - 1
