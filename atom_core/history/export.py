"""A conversation as Markdown, JSON or plain text, for download."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..metrics import metrics_dict, metrics_line

if TYPE_CHECKING:
    from .protocol import Conversation, Message

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A value safe to put in a CSV cell that a spreadsheet will open: text starting with
    =, +, -, @ (or a tab or carriage return) gets a leading single quote, so it is shown, not
    run as a formula (CSV injection). Numbers, None and other text pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


STATE_NOTES = {
    "stopped": "stopped by the user",
    "interrupted": "interrupted: the reply broke off",
    "error": "failed",
}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _speaker(m: Message) -> str:
    if m.role == "assistant":
        return f"Assistant ({m.model})" if m.model else "Assistant"
    return m.role.capitalize()


def to_markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    lines = [f"# {conversation.title}", ""]
    meta = [f"Created {_when(conversation.created)}"]
    if conversation.model:
        meta.append(f"model `{conversation.model}`")
    lines += [" · ".join(meta), ""]
    if conversation.system_prompt:
        lines += ["**System prompt**", "", "> " + conversation.system_prompt.replace("\n", "\n> "),
                  ""]
    for m in messages:
        lines += [f"## {_speaker(m)}", ""]
        if m.reasoning:
            lines += ["<details><summary>Reasoning</summary>", "", m.reasoning, "", "</details>",
                      ""]
        lines += [m.content or "_(no text)_", ""]
        notes = []
        if m.state in STATE_NOTES:
            notes.append(STATE_NOTES[m.state] + (f": {m.error}" if m.error else ""))
        if m.metrics is not None:
            notes.append(metrics_line(m.metrics))
        if notes:
            lines += ["_" + " · ".join(notes) + "_", ""]
    return "\n".join(lines).rstrip() + "\n"


def to_text(conversation: Conversation, messages: Sequence[Message]) -> str:
    lines = [conversation.title, "=" * len(conversation.title), ""]
    if conversation.system_prompt:
        lines += [f"System: {conversation.system_prompt}", ""]
    for m in messages:
        note = f" [{STATE_NOTES[m.state]}]" if m.state in STATE_NOTES else ""
        lines += [f"{_speaker(m)}{note}:", m.content, ""]
    return "\n".join(lines).rstrip() + "\n"


def to_json(conversation: Conversation, messages: Sequence[Message]) -> str:
    doc = {
        "conversation": {
            "id": conversation.id,
            "title": conversation.title,
            "model": conversation.model,
            "system_prompt": conversation.system_prompt,
            "created": conversation.created,
            "updated": conversation.updated,
        },
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "reasoning": m.reasoning,
                "model": m.model,
                "state": m.state,
                "error": m.error,
                "metrics": metrics_dict(m.metrics),
                "created": m.created,
            }
            for m in messages
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def export_filename(conversation: Conversation, ext: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in conversation.title.lower())
    safe = "-".join(p for p in safe.split("-") if p)[:40] or "conversation"
    return f"atom-{safe}.{ext}"
