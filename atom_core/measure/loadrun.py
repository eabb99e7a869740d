"""Many requests with K in flight: the engine behind prompt sets, concurrency sweeps and
`python -m atom_core bench`.

Workers take the next job from a shared list as soon as their previous one ends, so exactly K
requests are in flight until the list runs out. Records come back to the caller's thread in the
order they finish; closing the iterator (or setting `cancel`) stops new jobs and makes
in-flight streams leave, which closes their HTTP responses.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import AtomError, ServerError
from ..metrics import GenerationMetrics, percentile
from ..runs import run_record
from ..server.client import LMStudioClient
from ..server.streaming import ReplyBuffer
from ..types import ChatMessage, SamplingOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadJob:
    """One request to make."""

    model: str
    prompt: str
    system_prompt: str | None = None
    options: SamplingOptions | None = None
    server: str = ""  # base URL; "" means the runner's default client
    route: str = "completions"  # chat route (server.routes.ROUTES)
    # Anything the caller wants back on the record: prompt index, repeat, slot label, ...
    tags: dict[str, Any] = field(default_factory=dict)


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

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled

    def row(self) -> dict[str, Any]:
        """The record the CLI prints: one flat JSON object per request."""
        m = self.metrics
        return {
            "model": self.job.model,
            "server": self.server,
            "ok": self.ok,
            "error": self.error.sentence if self.error else None,
            "ttft_s": _round(m.ttft_s),
            "e2e_s": _round(m.e2e_s),
            "output_tokens": m.output_tokens,
            "tokens_source": m.tokens_source,
            "tokens_per_s": _round(m.decode_tps, 2),
            "itl_p50_s": _round(m.itl_p50_s),
            "itl_p95_s": _round(m.itl_p95_s),
            "finish_reason": m.finish_reason,
            **self.job.tags,
        }

    def run_row(self, source: str, **extra: Any) -> dict[str, Any]:
        """The row for the store's runs table."""
        row = run_record(source=source, server=self.server, model=self.job.model,
                         metrics=self.metrics, error=self.error, cancelled=self.cancelled,
                         **self.job.tags, **extra)
        row["ts"] = self.started_at or row["ts"]
        return row


ClientFor = Callable[[str], LMStudioClient]


def run_load(
    jobs: Sequence[LoadJob],
    *,
    client: LMStudioClient | ClientFor,
    concurrency: int = 1,
    cancel: threading.Event | None = None,
) -> Iterator[LoadRecord]:
    """Runs `jobs` keeping `concurrency` requests in flight; yields records as they finish.

    `client` is one client, or a function from a job's `server` to its client (several
    servers). Closing the iterator early cancels what is left.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    cancel = cancel or threading.Event()
    pending: queue.Queue[LoadJob] = queue.Queue()
    for job in jobs:
        pending.put(job)
    done: queue.Queue[LoadRecord | None] = queue.Queue()
    client_for: ClientFor = client if callable(client) else (lambda _s: client)
    workers = [
        threading.Thread(target=_worker, args=(pending, done, client_for, cancel),
                         name=f"atom-load-{i}", daemon=True)
        for i in range(min(concurrency, len(jobs)) or 1)
    ]
    for w in workers:
        w.start()
    finished_workers = 0
    try:
        while finished_workers < len(workers):
            record = done.get()
            if record is None:
                finished_workers += 1
                continue
            yield record
    finally:
        cancel.set()


def _worker(pending: queue.Queue[LoadJob], done: queue.Queue[LoadRecord | None],
            client_for: ClientFor, cancel: threading.Event) -> None:
    try:
        while not cancel.is_set():
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            done.put(_one(job, client_for, cancel))
    finally:
        done.put(None)


def _one(job: LoadJob, client_for: ClientFor, cancel: threading.Event) -> LoadRecord:
    reply = ReplyBuffer()
    error: AtomError | None = None
    started = time.time()
    server = job.server
    stream = None
    try:
        client = client_for(job.server)
        server = client.base_url
        stream = client.stream_route(job.route, job.model, [ChatMessage("user", job.prompt)],
                                     options=job.options, system_prompt=job.system_prompt)
        with stream:
            for event in stream:
                reply.add(event)
                if cancel.is_set():
                    break
    except AtomError as e:
        error = e
    except Exception as e:  # a bug must become a failed record, not a dead worker
        error = ServerError(f"Unexpected error: {e!r}", detail=repr(e))
    finally:
        if stream is not None:
            reply.t_request_ns, reply.t_end_ns = stream.t_request_ns, stream.t_end_ns
    cancelled = error is None and stream is not None and not stream.finished
    return LoadRecord(job=job, server=server, content=reply.content, reasoning=reply.reasoning,
                      metrics=reply.metrics(), error=error, cancelled=cancelled,
                      started_at=started)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSummary:
    """Per-model figures over a set of records."""

    model: str
    requests: int
    ok: int
    errors: int
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    tokens_per_s_p50: float | None  # per request decode speed, median
    e2e_p50_s: float | None
    output_tokens_mean: float | None
    aggregate_tokens_per_s: float | None  # all output tokens / wall time of the batch

    def row(self) -> dict[str, Any]:
        return {k: (_round(v) if isinstance(v, float) else v)
                for k, v in ((f, getattr(self, f)) for f in self.__dataclass_fields__)}


def summarize(records: Sequence[LoadRecord], *, wall_s: float | None = None,
              order: Sequence[str] = ()) -> list[LoadSummary]:
    """One summary per model, in `order` then first-seen order. Failed requests count in
    `errors` only."""
    by_model: dict[str, list[LoadRecord]] = {m: [] for m in order}
    for r in records:
        by_model.setdefault(r.job.model, []).append(r)
    out = []
    for model, rs in by_model.items():
        if not rs:
            continue
        good = [r for r in rs if r.ok]
        ttfts = [r.metrics.ttft_s for r in good if r.metrics.ttft_s is not None]
        tps = [r.metrics.decode_tps for r in good if r.metrics.decode_tps is not None]
        tokens = [r.metrics.output_tokens for r in good]
        e2e = [r.metrics.e2e_s for r in good]
        agg = None
        if good and wall_s:
            agg = sum(tokens) / wall_s
        out.append(LoadSummary(
            model=model, requests=len(rs), ok=len(good), errors=len(rs) - len(good),
            ttft_p50_s=percentile(ttfts, 50), ttft_p90_s=percentile(ttfts, 90),
            tokens_per_s_p50=percentile(tps, 50), e2e_p50_s=percentile(e2e, 50),
            output_tokens_mean=sum(tokens) / len(tokens) if tokens else None,
            aggregate_tokens_per_s=agg,
        ))
    return out


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)
