"""K requests in flight against the real HTTP double: the engine of prompt sets, sweeps, bench."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from atom_core.cli import main
from atom_core.history import open_store
from atom_core.measure.loadrun import LoadJob, run_load, summarize
from atom_core.server.client import LMStudioClient
from tests.fixtures.lmstudio_double import max_overlap, serve

CONFIG = {"models": [
    {"key": "a", "loaded": True, "ttft_ms": 150, "token_gap_ms": 20, "reply_tokens": 10},
    {"key": "b", "loaded": True, "ttft_ms": 150, "token_gap_ms": 20, "reply_tokens": 10},
]}




@pytest.mark.parametrize("k", [1, 3])
def test_keeps_exactly_k_requests_in_flight(k: int) -> None:
    with serve(CONFIG) as double, LMStudioClient(double.url) as client:
        jobs = [LoadJob(model="a", prompt=f"p{i}", tags={"i": i}) for i in range(9)]
        records = list(run_load(jobs, client=client, concurrency=k))
        log = [r for r in double.log(wait=2) if r["path"] == "/v1/chat/completions"]
    assert len(records) == 9 and all(r.ok for r in records)
    assert sorted(r.job.tags["i"] for r in records) == list(range(9))
    assert max_overlap(log) == k


def test_closing_the_iterator_cancels_the_rest() -> None:
    slow = {"models": [{"key": "a", "loaded": True, "ttft_ms": 20, "token_gap_ms": 50,
                        "reply_tokens": 100}]}
    with serve(slow) as double, LMStudioClient(double.url) as client:
        it = run_load([LoadJob(model="a", prompt="x") for _ in range(6)], client=client,
                      concurrency=2)
        it.close()  # nothing consumed: stop at once
        log = double.log(wait=5)
    chats = [r for r in log if r["path"] == "/v1/chat/completions"]
    assert len(chats) <= 2 and not any(r["completed"] for r in chats)


def test_summary_per_model() -> None:
    with serve(CONFIG) as double, LMStudioClient(double.url) as client:
        jobs = [LoadJob(model=m, prompt="x") for m in ("a", "b", "a", "b", "missing")]
        records = list(run_load(jobs, client=client, concurrency=2))
    by_model = {s.model: s for s in summarize(records, wall_s=2.0)}
    assert by_model["a"].requests == 2 and by_model["a"].ok == 2
    assert by_model["a"].ttft_p50_s == pytest.approx(0.15, rel=0.2)
    assert by_model["a"].output_tokens_mean == 10
    assert by_model["a"].aggregate_tokens_per_s == pytest.approx(10.0)  # 20 tokens over 2 s
    assert by_model["missing"].errors == 1 and by_model["missing"].ttft_p50_s is None


def test_bench_command_json_records_and_summary(monkeypatch: pytest.MonkeyPatch,
                                                isolated_env: Path) -> None:
    with serve(CONFIG) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out, err = io.StringIO(), io.StringIO()
        code = main(["bench", "--models", "a,b", "--prompt", "hi", "--repeat", "2",
                     "--concurrency", "2", "--json"], out=out, err=err)
    assert code == 0, err.getvalue()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    records = [x for x in lines if x["type"] == "record"]
    summaries = [x for x in lines if x["type"] == "summary"]
    assert len(records) == 4 and {r["model"] for r in records} == {"a", "b"}
    for key in ("ttft_s", "e2e_s", "output_tokens", "tokens_per_s", "itl_p50_s", "itl_p95_s",
                "ok", "error"):
        assert key in records[0]
    assert [s["model"] for s in summaries] == ["a", "b"] and summaries[0]["ok"] == 2
    runs = open_store(isolated_env).runs()
    assert len(runs) == 4 and {r["source"] for r in runs} == {"cli"}


def test_bench_sweep_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(CONFIG) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out = io.StringIO()
        code = main(["bench", "--models", "a", "--prompt", "hi", "--concurrency", "1,2",
                     "--requests", "2", "--json", "--no-record"], out=out, err=io.StringIO())
    assert code == 0
    summaries = [json.loads(x) for x in out.getvalue().splitlines() if '"summary"' in x]
    assert [s["concurrency"] for s in summaries] == [1, 2]
