"""Many requests with K in flight: the engine behind prompt sets, concurrency sweeps and
`python -m atom_core bench`.

Workers take the next job of their lane as soon as their previous one ends, so exactly K
requests per lane are in flight until its jobs run out. A lane is one (server, model) pair by
default, so in a multi-model run each model gets its own K; `shared=True` makes one lane of K for
all jobs. The requests run on an asyncio loop (atom_core.measure.engine) whose connection pools
hold K per lane, so no request queues on the client. Records come back to the caller's thread in
the order they finish; closing the iterator (or setting `cancel`) stops new jobs and makes
in-flight streams leave, which closes their HTTP responses.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import AtomError
from ..metrics import (
    DECODE_P50,
    E2E_P50,
    FIRST_ANSWER_P50,
    POOL_WAIT_NOTICE_S,
    THINKING_P50,
    TOKENS_MEAN,
    TTFT_P50,
    TTFT_P90,
    GenerationMetrics,
)
from ..runs import RunRecord
from ..server.client import LMStudioClient
from .engine import LoadEngine, Outcome
from .jobs import LoadJob


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadRecord:
    """One finished (or failed, or cancelled) request."""

    job: LoadJob
    server: str
    content: str
    reasoning: str
    metrics: GenerationMetrics
    error: AtomError | None = None
    cancelled: bool = False
    started_at: float = 0.0  # wall clock (time.time()) when the request went out
    # perf_counter_ns when ATOM asked to send it, and when its stream closed: each model's
    # active window in a run (aggregate tok/s) runs from its first start to its last end.
    t_start_ns: int = 0
    t_end_ns: int = 0

    @property
    def empty(self) -> bool:
        """The request ended without an error but no token arrived: nothing was generated, so
        nothing was measured (a TTFT of none and 0 tok/s are not a result)."""
        return self.error is None and not self.cancelled and not self.metrics.chunks

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and not self.empty

    @property
    def problem(self) -> str | None:
        """Why the request is not ok, in one sentence (None when it is ok or was cancelled)."""
        if self.error is not None:
            return self.error.sentence
        return NO_TOKENS if self.empty else None

    def row(self) -> dict[str, Any]:
        """The record the CLI prints: one flat JSON object per request."""
        m = self.metrics
        return {
            "model": self.job.model,
            "server": self.server,
            "ok": self.ok,
            "error": self.problem,
            "ttft_s": _round(m.ttft_s),
            "first_answer_s": _round(m.first_answer_s),
            "thinking_s": _round(m.thinking_s),
            "e2e_s": _round(m.e2e_s),
            "output_tokens": m.output_tokens,
            "reasoning_tokens": m.reasoning_tokens,
            "tokens_source": m.tokens_source,
            "tokens_per_s": _round(m.decode_tps, 2),
            "itl_p50_s": _round(m.itl_p50_s),
            "itl_p95_s": _round(m.itl_p95_s),
            "finish_reason": m.finish_reason,
            "pool_wait_s": _round(m.pool_wait_s),
            "server_tps": _round(m.server_tps, 2),
            "server_prompt_s": _round(m.server_prompt_s),
            **self.job.tags,
        }

    def as_run(self, source: str, **extra: Any) -> RunRecord:
        """The run the store's runs table keeps (store.add_run)."""
        run = RunRecord.measured(source=source, server=self.server, model=self.job.model,
                                 metrics=self.metrics, error=self.error,
                                 cancelled=self.cancelled, **self.job.tags, **extra)
        run = run.replace(ts=self.started_at or run.ts)
        if self.empty:  # a failed run: Stats counts it, and measures nothing from it
            run = run.replace(ok=False, state="error", error=NO_TOKENS)
        return run

    def run_row(self, source: str, **extra: Any) -> dict[str, Any]:
        """That run as a stored row: for a runs frame of records not (yet) stored."""
        return self.as_run(source, **extra).to_record()


ClientFor = Callable[[str], LMStudioClient]

NO_TOKENS = "The server ended the reply without generating a single token."


