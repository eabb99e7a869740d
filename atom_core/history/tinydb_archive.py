"""The runs archive: every run of the history also as Parquet, read by column and by filter
(ArchivePart of TinyDBHistoryStore).

The history's runs stay in their TinyDB shards (tables/runs/NNNNNN.json, append-only, <= 500
rows); the archive is derived from them and never the only copy of a run::

    <data_dir>/archive/runs/
      manifest.json                 {"format": 1, "parts": [{"file", "shards": [[n, mtime_ns,
                                    size], ...], "rows", "unreadable"}, ...]}
      part-<first shard>-<hex>.parquet   the typed runs (history.run_columns) of those shards

A part holds whole *closed* shards (every shard but the newest, which still takes appends).
It counts only while each of its shards still has the (mtime_ns, size) it was read at, so any
change to the history's runs (Delete everything, an import, a migration, a damaged shard moved
aside, a hand edit) makes the parts that hold it stale by itself. A reader takes the parts that
count and reads the shards no part holds (the newest, usually, <= 500 rows) from the history:
what it returns is always exactly the history's runs.

Writes: the append that opens a new shard archives the shard it closed (one part of <= 500
rows; a batch, `append_many` / `add_runs`, archives every shard it closed as one part).
`archive_runs()` catches up on the rest (a history from before the archive, a part missing or
damaged: the Stats page calls it with a progress bar), merges small parts into parts of up to
PART_ROWS and removes files no manifest names. Part files are written whole to a temp name and
renamed, then the manifest (atomically): a process killed at any point leaves the old manifest
and at worst an unnamed part, removed later; its runs are in the history and re-archived.
Parts are written outside the write lock (only the manifest update holds it), so catching up
on a million runs never blocks a chat from recording its run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write_bytes, atomic_write_json, private_dir, temp_file_pattern
from ..runs import RunRecord
from ..words import plural
from .protocol import ArchiveProgress, RunsTable
from .run_columns import UNREADABLE_COLUMN, check_columns, run_filter, runs_arrow
from .tinydb_core import RECORDS_TABLE, shard_of
from .tinydb_files import StatKey
from .tinydb_records import RecordsPart

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

ARCHIVE_DIR = "archive"
RUNS_ARCHIVE = "runs"
MANIFEST = "manifest.json"
FORMAT = 1  # a manifest of another format is rebuilt
PART_ROWS = 100_000  # small parts are merged up to this many runs
MERGE_AT = 8  # ... once this many small parts sit side by side
ROW_GROUP = 64 * 1024  # rows per Parquet row group: what a time filter skips by its min/max
ORPHAN_AGE_S = 600  # an unnamed part younger than this may be another process's, mid-commit

_ARCHIVING = threading.Lock()  # one catch-up at a time in a process (parts are written unlocked)
ShardKey = tuple[int, int]  # (mtime_ns, size) of a runs shard when it was archived


@dataclass(frozen=True, slots=True)
class Part:
    file: str
    shards: tuple[tuple[int, ShardKey], ...]  # (shard number, its key), ascending
    rows: int
    unreadable: int

    @property
    def first(self) -> int:
        return self.shards[0][0]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "shards": [[n, *key] for n, key in self.shards],
                "rows": self.rows, "unreadable": self.unreadable}

    @classmethod
    def from_json(cls, doc: Any) -> Part:
        shards = tuple((int(n), (int(m), int(s))) for n, m, s in doc["shards"])
        if not shards or not isinstance(doc["file"], str) or "/" in doc["file"]:
            raise ValueError("not a part")
        return cls(doc["file"], shards, int(doc["rows"]), int(doc["unreadable"]))


@dataclass(frozen=True, slots=True)
class _View:
    """The archive against the history now: parts that count, and shards no part holds."""

    versions: dict[int, ShardKey]
    parts: list[Part]
    tail: list[int]  # shard numbers read from the history
    token: int


class ArchivePart(RecordsPart):
    """The runs archive over the records part's runs shards."""

    _manifest_cache: tuple[StatKey | None, list[Part]] | None = None

    # -- layout -----------------------------------------------------------------------------

    @property
    def _archive_dir(self) -> Path:
        return self.data_dir / ARCHIVE_DIR / RUNS_ARCHIVE

    @property
    def _runs_dir(self) -> Path:
        return self._table_dir(RunRecord.TABLE)

    def _runs_versions(self) -> dict[int, ShardKey]:
        return {n: (key[0], key[1]) for n, key in self._shard_versions(self._runs_dir)}

    # -- the manifest -----------------------------------------------------------------------

    def _parts(self) -> list[Part]:
        """The manifest's parts (cached by the file's stat); [] when missing or damaged."""
        path = self._archive_dir / MANIFEST
        try:
            st = os.stat(path)
            key: StatKey | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            key = None
        cached = self._manifest_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        parts: list[Part] = []
        if key is not None:
            try:
                doc = json.loads(path.read_bytes())
                if doc.get("format") == FORMAT:
                    parts = sorted((Part.from_json(p) for p in doc["parts"]),
                                   key=lambda p: p.first)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("The runs archive's manifest %s was damaged (%s): rebuilding it "
                            "from the history.", path, exc)
        self._manifest_cache = (key, parts)
        return parts

    def _save_parts(self, parts: list[Part]) -> None:
        private_dir(self._archive_dir)
        doc = {"format": FORMAT, "parts": [p.to_json() for p in sorted(parts,
                                                                      key=lambda p: p.first)]}
        atomic_write_json(self._archive_dir / MANIFEST, doc, durable=self._files.durable)
        self._manifest_cache = None

    def _view(self) -> _View:
        versions = self._runs_versions()
        newest = max(versions, default=-1)
        parts = [p for p in self._parts()
                 if all(versions.get(n) == key and n != newest for n, key in p.shards)]
        held = {n for p in parts for n, _ in p.shards}
        tail = [n for n in sorted(versions) if n not in held]
        token = hash((tuple(sorted(versions.items())), tuple(p.file for p in parts)))
        return _View(versions, parts, tail, token)

    def _check_schema(self) -> None:
        """A migration may rewrite runs shards in place, within the clock tick the archive
        read them at and to the same size: after one, the archive is rebuilt from scratch."""
        key = self._meta_key()
        if key is not None and key == self._meta_checked:
            return
        before = self._read_schema_version(repair=False)
        super()._check_schema()
        if before is not None and before < self.schema_version:
            with contextlib.suppress(FileNotFoundError):
                (self._archive_dir / MANIFEST).unlink()
            self._manifest_cache = None

    # -- writing parts ----------------------------------------------------------------------

    def _runs_in_shard(self, shard: int, *, cache: bool) -> list[dict[str, Any]]:
        with self._lock:  # the parse cache is not thread-safe; one shard at a time is short
            data = self._files.load(self._shard_path(self._runs_dir, shard), cache=cache)
        return list((data or {}).get(RECORDS_TABLE, {}).values())

    def _write_part(self, table: pa.Table, first: int) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"part-{first:06d}-{uuid.uuid4().hex[:12]}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=ROW_GROUP)
        private_dir(self._archive_dir)
        atomic_write_bytes(self._archive_dir / name, sink.getvalue().to_pybytes(),
                           durable=self._files.durable)
        return name

    def _archive_shards(self, shards: Sequence[int], versions: dict[int, ShardKey], *,
                        cache: bool = True) -> Part | None:
        """Writes one part of these shards as they are now (None if one changed meanwhile)."""
        rows: list[dict[str, Any]] = []
        for n in shards:
            rows.extend(self._runs_in_shard(n, cache=cache))
        if self._runs_versions_of(shards) != {n: versions[n] for n in shards}:
            return None  # written to or moved aside while we read: next time
        table = runs_arrow(rows)
        unreadable = int(table[UNREADABLE_COLUMN].to_numpy().sum()) if len(table) else 0
        name = self._write_part(table, shards[0])
        return Part(name, tuple((n, versions[n]) for n in shards), len(table), unreadable)

    def _runs_versions_of(self, shards: Iterable[int]) -> dict[int, ShardKey]:
        out: dict[int, ShardKey] = {}
        for n in shards:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self._shard_path(self._runs_dir, n))
                out[n] = (st.st_mtime_ns, st.st_size)
        return out

    def _commit(self, new: Sequence[Part], replaced: Sequence[Part] = (), *,
                drop_stale: bool = True) -> bool:
        """Adds `new` to the manifest in place of `replaced`, under the write lock, if the
        history still has those shards as they were read and no other part holds them. Parts
        whose shards changed since they were written leave the manifest here too, unless
        `drop_stale` is false (the write path: a stat of every shard per batch is for
        archive_runs() to pay; readers skip stale parts anyway)."""
        stale: list[Part] = []
        with self._writing():
            parts = self._parts()
            gone = {p.file for p in replaced}
            if not gone <= {p.file for p in parts}:
                ok = False  # merged or dropped by someone else meanwhile
            else:
                if drop_stale:
                    versions = self._runs_versions()
                else:
                    versions = self._runs_versions_of(n for p in new for n, _ in p.shards)
                    versions.update({n: key for p in parts for n, key in p.shards
                                     if n not in versions})
                kept: list[Part] = []
                stale = []
                for p in parts:
                    if p.file not in gone:
                        fresh = all(versions.get(n) == key for n, key in p.shards)
                        (kept if fresh else stale).append(p)
                held = {n for p in kept for n, _ in p.shards}
                ok = all(versions.get(n) == key and n not in held
                         for p in new for n, key in p.shards)
                ok = ok and all((self._archive_dir / p.file).is_file() for p in new)
                if ok:
                    self._save_parts([*kept, *new])
                else:
                    stale = []
        for p in (*(replaced if ok else new), *stale):
            with contextlib.suppress(FileNotFoundError):
                (self._archive_dir / p.file).unlink()
        return ok

    def _archive_closed(self, shards: Iterable[int]) -> None:
        """The write path: archives the shards an append just closed (as one part) unless a
        part holds them already. Never raises: the runs are in the history whatever happens
        here, and the next reader or archive_runs() picks them up."""
        try:
            # the manifest as it stands (a stat when unchanged): stale parts are for readers
            # and archive_runs() to find, not for every append
            held = {n for p in self._parts() for n, _ in p.shards}
            wanted = sorted(n for n in set(shards) if n >= 0 and n not in held)
            if not wanted:
                return
            versions = self._runs_versions_of(wanted)
            wanted = [n for n in wanted if n in versions]
            per_part = max(1, PART_ROWS // self._shard_rows)
            for start in range(0, len(wanted), per_part):  # a huge import: parts of PART_ROWS
                part = self._archive_shards(wanted[start:start + per_part], versions)
                if part is not None:
                    self._commit([part], drop_stale=False)
        except Exception as exc:  # noqa: BLE001 (derived data: log it, keep the run)
            log.warning("Could not archive runs shards %s: %s", list(shards), exc)

    def append(self, table: str, record: dict[str, Any]) -> str:
        if table != RunRecord.TABLE:
            return super().append(table, record)
        with self._writing():
            run_id = super().append(table, record)
            shard = None if "id" in record else shard_of(run_id)
            if shard is None:  # a caller-chosen id: ask the folder
                shard = max(self._shard_numbers(self._runs_dir), default=0)
            if shard > 0:
                self._archive_closed([shard - 1])
        return run_id

    def append_many(self, table: str, records: Iterable[dict[str, Any]]) -> list[str]:
        if table != RunRecord.TABLE:
            return super().append_many(table, records)
        records = list(records)
        own_ids = any(isinstance(r, dict) and "id" in r for r in records)
        with self._writing():
            if own_ids:  # an import keeps its ids: they need not name the shard they land in
                before = max(self._shard_numbers(self._runs_dir), default=0)
                ids = super().append_many(table, records)
                after = max(self._shard_numbers(self._runs_dir), default=0)
            else:  # the store's own ids name their shard: no directory listing per batch
                ids = super().append_many(table, records)
                after = shard_of(ids[-1]) or 0 if ids else 0
                # if the shard before the first was full, this batch closed it too
                before = max(0, (shard_of(ids[0]) or 0) - 1) if ids else 0
            self._archive_closed(range(before, after))
        return ids

    # -- catching up, compacting ------------------------------------------------------------

    def archive_runs(self, progress: ArchiveProgress | None = None) -> int:
        if not self._runs_dir.is_dir() and not self._archive_dir.is_dir():
            return 0
        with _ARCHIVING:  # two sessions opening Stats at once: the second finds it done
            return self._archive_runs(progress)

    def _archive_runs(self, progress: ArchiveProgress | None) -> int:
        with self._writing():  # migrations first; and no write is mid-commit while we clean
            self._remove_orphans()
            view = self._view()
        closed = [n for n in view.tail if n != max(view.versions, default=-1)]
        per_part = max(1, PART_ROWS // self._shard_rows)
        runs = 0
        for start in range(0, len(closed), per_part):
            batch = closed[start:start + per_part]
            part = self._archive_shards(batch, view.versions, cache=False)
            if part is not None and self._commit([part]):
                runs += part.rows
            if progress is not None:
                progress((start + len(batch)) / len(closed), runs)
        self._compact()
        return runs

    def _compact(self) -> None:
        """Merges runs of MERGE_AT or more small parts side by side into parts of up to
        PART_ROWS (what a long session of single-shard parts leaves)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            view = self._view()
        groups: list[list[Part]] = []
        current: list[Part] = []
        for part in view.parts:
            if part.rows >= PART_ROWS or sum(p.rows for p in current) + part.rows > PART_ROWS:
                groups.append(current)
                current = []
            if part.rows < PART_ROWS:
                current.append(part)
        groups.append(current)
        for group in (g for g in groups if len(g) >= MERGE_AT):
            try:
                table = pa.concat_tables(
                    pq.read_table(self._archive_dir / p.file, schema=_schema()) for p in group)
            except (OSError, pa.ArrowException) as exc:
                log.warning("Could not merge runs archive parts: %s", exc)
                continue
            shards = tuple(s for p in group for s in p.shards)
            merged = Part(self._write_part(table, shards[0][0]), shards,
                          sum(p.rows for p in group), sum(p.unreadable for p in group))
            self._commit([merged], replaced=group)

    def _remove_orphans(self) -> None:
        """Part and temp files no manifest names, left by a killed write (old enough not to
        be another process's part on its way into the manifest)."""
        named = {p.file for p in self._parts()} | {MANIFEST}
        temp = temp_file_pattern()
        cutoff = time.time() - ORPHAN_AGE_S
        with contextlib.suppress(FileNotFoundError), os.scandir(self._archive_dir) as entries:
            for entry in entries:
                if entry.name in named:
                    continue
                if not (entry.name.endswith(".parquet") or temp.match(entry.name)):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:  # a young one may be mid-write
                        os.unlink(entry.path)

    def archive_files(self) -> list[Path]:
        """Every file of the runs archive (tests, and the data folder's size)."""
        try:
            return sorted(self._archive_dir.iterdir())
        except FileNotFoundError:
            return []

    # -- reading ----------------------------------------------------------------------------

    def runs_version(self) -> Hashable:
        with self._lock:
            return self._view().token

    def runs_table(
        self,
        columns: Sequence[str] | None = None,
        *,
        models: Sequence[str] = (),
        servers: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
    ) -> RunsTable:
        import pyarrow as pa
        import pyarrow.dataset as ds

        wanted = check_columns(columns)
        expr = run_filter(models=models, servers=servers, since=since, until=until)
        for attempt in range(3):
            with self._lock:
                view = self._view()
                tail_rows = [r for n in view.tail for r in self._runs_in_shard(n, cache=True)]
            tail = runs_arrow(tail_rows)
            unreadable = sum(p.unreadable for p in view.parts)
            unreadable += int(tail[UNREADABLE_COLUMN].to_numpy().sum()) if len(tail) else 0
            pieces = [tail.filter(expr).select(wanted)]
            if view.parts:
                paths = [str(self._archive_dir / p.file) for p in view.parts]
                try:
                    archived = ds.dataset(paths, schema=_schema(), format="parquet").to_table(
                        columns=wanted, filter=expr)
                except (OSError, pa.ArrowException) as exc:
                    # removed by a merge in another process meanwhile, or damaged
                    self._drop_damaged(view.parts, exc, last=attempt == 2)
                    continue
                pieces.insert(0, archived)
            return RunsTable(pa.concat_tables(pieces), unreadable)
        raise AssertionError("unreachable: the last attempt reads without parts")

    def _drop_damaged(self, parts: Sequence[Part], exc: Exception, *, last: bool) -> None:
        """Drops from the manifest every part whose file does not read (the next read gets
        their runs from the history, archive_runs() archives them again)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        bad = []
        for p in parts:
            try:
                pq.read_metadata(self._archive_dir / p.file)
            except FileNotFoundError:
                if last:
                    bad.append(p)
            except (OSError, pa.ArrowException):
                bad.append(p)
        if last and not bad:
            bad = list(parts)
        if not bad:
            return
        log.warning("The runs archive had %s (%s): their runs are read from the history until "
                    "archived again.", plural(len(bad), "unreadable part"), exc)
        with self._writing():
            names = {p.file for p in bad}
            self._save_parts([p for p in self._parts() if p.file not in names])
        for p in bad:
            with contextlib.suppress(OSError):
                (self._archive_dir / p.file).unlink()


def _schema() -> pa.Schema:
    from .run_columns import archive_schema

    return archive_schema()
