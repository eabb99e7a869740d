"""The TinyDB backend's conversations and messages: an index shard per hundred conversations,
a file per conversation (ConversationsPart of TinyDBHistoryStore).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..metrics import GenerationMetrics
from ..types import MessageState
from .protocol import (
    MESSAGE_STATES,
    ROLES,
    Conversation,
    Message,
    NewConversation,
    check_message_fields,
    check_new_conversation,
    message_preview,
)
from .tinydb_core import (
    CONVERSATION_TABLE,
    ID_RE,
    INDEX_TABLE,
    MESSAGES_TABLE,
    new_id,
    shard_of,
)
from .tinydb_files import (
    sorted_docs,
    stat_key,
    tinydb_file,
)
from .tinydb_images import ImagesPart

log = logging.getLogger(__name__)

def conversation_from_doc(doc: dict[str, Any]) -> Conversation:
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


def index_doc(c: Conversation) -> dict[str, Any]:
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


def conversation_file_doc(c: Conversation) -> dict[str, Any]:
    """The copy of a conversation's own fields kept in its file, to rebuild a lost index shard."""
    return {
        "id": c.id,
        "title": c.title,
        "model": c.model,
        "system_prompt": c.system_prompt,
        "created": c.created,
    }


def message_doc(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "reasoning": m.reasoning,
        "model": m.model,
        "metrics": m.metrics.to_dict() if m.metrics is not None else None,
        "state": m.state,
        "error": m.error,
        "created": m.created,
    }


def message_from_doc(conversation_id: str, doc: dict[str, Any]) -> Message:
    state = doc.get("state", "complete")
    return Message(
        id=str(doc.get("id", "")),
        conversation_id=conversation_id,
        role=str(doc.get("role", "user")),
        content=str(doc.get("content", "")),
        reasoning=str(doc.get("reasoning", "")),
        model=str(doc.get("model", "")),
        metrics=GenerationMetrics.read(doc.get("metrics")),
        state=state if state in MESSAGE_STATES else "complete",
        error=str(doc.get("error", "")),
        created=float(doc.get("created", 0.0)),
    )


