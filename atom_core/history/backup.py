"""The whole history in one file and back: export, import, delete everything.

`export_everything()` writes every conversation with its messages, every record table (runs,
arena rounds, votes, ...) and the settings (never a token) as one JSON document;
Images sent to vision models go along as data URLs: a conversation message's under its
"images", an arena round's prompt images in the top-level "images" list.
`import_everything()` merges such a document back, skipping what is already here, so importing
the same file twice adds nothing; `delete_history()` empties the store. Only the HistoryStore
protocol is used, so any backend can be backed up; the settings part goes through a small
protocol too (SettingsStore provides it), so this module does not depend on the settings room.
An imported table whose record type is registered (atom_core.records: runs, arena rounds) is
checked by that type's own `check_import`; this module knows no room above history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import TypeAdapter

from ..metrics import GenerationMetrics, metrics_dict
from ..records import StoredRecord, record_types
from ..words import plural
from .protocol import (
    IMAGE_MIMES,
    TABLE_NAME_RE,
    HistoryStore,
    NewConversation,
    StoredImage,
    check_image_ids,
    check_new_conversation,
    require_jsonable,
    row_tables,
)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "LOCAL_TABLES",
    "ImportRefused",
    "ImportReport",
    "SettingsPart",
    "delete_history",
    "export_everything",
    "export_json",
    "import_everything",
    "plan_import",
    "validation_sentences",
]

EXPORT_FORMAT = "atom-export"
EXPORT_VERSION = 1
# Record tables that describe this machine's live state, not history: not exported or imported.
# A class session ("arena_classes": its join code and the secret that signs student ids) belongs
# to the lesson on this machine; its rounds are history and carry its id.
LOCAL_TABLES = frozenset({"downloads", "arena_classes"})
# Fields an export leaves out: this machine's own name (hardware.MACHINES_TABLE's "hostname"),
# which benchmark cards and reports leave out too; the export may travel further than they do.
PRIVATE_FIELDS: dict[str, frozenset[str]] = {"machines": frozenset({"hostname"})}


class SettingsPart(Protocol):
    """What a backup needs from the settings (atom_core.settings.store.SettingsStore)."""

    def export_dict(self) -> dict[str, Any]:
        """The settings for an export: never a token."""
        ...

    def check_import(self, doc: Mapping[str, Any]) -> list[str]:
        """The problems of an export's settings part, one sentence each ([] if none)."""
        ...

    def merge(self, doc: Mapping[str, Any]) -> int:
        """Adds what an export's settings have and these do not; returns how many."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    conversations_added: int = 0
    conversations_skipped: int = 0  # already here (same messages)
    records_added: int = 0
    records_skipped: int = 0  # already here (same id)
    images_added: int = 0
    settings_added: int = 0
    problems: tuple[str, ...] = ()  # parts that could not be imported, one sentence each

    @property
    def sentence(self) -> str:
        s = (f"Imported {plural(self.conversations_added, 'conversation')}, "
             f"{plural(self.records_added, 'record')} and "
             f"{plural(self.settings_added, 'setting')}.")
        if self.images_added:
            s = s[:-1] + f", with {plural(self.images_added, 'image')}."
        skipped = self.conversations_skipped + self.records_skipped
        if skipped:
            s += f" Skipped {skipped} already here."
        return s


def _fingerprint(system_prompt: str, messages: list[Mapping[str, Any]]) -> str:
    """What makes two conversations the same for an import: system prompt and every message's
    role, text and reasoning (not ids, titles or times, which differ after an import)."""
    body = [system_prompt, [[m.get("role"), m.get("content"), m.get("reasoning") or ""]
                            for m in messages]]
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


def export_everything(store: HistoryStore, settings: SettingsPart | None = None) -> dict[str, Any]:
    """Every conversation with its messages, every record table (runs, votes, ...) and the
    settings (never a token) as one JSON-able document."""
    conversations = []
    rows = row_tables(store)
    with_images = store.image_keys()
    conversation_ids = set()
    for c in reversed(store.list_conversations()):  # oldest first: an import keeps the order
        conversation_ids.add(c.id)
        messages = []
        for m in store.messages(c.id):
            entry: dict[str, Any] = {
                "role": m.role, "content": m.content, "reasoning": m.reasoning,
                "model": m.model, "metrics": metrics_dict(m.metrics), "state": m.state,
                "error": m.error, "created": m.created}
            if (c.id, m.id) in with_images:
                entry["images"] = _data_urls(store, c.id, m.id)
            messages.append(entry)
        conversations.append({
            "id": c.id, "title": c.title, "model": c.model, "system_prompt": c.system_prompt,
            "created": c.created, "updated": c.updated, "messages": messages,
        })
    others = [{"owner": owner, "message": message,
               "data_urls": _data_urls(store, owner, message)}
              for owner, message in with_images if owner not in conversation_ids]
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "conversations": conversations,
        "tables": {t: _without_private(t, rows.records(t)) for t in rows.tables()
                   if t not in LOCAL_TABLES},
        "settings": settings.export_dict() if settings is not None else {},
        "images": others,
    }


def _without_private(table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    private = PRIVATE_FIELDS.get(table)
    if not private:
        return rows
    return [{k: v for k, v in row.items() if k not in private} for row in rows]


def _data_urls(store: HistoryStore, owner_id: str, message_id: str) -> list[str]:
    return [f"data:{i.mime};base64,{base64.b64encode(i.data).decode('ascii')}"
            for i in store.load_images(owner_id, message_id)]


_DATA_URL = re.compile(r"^data:(image/[a-z]+);base64,([A-Za-z0-9+/=\s]*)$")


def _read_data_urls(value: object) -> list[StoredImage]:
    """Data URLs of PNG/JPEG/WebP images -> StoredImage; ValueError for anything else."""
    if not isinstance(value, list):
        raise ValueError("its images are not a list of data URLs")
    out = []
    for url in value:
        m = _DATA_URL.match(url) if isinstance(url, str) else None
        if m is None or m.group(1) not in IMAGE_MIMES:
            raise ValueError("an image is not a PNG, JPEG or WebP data URL")
        try:
            out.append(StoredImage(m.group(1), base64.b64decode(m.group(2), validate=False)))
        except (binascii.Error, ValueError):
            raise ValueError("an image's data is not base64") from None
    return out


def export_json(store: HistoryStore, settings: SettingsPart | None = None) -> str:
    return json.dumps(export_everything(store, settings), ensure_ascii=False, indent=1)


class ImportRefused(ValueError):
    """A file that cannot be imported; nothing of it was written. `problems` holds one
    sentence per problem (at most MAX_PROBLEMS, the last saying how many more there were)."""

    def __init__(self, problems: list[str]) -> None:
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS + 1
            problems = [*problems[:MAX_PROBLEMS - 1], f"…and {more} more problems."]
        self.problems = tuple(problems)
        if len(problems) == 1:
            sentence = problems[0]
        else:
            sentence = (f"Nothing was imported: that file has {len(problems)} problems"
                        f"{' (or more)' if more_than(problems) else ''}.")
        super().__init__(sentence)

    @property
    def sentence(self) -> str:
        return str(self)


MAX_PROBLEMS = 12


def more_than(problems: list[str]) -> bool:
    return bool(problems) and problems[-1].startswith("…and ")


def validation_sentences(exc: Exception, what: str) -> list[str]:
    """One sentence per pydantic error ("Run 3: ok should be true or false."), never quoting
    the rejected value (imported text is untrusted)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"{what} could not be read ({type(exc).__name__})."]
    out = []
    for err in errors():
        where = ".".join(_safe_part(part) for part in err.get("loc", ()) if part != "[key]")
        msg = str(err.get("msg", "is not valid")).rstrip(".")
        msg = msg[:1].lower() + msg[1:]
        out.append(f"{what}: {where + ' ' if where else ''}{_plain(msg)}.")
    return out