def run_load(
    jobs: Sequence[LoadJob],
    *,
    client: LMStudioClient | ClientFor,
    concurrency: int = 1,
    cancel: threading.Event | None = None,
    shared: bool = True,
    transport_for: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
) -> Iterator[LoadRecord]:
    """Runs `jobs` keeping `concurrency` requests in flight; yields records as they finish.

    `client` is one client, or a function from a job's `server` to its client (several
    servers). `shared=False` gives every (server, model) its own `concurrency` in flight
    (what a multi-model bench or sweep wants); `shared=True` (prompt sets) shares one pool of
    `concurrency` between all jobs. `transport_for` (tests) gives a base URL's async transport.
    Closing the iterator early cancels what is left.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    cancel = cancel or threading.Event()
    done: queue.Queue[Outcome | None] = queue.Queue()
    client_for: ClientFor = client if callable(client) else (lambda _s: client)
    engine = LoadEngine(jobs, client_for=client_for, concurrency=concurrency, shared=shared,
                        cancel=cancel, put=done.put, transport_for=transport_for)
    engine.start()
    try:
        while True:
            outcome = done.get()
            if outcome is None:
                return
            yield record_of(outcome)
    finally:
        cancel.set()


def record_of(outcome: Outcome) -> LoadRecord:
    """The LoadRecord of one finished request."""
    reply = outcome.reply
    return LoadRecord(job=outcome.job, server=outcome.server, content=reply.content,
                      reasoning=reply.reasoning, metrics=reply.metrics(), error=outcome.error,
                      cancelled=outcome.cancelled, started_at=outcome.started_at,
                      t_start_ns=outcome.t_call_ns, t_end_ns=reply.t_end_ns)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSummary:
    """Per-model figures over a set of records."""

    model: str
    requests: int
    ok: int
    errors: int  # every request that is not ok, `empty` ones included
    # figures of metrics' catalogue (the keys of `row()`, the CLI's JSON, stay as they were:
    # tokens_per_s_p50 is DECODE_P50)
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    tokens_per_s_p50: float | None  # per request decode speed, median
    e2e_p50_s: float | None
    output_tokens_mean: float | None
    # this model's output tokens over its own active window (first request sent to last end)
    aggregate_tokens_per_s: float | None
    first_answer_p50_s: float | None = None
    thinking_p50_s: float | None = None
    active_s: float | None = None  # the window aggregate_tokens_per_s is over
    pool_waited: int = 0  # requests that waited for a client connection (> POOL_WAIT_NOTICE_S)
    pool_wait_max_s: float | None = None
    empty: int = 0  # replies that ended without error but with no token (not ok)

    def row(self) -> dict[str, Any]:
        return {k: (_round(v) if isinstance(v, float) else v)
                for k, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__)}


def active_window_s(records: Sequence[LoadRecord]) -> float | None:
    """Seconds from the first of these requests being sent to the last one ending."""
    spans = [(r.t_start_ns, r.t_end_ns) for r in records if r.t_end_ns > 0]
    if not spans:
        return None
    return (max(e for _, e in spans) - min(s for s, _ in spans)) / 1e9


def summarize(records: Sequence[LoadRecord], *, wall_s: float | None = None,
              order: Sequence[str] = ()) -> list[LoadSummary]:
    """One summary per model, in `order` then first-seen order. Failed requests, and replies
    with no token (`empty`), count in `errors` only. Aggregate tok/s is over each model's own
    active window (its first request sent to its last ended); `wall_s` is used only for records
    without timestamps."""
    by_model: dict[str, list[LoadRecord]] = {m: [] for m in order}
    for r in records:
        by_model.setdefault(r.job.model, []).append(r)
    out = []
    for model, rs in by_model.items():
        if not rs:
            continue
        good = [r.metrics for r in rs if r.ok]
        window = active_window_s(rs) or wall_s
        agg = sum(m.output_tokens or 0 for m in good) / window if good and window else None
        waits = [r.metrics.pool_wait_s for r in rs if r.metrics.pool_wait_s is not None]
        out.append(LoadSummary(
            model=model, requests=len(rs), ok=len(good), errors=len(rs) - len(good),
            ttft_p50_s=TTFT_P50.over(good), ttft_p90_s=TTFT_P90.over(good),
            tokens_per_s_p50=DECODE_P50.over(good), e2e_p50_s=E2E_P50.over(good),
            output_tokens_mean=TOKENS_MEAN.over(good), aggregate_tokens_per_s=agg,
            first_answer_p50_s=FIRST_ANSWER_P50.over(good), thinking_p50_s=THINKING_P50.over(good),
            active_s=window,
            pool_waited=sum(1 for w in waits if w > POOL_WAIT_NOTICE_S),
            pool_wait_max_s=max(waits) if waits else None,
            empty=sum(1 for r in rs if r.empty),
        ))
    return out


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)
