"""How fast a generation was: one definition, used by chat, arena, stats, bench and the CLI.

Definitions (also in the README, "How ATOM measures"):
- TTFT (`ttft_s`): request sent -> first generated token of any kind, reasoning or answer. This
  is what LM Studio's own `time_to_first_token_seconds` reports. "Sent" is when the request got
  a connection and went on the wire, never when it was queued on the client.
- Time to first answer token (`first_answer_s`): request sent -> first answer (content) token.
  Equal to TTFT for a model that does not reason first; None when no answer token arrived.
- Thinking time (`thinking_s`): first answer token - first token, when reasoning came first;
  None for a reply without reasoning.
- Output tokens: reasoning + answer. Taken from the server's usage when usage covers reasoning
  too (it reports `completion_tokens_details.reasoning_tokens`, or its count is at least what
  was counted, or nothing was reasoning); otherwise the token chunks counted. `tokens_source`
  says which. Some servers count only the answer in usage: counting is more honest then.
- Decode tokens/s: (tokens in the window - 1) / (last token time - first token time), the
  window running from the first token of any kind to the last, and the tokens counted being
  exactly the ones that window spans (reasoning and answer alike). The first token is left out
  because its wait is TTFT, not decoding.
- Inter-token latency (ITL): gaps between consecutive token arrivals; median and p95.
- End-to-end: request sent -> stream closed.
- Pool wait (`pool_wait_s`): time between ATOM deciding to send a request and the request
  being sent (httpcore starts writing its body: server.sse.request_sent): a wait for a
  free connection, connecting, or a client too busy to send at once. Its own field, never
  folded into TTFT, which starts where it ends; None when it could not be observed (a mocked
  transport).
- Server figures (`server_tps`, `server_prompt_s`, `server_output_tokens`): what the server
  itself reported (llama.cpp's `timings` on its last chunk), stored beside ATOM's own.

Which first-token figure wins a "quickest" badge: the time to the first *answer* token, because
that is when a person sees the reply begin; for a model that does not reason it equals TTFT
(`first_visible_s` picks it). TTFT stays the figure that compares with the server's own.

All times come from time.perf_counter_ns() stamps taken when the bytes arrived, never from
drawing code.

The catalogue (MEASURES, STATS): each measure once, with its label, unit and meaning, and each
figure over many runs (a percentile or a mean) once, with its one key and label, so Stats,
sweeps, the load run, cards, prompt sets, the leaderboard, reports and the CLI name, compute
and format it alike: `stat("ttft_s", "p50")` is "TTFT p50", key `ttft_p50_s`, computed by
`percentile` (the one method; pandas' linear quantile where a frame is summarised) and shown
by `format_value`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .types import to_float, to_int

NS = 1_000_000_000


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks.

    The same method as numpy's default ("linear"), so figures agree with pandas/numpy.
    Returns None for no values.
    """
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# A wait for a connection shorter than this is the event loop's own scheduling on a busy machine
# (about 15 ms seen here), not a queue: no notice for it.
POOL_WAIT_NOTICE_S = 0.05