def _safe_part(part: object) -> str:
    # A location can hold a key from the file (untrusted text): only plain field names and
    # positions are repeated.
    if isinstance(part, int) or (isinstance(part, str) and _FIELD_NAME.match(part)):
        return str(part)
    return "(an entry)"


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


def _plain(msg: str) -> str:
    # "input should be a valid string" -> "should be a valid string"
    return msg[len("input "):] if msg.startswith("input ") else msg


# The record types of tables that have one (atom_core.records): what a stored record must read as.
def _record_checks() -> dict[str, Callable[[dict[str, Any]], None]]:
    def checker(kind: type[StoredRecord]) -> Callable[[dict[str, Any]], None]:
        def check(record: dict[str, Any]) -> None:
            kind.check_import(record)
            _finite_time(record.get("ts"))
        return check

    return {table: checker(kind) for table, kind in record_types().items()}


def _finite_time(value: object) -> None:
    if not isinstance(value, int | float) or not 0 <= value < 1e11:
        raise ValueError("its time (ts) is not a time")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    conversations: list[NewConversation]
    prints: list[str]
    tables: dict[str, list[dict[str, Any]]]
    settings: Mapping[str, Any] | None
    # per conversation, per message: its images; and (owner, message, images) of the rest
    conversation_images: list[list[list[StoredImage]]]
    other_images: list[tuple[str, str, list[StoredImage]]]


