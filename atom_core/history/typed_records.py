"""HistoryStore's typed methods (add, read, get, last, update, the runs' reads), written once
over a backend's row methods: every backend inherits them (TinyDB's RecordsPart, the memory
store)."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from ..errors import AtomError
from ..records import StoredRecord
from ..runs import RunRecord
from .protocol import (
    ArchiveProgress,
    R,
    ReadRecords,
    RunsDelta,
    RunsTable,
    V,
)

# What a row of a record type may raise when it is not one (see StoredRecord.from_record).
UNREADABLE_ROW_ERRORS = (KeyError, TypeError, ValueError, AttributeError, AtomError)


class TypedRecords:
    """HistoryStore's typed methods, over its row methods: every backend inherits them."""

    def append(self, table: str, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def records(self, table: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def last_record(self, table: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def update_record(self, table: str, record_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _writing(self) -> AbstractContextManager[Any]:
        """The backend's write lock (re-entrant): an update's read and write are one step."""
        raise NotImplementedError

    def add(self, record: StoredRecord) -> str:
        row = record.to_record()
        if "id" in row and not row["id"]:  # not saved yet: the store picks the id
            del row["id"]
        return self.append(record.TABLE, row)

    def add_run(self, run: RunRecord) -> str:
        if not isinstance(run, RunRecord):
            raise TypeError(f"add_run takes a RunRecord, not {type(run).__name__}")
        return self.add(run)

    def append_many(self, table: str, records: Iterable[dict[str, Any]]) -> list[str]:
        raise NotImplementedError

    def runs_since(self, token: Hashable | None) -> RunsDelta:
        raise NotImplementedError

    def add_runs(self, runs: Sequence[RunRecord]) -> list[str]:
        for run in runs:
            if not isinstance(run, RunRecord):
                raise TypeError(f"add_runs takes RunRecords, not {type(run).__name__}")
        return self.append_many(RunRecord.TABLE, [run.to_record() for run in runs])

    def run_rows(self) -> list[dict[str, Any]]:
        return self.records(RunRecord.TABLE)

    def runs_table(
        self,
        columns: Sequence[str] | None = None,
        *,
        models: Sequence[str] = (),
        servers: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
    ) -> RunsTable:
        """Every run typed then filtered (a backend without an archive)."""
        from .run_columns import UNREADABLE_COLUMN, check_columns, run_filter, runs_arrow

        wanted = check_columns(columns)
        table = runs_arrow(self.run_rows())
        unreadable = int(table[UNREADABLE_COLUMN].to_numpy().sum()) if len(table) else 0
        table = table.filter(run_filter(models=models, servers=servers, since=since,
                                        until=until))
        return RunsTable(table.select(wanted), unreadable)

    def runs_version(self) -> Hashable:
        return self.runs_since(None).token

    def archive_runs(self, progress: ArchiveProgress | None = None) -> int:
        return 0  # nothing to archive: runs_table reads the history itself

    def read(self, kind: type[V]) -> ReadRecords[V]:
        out: ReadRecords[V] = ReadRecords()
        for row in self.records(kind.TABLE):
            try:
                out.append(kind.from_record(row))
            except UNREADABLE_ROW_ERRORS:
                out.skipped += 1
        return out

    def get(self, kind: type[V], record_id: str) -> V | None:
        return _read_one(kind, self.record(kind.TABLE, record_id))

    def last(self, kind: type[V]) -> V | None:
        return _read_one(kind, self.last_record(kind.TABLE))

    def update(self, kind: type[R], record_id: str, **fields: Any) -> R:
        with self._writing():
            now = self.get(kind, record_id)
            if now is None:
                raise KeyError(f"No {kind.__name__} with id {record_id!r}")
            new = cast(R, dataclasses.replace(cast(Any, now), **fields))
            before, after = now.to_record(), new.to_record()
            changes = {k: v for k, v in after.items()
                       if k != "id" and (k not in before or before[k] != v)}
            if changes:
                self.update_record(kind.TABLE, record_id, changes)
        return new


def _read_one(kind: type[V], row: dict[str, Any] | None) -> V | None:
    try:
        return kind.from_record(row) if row is not None else None
    except UNREADABLE_ROW_ERRORS:
        return None
