"""acpd's durable state: conversations, their event logs and prompt queues, in SQLite.

Synchronous and trio-free: the daemon calls it from worker threads (one writer at a time).
"""

from __future__ import annotations

from .db import STORE_FILE as STORE_FILE
from .db import Store as Store
from .errors import Conflict as Conflict
from .errors import LockedError as LockedError
from .errors import NotFound as NotFound
from .errors import StorageUnavailable as StorageUnavailable
from .errors import StoreError as StoreError
from .lock import LOCK_FILE as LOCK_FILE
from .lock import DataDirLock as DataDirLock
from .records import ConversationRecord as ConversationRecord
from .records import EventRecord as EventRecord
from .records import new_conversation_id as new_conversation_id
from .schema import SCHEMA_VERSION as SCHEMA_VERSION