TokensSource = Literal["usage", "chunks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationMetrics:
    """What one generation measured. Seconds, tokens; None where it cannot be known."""

    # A measured generation has every field below; a stored dict read leniently (an import
    # from another tool, an old row) may lack any of them: None then.
    ttft_s: float | None  # None when no token arrived
    e2e_s: float | None
    decode_tps: float | None  # None with fewer than 2 tokens
    itl_p50_s: float | None
    itl_p95_s: float | None
    output_tokens: int | None  # reasoning + answer
    tokens_source: TokensSource | None
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None  # usage's count, else the reasoning chunks counted
    chunks: int = 0  # token-carrying chunks received
    finish_reason: str | None = None
    # Reasoning models: request sent -> first answer token; first answer - first token.
    first_answer_s: float | None = None
    thinking_s: float | None = None
    # Time spent waiting on the client for a free connection (not part of TTFT).
    pool_wait_s: float | None = None
    # The server's own figures, when it reports them (llama.cpp `timings`).
    server_tps: float | None = None
    server_prompt_s: float | None = None
    server_output_tokens: int | None = None
    # Arrival of each token chunk, in ms after the request was sent (for token timelines).
    token_offsets_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def first_visible_s(self) -> float | None:
        """When a person sees the reply begin: the first answer token, else the first token.
        What "quickest first token" badges use, so reasoning does not win them."""
        return self.first_answer_s if self.first_answer_s is not None else self.ttft_s

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able dict a store row and an export keep (field by field; no nesting)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["token_offsets_ms"] = list(self.token_offsets_ms)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationMetrics:
        """Reads a stored dict leniently (the one place a metrics dict becomes this type, at the
        store and import boundary): a field missing or of the wrong type is None (fields added
        later, such as first_answer_s, or a dict from another tool); unknown keys are dropped.
        An older record of a reply without reasoning gets first_answer_s = ttft_s."""
        known: dict[str, Any] = {}
        for name, read in _READERS.items():
            if name in d:
                value = read(d[name])
                if value is not None or name != "chunks":  # chunks: an int, 0 by default
                    known[name] = value
            elif name in _REQUIRED:
                known[name] = None
        known["token_offsets_ms"] = _offsets(d.get("token_offsets_ms"))
        if "first_answer_s" not in d and not d.get("reasoning_tokens"):
            known["first_answer_s"] = known.get("ttft_s")
        return cls(**known)

    @classmethod
    def read(cls, value: object) -> GenerationMetrics | None:
        """A stored metrics value as this type: a dict read leniently (from_dict), else None."""
        return cls.from_dict(value) if isinstance(value, Mapping) else None

    def summary(self) -> str:
        """One line for a stats caption:
        'TTFT 0.42 s · first answer 1.20 s · 31.2 tok/s · 128 tokens · stop'."""
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT {format_seconds(self.ttft_s)}")
        if self.thinking_s is not None and self.first_answer_s is not None:
            parts.append(f"first answer {format_seconds(self.first_answer_s)} "
                         f"(thought {format_seconds(self.thinking_s)})")
        if self.decode_tps is not None:
            parts.append(f"{self.decode_tps:.1f} tok/s")
        counted = " (counted)" if self.tokens_source == "chunks" else ""
        if self.output_tokens is not None:
            parts.append(f"{self.output_tokens} tokens{counted}")
        if self.e2e_s is not None:
            parts.append(f"{format_seconds(self.e2e_s)} total")
        if self.pool_wait_s and self.pool_wait_s > POOL_WAIT_NOTICE_S:  # not a few ms of loop
            parts.append(f"waited {format_seconds(self.pool_wait_s)} for a connection")
        if self.finish_reason:
            parts.append(self.finish_reason)
        return " · ".join(parts)


def _offsets(value: object) -> tuple[float, ...]:
    """A stored token timeline: its numbers, in order (a message read back has thousands)."""
    if not isinstance(value, list | tuple):
        return ()
    try:
        return tuple(map(float, value))  # the usual case, at C speed
    except (TypeError, ValueError):
        return tuple(float(v) for v in value
                     if isinstance(v, int | float) and not isinstance(v, bool))


def _keep_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _read_source(v: object) -> TokensSource | None:
    return "usage" if v == "usage" else "chunks" if v == "chunks" else None


_INTS = {"output_tokens", "prompt_tokens", "reasoning_tokens", "chunks", "server_output_tokens"}
# How from_dict reads each stored field (not token_offsets_ms: a tuple, read on its own).
_READERS: dict[str, Callable[[Any], Any]] = {
    f: (to_int if f in _INTS else _read_source if f == "tokens_source"
        else _keep_str if f == "finish_reason" else to_float)
    for f in GenerationMetrics.__dataclass_fields__ if f != "token_offsets_ms"}
_REQUIRED = frozenset(
    f.name for f in dataclasses.fields(GenerationMetrics)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def metrics_dict(metrics: GenerationMetrics | None) -> dict[str, Any] | None:
    """The JSON-able dict a stored or exported reply keeps (to_dict), or None."""
    return metrics.to_dict() if metrics is not None else None


def metrics_line(metrics: GenerationMetrics | None) -> str:
    """The stats caption under a stored reply (the chat page, conversation exports)."""
    return metrics.summary() if metrics is not None else ""


def format_duration(seconds: float) -> str:
    """A wait people read at a glance: '25 s', '3 min 5 s', '2 h 10 min' (progress ETAs)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# What a figure with no value shows, in every page, report and the command line.
NO_VALUE = "–"


def _number(value: object) -> float | None:
    """A finite number, or None (None, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def format_seconds(s: object) -> str:
    """'420 ms', '1.25 s'; NO_VALUE for no value (None, NaN)."""
    v = _number(s)
    if v is None:
        return NO_VALUE
    if v < 1:
        return f"{v * 1000:.0f} ms"
    return f"{v:.2f} s"


# -- the catalogue of measures ----------------------------------------------------------------

Unit = Literal["s", "tok/s", "tokens"]


def format_value(value: object, unit: Unit) -> str:
    """One value of a measure as people read it: '420 ms', '31.2 tok/s', '128 tokens'."""
    v = _number(value)
    if v is None:
        return NO_VALUE
    if unit == "s":
        return format_seconds(v)
    if unit == "tok/s":
        return f"{v:.1f} tok/s"
    return f"{v:,.0f} tokens"


@dataclass(frozen=True, slots=True)
class Measure:
    """One figure of a run: its field (GenerationMetrics, RunRecord), what people call it
    (`short` where a table's header must be brief), its unit and what it means."""

    name: str
    label: str
    unit: Unit
    help: str = ""
    short: str = ""

    def format(self, value: object) -> str:
        return format_value(value, self.unit)


Aggregate = Literal["p50", "p90", "p95", "p99", "mean"]


@dataclass(frozen=True, slots=True)
class Stat:
    """A measure over many runs: a percentile or the mean, with its one key (`ttft_p50_s`,
    `decode_tps_p50`, `output_tokens_mean`: the aggregate before a seconds unit) and label."""

    measure: Measure
    how: Aggregate

    @property
    def key(self) -> str:
        name = self.measure.name
        return f"{name[:-2]}_{self.how}_s" if name.endswith("_s") else f"{name}_{self.how}"

    @property
    def q(self) -> float | None:
        """The percentile (0-100); None for the mean."""
        return None if self.how == "mean" else float(self.how[1:])

    @property
    def label(self) -> str:
        """'TTFT p50'; a mean is the measure's own label ('Tokens')."""
        return self.measure.label if self.how == "mean" else f"{self.measure.label} {self.how}"

    @property
    def short(self) -> str:
        """The label for a narrow table header whose cells carry the unit ('Decode p50')."""
        base = self.measure.short or self.measure.label
        return base if self.how == "mean" else f"{base} {self.how}"

    @property
    def header(self) -> str:
        """The label with its unit, for tables of bare numbers: 'TTFT p50 (s)'."""
        unit = self.measure.unit
        return self.label if unit in self.label else f"{self.label} ({unit})"

    def of(self, values: Iterable[float | None]) -> float | None:
        """This figure over `values` (None and NaN left out); None when none is left."""
        kept = [v for v in map(_number, values) if v is not None]
        if not kept:
            return None
        if self.q is None:
            return sum(kept) / len(kept)
        return percentile(kept, self.q)

    def over(self, runs: Iterable[object]) -> float | None:
        """This figure over runs that carry the measure as an attribute (GenerationMetrics,
        RunRecord)."""
        return self.of(getattr(r, self.measure.name, None) for r in runs)

    def format(self, value: object) -> str:
        return format_value(value, self.measure.unit)


MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("ttft_s", "TTFT", "s", "Time to first token: from sending the prompt to the first "
            "token of any kind (thinking included)."),
    Measure("first_answer_s", "First answer", "s", "First answer token: when the reply visibly "
            "begins, after any thinking (the TTFT for a model that does not reason).",
            short="Answer"),
    Measure("thinking_s", "Thinking", "s", "Thinking time: first reasoning token to first "
            "answer token."),
    Measure("decode_tps", "tok/s", "tok/s", "Decode speed: tokens per second once the reply "
            "has started.", short="Decode"),
    Measure("e2e_s", "End-to-end", "s", "End-to-end: from sending the prompt to the last byte "
            "of the reply."),
    Measure("output_tokens", "Tokens", "tokens", "Output tokens per reply (thinking "
            "included)."),
    Measure("pool_wait_s", "Pool wait", "s", "Time a request waited on ATOM's side for a "
            "connection before it was sent (never part of TTFT)."),
    Measure("server_tps", "Server tok/s", "tok/s", "The server's own decode speed.",
            short="Server decode"),
    Measure("server_ttft_s", "Server TTFT", "s", "The server's own time to first token."),
    Measure("server_prompt_s", "Server prompt time", "s", "The part of TTFT the server spent "
            "on the prompt."),
)}


def stat(measure: str, how: Aggregate) -> Stat:
    """The figure `how` of the measure named `measure`: stat("ttft_s", "p50")."""
    return Stat(MEASURES[measure], how)


# The figures every summary of runs reports (the Stats table, the load run, sweeps, prompt
# sets, cards, the leaderboard, reports, the CLI), each defined once here.
TTFT_P50 = stat("ttft_s", "p50")
TTFT_P90 = stat("ttft_s", "p90")
TTFT_P99 = stat("ttft_s", "p99")
FIRST_ANSWER_P50 = stat("first_answer_s", "p50")
THINKING_P50 = stat("thinking_s", "p50")
DECODE_P50 = stat("decode_tps", "p50")
E2E_P50 = stat("e2e_s", "p50")
TOKENS_MEAN = stat("output_tokens", "mean")
SERVER_TPS_P50 = stat("server_tps", "p50")
SERVER_TTFT_P50 = stat("server_ttft_s", "p50")
SERVER_PROMPT_P50 = stat("server_prompt_s", "p50")


def format_size(n_bytes: object) -> str:
    """A model file's size as every page, report and the command line show it: "0.25 GB"
    (the unit Models' table sorts by); "" when unknown."""
    return f"{n_bytes / 1e9:.2f} GB" if isinstance(n_bytes, int | float) and n_bytes else ""


def output_token_count(
    usage: dict[str, Any] | None, counted: int, reasoning_counted: int
) -> tuple[int, TokensSource]:
    """Output tokens (reasoning + answer) and where the figure came from.

    Usage wins when it covers reasoning: it reports `completion_tokens_details.reasoning_tokens`,
    or its count is at least the chunks counted, or no chunk was reasoning. A usage of 0 with
    tokens received (some servers for reasoning replies) is not believed either."""
    u = usage or {}
    total = to_int(u.get("completion_tokens"))
    details = u.get("completion_tokens_details")
    reported_reasoning = to_int(details.get("reasoning_tokens")) if isinstance(
        details, dict) else None
    if total is None:
        return counted, "chunks"
    if counted == 0:
        return total, "usage"
    if total > 0 and (reported_reasoning is not None or total >= counted
                      or reasoning_counted == 0):
        return total, "usage"
    return counted, "chunks"


def compute_metrics(
    *,
    t_request_ns: int,
    token_times_ns: Sequence[int],
    t_end_ns: int,
    usage: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    first_answer_ns: int | None = None,
    reasoning_chunks: int = 0,
    pool_wait_ns: int | None = None,
    server_timings: dict[str, Any] | None = None,
) -> GenerationMetrics:
    """Build the metrics of one generation from its timestamps.

    Args:
        t_request_ns: perf_counter_ns() when the request was sent (had its connection).
        token_times_ns: arrival stamp of every chunk that carried content or reasoning.
        t_end_ns: perf_counter_ns() when the stream closed (or was abandoned).
        usage: the server's usage object, if it sent one.
        finish_reason: the server's finish reason, if it sent one.
        first_answer_ns: arrival of the first answer (content) chunk. When None and no chunk
            was reasoning, the first chunk is the first answer token.
        reasoning_chunks: how many of `token_times_ns` carried reasoning.
        pool_wait_ns: time the request waited for a free connection before it was sent.
        server_timings: llama.cpp's `timings` object from the last chunk, if sent.
    """
    times = list(token_times_ns)
    output_tokens, source = output_token_count(usage, len(times), reasoning_chunks)
    gaps = [(b - a) / NS for a, b in zip(times, times[1:], strict=False)]
    decode_tps = None
    if output_tokens >= 2 and len(times) >= 2 and times[-1] > times[0]:
        decode_tps = (output_tokens - 1) / ((times[-1] - times[0]) / NS)
    if first_answer_ns is None and reasoning_chunks == 0 and times:
        first_answer_ns = times[0]
    first_answer_s = (first_answer_ns - t_request_ns) / NS if first_answer_ns is not None else None
    thinking_s = None
    if reasoning_chunks and first_answer_ns is not None and times:
        thinking_s = max(0.0, (first_answer_ns - times[0]) / NS)
    details = (usage or {}).get("completion_tokens_details") or {}
    reasoning_tokens = to_int(details.get("reasoning_tokens")) if isinstance(
        details, dict) else None
    if reasoning_tokens is None and reasoning_chunks and source == "chunks":
        reasoning_tokens = reasoning_chunks
    timings = server_timings or {}
    prompt_ms = to_float(timings.get("prompt_ms"))
    return GenerationMetrics(
        ttft_s=(times[0] - t_request_ns) / NS if times else None,
        e2e_s=(t_end_ns - t_request_ns) / NS,
        decode_tps=decode_tps,
        itl_p50_s=percentile(gaps, 50),
        itl_p95_s=percentile(gaps, 95),
        output_tokens=output_tokens,
        tokens_source=source,
        prompt_tokens=to_int((usage or {}).get("prompt_tokens")),
        reasoning_tokens=reasoning_tokens,
        chunks=len(times),
        finish_reason=finish_reason,
        first_answer_s=first_answer_s,
        thinking_s=thinking_s,
        pool_wait_s=pool_wait_ns / NS if pool_wait_ns is not None else None,
        server_tps=to_float(timings.get("predicted_per_second")),
        server_prompt_s=prompt_ms / 1000 if prompt_ms is not None else None,
        server_output_tokens=to_int(timings.get("predicted_n")),
        token_offsets_ms=tuple(round((t - t_request_ns) / 1e6, 3) for t in times),
    )
