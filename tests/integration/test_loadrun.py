"""K requests in flight against the real HTTP double: the engine of prompt sets, sweeps, bench."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from atom_core.cli import main
from atom_core.history import open_store
from atom_core.measure.loadrun import LoadJob, active_window_s, run_load, summarize
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
    # the server waits 150 ms before the first token: a bound load cannot break
    assert by_model["a"].ttft_p50_s is not None and by_model["a"].ttft_p50_s >= 0.15
    assert by_model["a"].output_tokens_mean == 10
    # 20 tokens over model a's own active window, not the wall time given
    window = active_window_s([r for r in records if r.job.model == "a"])
    assert window is not None and by_model["a"].active_s == window
    assert by_model["a"].aggregate_tokens_per_s == pytest.approx(20 / window)
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
    runs = open_store(isolated_env).run_rows()
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


def test_records_carry_reasoning_and_pool_fields() -> None:
    from atom_core.measure.loadrun import LoadRecord
    from atom_core.metrics import compute_metrics

    ms = 1_000_000
    m = compute_metrics(t_request_ns=0, token_times_ns=[35 * ms, 435 * ms, 535 * ms],
                        t_end_ns=600 * ms, first_answer_ns=435 * ms, reasoning_chunks=1,
                        pool_wait_ns=2 * ms)
    rec = LoadRecord(job=LoadJob(model="t", prompt="x"), server="s", content="a",
                     reasoning="r", metrics=m, t_start_ns=0, t_end_ns=600 * ms)
    row = rec.row()
    assert row["ttft_s"] == 0.035 and row["first_answer_s"] == 0.435
    assert row["thinking_s"] == 0.4 and row["reasoning_tokens"] == 1
    assert row["pool_wait_s"] == 0.002
    (s,) = summarize([rec])
    assert s.first_answer_p50_s == 0.435 and s.thinking_p50_s == 0.4
    assert s.active_s == 0.6 and s.pool_waited == 0  # 2 ms is under the notice threshold


def test_each_models_aggregate_is_over_its_own_window() -> None:
    # The case: two models in one run, one twice as fast. Pinned spans, no server.
    from atom_core.measure.loadrun import LoadRecord
    from atom_core.metrics import compute_metrics

    s = 1_000_000_000

    def rec(model: str, start: int, end: int, tokens: int) -> LoadRecord:
        times = [start + (end - start) * (i + 1) // (tokens + 1) for i in range(tokens)]
        m = compute_metrics(t_request_ns=start, token_times_ns=times, t_end_ns=end)
        return LoadRecord(job=LoadJob(model=model, prompt="x"), server="s", content="",
                          reasoning="", metrics=m, t_start_ns=start, t_end_ns=end)

    fast = [rec("fast", 0, 2 * s, 100), rec("fast", 0, 2 * s, 100)]  # done at 2 s
    slow = [rec("slow", 0, 4 * s, 100), rec("slow", 0, 4 * s, 100)]  # done at 4 s
    by = {x.model: x for x in summarize(fast + slow, wall_s=4.0)}
    assert by["fast"].aggregate_tokens_per_s == pytest.approx(200 / 2)
    assert by["slow"].aggregate_tokens_per_s == pytest.approx(200 / 4)
    assert by["fast"].active_s == 2.0 and by["slow"].active_s == 4.0


def test_bench_json_per_model_k_reasoning_fields_and_per_model_verdicts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"models": [
        {"key": "a", "loaded": True, "ttft_ms": 20, "token_gap_ms": 5, "reply_tokens": 6},
        {"key": "t", "loaded": True, "ttft_ms": 20, "token_gap_ms": 5, "reply_tokens": 6,
         "reasoning": "let me think"},
    ]}
    with serve(config) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out = io.StringIO()
        code = main(["bench", "--models", "a,t", "--prompt", "hi", "--concurrency", "1,2",
                     "--requests", "4", "--stall-timeout", "30", "--json", "--no-record"],
                    out=out, err=io.StringIO())
        log = [r for r in double.log(wait=2) if r["path"] == "/v1/chat/completions"]
    assert code == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    records = [x for x in lines if x["type"] == "record"]
    thinker = [r for r in records if r["model"] == "t"]
    assert thinker and all(r["thinking_s"] is not None for r in thinker)
    assert all(r["first_answer_s"] > r["ttft_s"] for r in thinker)
    assert all(r["first_answer_s"] == r["ttft_s"] for r in records if r["model"] == "a")
    assert all("pool_wait_s" in r for r in records)
    summaries = [x for x in lines if x["type"] == "summary"]
    assert {"first_answer_p50_s", "thinking_p50_s", "active_s", "pool_waited"} <= set(
        summaries[0])
    verdicts = [x for x in lines if x["type"] == "verdict"]
    assert [v["model"] for v in verdicts] == ["a", "t"]
    assert all(v["sentence"].startswith(f"{v['model']}: ") for v in verdicts)
    assert all(v["shared"] is False for v in verdicts)
    # at level 2 each model had its own 2 in flight, so the server saw 4 at once
    assert max_overlap(log) == 4


def test_bench_shared_verdicts_say_that_k_was_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"models": [
        {"key": m, "loaded": True, "ttft_ms": 20, "token_gap_ms": 5, "reply_tokens": 6}
        for m in ("a", "b")]}
    with serve(config) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out = io.StringIO()
        code = main(["bench", "--models", "a,b", "--prompt", "hi", "--concurrency", "1,2",
                     "--requests", "2", "--shared", "--json", "--no-record"],
                    out=out, err=io.StringIO())
    assert code == 0
    verdicts = [x for x in map(json.loads, out.getvalue().splitlines())
                if x["type"] == "verdict"]
    assert [v["model"] for v in verdicts] == ["a", "b"]
    assert all(v["shared"] is True for v in verdicts)
    assert all("shared by 2 models" in v["sentence"] for v in verdicts)
