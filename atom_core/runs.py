"""One row per generation for the runs table: what chat, arena, prompt sets and the CLI record."""

from __future__ import annotations

import time
from typing import Any

from .errors import AtomError, StreamInterrupted
from .metrics import GenerationMetrics
from .types import MessageState

RUN_SOURCES = ("chat", "arena", "promptset", "sweep", "cli")


def reply_state(error: AtomError | None, cancelled: bool) -> MessageState:
    """The message state a reply ends in: complete / stopped / interrupted / error."""
    if isinstance(error, StreamInterrupted):
        return "interrupted"
    if error is not None:
        return "error"
    if cancelled:
        return "stopped"
    return "complete"


def run_record(
    *,
    source: str,
    server: str,
    model: str,
    metrics: GenerationMetrics,
    error: AtomError | None = None,
    cancelled: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A compact, JSON-able row. Token timelines stay with the message, not here, so that the
    runs table stays small enough to read 100,000 rows quickly."""
    m = metrics
    row: dict[str, Any] = {
        "ts": time.time(),
        "source": source,
        "server": server,
        "model": model,
        "ok": error is None and not cancelled,
        "state": reply_state(error, cancelled),
        "error": error.sentence if error else "",
        "ttft_s": m.ttft_s,
        "decode_tps": m.decode_tps,
        "e2e_s": m.e2e_s,
        "itl_p50_s": m.itl_p50_s,
        "itl_p95_s": m.itl_p95_s,
        "output_tokens": m.output_tokens,
        "prompt_tokens": m.prompt_tokens,
        "tokens_source": m.tokens_source,
        "finish_reason": m.finish_reason,
    }
    row.update(extra)
    return row
