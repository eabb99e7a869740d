"""The HistoryStore on disk: conversations, messages, runs and records in many small TinyDB files.

TinyDB's storage rewrites a whole file on every write, so one big file gets slower with every
row (one insert: 9 ms at 1k documents, 1.1 s at 100k). This backend keeps every write small by
splitting the history into many bounded TinyDB files::

    <data_dir>/                     created (mode 0700) on the first write, never on import
      meta.json                     {"schema_version": N, ...}; see MIGRATIONS
      store.lock                    held by every write (files.FolderLock): app and CLI share
      index/000000.json ...         conversation index shards: <= index_shard_rows conversations
      conversations/<id>.json       one per conversation: its "conversation" row and its "messages"
      tables/<name>/000000.json ... append-only record shards ("runs", "votes", ...): <= shard_rows
      images/<owner>/<message>-<n>.<png|jpg|webp>  images sent with a message (vision models);
                                    <owner> is a conversation or arena round id
      archive/runs/                 the runs again, as Parquet parts (tinydb_archive.py): what
                                    Stats reads by column and filter; derived, rebuilt if lost

Ids are ``<shard>-<16 hex>`` (``000003-9f1c2a0b4d5e6f70``): the first part names the index shard
(conversations) or the table shard (records) that holds the row, so an update reads and rewrites
that one file. New rows go into the highest-numbered shard until it holds ``shard_rows`` rows or
``shard_bytes`` bytes, then a new shard starts: a write costs the same at 100k rows as at 10.

Writes go through TinyDB with AtomicJSONStorage: a temp file in the same folder, flushed,
fsynced, then ``os.replace()``d over the old one, so a crash leaves the old file or the new one,
never half of one. Bulk reads (``runs()``, ``list_conversations()``) skip TinyDB and parse the
same files with ``json``; each parsed file is cached by (mtime_ns, size, inode), so a second
read only re-parses what changed, including files changed by another process.

A damaged file (bad JSON, truncated, unreadable) is moved aside as ``<name>.corrupt-<UTC time>``,
a sentence goes to ``store.warnings``, and the store carries on without that file only (an index
shard is rebuilt from the conversation files it listed). Temp files that a killed write left
behind are removed when the folder is first opened in a process (`open_store`).

The class is assembled from parts, one module each: tinydb_core (StoreCore: layout, lock,
schema, damaged files), tinydb_files (the parse cache and the atomic TinyDB storage),
tinydb_conversations, tinydb_records (+ tinydb_archive: the runs as Parquet) and
tinydb_images; this module puts them together and
keeps one store per folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path

from ..types import MessageState
from .migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
)
from .protocol import (
    Conversation,
    HistoryStore,
    Message,
    SchemaTooNewError,
    StoreError,
)
from .tinydb_archive import ArchivePart
from .tinydb_conversations import ConversationsPart
from .tinydb_core import (
    DEFAULT_INDEX_SHARD_ROWS,
    DEFAULT_SHARD_BYTES,
    DEFAULT_SHARD_ROWS,
)
from .tinydb_files import AtomicJSONStorage

__all__ = [
    "DEFAULT_INDEX_SHARD_ROWS",
    "DEFAULT_SHARD_BYTES",
    "DEFAULT_SHARD_ROWS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AtomicJSONStorage",
    "Conversation",
    "HistoryStore",
    "Message",
    "MessageState",
    "Migration",
    "SchemaTooNewError",
    "StoreError",
    "TinyDBHistoryStore",
    "default_data_dir",
    "open_store",
    "reset_for_tests",
]

log = logging.getLogger(__name__)


class TinyDBHistoryStore(ConversationsPart, ArchivePart):
    """HistoryStore on many small TinyDB files (layout in the module docstring).

    Construct it through `open_store()` in the app: one instance per folder per process, so that
    its lock covers every thread. The constructor touches no file; the folder is created by the
    first write. `shard_rows`, `index_shard_rows` and `shard_bytes` bound each file (small values
    are for tests); `durable=False` skips fsync (bulk builders, never the app); `migrations`
    replaces MIGRATIONS (tests).
    """

    def delete_all(self) -> None:
        """Removes the index, conversation and table folders under the write locks (meta.json,
        the lock file and the settings files stay)."""
        if not self.data_dir.is_dir():
            return
        with self._writing():
            for folder in (self._index_dir, self._conversations_dir, self._tables_dir,
                           self._images_dir, self._archive_dir):
                shutil.rmtree(folder, ignore_errors=True)
            self._files.clear()
            self._search_text.clear()

    # -- housekeeping -------------------------------------------------------------------------

    def size_bytes(self) -> int:
        total = 0
        with self._lock:
            for root, _dirs, files in os.walk(self.data_dir):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(root, name)).st_size
        return total


# --- one store per folder ---------------------------------------------------------------------

_STORES: dict[Path, TinyDBHistoryStore] = {}
_STORES_LOCK = threading.Lock()


def default_data_dir() -> Path:
    """$ATOM_DATA_DIR, or ~/.atom (read by atom_core.config, the one reader of the
    environment)."""
    from ..config import settings_from_env

    return settings_from_env().data_dir


def open_store(data_dir: str | Path | None = None) -> TinyDBHistoryStore:
    """The process-wide store for `data_dir` (default: default_data_dir()). Every caller in the
    process gets the same instance for the same folder, so one lock covers all its threads.
    The first open in a process removes temp files that killed writes left behind."""
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    key = folder.resolve()
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = TinyDBHistoryStore(key)
            try:
                store.remove_temp_files()
            except OSError as exc:  # a read-only folder still opens: it only cannot be cleaned
                log.warning("Could not clean temp files in %s: %s", key, exc)
        return store


def reset_for_tests() -> None:
    """Forgets every open store, as a fresh process would (tests only)."""
    with _STORES_LOCK:
        _STORES.clear()
