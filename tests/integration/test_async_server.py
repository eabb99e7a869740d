"""The asyncio test server the fidelity benchmark uses, measured by ATOM's load engine.
Bounds only where the server's schedule guarantees them (nothing arrives before it is due)."""

from __future__ import annotations

import httpx

from atom_core.measure.loadrun import LoadJob, run_load
from atom_core.server.client import LMStudioClient
from tests.fixtures.async_server import ServerSpec, serve_async

SPEC = ServerSpec(ttft_s=0.05, tokens_per_s=200, reply_tokens=12, reasoning_tokens=6)


def test_reasoner_counts_every_token_though_usage_counts_the_answer_only() -> None:
    with serve_async(SPEC) as srv, LMStudioClient(srv.url) as client:
        records = list(run_load([LoadJob(model="reasoner", prompt="x") for _ in range(4)],
                                client=client, concurrency=4))
        stats = httpx.get(f"{srv.url}/__stats").json()
    assert len(records) == 4 and all(r.ok for r in records)
    for r in records:
        m = r.metrics
        assert m.output_tokens == 18 and m.tokens_source == "chunks"  # usage said 12
        assert m.reasoning_tokens == 6
        assert r.reasoning and r.content
        assert m.ttft_s is not None and m.ttft_s >= 0.05
        assert m.first_answer_s is not None and m.first_answer_s >= 0.05 + 6 / 200
        assert m.thinking_s is not None and m.first_answer_s > m.ttft_s
    assert stats["requests"] == 4 and stats["tokens"] == 4 * 18


def test_llama_model_sends_timings_that_land_on_the_record() -> None:
    with serve_async(SPEC) as srv, LMStudioClient(srv.url) as client:
        (record,) = list(run_load([LoadJob(model="llama", prompt="x")], client=client))
    m = record.metrics
    assert m.server_tps == 200.0 and m.server_output_tokens == 12
    assert m.server_prompt_s == 0.05
    row = record.run_row("cli")
    assert row["server_tps"] == 200.0 and row["server_prompt_s"] == 0.05
