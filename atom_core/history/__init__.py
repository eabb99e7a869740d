"""Conversations, messages, runs and records: the HistoryStore protocol and how to open one.

    from atom_core.history import open_store
    store = open_store()          # the process-wide store for $ATOM_DATA_DIR (or ~/.atom)

Inside: protocol (the HistoryStore protocol and its value types), tinydb_store (the on-disk
backend, over atom_core.files' atomic writes and FolderLock), migrations (schema versions),
memory_store (an in-memory backend for tests), backup (export, import, delete all) and export
(one conversation as Markdown/JSON). Nothing outside this package knows a file name,
a shard or a lock.
"""

from .protocol import (
    Conversation,
    HistoryStore,
    Message,
    NewConversation,
    NewMessage,
    RunsDelta,
    SchemaTooNewError,
    StoreError,
)
from .tinydb_store import default_data_dir, open_store, reset_for_tests

__all__ = [
    "Conversation",
    "HistoryStore",
    "Message",
    "NewConversation",
    "NewMessage",
    "RunsDelta",
    "SchemaTooNewError",
    "StoreError",
    "default_data_dir",
    "open_store",
    "reset_for_tests",
]
