"""A HistoryStore in memory: for unit tests, and the proof that the protocol is enough to
write a backend (the protocol test suite runs against it and the TinyDB store alike).

Nothing is kept after the process ends. Values are copied on the way in and out, as the TinyDB
store's are, so a caller cannot change stored data by mutating what it passed or got back.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Hashable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..metrics import GenerationMetrics
from ..types import MessageState
from .protocol import (
    ROLES,
    Conversation,
    Message,
    NewConversation,
    RunsDelta,
    StoredImage,
    check_image_ids,
    check_images,
    check_message_fields,
    check_new_conversation,
    check_str_fields,
    check_table_name,
    copy_json,
    message_preview,
    require_jsonable,
)
from .typed_records import TypedRecords

__all__ = ["MemoryHistoryStore"]

_numbers = itertools.count(1)


class MemoryHistoryStore(TypedRecords):
    """HistoryStore in a few dicts under one lock."""

    def __init__(self, name: str = "") -> None:
        # A made-up folder name, shown where a page says where the history lives.
        self.data_dir = Path(f"memory-{name or next(_numbers)}")
        self.warnings: list[str] = []
        self._lock = threading.RLock()
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, list[Message]] = {}
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._images: dict[tuple[str, str], tuple[StoredImage, ...]] = {}
        # runs_since: a generation that changes whenever runs change other than by appends
        self._runs_generation = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"MemoryHistoryStore({str(self.data_dir)!r})"

    def _writing(self) -> AbstractContextManager[Any]:
        return self._lock

    # -- conversations ----------------------------------------------------------------------------

    def create_conversation(
        self, *, title: str = "New chat", model: str = "", system_prompt: str = ""
    ) -> Conversation:
        check_str_fields(title=title, model=model, system_prompt=system_prompt)
        now = time.time()
        conv = Conversation(id=uuid.uuid4().hex, title=title, model=model,
                            system_prompt=system_prompt, created=now, updated=now,
                            message_count=0, preview="")
        with self._lock:
            self._conversations[conv.id] = conv
            self._messages[conv.id] = []
        return conv

    def get_conversation(self, conversation_id: str) -> Conversation | None:
        with self._lock:
            return self._conversations.get(conversation_id)

    def _require(self, conversation_id: str) -> Conversation:
        found = self._conversations.get(conversation_id)
        if found is None:
            raise KeyError(f"No conversation with id {conversation_id!r} in {self.data_dir}")
        return found

    def list_conversations(
        self, *, query: str = "", limit: int | None = None
    ) -> list[Conversation]:
        if limit is not None and limit <= 0:
            return []
        needle = query.strip().casefold()
        with self._lock:
            convs = sorted(self._conversations.values(),
                           key=lambda c: (c.updated, c.created, c.id), reverse=True)
            if needle:
                convs = [c for c in convs if needle in c.title.casefold() or any(
                    needle in m.content.casefold() for m in self._messages[c.id])]
        return convs if limit is None else convs[:limit]

    def update_conversation(
        self,
        conversation_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Conversation:
        changes: dict[str, Any] = {k: v for k, v in (
            ("title", title), ("model", model), ("system_prompt", system_prompt)) if v is not None}
        check_str_fields(**changes)
        with self._lock:
            conv = self._require(conversation_id)
            if not changes:
                return conv
            conv = self._conversations[conversation_id] = replace(
                conv, **changes, updated=time.time())
            return conv

    def delete_conversation(self, conversation_id: str) -> None:
        with self._lock:
            self._require(conversation_id)
            del self._conversations[conversation_id]
            del self._messages[conversation_id]
            self.delete_images(conversation_id)

    # -- messages ---------------------------------------------------------------------------------

    def _messages_changed(self, conversation_id: str, now: float | None = None) -> None:
        msgs = self._messages[conversation_id]
        last = msgs[-1] if msgs else None
        self._conversations[conversation_id] = replace(
            self._conversations[conversation_id], message_count=len(msgs),
            preview=message_preview({"content": last.content, "error": last.error}
                                    if last else None),
            updated=time.time() if now is None else now)

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
    ) -> Message:
        if role not in ROLES:
            raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
        check_message_fields(content=content, reasoning=reasoning, metrics=metrics,
                             state=state, error=error)
        check_str_fields(model=model)
        with self._lock:
            self._require(conversation_id)
            message = Message(id=uuid.uuid4().hex[:16], conversation_id=conversation_id,
                              role=role, content=content, reasoning=reasoning, model=model,
                              metrics=metrics,
                              state=state, error=error, created=time.time())
            self._messages[conversation_id].append(message)
            self._messages_changed(conversation_id, message.created)
            return message

    def _find_message(self, conversation_id: str, message_id: str) -> int:
        self._require(conversation_id)
        for i, m in enumerate(self._messages[conversation_id]):
            if m.id == message_id:
                return i
        raise KeyError(f"No message with id {message_id!r} in conversation {conversation_id!r}")

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
        changes: dict[str, Any] = {k: v for k, v in (
            ("content", content), ("reasoning", reasoning), ("metrics", metrics),
            ("state", state), ("error", error)) if v is not None}
        check_message_fields(**changes)
        with self._lock:
            at = self._find_message(conversation_id, message_id)
            msgs = self._messages[conversation_id]
            if changes:
                msgs[at] = replace(msgs[at], **changes)
                self._messages_changed(conversation_id)
            return msgs[at]

    def delete_message(self, conversation_id: str, message_id: str) -> None:
        with self._lock:
            at = self._find_message(conversation_id, message_id)
            del self._messages[conversation_id][at]
            self._messages_changed(conversation_id)

    def messages(self, conversation_id: str) -> list[Message]:
        with self._lock:
            self._require(conversation_id)
            return list(self._messages[conversation_id])

    def import_conversations(self, conversations: Sequence[NewConversation]) -> list[Conversation]:
        conversations = list(conversations)
        for new in conversations:
            if not isinstance(new, NewConversation):
                raise TypeError(f"expected NewConversation, not {type(new).__name__}")
            check_new_conversation(new)
        out = []
        with self._lock:
            now = time.time()
            for new in conversations:
                conv_id = uuid.uuid4().hex
                created = now if new.created is None else float(new.created)
                msgs = [Message(id=uuid.uuid4().hex[:16], conversation_id=conv_id, role=m.role,
                                content=m.content, reasoning=m.reasoning, model=m.model,
                                metrics=m.metrics,
                                state=m.state, error=m.error,
                                created=now if m.created is None else float(m.created))
                        for m in new.messages]
                last = msgs[-1] if msgs else None
                updated = (max([created, *(m.created for m in msgs)]) if new.updated is None
                           else float(new.updated))
                conv = Conversation(
                    id=conv_id, title=new.title, model=new.model,
                    system_prompt=new.system_prompt, created=created, updated=updated,
                    message_count=len(msgs),
                    preview=message_preview({"content": last.content, "error": last.error}
                                            if last else None))
                self._conversations[conv_id] = conv
                self._messages[conv_id] = msgs
                out.append(conv)
        return out

    # -- records ----------------------------------------------------------------------------------

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
        return self.append_many(table, [record])[0]

    def append_many(self, table: str, records: Iterable[dict[str, Any]]) -> list[str]:
        check_table_name(table)
        docs = [self._new_record(r) for r in records]
        require_jsonable(docs, f"records for table {table!r}")
        docs = [json.loads(json.dumps(d)) for d in docs]  # stored apart from the caller's
        with self._lock:
            rows = self._tables.setdefault(table, [])
            for doc in docs:
                doc.setdefault("id", uuid.uuid4().hex)
                rows.append(doc)
        return [str(d["id"]) for d in docs]

    def records(self, table: str) -> list[dict[str, Any]]:
        check_table_name(table)
        with self._lock:
            return [copy_json(r) for r in self._tables.get(table, [])]

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        check_table_name(table)
        with self._lock:
            for row in reversed(self._tables.get(table, [])):
                if row.get("id") == record_id:
                    return copy_json(row)
        return None

    def last_record(self, table: str) -> dict[str, Any] | None:
        check_table_name(table)
        with self._lock:
            rows = self._tables.get(table, [])
            return copy_json(rows[-1]) if rows else None

    def update_record(self, table: str, record_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        check_table_name(table)
        if not isinstance(changes, dict):
            raise TypeError(f"changes must be a dict, not {type(changes).__name__}")
        if "id" in changes and changes["id"] != record_id:
            raise ValueError("a record's id cannot be changed")
        require_jsonable(changes, "changes")
        with self._lock:
            for row in reversed(self._tables.get(table, [])):
                if row.get("id") == record_id:
                    row.update(copy_json(changes))
                    if table == "runs":
                        self._runs_generation = uuid.uuid4().hex
                    return copy_json(row)
        raise KeyError(f"No record with id {record_id!r} in table {table!r}")

    def tables(self) -> list[str]:
        with self._lock:
            return sorted(t for t, rows in self._tables.items() if rows)

    def runs_since(self, token: Hashable | None) -> RunsDelta:
        """Token: (generation, row count). Appends keep the generation, so the delta is the
        new rows; anything else starts from 0."""
        with self._lock:
            rows = self._tables.get("runs", [])
            start = 0
            if (isinstance(token, tuple) and len(token) == 2
                    and token[0] == self._runs_generation and token[1] <= len(rows)):
                start = token[1]
            return RunsDelta(token=(self._runs_generation, len(rows)), start=start,
                             rows=[copy_json(r) for r in rows[start:]])

    # -- images -----------------------------------------------------------------------------------

    def save_images(self, owner_id: str, message_id: str, images: Sequence[StoredImage]) -> None:
        check_image_ids(owner_id, message_id)
        check_images(images)
        with self._lock:
            if images:
                self._images[(owner_id, message_id)] = tuple(images)
            else:
                self._images.pop((owner_id, message_id), None)

    def load_images(self, owner_id: str, message_id: str) -> list[StoredImage]:
        with self._lock:
            return list(self._images.get((owner_id, message_id), ()))

    def delete_images(self, owner_id: str) -> None:
        with self._lock:
            for key in [k for k in self._images if k[0] == owner_id]:
                del self._images[key]

    def image_keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._images)

    # -- housekeeping -----------------------------------------------------------------------------

    def delete_all(self) -> None:
        with self._lock:
            self._conversations.clear()
            self._messages.clear()
            self._tables.clear()
            self._images.clear()
            self._runs_generation = uuid.uuid4().hex

    def size_bytes(self) -> int:
        with self._lock:
            convs = [(c.title, c.system_prompt, [m.content for m in self._messages[c.id]])
                     for c in self._conversations.values()]
            pictures = sum(len(i.data) for kept in self._images.values() for i in kept)
            return len(json.dumps([convs, self._tables], ensure_ascii=False).encode()) + pictures

