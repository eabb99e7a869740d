"""The TinyDB backend's record tables (runs, arena rounds, ...): append-only shards of at most
`shard_rows` rows (RecordsPart of TinyDBHistoryStore).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any, TypeGuard

from .protocol import (
    RunsDelta,
    copy_json,
    require_jsonable,
)
from .tinydb_core import (
    RECORDS_TABLE,
    SHARD_FILE_RE,
    StoreCore,
    new_id,
    shard_of,
)
from .tinydb_files import (
    StatKey,
    doc_number,
    stat_key,
)
from .typed_records import TypedRecords

log = logging.getLogger(__name__)

def is_runs_token(token: object) -> TypeGuard[tuple[tuple[int, StatKey, int], ...]]:
    return isinstance(token, tuple) and all(
        isinstance(t, tuple) and len(t) == 3 for t in token)


class RecordsPart(StoreCore, TypedRecords):
    """Records of any table, the runs among them."""

    # -- records ------------------------------------------------------------------------------

    def _new_record(self, record: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise TypeError(f"a record must be a dict, not {type(record).__name__}")
        doc = dict(record)
        if "id" in doc and (not isinstance(doc["id"], str) or not doc["id"]):
            raise ValueError(f"a record's own id must be a non-empty str, not {doc['id']!r}")
        doc.setdefault("ts", self._now())
        return doc

    def append(self, table: str, record: dict[str, Any]) -> str:
        folder = self._table_dir(table)
        doc = self._new_record(record)
        require_jsonable(doc, f"a record for table {table!r}")
        with self._writing():
            shard, _ = self._append_shard(folder, RECORDS_TABLE, self._shard_rows)
            doc.setdefault("id", new_id(shard))
            with self._db(self._shard_path(folder, shard)) as db:
                db.table(RECORDS_TABLE).insert(doc)
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
                shard, rows = self._append_shard(folder, RECORDS_TABLE, self._shard_rows)
                chunk = docs[start : start + max(1, self._shard_rows - rows)]
                for doc in chunk:
                    doc.setdefault("id", new_id(shard))
                    ids.append(str(doc["id"]))
                with self._db(self._shard_path(folder, shard)) as db:
                    db.table(RECORDS_TABLE).insert_multiple(chunk)
                start += len(chunk)
        return ids

    def records(self, table: str) -> list[dict[str, Any]]:
        folder = self._table_dir(table)
        out: list[dict[str, Any]] = []
        with self._lock:
            for shard in self._shard_numbers(folder):
                data = self._files.load(self._shard_path(folder, shard))
                if data:
                    out.extend(map(dict.copy, data.get(RECORDS_TABLE, {}).values()))
        return out

    def _locate_record(self, folder: Path, record_id: str) -> tuple[Path, int] | None:
        shards = self._shard_numbers(folder)
        home = shard_of(record_id) if isinstance(record_id, str) else None
        if home in shards:
            order = [home, *(s for s in reversed(shards) if s != home)]
        else:  # a caller-chosen id: look everywhere, newest first
            order = list(reversed(shards))
        for shard in order:
            path = self._shard_path(folder, shard)
            table = (self._files.load(path) or {}).get(RECORDS_TABLE, {})
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
            doc = data.get(RECORDS_TABLE, {}).get(str(doc_id))
            return copy_json(doc) if doc is not None else None

    def last_record(self, table: str) -> dict[str, Any] | None:
        """Reads the newest shard (an older one only if the newest holds nothing); TinyDB's
        document ids grow with each insert, so the highest is the last appended."""
        folder = self._table_dir(table)
        with self._lock:
            for shard in reversed(self._shard_numbers(folder)):
                docs = (self._files.load(self._shard_path(folder, shard)) or {}).get(
                    RECORDS_TABLE, {})
                if docs:
                    return copy_json(docs[max(docs, key=doc_number)])
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
                db.table(RECORDS_TABLE).update(dict(changes), doc_ids=[doc_id])
            data = self._files.load(path) or {}
            return dict(data[RECORDS_TABLE][str(doc_id)])

    def runs_since(self, token: Hashable | None) -> RunsDelta:
        """The token is each runs shard's (number, file version, rows): shards whose file is
        unchanged since the token are skipped, the first changed one and everything after it
        are read (usually just the newest shard, from the parse cache when this process wrote
        it). A directory scan when nothing changed, at any history size."""
        folder = self._table_dir("runs")
        old = token if is_runs_token(token) else ()
        with self._lock:
            current = self._shard_versions(folder)
            same = start = 0
            for (shard, key), seen in zip(current, old, strict=False):
                if (shard, key) != (seen[0], seen[1]):
                    break
                same += 1
                start += seen[2]
            entries: list[tuple[int, StatKey, int]] = list(old[:same])
            rows: list[dict[str, Any]] = []
            for shard, key in current[same:]:
                data = self._files.load(self._shard_path(folder, shard))
                table = (data or {}).get(RECORDS_TABLE, {})
                rows.extend(map(dict.copy, table.values()))
                entries.append((shard, key, len(table)))
        return RunsDelta(token=tuple(entries), start=start, rows=rows)

    @staticmethod
    def _shard_versions(folder: Path) -> list[tuple[int, StatKey]]:
        found: list[tuple[int, StatKey]] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = SHARD_FILE_RE.match(entry.name)
                    if match is None:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        found.append((int(match.group(1)), stat_key(entry.stat())))
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

