"""How fast a generation was: one definition, used by chat, arena, stats, bench and the CLI.

Definitions (also in the README):
- TTFT: request sent -> first content or reasoning token received.
- Inter-token latency (ITL): gaps between consecutive token arrivals; median and p95.
- Output tokens: the server's usage count when it reports one, else the number of token chunks
  received (`tokens_source` says which).
- Decode tokens/s: (output tokens - 1) / (last token time - first token time). The first token is
  left out because its wait is TTFT, not decoding.
- End-to-end: request sent -> stream closed.

All times come from time.perf_counter_ns() stamps taken when the bytes arrived, never from
drawing code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .types import to_int

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


TokensSource = Literal["usage", "chunks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationMetrics:
    """What one generation measured. Seconds, tokens; None where it cannot be known."""

    ttft_s: float | None  # None when no token arrived
    e2e_s: float
    decode_tps: float | None  # None with fewer than 2 tokens
    itl_p50_s: float | None
    itl_p95_s: float | None
    output_tokens: int
    tokens_source: TokensSource
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None
    chunks: int = 0  # token-carrying chunks received
    finish_reason: str | None = None
    # Arrival of each token chunk, in ms after the request was sent (for token timelines).
    token_offsets_ms: tuple[float, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_offsets_ms"] = list(self.token_offsets_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationMetrics:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["token_offsets_ms"] = tuple(known.get("token_offsets_ms") or ())
        return cls(**known)

    def summary(self) -> str:
        """One line for a stats caption: 'TTFT 0.42 s · 31.2 tok/s · 128 tokens · stop'."""
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT {format_seconds(self.ttft_s)}")
        if self.decode_tps is not None:
            parts.append(f"{self.decode_tps:.1f} tok/s")
        counted = "" if self.tokens_source == "usage" else " (counted)"
        parts.append(f"{self.output_tokens} tokens{counted}")
        parts.append(f"{format_seconds(self.e2e_s)} total")
        if self.finish_reason:
            parts.append(self.finish_reason)
        return " · ".join(parts)


def format_duration(seconds: float) -> str:
    """A wait people read at a glance: '25 s', '3 min 5 s', '2 h 10 min' (progress ETAs)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def format_seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.2f} s"


def compute_metrics(
    *,
    t_request_ns: int,
    token_times_ns: Sequence[int],
    t_end_ns: int,
    usage: dict[str, Any] | None = None,
    finish_reason: str | None = None,
) -> GenerationMetrics:
    """Build the metrics of one generation from its timestamps.

    Args:
        t_request_ns: perf_counter_ns() just before the request was sent.
        token_times_ns: arrival stamp of every chunk that carried content or reasoning.
        t_end_ns: perf_counter_ns() when the stream closed (or was abandoned).
        usage: the server's usage object, if it sent one.
        finish_reason: the server's finish reason, if it sent one.
    """
    times = list(token_times_ns)
    usage_tokens = to_int((usage or {}).get("completion_tokens"))
    if usage_tokens is not None and (usage_tokens > 0 or not times):
        output_tokens, source = usage_tokens, "usage"
    else:
        # Some servers send zeros in usage for reasoning replies; counting is more honest then.
        output_tokens, source = len(times), "chunks"
    gaps = [(b - a) / NS for a, b in zip(times, times[1:], strict=False)]
    decode_tps = None
    if output_tokens >= 2 and len(times) >= 2 and times[-1] > times[0]:
        decode_tps = (output_tokens - 1) / ((times[-1] - times[0]) / NS)
    details = (usage or {}).get("completion_tokens_details") or {}
    return GenerationMetrics(
        ttft_s=(times[0] - t_request_ns) / NS if times else None,
        e2e_s=(t_end_ns - t_request_ns) / NS,
        decode_tps=decode_tps,
        itl_p50_s=percentile(gaps, 50),
        itl_p95_s=percentile(gaps, 95),
        output_tokens=output_tokens,
        tokens_source=source,  # type: ignore[arg-type]
        prompt_tokens=to_int((usage or {}).get("prompt_tokens")),
        reasoning_tokens=to_int(details.get("reasoning_tokens")),
        chunks=len(times),
        finish_reason=finish_reason,
        token_offsets_ms=tuple(round((t - t_request_ns) / 1e6, 3) for t in times),
    )

