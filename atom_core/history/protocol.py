"""The HistoryStore protocol: what ATOM keeps (conversations, messages, runs, other records) and
how it asks for it, with no word about files. Backends: tinydb_store (the app's, on disk) and
memory_store (tests, and the proof that this protocol is enough).

Also here: the value types the protocol speaks in, and the argument checks every backend applies
the same way (so both raise the same errors for the same bad call).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, get_args, runtime_checkable

from ..errors import AtomError
from ..metrics import GenerationMetrics
from ..records import RecordView, StoredRecord
from ..runs import RunRecord
from ..types import MessageState

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "MESSAGE_STATES",
    "PREVIEW_CHARS",
    "ROLES",
    "Conversation",
    "HistoryStore",
    "Message",
    "NewConversation",
    "NewMessage",
    "ReadRecords",
    "ArchiveProgress",
    "RowTables",
    "RunsDelta",
    "RunsTable",
    "SchemaTooNewError",
    "StoreError",
    "StoredImage",
    "check_image_ids",
    "check_message_fields",
    "check_table_name",
    "copy_json",
    "message_preview",
    "require_jsonable",
    "row_tables",
]

MESSAGE_STATES: frozenset[str] = frozenset(get_args(MessageState))
ROLES: frozenset[str] = frozenset({"user", "assistant", "system"})
PREVIEW_CHARS = 120
TABLE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class StoreError(AtomError):
    """The history cannot be read or written as asked."""


class SchemaTooNewError(StoreError):
    """The data folder was written by a newer ATOM; this version will not write to it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    id: str  # opaque; the TinyDB backend uses "<index shard>-<16 hex>"
    title: str
    model: str  # the model last chosen for this conversation ("" if none)
    system_prompt: str
    created: float  # epoch seconds
    updated: float  # epoch seconds: last change to the conversation or any of its messages
    message_count: int
    preview: str  # the last message's text, whitespace collapsed, at most ~120 characters


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: str
    conversation_id: str
    role: str  # "user" | "assistant" | "system"
    content: str
    reasoning: str = ""
    model: str = ""  # the model that wrote it (assistant messages)
    # stored as GenerationMetrics.to_dict(), read back leniently (GenerationMetrics.read)
    metrics: GenerationMetrics | None = None
    state: MessageState = "complete"
    error: str = ""  # the sentence shown for state "error"
    created: float  # epoch seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """A message for `HistoryStore.import_conversations` (imports, fixtures): like Message, but
    the store picks the id; `created` None means now."""

    role: str
    content: str
    reasoning: str = ""
    model: str = ""
    metrics: GenerationMetrics | None = None
    state: MessageState = "complete"
    error: str = ""
    created: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewConversation:
    """A whole conversation written in one go, keeping its times (`created` None means now;
    `updated` None means its last message's time, or `created`)."""

    title: str = "Imported chat"
    model: str = ""
    system_prompt: str = ""
    created: float | None = None
    updated: float | None = None
    messages: tuple[NewMessage, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunsDelta:
    """What changed in the runs since a token: the runs now are the old runs' first `start`
    rows followed by `rows`. `start` 0 with every row is always a correct answer (a backend
    that cannot tell, or a token it does not know)."""

    token: Hashable  # pass it to the next runs_since()
    start: int
    rows: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RunsTable:
    """Runs read by column (HistoryStore.runs_table): a pyarrow Table of the readable runs that
    match, and how many stored runs in the whole history do not read as runs (left out)."""

    table: pa.Table
    unreadable: int


# Called while the runs archive catches up: (share done 0..1, runs archived so far).
ArchiveProgress = Callable[[float, int], None]


IMAGE_MIMES: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/webp"})
_IMAGE_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image kept with a message (vision models): its type and encoded bytes."""

    mime: str  # one of IMAGE_MIMES
    data: bytes


def check_image_ids(owner_id: object, message_id: object) -> None:
    """Images belong to a conversation or arena round (`owner_id`) and one of its messages;
    both must be plain ids (letters, digits, '_', '-', '.'; not "." or "..")."""
    for what, value in (("owner id", owner_id), ("message id", message_id)):
        if (not isinstance(value, str) or not _IMAGE_ID_RE.match(value)
                or value in (".", "..")):
            raise ValueError(f"not a usable image {what}: {value!r}")


def check_images(images: Sequence[StoredImage]) -> None:
    for image in images:
        if not isinstance(image, StoredImage) or image.mime not in IMAGE_MIMES \
                or not isinstance(image.data, bytes):
            raise ValueError("images must be StoredImage(mime PNG/JPEG/WebP, bytes)")


R = TypeVar("R", bound=StoredRecord)
V = TypeVar("V", bound=RecordView)


class ReadRecords(list[V]):
    """The rows of a table that read as their record type, oldest first; `skipped` counts the
    rows that did not (junk, or written by a newer ATOM): skipped, never a crash."""

    skipped: int = 0




@runtime_checkable
class HistoryStore(Protocol):
    """Where ATOM keeps conversations, messages, runs and other records.

    Every method is thread-safe. Unknown conversation, message and record ids raise KeyError;
    bad arguments raise ValueError (TypeError for values that are not JSON-able); a history
    written by a newer ATOM raises SchemaTooNewError on writes.
    """

    data_dir: Path  # where it lives, shown to the user (a backend without files makes one up)
    warnings: list[str]  # plain sentences for the user, e.g. a damaged file moved aside

    # -- conversations and messages ------------------------------------------------------------

    def create_conversation(
        self, *, title: str = "New chat", model: str = "", system_prompt: str = ""
    ) -> Conversation: ...

    def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    def list_conversations(
        self, *, query: str = "", limit: int | None = None
    ) -> list[Conversation]:
        """Most recently updated first. `query` matches (case-insensitively) the title or the
        content of any message."""
        ...

    def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Conversation:
        """Changes the fields given (None leaves a field as it is) and bumps `updated`."""
        ...

    def delete_conversation(self, conversation_id: str) -> None: ...

    def add_message(
        self,
        conversation_id: str,
        *,
        role: str,
        content: str,
        reasoning: str = "",
        model: str = "",
        metrics: GenerationMetrics | None = None,
        state: MessageState = "complete",
        error: str = "",
    ) -> Message: ...

    def update_message(
        self,
        conversation_id: str,
        message_id: str,
        *,
        content: str | None = None,
        reasoning: str | None = None,
        metrics: GenerationMetrics | None = None,
        state: MessageState | None = None,
        error: str | None = None,
    ) -> Message:
        """Changes the fields given (None leaves a field as it is)."""
        ...

    def delete_message(self, conversation_id: str, message_id: str) -> None: ...

    def messages(self, conversation_id: str) -> list[Message]:
        """The conversation's messages, oldest first."""
        ...

    def import_conversations(self, conversations: Sequence[NewConversation]) -> list[Conversation]:
        """Writes whole conversations with their messages and times (imports, bulk builders).
        Every one is checked before anything is written."""
        ...

    # -- runs and other records ------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> str:
        """Appends one generation to the "runs" table (its `to_record()` row; `id` and `ts`
        added if absent); returns the id. Raises TypeError for anything but a RunRecord."""
        ...

    def run_rows(self) -> list[dict[str, Any]]:
        """Every run as its raw stored row, oldest first: the columnar feed of the runs frame
        (stats.runs_frame), which turns 100,000 rows into columns at once. Typed readers use
        `read(RunRecord)`; a RunRecord per row would cost the Stats page a pass in Python
        over every row and field. Each row is a fresh dict (nested values may be shared with
        the store's cache: do not mutate them)."""
        ...

    def runs_since(self, token: Hashable | None) -> RunsDelta:
        """The change to `runs()` since the call that returned `token` (None: since nothing).
        Cheap when little changed, whatever the history's size: what the Stats cache polls."""
        ...

    def add_runs(self, runs: Sequence[RunRecord]) -> list[str]:
        """Appends many runs in one write (a sweep's batch); returns their ids. Raises TypeError
        if any is not a RunRecord, before anything is written."""
        ...

    def runs_table(
        self,
        columns: Sequence[str] | None = None,
        *,
        models: Sequence[str] = (),
        servers: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
    ) -> RunsTable:
        """The runs as typed columns (history.run_columns: ARCHIVE_COLUMNS; None: all), only
        the readable ones with `since` <= ts < `until` on the models and servers given (empty:
        all), in the history's order. Reads only those columns of the runs archive (and the
        few runs not archived yet), not every row of the history."""
        ...

    def runs_version(self) -> Hashable:
        """A cheap value that changes whenever the runs change: a cache key for readers."""
        ...

    def archive_runs(self, progress: ArchiveProgress | None = None) -> int:
        """Brings the runs archive up to date with the history (a first start, a folder
        written by an older ATOM, an archive missing or damaged) and compacts it; `progress`
        is called as it goes when there is work. Returns how many runs it archived."""
        ...

    # -- typed records (atom_core.records): written once, in typed_records.py ---------

    def add(self, record: StoredRecord) -> str:
        """Appends a typed record to its type's table (its `to_record()` row); returns the id."""
        ...

    def read(self, kind: type[V]) -> ReadRecords[V]:
        """Every row of `kind.TABLE` as a `kind` (its `from_record`), oldest first."""
        ...

    def get(self, kind: type[V], record_id: str) -> V | None:
        """One row of `kind.TABLE` by id as a `kind`; None if there is none or it does not read.
        Costs about one row, not the table (the Arena's Race view reads one on every rerun)."""
        ...

    def last(self, kind: type[V]) -> V | None:
        """The row appended to `kind.TABLE` last, as a `kind`; None for an empty table or a
        last row that does not read. Costs about one row, not the table."""
        ...

    def update(self, kind: type[R], record_id: str, **fields: Any) -> R:
        """Changes the named fields of one stored `kind` and returns it as now stored. Only the
        row's columns whose stored form changed are written (`to_record()` before and after),
        so a field another writer changed meanwhile and this call does not name is kept; the
        read and the write are one step under the store's write lock. Raises KeyError when no
        row with that id reads as a `kind`, TypeError for a field `kind` does not have."""
        ...

    # -- images ------------------------------------------------------------------------------------

    def save_images(self, owner_id: str, message_id: str, images: Sequence[StoredImage]) -> None:
        """Keeps the images of one message of a conversation or arena round (`owner_id`), in
        order, replacing any it had ([] removes them). Bad ids raise ValueError."""
        ...

    def load_images(self, owner_id: str, message_id: str) -> list[StoredImage]:
        """The images kept with a message, in order ([] for none, or for ids that are not
        usable)."""
        ...

    def delete_images(self, owner_id: str) -> None:
        """Forgets every image of a conversation or round (deleting a conversation does it)."""
        ...

    def image_keys(self) -> list[tuple[str, str]]:
        """(owner id, message id) of every message that has images (backups)."""
        ...

    # -- housekeeping ----------------------------------------------------------------------------

    def delete_all(self) -> None:
        """Deletes every conversation, message, run, record and image. Other ATOM processes on the
        same history never see half of it gone mid-write."""
        ...

    def size_bytes(self) -> int:
        """Bytes the history takes up."""
        ...


@runtime_checkable
class RowTables(Protocol):
    """The row API under the typed one: JSON rows of any table. History's own (backup exports
    and imports every table, known or not; TypedRecords is written over it); nothing outside
    atom_core/history calls it (tests/unit/test_record_api.py scans for it): the rest of ATOM
    speaks in record types (HistoryStore.add / read / get / last / update)."""

    def append(self, table: str, record: dict[str, Any]) -> str:
        """Appends a JSON-able record to `table` (created on first use); adds `id` and `ts` if
        absent and returns the id. A caller-chosen `id` must be a unique, non-empty str."""
        ...

    def append_many(self, table: str, records: Iterable[dict[str, Any]]) -> list[str]:
        """Appends many records at once (imports, bulk builders). Every record is checked
        before anything is written."""
        ...

    def records(self, table: str) -> list[dict[str, Any]]:
        """Every record of `table`, oldest first ([] for a table never written)."""
        ...

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        """One record of `table` by its id, or None (an unknown id, a table never written).
        Costs about one record, not the table: for a page that shows one of many (the Arena's
        Race view, on every rerun)."""
        ...

    def last_record(self, table: str) -> dict[str, Any] | None:
        """The record appended to `table` last (what `records(table)[-1]` would be), or None
        for an empty table. Costs about one record, not the table."""
        ...

    def update_record(self, table: str, record_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merges `changes` into the record and returns the updated record."""
        ...

    def tables(self) -> list[str]:
        """The names of the record tables written so far ("runs" among them once used)."""
        ...


def row_tables(store: HistoryStore) -> RowTables:
    """The store's row API (see RowTables): for history's own modules only."""
    if not isinstance(store, RowTables):
        raise TypeError(f"{type(store).__name__} has no row tables")
    return store


# -- checks every backend shares ---------------------------------------------------------------


def check_table_name(table: object) -> str:
    if not isinstance(table, str) or not TABLE_NAME_RE.match(table):
        raise ValueError(
            f"Table name {table!r} is not allowed: use 1-64 lowercase letters, digits, "
            "'_' or '-', starting with a letter or digit."
        )
    return table


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (lists and dicts), much faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def require_jsonable(value: object, what: str) -> None:
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable: {exc}") from exc


def check_str_fields(**fields: object) -> None:
    for name, value in fields.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")


def check_message_fields(
    *,
    content: object = "",
    reasoning: object = "",
    metrics: object = None,
    state: object = "complete",
    error: object = "",
) -> None:
    check_str_fields(content=content, reasoning=reasoning, error=error)
    if state not in MESSAGE_STATES:
        raise ValueError(f"state must be one of {sorted(MESSAGE_STATES)}, not {state!r}")
    if metrics is not None and not isinstance(metrics, GenerationMetrics):
        raise TypeError(
            f"metrics must be GenerationMetrics or None, not {type(metrics).__name__}")


def check_new_message(m: NewMessage) -> None:
    if m.role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, not {m.role!r}")
    check_message_fields(content=m.content, reasoning=m.reasoning, metrics=m.metrics,
                         state=m.state, error=m.error)
    check_str_fields(model=m.model)
    if m.created is not None and not _is_time(m.created):
        raise ValueError(f"a message's created time must be epoch seconds, not {m.created!r}")


def check_new_conversation(c: NewConversation) -> None:
    check_str_fields(title=c.title, model=c.model, system_prompt=c.system_prompt)
    for when in (c.created, c.updated):
        if when is not None and not _is_time(when):
            raise ValueError(f"a conversation's time must be epoch seconds, not {when!r}")
    for m in c.messages:
        check_new_message(m)


def _is_time(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 <= value < 1e11)  # 1e11 s is the year 5138: anything past it is junk


def preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


def message_preview(doc: dict[str, Any] | None) -> str:
    """The conversation list's preview of its last message (a stored message document)."""
    if doc is None:
        return ""
    return preview(str(doc.get("content") or doc.get("error") or ""))
