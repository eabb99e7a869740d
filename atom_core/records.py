"""Which record type each stored table holds, and how an import checks a row of it.

A record type (a frozen dataclass) declares its table (`TABLE`), how it is stored and read
(`to_record()`, the flat JSON row with every field, so an update can set one back to None;
`from_record(row)`, lenient, raising for a row that is not one) and one strict check
(`check_import(row)`, raising ValueError; pydantic's ValidationError is one), and registers
itself where it is defined with `@stored_record`. The store takes and returns such types
(HistoryStore.add / read / get / last / update); a reader that needs only part of a row may
read it as a RecordView (TABLE and from_record only, not registered).
Backup asks `record_types()` for the checks, so the history layer never imports a room above
it: the runs table's type lives in the base layer (runs.py), the machines' in measure/hardware
(the app imports it), the Arena's (rounds, prompt sets, verdicts, classes) register when
atom_core.arena is imported, the downloads' with server/admin and the chat routes' with
atom_core.chat (the Settings page's import imports them all).
Reading stays lenient and is each type's own `from_record()`; an import is strict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast

__all__ = ["RecordView", "StoredRecord", "record_types", "stored_record"]


class RecordView(Protocol):
    """A type rows of one table read as (HistoryStore.read / get / last): a stored record type,
    or a view of part of a row for a reader that needs only that part (a phone's watcher)."""

    TABLE: ClassVar[str]

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> Self:
        """Reads a stored row leniently; raises (KeyError, TypeError, ValueError, an AtomError)
        for a row that is not one of these."""
        ...


class StoredRecord(RecordView, Protocol):
    """A type rows of one table are written and read as (HistoryStore.add / update too): a
    frozen dataclass whose `to_record()` is the whole row."""

    def to_record(self) -> dict[str, Any]:
        """The flat JSON-able row the store keeps."""
        ...

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row does not read as this type (strict)."""
        ...


_TYPES: dict[str, type[StoredRecord]] = {}
T = TypeVar("T", bound=type)


def stored_record(cls: T) -> T:
    """Registers `cls` as the type of rows of its `TABLE` (a class decorator)."""
    table = cast(Any, cls).TABLE
    if _TYPES.get(table, cls) is not cls:
        raise ValueError(f"table {table!r} already has a record type")
    _TYPES[table] = cls
    return cls


def record_types() -> Mapping[str, type[StoredRecord]]:
    """Every registered record type, by table."""
    return dict(_TYPES)
