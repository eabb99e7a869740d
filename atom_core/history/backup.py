"""The whole history in one file and back: export, import, delete everything.

`export_everything()` writes every conversation with its messages, every record table (runs,
arena rounds, votes, ...) and the settings (never a token) as one JSON document;
`import_everything()` merges such a document back, skipping what is already here, so importing
the same file twice adds nothing; `delete_history()` empties the store. Only the HistoryStore
protocol is used, so any backend can be backed up; the settings part goes through a small
protocol too (SettingsStore provides it), so this module does not depend on the settings room.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import AtomError
from .protocol import TABLE_NAME_RE, HistoryStore

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "LOCAL_TABLES",
    "ImportReport",
    "SettingsPart",
    "delete_history",
    "export_everything",
    "export_json",
    "import_everything",
]

EXPORT_FORMAT = "atom-export"
EXPORT_VERSION = 1
# Record tables that describe this machine's live state, not history: not exported or imported.
LOCAL_TABLES = frozenset({"downloads"})


class SettingsPart(Protocol):
    """What a backup needs from the settings (atom_core.settings.store.SettingsStore)."""

    def export_dict(self) -> dict[str, Any]:
        """The settings for an export: never a token."""
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
    settings_added: int = 0
    problems: tuple[str, ...] = ()  # parts that could not be imported, one sentence each

    @property
    def sentence(self) -> str:
        s = (f"Imported {self.conversations_added} conversation(s), {self.records_added} "
             f"record(s) and {self.settings_added} setting(s).")
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
    for c in reversed(store.list_conversations()):  # oldest first: an import keeps the order
        conversations.append({
            "id": c.id, "title": c.title, "model": c.model, "system_prompt": c.system_prompt,
            "created": c.created, "updated": c.updated,
            "messages": [
                {"role": m.role, "content": m.content, "reasoning": m.reasoning,
                 "model": m.model, "metrics": m.metrics, "state": m.state, "error": m.error,
                 "created": m.created}
                for m in store.messages(c.id)
            ],
        })
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "conversations": conversations,
        "tables": {t: store.records(t) for t in store.tables() if t not in LOCAL_TABLES},
        "settings": settings.export_dict() if settings is not None else {},
    }


def export_json(store: HistoryStore, settings: SettingsPart | None = None) -> str:
    return json.dumps(export_everything(store, settings), ensure_ascii=False, indent=1)


_MESSAGE_FIELDS = ("role", "content", "reasoning", "model", "metrics", "state", "error")


def import_everything(
    store: HistoryStore, settings: SettingsPart | None, data: str | bytes | Mapping[str, Any]
) -> ImportReport:
    """Merges an export back in: conversations whose messages are already here, and records
    whose id is already here, are skipped, so importing the same file twice adds nothing.
    Raises ValueError with a sentence when `data` is not an ATOM export."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            raise ValueError("That file is not JSON; choose a file ATOM exported.") from None
    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise ValueError("That file is not an ATOM export (it has no \"format\": "
                         f"\"{EXPORT_FORMAT}\").")
    if int(data.get("version") or 0) > EXPORT_VERSION:
        raise ValueError("That export was written by a newer ATOM; upgrade ATOM to import it.")
    problems: list[str] = []
    known = {_fingerprint(c.system_prompt, [asdict(m) for m in store.messages(c.id)])
             for c in store.list_conversations()}
    added = skipped = 0
    for conv in data.get("conversations") or []:
        if not isinstance(conv, Mapping) or not isinstance(conv.get("messages", []), list):
            problems.append("A conversation entry was not readable and was left out.")
            continue
        messages = [m for m in conv.get("messages") or [] if isinstance(m, Mapping)]
        print_ = _fingerprint(str(conv.get("system_prompt") or ""), messages)
        if print_ in known:
            skipped += 1
            continue
        try:
            _import_conversation(store, conv, messages)
        except (ValueError, TypeError, AtomError) as e:
            problems.append(f"“{conv.get('title', '?')}” was left out: {e}")
            continue
        known.add(print_)
        added += 1
    rec_added = rec_skipped = 0
    tables = data.get("tables")
    if not isinstance(tables, Mapping):
        tables = {}
    for table, records in tables.items():
        if table in LOCAL_TABLES or not TABLE_NAME_RE.match(str(table)) or not isinstance(
                records, list):
            problems.append(f"Table “{table}” was left out.")
            continue
        have = {r.get("id") for r in store.records(table)}
        for record in records:
            if not isinstance(record, Mapping):
                continue
            record = dict(record)
            record.setdefault("id", "imp-" + hashlib.sha256(json.dumps(
                record, sort_keys=True, default=str).encode()).hexdigest()[:16])
            if record["id"] in have:
                rec_skipped += 1
                continue
            try:
                store.append(table, record)
            except (ValueError, TypeError) as e:
                problems.append(f"A record of “{table}” was left out: {e}")
                continue
            have.add(record["id"])
            rec_added += 1
    settings_added = 0
    if settings is not None and isinstance(data.get("settings"), Mapping):
        settings_added = settings.merge(data["settings"])
    return ImportReport(conversations_added=added, conversations_skipped=skipped,
                        records_added=rec_added, records_skipped=rec_skipped,
                        settings_added=settings_added, problems=tuple(problems))


def _import_conversation(store: HistoryStore, conv: Mapping[str, Any],
                         messages: list[Mapping[str, Any]]) -> None:
    for m in messages:  # check all first: never leave half a conversation behind
        if m.get("role") not in ("user", "assistant", "system"):
            raise ValueError(f"a message has an unknown role {m.get('role')!r}")
        if not isinstance(m.get("content", ""), str):
            raise ValueError("a message's text is not text")
    created = store.create_conversation(
        title=str(conv.get("title") or "Imported chat"), model=str(conv.get("model") or ""),
        system_prompt=str(conv.get("system_prompt") or ""))
    try:
        for m in messages:
            kwargs = {k: m[k] for k in _MESSAGE_FIELDS if k in m and m[k] is not None}
            store.add_message(created.id, **kwargs)
    except (ValueError, TypeError):
        store.delete_conversation(created.id)
        raise


def delete_history(store: HistoryStore) -> None:
    """Deletes every conversation, message, run and record (settings and tokens stay: see
    SettingsStore.forget_everything). The store holds its write locks meanwhile, so no write
    from this or another ATOM process lands half way."""
    store.delete_all()