_CONVERSATION = TypeAdapter(NewConversation)


def _read_conversation(entry: object) -> NewConversation:
    if not isinstance(entry, Mapping):
        raise ValueError("is not a conversation")
    # A message's metrics are checked as a JSON object and read leniently (missing or odd
    # fields None, as GenerationMetrics.from_dict reads a stored row): an import is no stricter
    # about them than the store; everything else is strict.
    messages = entry.get("messages")
    metrics: list[object] = []
    if isinstance(messages, list) and all(isinstance(m, Mapping) for m in messages):
        metrics = [m.get("metrics") for m in messages]
        if any(v is not None and not isinstance(v, Mapping) for v in metrics):
            raise ValueError("a message's metrics are not a JSON object")
        entry = {**entry, "messages": [{k: v for k, v in m.items() if k != "metrics"}
                                        for m in messages]}
    new = _CONVERSATION.validate_json(json.dumps(entry), strict=True)
    if metrics:
        new = replace(new, messages=tuple(
            replace(m, metrics=GenerationMetrics.read(v))
            for m, v in zip(new.messages, metrics, strict=True)))
    check_new_conversation(new)
    return new


def plan_import(data: str | bytes | Mapping[str, Any], settings: SettingsPart | None) -> _Plan:
    """Reads and checks a whole export, writing nothing; raises ImportRefused listing every
    problem found."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            raise ImportRefused(["That file is not JSON; choose a file ATOM exported."]) from None
    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise ImportRefused(["That file is not an ATOM export (it has no \"format\": "
                             f"\"{EXPORT_FORMAT}\")."])
    version = data.get("version", EXPORT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ImportRefused(["That file's “version” is not a whole number, so ATOM cannot "
                             "tell how to read it."])
    if version > EXPORT_VERSION:
        raise ImportRefused(["That export was written by a newer ATOM; upgrade ATOM to "
                             "import it."])
    problems: list[str] = []
    conversations: list[NewConversation] = []
    raw_conversations = data.get("conversations", [])
    if not isinstance(raw_conversations, list):
        problems.append("The file's “conversations” is not a list of conversations.")
        raw_conversations = []
    conversation_images: list[list[list[StoredImage]]] = []
    for i, entry in enumerate(raw_conversations, 1):
        try:
            conversations.append(_read_conversation(entry))
            conversation_images.append([
                _read_data_urls(m["images"]) if isinstance(m, Mapping) and "images" in m else []
                for m in entry.get("messages") or []])
        except (ValueError, TypeError) as e:
            problems += validation_sentences(e, f"Conversation {i}") if hasattr(
                e, "errors") else [f"Conversation {i}: {str(e).rstrip('.')}."]
    other_images: list[tuple[str, str, list[StoredImage]]] = []
    raw_images = data.get("images", [])
    if not isinstance(raw_images, list):
        problems.append("The file's “images” is not a list of images.")
        raw_images = []
    for i, entry in enumerate(raw_images, 1):
        try:
            if not isinstance(entry, Mapping):
                raise ValueError("is not an image entry")
            check_image_ids(entry.get("owner"), entry.get("message"))
            other_images.append((entry["owner"], entry["message"],
                                 _read_data_urls(entry.get("data_urls"))))
        except ValueError as e:
            # the ids are untrusted text: the sentence never repeats them
            reason = "its ids are not usable" if "image" in str(e) and "id" in str(e) \
                else str(e).rstrip(".")
            problems.append(f"Image entry {i}: {reason}.")
    tables: dict[str, list[dict[str, Any]]] = {}
    raw_tables = data.get("tables", {})
    if not isinstance(raw_tables, Mapping):
        problems.append("The file's “tables” is not a set of named tables.")
        raw_tables = {}
    checks = _record_checks()
    for name, records in raw_tables.items():
        if not isinstance(name, str) or not TABLE_NAME_RE.match(name):
            problems.append("A table's name is not one ATOM uses (lowercase letters, digits, "
                            "'_' or '-').")
            continue
        if name in LOCAL_TABLES:
            continue  # this machine's live state: never imported
        if not isinstance(records, list):
            problems.append(f"Table “{name}” is not a list of records.")
            continue
        rows: list[dict[str, Any]] = []
        for i, record in enumerate(records, 1):
            what = f"Record {i} of table “{name}”"
            if not isinstance(record, dict):
                problems.append(f"{what} is not a record.")
                continue
            try:
                require_jsonable(record, what)
                if "id" in record and (not isinstance(record["id"], str) or not record["id"]):
                    raise ValueError("its id is not a name")
                check = checks.get(name)
                if check is not None:
                    check(record)
            except (ValueError, TypeError) as e:
                problems += validation_sentences(e, what) if hasattr(
                    e, "errors") else [f"{what}: {str(e).rstrip('.')}."]
                continue
            rows.append(dict(record))
        tables[name] = rows
    raw_settings = data.get("settings")
    if raw_settings is not None and not isinstance(raw_settings, Mapping):
        problems.append("The file's “settings” is not a set of settings.")
        raw_settings = None
    if raw_settings and settings is not None:
        problems += settings.check_import(raw_settings)
    if problems:
        raise ImportRefused(problems)
    prints = [_fingerprint(c.system_prompt, [asdict(m) for m in c.messages])
              for c in conversations]
    return _Plan(conversations=conversations, prints=prints, tables=tables,
                 settings=raw_settings, conversation_images=conversation_images,
                 other_images=other_images)


def import_everything(
    store: HistoryStore, settings: SettingsPart | None, data: str | bytes | Mapping[str, Any]
) -> ImportReport:
    """Merges an export back in, whole or not at all: the file is read and every record
    checked against its stored type first, and any problem refuses it (ImportRefused, a
    ValueError, with one sentence per problem) before anything is written. Conversations whose
    messages are already here, and records whose id is already here, are skipped, so importing
    the same file twice adds nothing. (A disk failure half way can still leave part written:
    the store's writes are atomic one by one, not as a whole.)"""
    plan = plan_import(data, settings)
    known = {_fingerprint(c.system_prompt, [asdict(m) for m in store.messages(c.id)])
             for c in store.list_conversations()}
    new: list[NewConversation] = []
    new_images: list[list[list[StoredImage]]] = []
    skipped = 0
    for conv, print_, pictures in zip(plan.conversations, plan.prints,
                                      plan.conversation_images, strict=True):
        if print_ in known:
            skipped += 1
            continue
        known.add(print_)
        new.append(conv)
        new_images.append(pictures)
    images_added = 0
    for made, pictures in zip(store.import_conversations(new), new_images, strict=True):
        if not any(pictures):
            continue
        for message, kept in zip(store.messages(made.id), pictures, strict=False):
            if kept:
                store.save_images(made.id, message.id, kept)
                images_added += len(kept)
    for owner, message_id, kept in plan.other_images:
        if kept and not store.load_images(owner, message_id):
            store.save_images(owner, message_id, kept)
            images_added += len(kept)
    rec_added = rec_skipped = 0
    for table, records in plan.tables.items():
        have = {r.get("id") for r in row_tables(store).records(table)}
        fresh = []
        for record in records:
            record.setdefault("id", "imp-" + hashlib.sha256(json.dumps(
                record, sort_keys=True, default=str).encode()).hexdigest()[:16])
            if record["id"] in have:
                rec_skipped += 1
                continue
            have.add(record["id"])
            fresh.append(record)
        row_tables(store).append_many(table, fresh)
        rec_added += len(fresh)
    settings_added = 0
    if settings is not None and plan.settings:
        settings_added = settings.merge(plan.settings)
    return ImportReport(conversations_added=len(new), conversations_skipped=skipped,
                        records_added=rec_added, records_skipped=rec_skipped,
                        settings_added=settings_added, images_added=images_added)


def delete_history(store: HistoryStore) -> None:
    """Deletes every conversation, message, run and record (settings and tokens stay: see
    SettingsStore.forget_everything). The store holds its write locks meanwhile, so no write
    from this or another ATOM process lands half way."""
    store.delete_all()
