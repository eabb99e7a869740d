"""Token timelines (when each token of a reply arrived) for the Stats page: from a chat reply's
stored metrics or an arena round's slots, their gap statistics, and a slow-motion replay."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from ..metrics import GenerationMetrics

if TYPE_CHECKING:
    from ..history import HistoryStore

__all__ = [
    "TIMELINE_COLUMNS",
    "ReplayFrame",
    "Timeline",
    "arena_timelines",
    "load_message_timeline",
    "message_choices",
    "replay_frames",
    "timeline_frame",
    "timeline_stats",
    "timeline_table",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """One recorded stream: when each token arrived, and the text it carried."""

    label: str
    model: str
    offsets_ms: tuple[float, ...]  # arrival of each token chunk after the request was sent
    content: str = ""
    reasoning: str = ""
    metrics: GenerationMetrics | None = None


def timeline_frame(timelines: Sequence[Timeline]) -> pd.DataFrame:
    """One row per token: label, model, position (1-based), arrival_ms, gap_ms (time since the
    previous token; NaN for the first, whose wait is TTFT)."""
    parts = []
    for t in timelines:
        arrival = np.asarray(t.offsets_ms, dtype=float)
        gaps = np.diff(arrival, prepend=np.nan)
        parts.append(pd.DataFrame({
            "label": t.label, "model": t.model,
            "position": np.arange(1, len(arrival) + 1), "arrival_ms": arrival, "gap_ms": gaps,
        }))
    if not parts:
        return pd.DataFrame(columns=["label", "model", "position", "arrival_ms", "gap_ms"])
    return pd.concat(parts, ignore_index=True)


TIMELINE_COLUMNS: dict[str, tuple[str, str]] = {
    "label": ("Stream", "text"),
    "tokens": ("Tokens", "int"),
    "ttft_ms": ("TTFT (ms)", "tokens"),
    "gap_p50_ms": ("Gap p50 (ms)", "seconds"),
    "gap_p95_ms": ("Gap p95 (ms)", "seconds"),
    "gap_max_ms": ("Longest gap (ms)", "tokens"),
    "decode_tps": ("Decode tok/s", "tps"),
}


def timeline_table(timelines: Sequence[Timeline]) -> list[dict[str, Any]]:
    """One row per stream (columns: TIMELINE_COLUMNS): gaps from the arrival times; tokens,
    TTFT and decode tok/s from the stored metrics when the stream has them, so the figures
    match the chat caption and the runs table (the server's token count, not chunks)."""
    rows = []
    for t in timelines:
        row: dict[str, Any] = {"label": t.label, **timeline_stats(t.offsets_ms)}
        m = t.metrics
        if m is not None and m.output_tokens is not None and m.output_tokens > 0:
            row["tokens"] = m.output_tokens
        if m is not None and m.decode_tps is not None:
            row["decode_tps"] = m.decode_tps
        if m is not None and m.ttft_s is not None:
            row["ttft_ms"] = m.ttft_s * 1000
        rows.append(row)
    return rows


def timeline_stats(offsets_ms: Sequence[float]) -> dict[str, float | int | None]:
    """TTFT, gap median/p95/max and decode tok/s of one stream, from its offsets alone (the
    same definitions as atom_core.metrics, counting chunks as tokens)."""
    from ..metrics import percentile

    arrival = [float(x) for x in offsets_ms]
    gaps = [b - a for a, b in zip(arrival, arrival[1:], strict=False)]
    tps = None
    if len(arrival) >= 2 and arrival[-1] > arrival[0]:
        tps = (len(arrival) - 1) / ((arrival[-1] - arrival[0]) / 1000)
    return {
        "tokens": len(arrival),
        "ttft_ms": arrival[0] if arrival else None,
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p95_ms": percentile(gaps, 95),
        "gap_max_ms": max(gaps) if gaps else None,
        "decode_tps": tps,
    }


def message_choices(df: pd.DataFrame, limit: int = 300) -> pd.DataFrame:
    """Recent runs that point at a stored message (chat replies), newest first, with a label
    for a picker. Columns: conversation_id, message_id, model, label."""
    has = df[(df["message_id"] != "") & (df["conversation_id"] != "")]
    recent = has.iloc[::-1].head(limit)
    labels = [
        f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M} · {model} · "
        f"{'' if math.isnan(tok) else int(tok)} tokens"
        + ("" if math.isnan(tps) else f" · {tps:.1f} tok/s")
        for ts, model, tok, tps in zip(recent["ts"], recent["model"].astype(str),
                                       recent["output_tokens"], recent["decode_tps"],
                                       strict=True)
    ]
    out = recent[["conversation_id", "message_id"]].copy()
    out["model"] = recent["model"].astype(str).to_numpy()
    out["label"] = labels
    return out.reset_index(drop=True)


