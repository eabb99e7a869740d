"""The HistoryStore on disk: conversations, messages, runs and records in many small TinyDB files.

TinyDB's storage rewrites a whole file on every write, so one big file gets slower with every
row (one insert: 9 ms at 1k documents, 1.1 s at 100k). This backend keeps every write small by
splitting the history into many bounded TinyDB files::

    <data_dir>/                     created (mode 0700) on the first write, never on import
      meta.json                     {"schema_version": N, ...}; see MIGRATIONS
      store.lock                    held by every write (files.process_lock): app and CLI share
      index/000000.json ...         conversation index shards: <= index_shard_rows conversations
      conversations/<id>.json       one per conversation: its "conversation" row and its "messages"
      tables/<name>/000000.json ... append-only record shards ("runs", "votes", ...): <= shard_rows
      images/<owner>/<message>-<n>.<png|jpg|webp>  images sent with a message (vision models);
                                    <owner> is a conversation or arena round id

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from tinydb import TinyDB
from tinydb.storages import Storage

from ..files import (
    FolderLock,
    atomic_write_bytes,
    atomic_write_json,
    private_dir,
    process_lock,
    remove_temp_files,
)
from ..types import MessageState
from ..words import plural
from .migrations import META_FILE as _META_FILE
from .migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    read_schema_version,
    write_meta,
)
from .protocol import (
    MESSAGE_STATES,
    ROLES,
    Conversation,
    HistoryStore,
    Message,
    NewConversation,
    RunsDelta,
    SchemaTooNewError,
    StoredImage,
    StoreError,
    check_image_ids,
    check_images,
    check_message_fields,
    check_new_conversation,
    check_table_name,
    copy_json,
    message_preview,
    require_jsonable,
)

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

DEFAULT_SHARD_ROWS = 500  # runs/records per shard: a full one rewrites in ~2.5 ms
DEFAULT_INDEX_SHARD_ROWS = 100  # conversations per index shard
DEFAULT_SHARD_BYTES = 1 << 20  # a shard also closes at 1 MiB, whatever its row count

_LOCK_FILE = "store.lock"
_INDEX_DIR = "index"
_CONVERSATIONS_DIR = "conversations"
_TABLES_DIR = "tables"
_IMAGES_DIR = "images"
_IMAGE_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_EXT_IMAGE = {ext: mime for mime, ext in _IMAGE_EXT.items()}
# TinyDB table names inside the files
_INDEX_TABLE = "conversations"
_CONVERSATION_TABLE = "conversation"
_MESSAGES_TABLE = "messages"
_RECORDS_TABLE = "records"

_ID_RE = re.compile(r"^(\d{6})-[0-9a-f]{16}$")
_SHARD_FILE_RE = re.compile(r"^(\d{6})\.json$")
_CONVERSATION_FILE_RE = re.compile(r"^\d{6}-[0-9a-f]{16}\.json$")

Tables = dict[str, dict[str, Any]]  # one TinyDB file: {table: {doc_id: document}}
_StatKey = tuple[int, int, int]
# Parsed shards kept in memory, in bytes of JSON on disk (the parse takes about 2-3 times that):
# without a bound, a long session held its whole history (about 35 KB a 4-model arena round), and
# the app grew with every round (docs/BENCHMARKS.md, memory over a long session).
KEPT_BYTES = 2 << 20
# --- files ------------------------------------------------------------------------------------


class _CorruptFile(Exception):
    """A file that exists but does not hold a TinyDB JSON document."""


def _stat_key(st: os.stat_result) -> _StatKey:
    # The inode changes on every os.replace(), so two writes within one mtime tick that happen
    # to leave the same size are still told apart.
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _parse_tables(raw: bytes) -> Tables:
    if not raw.strip():
        return {}  # TinyDB's own convention: an empty file is an empty database
    try:
        data = json.loads(raw)
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise _CorruptFile(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
        for table in data.values()
    ):
        raise _CorruptFile("not a TinyDB document")
    return data


def _doc_number(doc_id: str) -> int:
    """A TinyDB document id as a number (-1 for a key that is not one, in a damaged file)."""
    return int(doc_id) if doc_id.isdigit() else -1


class _JsonFiles:
    """Reads TinyDB files with plain `json` and caches each parse by (mtime_ns, size, inode).

    Files for which `keep(path)` is true (shards) stay cached up to `kept_bytes` of file size,
    least recently used first out; others (conversation files) live in a small LRU. Cached data
    is shared: callers must copy before handing it out. Not
    thread-safe on its own: the store calls it under its lock.
    """

    def __init__(
        self,
        *,
        durable: bool = True,
        keep: Callable[[Path], bool] | None = None,
        on_corrupt: Callable[[Path, str], Tables | None] | None = None,
        recent_limit: int = 64,
        kept_bytes: int = KEPT_BYTES,
    ) -> None:
        self.durable = durable
        self._keep = keep
        self._on_corrupt = on_corrupt
        self._recent_limit = recent_limit
        self._kept_bytes = kept_bytes
        self._kept: OrderedDict[Path, tuple[_StatKey, Tables]] = OrderedDict()
        self._recent: OrderedDict[Path, tuple[_StatKey, Tables]] = OrderedDict()

    def load(self, path: Path, *, cache: bool = True) -> Tables | None:
        """The file's tables, or None if it does not exist. A damaged file goes to on_corrupt."""
        try:
            key = _stat_key(os.stat(path))
        except FileNotFoundError:
            self.forget(path)
            return None
        hit = self._kept.get(path) or self._recent.get(path)
        if hit is not None and hit[0] == key:
            (self._recent if path in self._recent else self._kept).move_to_end(path)
            return hit[1]
        try:
            data = self.parse(path)
        except FileNotFoundError:
            self.forget(path)
            return None
        except _CorruptFile as exc:
            self.forget(path)
            if self._on_corrupt is None:
                raise StoreError(f"{path} could not be read: {exc}.", detail=str(exc)) from exc
            return self._on_corrupt(path, str(exc))
        if cache:
            self._put(path, key, data)
        return data

    @staticmethod
    def parse(path: Path) -> Tables:
        """Parses the file now, without the cache; raises _CorruptFile or FileNotFoundError."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise _CorruptFile(f"unreadable: {exc.strerror or exc}") from exc
        return _parse_tables(raw)

    def save(self, path: Path, data: Tables) -> None:
        """Writes atomically and caches what was written (the caller gives up `data`)."""
        private_dir(path.parent)
        try:
            atomic_write_json(path, data, durable=self.durable)
        except BaseException:
            self.forget(path)
            raise
        self._put(path, _stat_key(os.stat(path)), data)

    def forget(self, path: Path) -> None:
        self._kept.pop(path, None)
        self._recent.pop(path, None)

    def clear(self) -> None:
        self._kept.clear()
        self._recent.clear()

    def _put(self, path: Path, key: _StatKey, data: Tables) -> None:
        if self._keep is not None and self._keep(path):
            self._kept[path] = (key, data)
            self._kept.move_to_end(path)
            # Least recently used shards go past the budget (file sizes, about a third of what
            # the parse holds in memory); the one just used always stays.
            size = sum(k[1] for k, _ in self._kept.values())
            while size > self._kept_bytes and len(self._kept) > 1:
                _, (old_key, _) = self._kept.popitem(last=False)
                size -= old_key[1]
            return
        if self._recent_limit <= 0:
            return
        self._recent[path] = (key, data)
        self._recent.move_to_end(path)
        while len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)


class AtomicJSONStorage(Storage):
    """A TinyDB storage that never leaves half a file: temp file, fsync, os.replace().

    Reads go through a shared parse cache when the store passes one (`files`), so a write to a
    large shard does not parse it again. Use as ``TinyDB(path, storage=AtomicJSONStorage)``.
    """

    def __init__(self, path: str, *, files: _JsonFiles | None = None, durable: bool = True) -> None:
        super().__init__()
        self._path = Path(path)
        self._files = files if files is not None else _JsonFiles(durable=durable, recent_limit=0)

    def read(self) -> dict[str, dict[str, Any]] | None:
        data = self._files.load(self._path)
        # TinyDB assigns into the outer dict before writing: give it its own.
        return None if data is None else dict(data)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._files.save(self._path, data)


# --- documents --------------------------------------------------------------------------------


def _new_id(shard: int) -> str:
    return f"{shard:06d}-{uuid.uuid4().hex[:16]}"


def _shard_of(an_id: str) -> int | None:
    match = _ID_RE.match(an_id)
    return int(match.group(1)) if match else None


def _conversation_from_doc(doc: dict[str, Any]) -> Conversation:
    return Conversation(
        id=str(doc.get("id", "")),
        title=str(doc.get("title", "")),
        model=str(doc.get("model", "")),
        system_prompt=str(doc.get("system_prompt", "")),
        created=float(doc.get("created", 0.0)),
        updated=float(doc.get("updated", doc.get("created", 0.0))),
        message_count=int(doc.get("message_count", 0)),
        preview=str(doc.get("preview", "")),
    )


def _index_doc(c: Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "title": c.title,
        "model": c.model,
        "system_prompt": c.system_prompt,
        "created": c.created,
        "updated": c.updated,
        "message_count": c.message_count,
        "preview": c.preview,
    }


def _conversation_file_doc(c: Conversation) -> dict[str, Any]:
    """The copy of a conversation's own fields kept in its file, to rebuild a lost index shard."""
    return {
        "id": c.id,
        "title": c.title,
        "model": c.model,
        "system_prompt": c.system_prompt,
        "created": c.created,
    }


