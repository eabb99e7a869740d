"""A round's results side by side: the rows of the results grid (speed, tokens, facts), the
live line under each column while it streams, and the one-line help each row carries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..measure.runner import Slot
from ..metrics import GenerationMetrics, format_seconds, format_size
from ..render import plain_label
from ..server.routes import ROUTE_LABELS
from .rounds import ArenaRound, SlotResult

HELP = {
    "ttft": "Time to first token: from sending the prompt to the first token of the reply, "
            "thinking included (what LM Studio reports as its own TTFT).",
    "first_answer": "First answer: from sending the prompt to the first token of the answer "
                    "itself, after any thinking; how long you wait before the reply visibly "
                    "begins. The quickest-start mark goes here when a model reasoned.",
    "thinking": "Thinking time: from the first reasoning token to the first token of the "
                "answer, for models that think before answering.",
    "tps": "Decode speed in tokens per second, once the reply has started (the first token's "
           "wait is TTFT, not decoding). A token is about ¾ of an English word.",
    "tokens": "How many tokens the reply had (the server's count, or counted chunks).",
    "e2e": "End-to-end: from sending the prompt to the last byte of the reply.",
    "stop": "Why the reply ended: stop = the model finished, length = it hit the token limit.",
    "context": "Context length: how many tokens (prompt plus reply) the model can keep in mind "
               "at once, as loaded.",
    "quantization": "Quantization: how compressed the weights are (Q4_K_M ≈ 4 bits per weight). "
                    "Fewer bits: smaller and faster, slightly less accurate.",
    "load": "Loading time, measured apart so it never counts in TTFT.",
    "route": "The server's chat route the slot talked over: chat completions, LM Studio native, "
             "Responses or Anthropic Messages. The same model can race itself over two routes.",
    "reasoning": "The reasoning setting the slot asked for (LM Studio native and Responses "
                 "routes, where the model lists it): off, on, or an effort level.",
    "params": "Parameters: the model's size in weights (7B = 7 billion). More usually means "
              "smarter and slower.",
    "size": "Size of the model file on disk (and roughly in memory).",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StatRow:
    """One row of the results table: a measure, one cell per slot, which cells are best."""

    key: str  # ttft | tps | tokens | e2e | stop | load
    name: str
    cells: tuple[str, ...]
    best: frozenset[int] = frozenset()  # slot indexes holding the best value


def stat_rows(rnd: ArenaRound) -> list[StatRow]:
    """TTFT, first answer (when any model reasoned), decode tok/s, tokens, end-to-end, stop
    reason (and load time, when the arena loaded a model). The fastest value of each speed row
    is marked best, among slots that completed (a stopped reply's short end-to-end time is not
    a win).

    The "quickest start" mark goes to the first *answer* token when any model reasoned: that is
    when a person sees the reply begin, and a model that thinks first should not win it with
    its first reasoning token (metrics.GenerationMetrics.first_visible_s). Without reasoning the
    two are the same and the mark stays on TTFT."""
    ms = [s.metrics for s in rnd.slots]
    finished = [i for i, s in enumerate(rnd.slots) if s.state == "complete" and ms[i]]

    def best(values: Sequence[float | None], lowest: bool) -> frozenset[int]:
        known = [(v, i) for i, v in enumerate(values) if v is not None and i in finished]
        if len(known) < 2:
            return frozenset()
        target = min(known)[0] if lowest else max(known)[0]
        return frozenset(i for v, i in known if v == target)

    ttft = [m.ttft_s if m else None for m in ms]
    visible = [m.first_visible_s if m else None for m in ms]
    tps = [m.decode_tps if m else None for m in ms]
    e2e = [m.e2e_s if m else None for m in ms]
    reasoned = any(m is not None and m.thinking_s is not None for m in ms)

    def answer_cell(m: GenerationMetrics | None) -> str:
        if m is None or m.first_visible_s is None:
            return "–"
        if m.thinking_s is None:
            return _sec(m.first_visible_s)
        return f"{_sec(m.first_visible_s)} (thought {_sec(m.thinking_s)})"

    rows = [
        StatRow(key="ttft", name="TTFT", cells=tuple(_sec(v) for v in ttft),
                best=frozenset() if reasoned else best(ttft, lowest=True)),
    ]
    if reasoned:
        rows.append(StatRow(key="first_answer", name="First answer",
                            cells=tuple(answer_cell(m) for m in ms),
                            best=best(visible, lowest=True)))
    rows += [
        StatRow(key="tps", name="Decode tok/s",
                cells=tuple(f"{v:.1f}" if v is not None else "–" for v in tps),
                best=best(tps, lowest=False)),
        StatRow(key="tokens", name="Tokens", cells=tuple(
            (f"{m.output_tokens}" + ("" if m.tokens_source == "usage" else " (counted)"))
            if m else "–" for m in ms)),
        StatRow(key="e2e", name="End-to-end", cells=tuple(_sec(v) for v in e2e),
                best=best(e2e, lowest=True)),
        StatRow(key="stop", name="Stop reason", cells=tuple(
            (m.finish_reason if m and m.finish_reason else s.state if s.state != "complete"
             else "–") for m, s in zip(ms, rnd.slots, strict=True))),
    ]
    if any(s.load_s is not None for s in rnd.slots):
        rows.append(StatRow(key="load", name="Load (before the race)",
                            cells=tuple(_sec(s.load_s) for s in rnd.slots)))
    if any(s.route != "completions" for s in rnd.slots):
        rows.append(StatRow(key="route", name="Route", cells=tuple(
            ROUTE_LABELS.get(s.route, s.route) for s in rnd.slots)))
    if any(s.reasoning_setting is not None for s in rnd.slots):
        rows.append(StatRow(key="reasoning", name="Reasoning", cells=tuple(
            s.reasoning_setting or "default" for s in rnd.slots)))
    return rows


def fact_rows(rnd: ArenaRound) -> list[StatRow]:
    """What each model is: parameters, quantization, context length as loaded, size on disk.
    (A page shows these only once names are revealed: they would give a blind round away.)"""
    def ctx(s: SlotResult) -> str:
        loaded = s.instance_config.get("context_length")
        if loaded:
            return f"{loaded:,}"
        top = s.model_info.get("max_context")
        return f"up to {top:,}" if top else "–"

    def size(s: SlotResult) -> str:
        return format_size(s.model_info.get("size_bytes")) or "–"

    return [
        StatRow(key="params", name="Parameters",
                cells=tuple(s.model_info.get("params") or "–" for s in rnd.slots)),
        StatRow(key="quantization", name="Quantization",
                cells=tuple(s.model_info.get("quantization") or "–" for s in rnd.slots)),
        StatRow(key="context", name="Context length", cells=tuple(ctx(s) for s in rnd.slots)),
        StatRow(key="size", name="Size", cells=tuple(size(s) for s in rnd.slots)),
    ]


def _sec(v: float | None) -> str:
    return format_seconds(v)


def live_line(slot: Slot, now_ns: int | None = None) -> str:
    """The caption over a column while it streams."""
    now_ns = now_ns or time.perf_counter_ns()
    reply = slot.reply
    if slot.error is not None:
        return "failed"
    if not reply.token_times_ns:
        if slot.done:
            return "no reply"
        waited = f"{(now_ns - slot.t_start_ns) / 1e9:.1f} s"
        if reply.progress:  # LM Studio's native route says what it is doing meanwhile
            stage, value = list(reply.progress.items())[-1]
            doing = {"model_load": "loading the model", "prompt_processing": "reading the prompt"}
            said = doing.get(stage) or plain_label(stage)  # a stage ATOM does not know: server text
            return f"{said} {value:.0%}… {waited}"
        return f"waiting for the first token… {waited}"
    tps = reply.live_tps(None if slot.done else now_ns)
    speed = f" · {tps:.1f} tok/s" if tps else ""
    return f"{reply.tokens} tokens{speed}" + (" · done" if slot.done else "")