def load_message_timeline(store: HistoryStore, conversation_id: str,
                          message_id: str) -> Timeline | None:
    """The token timeline of one stored chat reply, or None if it is gone or has none."""
    try:
        messages = store.messages(conversation_id)
    except KeyError:
        return None
    for m in messages:
        if m.id == message_id:
            if m.metrics is None or not m.metrics.token_offsets_ms:
                return None
            return Timeline(label=m.model or "reply", model=m.model,
                            offsets_ms=m.metrics.token_offsets_ms, content=m.content,
                            reasoning=m.reasoning, metrics=m.metrics)
    return None


class RacedSlot(Protocol):
    """What a timeline needs of an arena round's slot (atom_core.arena.SlotResult)."""

    @property
    def label(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def reasoning(self) -> str: ...
    @property
    def metrics(self) -> GenerationMetrics | None: ...


class RacedRound(Protocol):
    """What the timelines need of an arena round (atom_core.arena.ArenaRound): the caller
    reads the rounds (arena.load_rounds), so stats never imports the Arena (a sibling room)."""

    @property
    def id(self) -> str: ...
    @property
    def ts(self) -> float: ...
    @property
    def prompt(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def hidden(self) -> bool: ...
    @property
    def slots(self) -> Sequence[RacedSlot]: ...


def arena_timelines(rounds: Sequence[RacedRound], limit: int = 100
                    ) -> list[tuple[str, list[Timeline]]]:
    """Arena rounds with per-slot token timelines, newest first: (round label, slots).

    `rounds` oldest first, as arena.load_rounds reads them; a slot counts when its metrics
    carry token_offsets_ms, as chat messages do. Rounds still running, rounds whose names are
    still hidden (blind, not voted on, not revealed) and rounds without any timeline are
    skipped.
    """
    out: list[tuple[str, list[Timeline]]] = []
    for rnd in reversed(rounds):
        if rnd.hidden or rnd.state == "running":
            continue
        timelines = []
        for i, slot in enumerate(rnd.slots):
            offsets = slot.metrics.token_offsets_ms if slot.metrics is not None else ()
            if not offsets:
                continue
            label = f"{slot.label or chr(65 + i)}: {slot.model}"
            timelines.append(Timeline(label=label, model=slot.model, offsets_ms=offsets,
                                      content=slot.content, reasoning=slot.reasoning,
                                      metrics=slot.metrics))
        if timelines:
            when = f"{datetime.fromtimestamp(rnd.ts):%Y-%m-%d %H:%M}" if rnd.ts else ""
            prompt = " ".join(rnd.prompt.split())[:60]
            out.append((" · ".join(x for x in (when, prompt) if x) or rnd.id, timelines))
            if len(out) >= limit:
                break
    return out


# -- slow-motion replay -------------------------------------------------------------------------

_PIECE_RE = re.compile(r"\s*\S+|\s+$")


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    at_s: float  # when to show this frame, after the replay starts (already slowed down)
    reasoning: str
    content: str
    tokens: int  # token chunks arrived so far


def replay_frames(timeline: Timeline, speed: float = 1.0) -> list[ReplayFrame]:
    """The recorded stream as frames to redraw: frame i is token chunk i's arrival time
    (divided by `speed`: 0.25 plays four times slower) with the text that had arrived by then.

    The store keeps each chunk's time but not its text, so the text is spread over the chunks
    evenly by words, reasoning first, then the answer; the timing is exactly as recorded.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    r_pieces = _PIECE_RE.findall(timeline.reasoning)
    c_pieces = _PIECE_RE.findall(timeline.content)
    total = len(r_pieces) + len(c_pieces)
    offsets = timeline.offsets_ms
    frames = []
    for i, offset in enumerate(offsets):
        shown = math.ceil((i + 1) * total / len(offsets))
        r = "".join(r_pieces[:shown])
        c = "".join(c_pieces[: max(0, shown - len(r_pieces))])
        frames.append(ReplayFrame(at_s=offset / 1000 / speed, reasoning=r, content=c,
                                  tokens=i + 1))
    return frames