def _message_doc(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "reasoning": m.reasoning,
        "model": m.model,
        "metrics": m.metrics,
        "state": m.state,
        "error": m.error,
        "created": m.created,
    }


def _message_from_doc(conversation_id: str, doc: dict[str, Any]) -> Message:
    state = doc.get("state", "complete")
    metrics = doc.get("metrics")
    return Message(
        id=str(doc.get("id", "")),
        conversation_id=conversation_id,
        role=str(doc.get("role", "user")),
        content=str(doc.get("content", "")),
        reasoning=str(doc.get("reasoning", "")),
        model=str(doc.get("model", "")),
        metrics=copy_json(metrics) if isinstance(metrics, dict) else None,
        state=state if state in MESSAGE_STATES else "complete",
        error=str(doc.get("error", "")),
        created=float(doc.get("created", 0.0)),
    )


def _sorted_docs(table: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return sorted(((int(k), v) for k, v in table.items()), key=lambda item: item[0])


def tinydb_file(tables: dict[str, Sequence[dict[str, Any]]]) -> Tables:
    """The on-disk form of a TinyDB file holding `tables` (documents numbered from 1). For bulk
    builders such as the benchmark, which write files directly in the store's layout."""
    return {name: {str(i): doc for i, doc in enumerate(docs, 1)} for name, docs in tables.items()}


# --- the store --------------------------------------------------------------------------------


class TinyDBHistoryStore:
    """HistoryStore on many small TinyDB files (layout in the module docstring).

    Construct it through `open_store()` in the app: one instance per folder per process, so that
    its lock covers every thread. The constructor touches no file; the folder is created by the
    first write. `shard_rows`, `index_shard_rows` and `shard_bytes` bound each file (small values
    are for tests); `durable=False` skips fsync (bulk builders, never the app); `migrations`
    replaces MIGRATIONS (tests).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        shard_rows: int = DEFAULT_SHARD_ROWS,
        index_shard_rows: int = DEFAULT_INDEX_SHARD_ROWS,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        durable: bool = True,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        if shard_rows < 1 or index_shard_rows < 1 or shard_bytes < 1:
            raise ValueError("shard_rows, index_shard_rows and shard_bytes must be at least 1")
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.warnings: list[str] = []
        self._shard_rows = shard_rows
        self._index_shard_rows = index_shard_rows
        self._shard_bytes = shard_bytes
        self._migrations: tuple[Migration, ...] = tuple(
            MIGRATIONS if migrations is None else migrations
        )
        self.schema_version = 1 + len(self._migrations)  # the version this instance writes
        # every write holds it (schema checked once the locks are taken); reads hold its thread
        # lock only
        self._write_lock = FolderLock(self.data_dir, _LOCK_FILE, on_enter=self._check_schema)
        self._lock = self._write_lock.thread
        self._lock_fd: int | None = None
        self._meta_checked: _StatKey | None = None
        self._index_dir = self.data_dir / _INDEX_DIR
        self._conversations_dir = self.data_dir / _CONVERSATIONS_DIR
        self._tables_dir = self.data_dir / _TABLES_DIR
        self._images_dir = self.data_dir / _IMAGES_DIR
        self._files = _JsonFiles(
            durable=durable,
            keep=lambda p: p.parent != self._conversations_dir,
            on_corrupt=self._on_corrupt,
        )
        # conversation file -> (stat key, casefolded message contents joined by NUL)
        self._search_text: dict[Path, tuple[_StatKey, str]] = {}

    def __repr__(self) -> str:
        return f"TinyDBHistoryStore({str(self.data_dir)!r})"

    # -- layout helpers (also used by bench/bench_store.py to build large folders in bulk) --

    def _index_path(self, shard: int) -> Path:
        return self._index_dir / f"{shard:06d}.json"

    def _conversation_path(self, conversation_id: str) -> Path:
        return self._conversations_dir / f"{conversation_id}.json"

    def _table_dir(self, table: str) -> Path:
        return self._tables_dir / check_table_name(table)

    @staticmethod
    def _shard_path(folder: Path, shard: int) -> Path:
        return folder / f"{shard:06d}.json"

    @staticmethod
    def _shard_numbers(folder: Path) -> list[int]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _SHARD_FILE_RE.match(n)))

    # -- locking, schema ----------------------------------------------------------------------

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """The thread lock, the folder, the inter-process lock and a current schema."""
        return self._write_lock.held()

    def remove_temp_files(self) -> int:
        """Deletes temp files that interrupted writes left in the folder (by this or another
        process: under the process lock no write is in flight). Returns how many. A folder that
        does not exist yet is left alone."""
        if not self.data_dir.is_dir():
            return 0
        with self._lock, process_lock(self.data_dir / _LOCK_FILE):
            removed = remove_temp_files(self.data_dir, targets=frozenset({_META_FILE}),
                                        recursive=False)
            for folder in (self._index_dir, self._conversations_dir, self._tables_dir,
                           *(self._images_dir.iterdir() if self._images_dir.is_dir() else ())):
                if folder.is_dir():
                    removed += remove_temp_files(folder)
        if removed:
            log.info("Removed %s left by interrupted writes in %s", plural(removed, "temp file"),
                     self.data_dir)
        return removed

    def _read_schema_version(self, *, repair: bool) -> int | None:
        path = self.data_dir / _META_FILE
        try:
            return read_schema_version(self.data_dir)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            if not repair:
                return None
            aside = self._move_aside(path)
            self._warn(
                f"The data folder's {path.name} was damaged ({exc}). It was moved aside to "
                f"{aside}, and ATOM assumed schema version 1."
            )
            return None

    def _write_meta(self, version: int) -> None:
        write_meta(self.data_dir, version, durable=self._files.durable)

    def _meta_key(self) -> _StatKey | None:
        try:
            return _stat_key(os.stat(self.data_dir / _META_FILE))
        except FileNotFoundError:
            return None

    def _check_schema(self) -> None:
        """Creates meta.json, runs pending migrations, or refuses a newer folder."""
        key = self._meta_key()
        if key is not None and key == self._meta_checked:
            return
        version = self._read_schema_version(repair=True)
        if version is None:
            has_data = any(
                p.exists() for p in (self._index_dir, self._conversations_dir, self._tables_dir)
            )
            version = 1 if has_data else self.schema_version
            self._write_meta(version)
        if version > self.schema_version:
            raise SchemaTooNewError(
                f"The data folder {self.data_dir} was written by a newer version of ATOM "
                f"(schema version {version}; this version knows up to {self.schema_version}). "
                "ATOM will not write to it: upgrade ATOM, or set ATOM_DATA_DIR to another folder."
            )
        while version < self.schema_version:
            log.info("Migrating %s from schema version %d", self.data_dir, version)
            self._migrations[version - 1](self.data_dir)
            version += 1
            self._write_meta(version)  # after each step: a crash resumes at the next one
            self._files.clear()
            self._search_text.clear()
        self._meta_checked = self._meta_key()

    def _folder_is_newer(self) -> bool:
        version = self._read_schema_version(repair=False)
        return version is not None and version > self.schema_version

    # -- damaged files ------------------------------------------------------------------------

    def _warn(self, sentence: str) -> None:
        log.warning("%s", sentence)
        if sentence not in self.warnings:
            self.warnings.append(sentence)

    @staticmethod
    def _move_aside(path: Path) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        os.replace(path, aside)
        return aside

    def _on_corrupt(self, path: Path, reason: str) -> Tables | None:
        if self._folder_is_newer():
            # A newer ATOM may simply use a format this one does not know: leave it alone.
            self._warn(
                f"ATOM could not read {path} ({reason}) and left it in place, because the data "
                "folder was written by a newer version of ATOM."
            )
            return None
        inside_write = self._write_lock.writing
        try:
            return self._quarantine(path, reason)
        except OSError as exc:
            sentence = (
                f"ATOM could not read {path} ({reason}) nor move it aside "
                f"({exc.strerror or exc}). Fix or remove that file by hand."
            )
            if inside_write:  # carrying on would overwrite the damaged file
                raise StoreError(sentence, detail=reason) from exc
            self._warn(sentence + " Until then ATOM shows the history without it.")
            return None

    def _quarantine(self, path: Path, reason: str) -> Tables | None:
        """Moves a damaged file aside and says so; an index shard is rebuilt and returned."""
        with self._writing():
            try:
                return _JsonFiles.parse(path)  # repaired by another process meanwhile?
            except FileNotFoundError:
                return None
            except _CorruptFile:
                pass
            aside = self._move_aside(path)
            self._files.forget(path)
            self._search_text.pop(path, None)
            if path.parent == self._index_dir and (shard := _SHARD_FILE_RE.match(path.name)):
                rebuilt = self._rebuild_index_shard(int(shard.group(1)))
                count = len(rebuilt[_INDEX_TABLE])
                self._warn(
                    f"The conversation index file {path} was damaged ({reason}). It was moved "
                    f"aside to {aside}; recovered from the conversation files: "
                    f"{plural(count, 'conversation')}."
                )
                return rebuilt
            if path.parent == self._conversations_dir:
                what = "that conversation now shows no messages"
            else:
                what = "the records it held are missing until it is repaired"
            self._warn(
                f"The history file {path} was damaged ({reason}). It was moved aside to {aside}; "
                f"{what}, and the rest of the history is intact."
            )
            return None

    def _rebuild_index_shard(self, shard: int) -> Tables:
        prefix = f"{shard:06d}-"
        docs: list[dict[str, Any]] = []
        try:
            names = sorted(os.listdir(self._conversations_dir))
        except FileNotFoundError:
            names = []
        for name in names:
            if not (name.startswith(prefix) and _CONVERSATION_FILE_RE.match(name)):
                continue
            data = self._files.load(self._conversations_dir / name, cache=False)
            own = next(iter((data or {}).get(_CONVERSATION_TABLE, {}).values()), None)
            if own is None:
                continue
            messages = [doc for _, doc in _sorted_docs((data or {}).get(_MESSAGES_TABLE, {}))]
            last = messages[-1] if messages else None
            created = float(own.get("created", 0.0))
            doc = dict(own)
            doc.update(
                updated=max(created, float(last.get("created", 0.0))) if last else created,
                message_count=len(messages),
                preview=message_preview(last),
            )
            docs.append(doc)
        docs.sort(key=lambda d: float(d.get("created", 0.0)))
        rebuilt = tinydb_file({_INDEX_TABLE: docs})
        self._files.save(self._index_path(shard), rebuilt)
        return rebuilt

    # -- TinyDB access ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _db(self, path: Path) -> Iterator[TinyDB]:
        """A TinyDB over one file, for one operation (a fresh instance: TinyDB caches the next
        document id, which another process may have used meanwhile)."""
        private_dir(path.parent)
        db = TinyDB(str(path), storage=AtomicJSONStorage, files=self._files)
        try:
            yield db
        except BaseException:
            self._files.forget(path)  # TinyDB may have changed cached documents before failing
            raise
        finally:
            db.close()

    def _append_shard(self, folder: Path, table: str, max_rows: int) -> tuple[int, int]:
        """(shard number, rows already in it) for the next append to `folder`."""
        shards = self._shard_numbers(folder)
        if not shards:
            return 0, 0
        last = shards[-1]
        path = self._shard_path(folder, last)
        rows = len((self._files.load(path) or {}).get(table, {}))
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # moved aside just now, as damaged
            size = 0
        if rows >= max_rows or size >= self._shard_bytes:
            return last + 1, 0
        return last, rows

    # -- conversations ------------------------------------------------------------------------

    def _find_conversation(self, conversation_id: str) -> tuple[Path, int, dict[str, Any]] | None:
        shard = _shard_of(conversation_id) if isinstance(conversation_id, str) else None
        if shard is None:
            return None
        path = self._index_path(shard)
        table = (self._files.load(path) or {}).get(_INDEX_TABLE, {})
        for doc_id, doc in table.items():
            if doc.get("id") == conversation_id:
                return path, int(doc_id), doc
        return None

    def _require_conversation(self, conversation_id: str) -> tuple[Path, int, dict[str, Any]]:
        found = self._find_conversation(conversation_id)
        if found is None:
            raise KeyError(f"No conversation with id {conversation_id!r} in {self.data_dir}")
        return found

    def _set_index_fields(self, conversation_id: str, fields: dict[str, Any]) -> Conversation:
        path, doc_id, _ = self._require_conversation(conversation_id)
        with self._db(path) as db:
            db.table(_INDEX_TABLE).update(fields, doc_ids=[doc_id])
        _, _, doc = self._require_conversation(conversation_id)
        return _conversation_from_doc(doc)

    def create_conversation(
        self, *, title: str = "New chat", model: str = "", system_prompt: str = ""
    ) -> Conversation:
        for name, value in (("title", title), ("model", model), ("system_prompt", system_prompt)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        with self._writing():
            shard, _ = self._append_shard(self._index_dir, _INDEX_TABLE, self._index_shard_rows)
            now = time.time()
            conv = Conversation(
                id=_new_id(shard),
                title=title,
                model=model,
                system_prompt=system_prompt,
                created=now,
                updated=now,
                message_count=0,
                preview="",
            )
            # The conversation's own file first: a crash in between leaves an unlisted file,
            # never a listed conversation whose file is missing its own fields.
            with self._db(self._conversation_path(conv.id)) as db:
                db.table(_CONVERSATION_TABLE).insert(_conversation_file_doc(conv))
            with self._db(self._index_path(shard)) as db:
                db.table(_INDEX_TABLE).insert(_index_doc(conv))
            return conv

    def get_conversation(self, conversation_id: str) -> Conversation | None:
        with self._lock:
            found = self._find_conversation(conversation_id)
            return None if found is None else _conversation_from_doc(found[2])

    def _all_index_docs(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for shard in self._shard_numbers(self._index_dir):
            data = self._files.load(self._index_path(shard))
            if data:
                docs.extend(data.get(_INDEX_TABLE, {}).values())
        return docs

    def _content_text(self, conversation_id: str) -> str:
        """The conversation's message contents, casefolded, cached by file version."""
        if not _ID_RE.match(conversation_id):
            return ""
        path = self._conversation_path(conversation_id)
        try:
            key = _stat_key(os.stat(path))
        except FileNotFoundError:
            self._search_text.pop(path, None)
            return ""
        hit = self._search_text.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = self._files.load(path, cache=False) or {}
        text = "\0".join(
            str(doc.get("content", "")) for doc in data.get(_MESSAGES_TABLE, {}).values()
        ).casefold()
        self._search_text[path] = (key, text)
        return text

    def list_conversations(
        self, *, query: str = "", limit: int | None = None
    ) -> list[Conversation]:
        if limit is not None and limit <= 0:
            return []
        needle = query.strip().casefold()
        with self._lock:
            docs = self._all_index_docs()
            docs.sort(
                key=lambda d: (d.get("updated", 0.0), d.get("created", 0.0), d.get("id", "")),
                reverse=True,
            )
            if not needle:
                chosen = docs if limit is None else docs[:limit]
            else:
                chosen = []
                for doc in docs:
                    if needle in str(doc.get("title", "")).casefold() or needle in (
                        self._content_text(str(doc.get("id", "")))
                    ):
                        chosen.append(doc)
                        if limit is not None and len(chosen) >= limit:
                            break
            return [_conversation_from_doc(d) for d in chosen]

    def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Conversation:
        changes = {
            k: v
            for k, v in (("title", title), ("model", model), ("system_prompt", system_prompt))
            if v is not None
        }
        for name, value in changes.items():
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        with self._writing():
            _, _, doc = self._require_conversation(conversation_id)
            if not changes:
                return _conversation_from_doc(doc)
            path = self._conversation_path(conversation_id)
            own = (self._files.load(path) or {}).get(_CONVERSATION_TABLE, {})
            with self._db(path) as db:
                if own:
                    db.table(_CONVERSATION_TABLE).update(changes, doc_ids=[int(next(iter(own)))])
                else:  # its file was lost: put its own fields back
                    merged = {**doc, **changes}
                    db.table(_CONVERSATION_TABLE).insert(
                        _conversation_file_doc(_conversation_from_doc(merged))
                    )
            return self._set_index_fields(conversation_id, {**changes, "updated": time.time()})

    def delete_conversation(self, conversation_id: str) -> None:
        with self._writing():
            index_path, doc_id, _ = self._require_conversation(conversation_id)
            path = self._conversation_path(conversation_id)
            # The file first: a crash in between leaves a listed, empty conversation (which can
            # be deleted again), never an unlisted file that an index rebuild would resurrect.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._files.forget(path)
            self._search_text.pop(path, None)
            with self._db(index_path) as db:
                db.table(_INDEX_TABLE).remove(doc_ids=[doc_id])
            self.delete_images(conversation_id)

    # -- messages -----------------------------------------------------------------------------

    def _message_docs(self, conversation_id: str) -> list[tuple[int, dict[str, Any]]]:
        data = self._files.load(self._conversation_path(conversation_id)) or {}
        return _sorted_docs(data.get(_MESSAGES_TABLE, {}))

    def _after_messages_changed(self, conversation_id: str, now: float | None = None) -> None:
        docs = self._message_docs(conversation_id)
        last = docs[-1][1] if docs else None
        fields = {
            # counted, not incremented: a crash between the two writes heals on the next one
            "message_count": len(docs),
            "preview": message_preview(last),
            "updated": time.time() if now is None else now,
        }
        self._set_index_fields(conversation_id, fields)

    def add_message(
        self,
        conversation_id: str,
        *,
        role: str,
        content: str,
        reasoning: str = "",
        model: str = "",
        metrics: dict[str, Any] | None = None,
        state: MessageState = "complete",
        error: str = "",
    ) -> Message:
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
        check_message_fields(
            content=content, reasoning=reasoning, metrics=metrics, state=state, error=error
        )
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, not {type(model).__name__}")
        with self._writing():
            _, _, conv_doc = self._require_conversation(conversation_id)
            message = Message(
                id=uuid.uuid4().hex[:16],
                conversation_id=conversation_id,
                role=role,
                content=content,
                reasoning=reasoning,
                model=model,
                metrics=copy_json(metrics) if metrics is not None else None,
                state=state,
                error=error,
                created=time.time(),
            )
            path = self._conversation_path(conversation_id)
            restore_own = not (self._files.load(path) or {}).get(_CONVERSATION_TABLE)
            with self._db(path) as db:
                if restore_own:  # its file was lost: put its own fields back
                    db.table(_CONVERSATION_TABLE).insert(
                        _conversation_file_doc(_conversation_from_doc(conv_doc))
                    )
                db.table(_MESSAGES_TABLE).insert(_message_doc(message))
            self._after_messages_changed(conversation_id, message.created)
            return message

    def _require_message(self, conversation_id: str, message_id: str) -> tuple[int, dict[str, Any]]:
        self._require_conversation(conversation_id)
        for doc_id, doc in self._message_docs(conversation_id):
            if doc.get("id") == message_id:
                return doc_id, doc
        raise KeyError(f"No message with id {message_id!r} in conversation {conversation_id!r}")

    def update_message(
        self,
        conversation_id: str,
        message_id: str,
        *,
        content: str | None = None,
        reasoning: str | None = None,
        metrics: dict[str, Any] | None = None,
        state: MessageState | None = None,
        error: str | None = None,
    ) -> Message:
        changes: dict[str, Any] = {
            k: v
            for k, v in (
                ("content", content),
                ("reasoning", reasoning),
                ("metrics", metrics),
                ("state", state),
                ("error", error),
            )
            if v is not None
        }
        check_message_fields(**changes)
        if "metrics" in changes:
            changes["metrics"] = copy_json(changes["metrics"])
        with self._writing():
            doc_id, doc = self._require_message(conversation_id, message_id)
            if changes:
                with self._db(self._conversation_path(conversation_id)) as db:
                    db.table(_MESSAGES_TABLE).update(changes, doc_ids=[doc_id])
                self._after_messages_changed(conversation_id)
                doc_id, doc = self._require_message(conversation_id, message_id)
            return _message_from_doc(conversation_id, doc)

    def delete_message(self, conversation_id: str, message_id: str) -> None:
        with self._writing():
            doc_id, _ = self._require_message(conversation_id, message_id)
            with self._db(self._conversation_path(conversation_id)) as db:
                db.table(_MESSAGES_TABLE).remove(doc_ids=[doc_id])
            self._after_messages_changed(conversation_id)

    def messages(self, conversation_id: str) -> list[Message]:
        with self._lock:
            self._require_conversation(conversation_id)
            return [
                _message_from_doc(conversation_id, doc)
                for _, doc in self._message_docs(conversation_id)
            ]

    # -- records ------------------------------------------------------------------------------

    @staticmethod
    def _new_record(record: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise TypeError(f"a record must be a dict, not {type(record).__name__}")
        doc = dict(record)
        if "id" in doc and (not isinstance(doc["id"], str) or not doc["id"]):
            raise ValueError(f"a record's own id must be a non-empty str, not {doc['id']!r}")
        doc.setdefault("ts", time.time())
        return doc

    def append(self, table: str, record: dict[str, Any]) -> str:
        folder = self._table_dir(table)
        doc = self._new_record(record)
        require_jsonable(doc, f"a record for table {table!r}")
        with self._writing():
            shard, _ = self._append_shard(folder, _RECORDS_TABLE, self._shard_rows)
            doc.setdefault("id", _new_id(shard))
            with self._db(self._shard_path(folder, shard)) as db:
                db.table(_RECORDS_TABLE).insert(doc)
        return str(doc["id"])

    def append_many(self, table: str, records: Iterable[dict[str, Any]]) -> list[str]:
        """Appends many records, writing each shard once (imports, bulk builders). Records are
        checked before anything is written; the appends are not atomic as a whole."""
        folder = self._table_dir(table)
        docs = [self._new_record(r) for r in records]
        require_jsonable(docs, f"records for table {table!r}")
        ids: list[str] = []
        with self._writing():
            start = 0
            while start < len(docs):
                shard, rows = self._append_shard(folder, _RECORDS_TABLE, self._shard_rows)
                chunk = docs[start : start + max(1, self._shard_rows - rows)]
                for doc in chunk:
                    doc.setdefault("id", _new_id(shard))
                    ids.append(str(doc["id"]))
                with self._db(self._shard_path(folder, shard)) as db:
                    db.table(_RECORDS_TABLE).insert_multiple(chunk)
                start += len(chunk)
        return ids

    def records(self, table: str) -> list[dict[str, Any]]:
        folder = self._table_dir(table)
        out: list[dict[str, Any]] = []
        with self._lock:
            for shard in self._shard_numbers(folder):
                data = self._files.load(self._shard_path(folder, shard))
                if data:
                    out.extend(map(dict.copy, data.get(_RECORDS_TABLE, {}).values()))
        return out

    def _locate_record(self, folder: Path, record_id: str) -> tuple[Path, int] | None:
        shards = self._shard_numbers(folder)
        home = _shard_of(record_id) if isinstance(record_id, str) else None
        if home in shards:
            order = [home, *(s for s in reversed(shards) if s != home)]
        else:  # a caller-chosen id: look everywhere, newest first
            order = list(reversed(shards))
        for shard in order:
            path = self._shard_path(folder, shard)
            table = (self._files.load(path) or {}).get(_RECORDS_TABLE, {})
            for doc_id, doc in table.items():
                if doc.get("id") == record_id:
                    return path, int(doc_id)
        return None

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        """Reads the shard the id names (a caller-chosen id: shards newest first until found)."""
        folder = self._table_dir(table)
        with self._lock:
            found = self._locate_record(folder, record_id)
            if found is None:
                return None
            path, doc_id = found
            data = self._files.load(path) or {}
            doc = data.get(_RECORDS_TABLE, {}).get(str(doc_id))
            return copy_json(doc) if doc is not None else None

    def last_record(self, table: str) -> dict[str, Any] | None:
        """Reads the newest shard (an older one only if the newest holds nothing); TinyDB's
        document ids grow with each insert, so the highest is the last appended."""
        folder = self._table_dir(table)
        with self._lock:
            for shard in reversed(self._shard_numbers(folder)):
                docs = (self._files.load(self._shard_path(folder, shard)) or {}).get(
                    _RECORDS_TABLE, {})
                if docs:
                    return copy_json(docs[max(docs, key=_doc_number)])
        return None

    def update_record(self, table: str, record_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        folder = self._table_dir(table)
        if not isinstance(changes, dict):
            raise TypeError(f"changes must be a dict, not {type(changes).__name__}")
        if "id" in changes and changes["id"] != record_id:
            raise ValueError("a record's id cannot be changed")
        require_jsonable(changes, "changes")
        with self._writing():
            found = self._locate_record(folder, record_id)
            if found is None:
                raise KeyError(f"No record with id {record_id!r} in table {table!r}")
            path, doc_id = found
            with self._db(path) as db:
                db.table(_RECORDS_TABLE).update(dict(changes), doc_ids=[doc_id])
            data = self._files.load(path) or {}
            return dict(data[_RECORDS_TABLE][str(doc_id)])

    def add_run(self, run: dict[str, Any]) -> str:
        return self.append("runs", run)

    def runs(self) -> list[dict[str, Any]]:
        return self.records("runs")

    def runs_since(self, token: Hashable | None) -> RunsDelta:
        """The token is each runs shard's (number, file version, rows): shards whose file is
        unchanged since the token are skipped, the first changed one and everything after it
        are read (usually just the newest shard, from the parse cache when this process wrote
        it). A directory scan when nothing changed, at any history size."""
        folder = self._table_dir("runs")
        old = token if _is_runs_token(token) else ()
        with self._lock:
            current = self._shard_versions(folder)
            same = start = 0
            for (shard, key), seen in zip(current, old, strict=False):
                if (shard, key) != (seen[0], seen[1]):
                    break
                same += 1
                start += seen[2]
            entries: list[tuple[int, _StatKey, int]] = list(old[:same])
            rows: list[dict[str, Any]] = []
            for shard, key in current[same:]:
                data = self._files.load(self._shard_path(folder, shard))
                table = (data or {}).get(_RECORDS_TABLE, {})
                rows.extend(map(dict.copy, table.values()))
                entries.append((shard, key, len(table)))
        return RunsDelta(token=tuple(entries), start=start, rows=rows)

    @staticmethod
    def _shard_versions(folder: Path) -> list[tuple[int, _StatKey]]:
        found: list[tuple[int, _StatKey]] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = _SHARD_FILE_RE.match(entry.name)
                    if match is None:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        found.append((int(match.group(1)), _stat_key(entry.stat())))
        except FileNotFoundError:
            return []
        return sorted(found)

    def tables(self) -> list[str]:
        try:
            names = os.listdir(self._tables_dir)
        except FileNotFoundError:
            return []
        out = []
        for name in sorted(names):
            with contextlib.suppress(ValueError):
                if self._table_dir(name).is_dir() and self._shard_numbers(self._table_dir(name)):
                    out.append(name)
        return out

    # -- bulk writes ----------------------------------------------------------------------------

    def import_conversations(self, conversations: Sequence[NewConversation]) -> list[Conversation]:
        """Each conversation's file is written once and each index shard once per call."""
        conversations = list(conversations)
        for new in conversations:
            if not isinstance(new, NewConversation):
                raise TypeError(f"expected NewConversation, not {type(new).__name__}")
            check_new_conversation(new)
        out: list[Conversation] = []
        with self._writing():
            now = time.time()
            shard, rows = self._append_shard(self._index_dir, _INDEX_TABLE,
                                             self._index_shard_rows)
            pending: list[dict[str, Any]] = []
            for new in conversations:
                if rows >= self._index_shard_rows:
                    self._insert_index_docs(shard, pending)
                    shard, rows, pending = shard + 1, 0, []
                conv_id = _new_id(shard)
                created = now if new.created is None else float(new.created)
                messages = [
                    Message(id=uuid.uuid4().hex[:16], conversation_id=conv_id, role=m.role,
                            content=m.content, reasoning=m.reasoning, model=m.model,
                            metrics=copy_json(m.metrics) if m.metrics is not None else None,
                            state=m.state, error=m.error,
                            created=now if m.created is None else float(m.created))
                    for m in new.messages
                ]
                docs = [_message_doc(m) for m in messages]
                last = max((m.created for m in messages), default=created)
                conv = Conversation(
                    id=conv_id, title=new.title, model=new.model,
                    system_prompt=new.system_prompt, created=created,
                    updated=max(created, last) if new.updated is None else float(new.updated),
                    message_count=len(messages),
                    preview=message_preview(docs[-1] if docs else None),
                )
                # its own file first, as in create_conversation
                self._files.save(self._conversation_path(conv_id), tinydb_file(
                    {_CONVERSATION_TABLE: [_conversation_file_doc(conv)], _MESSAGES_TABLE: docs}))
                pending.append(_index_doc(conv))
                rows += 1
                out.append(conv)
            self._insert_index_docs(shard, pending)
        return out

    def _insert_index_docs(self, shard: int, docs: list[dict[str, Any]]) -> None:
        if docs:
            with self._db(self._index_path(shard)) as db:
                db.table(_INDEX_TABLE).insert_multiple(docs)

    # -- images -------------------------------------------------------------------------------

    def _image_files(self, folder: Path, message_id: str) -> list[tuple[int, Path, str]]:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        prefix = f"{message_id}-"
        for name in names:
            if not name.startswith(prefix):
                continue
            index, _, ext = name[len(prefix):].partition(".")
            if index.isdigit() and ext in _EXT_IMAGE:
                found.append((int(index), folder / name, _EXT_IMAGE[ext]))
        return sorted(found)

    def save_images(self, owner_id: str, message_id: str, images: Sequence[StoredImage]) -> None:
        check_image_ids(owner_id, message_id)
        check_images(images)
        folder = self._images_dir / owner_id
        with self._writing():
            old = self._image_files(folder, message_id)
            if images:
                private_dir(folder)
            written = set()
            for n, image in enumerate(images):
                path = folder / f"{message_id}-{n}.{_IMAGE_EXT[image.mime]}"
                atomic_write_bytes(path, image.data, durable=self._files.durable)
                written.add(path)
            for _, path, _ in old:
                if path not in written:
                    with contextlib.suppress(OSError):
                        path.unlink()

    def load_images(self, owner_id: str, message_id: str) -> list[StoredImage]:
        try:
            check_image_ids(owner_id, message_id)
        except ValueError:
            return []
        out = []
        for _, path, mime in self._image_files(self._images_dir / owner_id, message_id):
            try:
                out.append(StoredImage(mime, path.read_bytes()))
            except OSError:
                continue
        return out

    def delete_images(self, owner_id: str) -> None:
        try:
            check_image_ids(owner_id, "x")
        except ValueError:
            return
        with self._writing():
            shutil.rmtree(self._images_dir / owner_id, ignore_errors=True)

    def image_keys(self) -> list[tuple[str, str]]:
        keys = set()
        try:
            owners = os.listdir(self._images_dir)
        except FileNotFoundError:
            return []
        for owner in owners:
            try:
                names = os.listdir(self._images_dir / owner)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                stem, _, ext = name.rpartition(".")
                message, _, index = stem.rpartition("-")
                if ext in _EXT_IMAGE and index.isdigit() and message:
                    keys.add((owner, message))
        return sorted(keys)

    def delete_all(self) -> None:
        """Removes the index, conversation and table folders under the write locks (meta.json,
        the lock file and the settings files stay)."""
        if not self.data_dir.is_dir():
            return
        with self._writing():
            for folder in (self._index_dir, self._conversations_dir, self._tables_dir,
                           self._images_dir):
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


def _is_runs_token(token: object) -> TypeGuard[tuple[tuple[int, _StatKey, int], ...]]:
    return isinstance(token, tuple) and all(
        isinstance(t, tuple) and len(t) == 3 for t in token)


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