class ConversationsPart(ImagesPart):
    """Conversations and their messages, one at a time or imported in bulk (deleting one
    deletes its images too)."""

    # -- conversations ------------------------------------------------------------------------

    def _find_conversation(self, conversation_id: str) -> tuple[Path, int, dict[str, Any]] | None:
        shard = shard_of(conversation_id) if isinstance(conversation_id, str) else None
        if shard is None:
            return None
        path = self._index_path(shard)
        table = (self._files.load(path) or {}).get(INDEX_TABLE, {})
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
            db.table(INDEX_TABLE).update(fields, doc_ids=[doc_id])
        _, _, doc = self._require_conversation(conversation_id)
        return conversation_from_doc(doc)

    def create_conversation(
        self, *, title: str = "New chat", model: str = "", system_prompt: str = ""
    ) -> Conversation:
        for name, value in (("title", title), ("model", model), ("system_prompt", system_prompt)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        with self._writing():
            shard, _ = self._append_shard(self._index_dir, INDEX_TABLE, self._index_shard_rows)
            now = self._now()
            conv = Conversation(
                id=new_id(shard),
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
                db.table(CONVERSATION_TABLE).insert(conversation_file_doc(conv))
            with self._db(self._index_path(shard)) as db:
                db.table(INDEX_TABLE).insert(index_doc(conv))
            return conv

    def get_conversation(self, conversation_id: str) -> Conversation | None:
        with self._lock:
            found = self._find_conversation(conversation_id)
            return None if found is None else conversation_from_doc(found[2])

    def _all_index_docs(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        for shard in self._shard_numbers(self._index_dir):
            data = self._files.load(self._index_path(shard))
            if data:
                docs.extend(data.get(INDEX_TABLE, {}).values())
        return docs

    def _content_text(self, conversation_id: str) -> str:
        """The conversation's message contents, casefolded, cached by file version."""
        if not ID_RE.match(conversation_id):
            return ""
        path = self._conversation_path(conversation_id)
        try:
            key = stat_key(os.stat(path))
        except FileNotFoundError:
            self._search_text.pop(path, None)
            return ""
        hit = self._search_text.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = self._files.load(path, cache=False) or {}
        text = "\0".join(
            str(doc.get("content", "")) for doc in data.get(MESSAGES_TABLE, {}).values()
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
            return [conversation_from_doc(d) for d in chosen]

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
                return conversation_from_doc(doc)
            path = self._conversation_path(conversation_id)
            own = (self._files.load(path) or {}).get(CONVERSATION_TABLE, {})
            with self._db(path) as db:
                if own:
                    db.table(CONVERSATION_TABLE).update(changes, doc_ids=[int(next(iter(own)))])
                else:  # its file was lost: put its own fields back
                    merged = {**doc, **changes}
                    db.table(CONVERSATION_TABLE).insert(
                        conversation_file_doc(conversation_from_doc(merged))
                    )
            return self._set_index_fields(conversation_id, {**changes, "updated": self._now()})

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
                db.table(INDEX_TABLE).remove(doc_ids=[doc_id])
            self.delete_images(conversation_id)

    # -- messages -----------------------------------------------------------------------------

    def _message_docs(self, conversation_id: str) -> list[tuple[int, dict[str, Any]]]:
        data = self._files.load(self._conversation_path(conversation_id)) or {}
        return sorted_docs(data.get(MESSAGES_TABLE, {}))

    def _after_messages_changed(self, conversation_id: str, now: float | None = None) -> None:
        docs = self._message_docs(conversation_id)
        last = docs[-1][1] if docs else None
        fields = {
            # counted, not incremented: a crash between the two writes heals on the next one
            "message_count": len(docs),
            "preview": message_preview(last),
            "updated": self._now() if now is None else now,
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
        metrics: GenerationMetrics | None = None,
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
                metrics=metrics,
                state=state,
                error=error,
                created=self._now(),
            )
            path = self._conversation_path(conversation_id)
            restore_own = not (self._files.load(path) or {}).get(CONVERSATION_TABLE)
            with self._db(path) as db:
                if restore_own:  # its file was lost: put its own fields back
                    db.table(CONVERSATION_TABLE).insert(
                        conversation_file_doc(conversation_from_doc(conv_doc))
                    )
                db.table(MESSAGES_TABLE).insert(message_doc(message))
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
        metrics: GenerationMetrics | None = None,
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
            changes["metrics"] = changes["metrics"].to_dict()
        with self._writing():
            doc_id, doc = self._require_message(conversation_id, message_id)
            if changes:
                with self._db(self._conversation_path(conversation_id)) as db:
                    db.table(MESSAGES_TABLE).update(changes, doc_ids=[doc_id])
                self._after_messages_changed(conversation_id)
                doc_id, doc = self._require_message(conversation_id, message_id)
            return message_from_doc(conversation_id, doc)

    def delete_message(self, conversation_id: str, message_id: str) -> None:
        with self._writing():
            doc_id, _ = self._require_message(conversation_id, message_id)
            with self._db(self._conversation_path(conversation_id)) as db:
                db.table(MESSAGES_TABLE).remove(doc_ids=[doc_id])
            self._after_messages_changed(conversation_id)

    def messages(self, conversation_id: str) -> list[Message]:
        with self._lock:
            self._require_conversation(conversation_id)
            return [
                message_from_doc(conversation_id, doc)
                for _, doc in self._message_docs(conversation_id)
            ]

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
            now = self._now()
            shard, rows = self._append_shard(self._index_dir, INDEX_TABLE,
                                             self._index_shard_rows)
            pending: list[dict[str, Any]] = []
            for new in conversations:
                if rows >= self._index_shard_rows:
                    self._insert_index_docs(shard, pending)
                    shard, rows, pending = shard + 1, 0, []
                conv_id = new_id(shard)
                created = now if new.created is None else float(new.created)
                messages = [
                    Message(id=uuid.uuid4().hex[:16], conversation_id=conv_id, role=m.role,
                            content=m.content, reasoning=m.reasoning, model=m.model,
                            metrics=m.metrics,
                            state=m.state, error=m.error,
                            created=now if m.created is None else float(m.created))
                    for m in new.messages
                ]
                docs = [message_doc(m) for m in messages]
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
                    {CONVERSATION_TABLE: [conversation_file_doc(conv)], MESSAGES_TABLE: docs}))
                pending.append(index_doc(conv))
                rows += 1
                out.append(conv)
            self._insert_index_docs(shard, pending)
        return out

    def _insert_index_docs(self, shard: int, docs: list[dict[str, Any]]) -> None:
        if docs:
            with self._db(self._index_path(shard)) as db:
                db.table(INDEX_TABLE).insert_multiple(docs)

