"""The TinyDB backend's ground floor: the folder's layout (names, ids, shards), the write lock
and the schema check, damaged files moved aside, and TinyDB access (StoreCore).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import TinyDB

from ..files import (
    FolderLock,
    private_dir,
    process_lock,
    remove_temp_files,
)
from ..words import plural
from .migrations import (
    META_FILE,
    MIGRATIONS,
    Migration,
    read_schema_version,
    write_meta,
)
from .protocol import (
    SchemaTooNewError,
    StoreError,
    check_table_name,
    message_preview,
)
from .tinydb_files import (
    AtomicJSONStorage,
    CorruptFile,
    JsonFiles,
    StatKey,
    Tables,
    sorted_docs,
    stat_key,
    tinydb_file,
)

log = logging.getLogger(__name__)

DEFAULT_SHARD_ROWS = 500  # runs/records per shard: a full one rewrites in ~2.5 ms
DEFAULT_INDEX_SHARD_ROWS = 100  # conversations per index shard
DEFAULT_SHARD_BYTES = 1 << 20  # a shard also closes at 1 MiB, whatever its row count

LOCK_FILE = "store.lock"
INDEX_DIR = "index"
CONVERSATIONS_DIR = "conversations"
TABLES_DIR = "tables"
IMAGES_DIR = "images"
IMAGE_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
EXT_IMAGE = {ext: mime for mime, ext in IMAGE_EXT.items()}
# TinyDB table names inside the files
INDEX_TABLE = "conversations"
CONVERSATION_TABLE = "conversation"
MESSAGES_TABLE = "messages"
RECORDS_TABLE = "records"

ID_RE = re.compile(r"^(\d{6})-[0-9a-f]{16}$")
SHARD_FILE_RE = re.compile(r"^(\d{6})\.json$")
CONVERSATION_FILE_RE = re.compile(r"^\d{6}-[0-9a-f]{16}\.json$")


def new_id(shard: int) -> str:
    return f"{shard:06d}-{uuid.uuid4().hex[:16]}"


def shard_of(an_id: str) -> int | None:
    match = ID_RE.match(an_id)
    return int(match.group(1)) if match else None


class StoreCore:
    """What every part of TinyDBHistoryStore stands on: the folder's layout, the write lock
    and schema, damaged files, TinyDB access and shard choice (tinydb_store.py has the
    whole class and its docstring)."""

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
        self._write_lock = FolderLock(self.data_dir, LOCK_FILE, on_enter=self._check_schema)
        self._lock = self._write_lock.thread
        self._lock_fd: int | None = None
        self._meta_checked: StatKey | None = None
        self._index_dir = self.data_dir / INDEX_DIR
        self._conversations_dir = self.data_dir / CONVERSATIONS_DIR
        self._tables_dir = self.data_dir / TABLES_DIR
        self._images_dir = self.data_dir / IMAGES_DIR
        self._files = JsonFiles(
            durable=durable,
            keep=lambda p: p.parent != self._conversations_dir,
            on_corrupt=self._on_corrupt,
        )
        # conversation file -> (stat key, casefolded message contents joined by NUL)
        self._search_text: dict[Path, tuple[StatKey, str]] = {}

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
        return sorted(int(m.group(1)) for n in names if (m := SHARD_FILE_RE.match(n)))

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
        with self._lock, process_lock(self.data_dir / LOCK_FILE):
            removed = remove_temp_files(self.data_dir, targets=frozenset({META_FILE}),
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
        path = self.data_dir / META_FILE
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

    def _meta_key(self) -> StatKey | None:
        try:
            return stat_key(os.stat(self.data_dir / META_FILE))
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
                return JsonFiles.parse(path)  # repaired by another process meanwhile?
            except FileNotFoundError:
                return None
            except CorruptFile:
                pass
            aside = self._move_aside(path)
            self._files.forget(path)
            self._search_text.pop(path, None)
            if path.parent == self._index_dir and (shard := SHARD_FILE_RE.match(path.name)):
                rebuilt = self._rebuild_index_shard(int(shard.group(1)))
                count = len(rebuilt[INDEX_TABLE])
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
            if not (name.startswith(prefix) and CONVERSATION_FILE_RE.match(name)):
                continue
            data = self._files.load(self._conversations_dir / name, cache=False)
            own = next(iter((data or {}).get(CONVERSATION_TABLE, {}).values()), None)
            if own is None:
                continue
            messages = [doc for _, doc in sorted_docs((data or {}).get(MESSAGES_TABLE, {}))]
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
        rebuilt = tinydb_file({INDEX_TABLE: docs})
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

    def _now(self) -> float:
        return time.time()
