"""Concurrency sweep: the level figures, the verdict, and a real sweep against the HTTP double."""

from __future__ import annotations

from typing import Any

import pytest

from atom_core import stats
from atom_core.measure import sweep
from atom_core.measure.sweep import LevelResult, SweepTarget
from atom_core.types import LoadedInstance, ModelInfo

TARGET = SweepTarget(min_tps_per_user=10, max_ttft_p90_s=2.0)
NO_CLIENT: Any = None  # run_load is replaced where a test passes it


def level(k: int, tps: float | None, ttft90: float | None, errors: int = 0) -> LevelResult:
    return LevelResult(concurrency=k, requests=8, ok=8 - errors, errors=errors,
                       tps_per_user_p50=tps, aggregate_tps=None if tps is None else tps * k,
                       ttft_p50_s=ttft90, ttft_p90_s=ttft90)


def test_parse_levels() -> None:
    assert sweep.parse_levels("1,2,4,8") == [1, 2, 4, 8]
    assert sweep.parse_levels(" 8, 2,2 ,1") == [1, 2, 8]
    assert sweep.parse_levels("1,64,256,1024") == [1, 64, 256, 1024]
    for bad in ("", "a,b", "0,1", "1,1025"):
        with pytest.raises(ValueError):
            sweep.parse_levels(bad)


def test_verdict_is_the_largest_level_with_every_lower_level_passing() -> None:
    levels = [level(1, 40, 0.3), level(2, 30, 0.5), level(4, 18, 1.2), level(8, 9, 2.5)]
    v = sweep.verdict(levels, TARGET)
    assert v.best == 4
    assert v.sentence.startswith("Serves 4 people at once: at 4 in flight each still gets "
                                 "18.0 tok/s and TTFT p90 is 1.20 s")
    assert "At 8 it misses: 9.0 tok/s per user (< 10); TTFT p90 2.50 s (> 2.00 s)." in v.sentence
    assert v.to_dict()["max_concurrency"] == 4
    # A lucky high level after a miss does not count.
    assert sweep.verdict([level(1, 40, 0.3), level(2, 5, 0.5), level(4, 30, 0.5)],
                         TARGET).best == 1


def test_verdict_edge_cases() -> None:
    none = sweep.verdict([level(1, 4, 0.3)], TARGET)
    assert none.best is None and none.sentence.startswith("Even one request at a time misses")
    failing = sweep.verdict([level(1, 40, 0.3), level(2, 40, 0.3, errors=1)], TARGET)
    assert failing.best == 1 and "1 of 8 requests failed" in failing.sentence
    every = sweep.verdict([level(1, 40, 0.3), level(2, 30, 0.4)], TARGET)
    assert every.best == 2 and "try higher levels" in every.sentence
    assert "1 person" in sweep.verdict([level(1, 40, 0.3), level(2, 1, 9)], TARGET).sentence
    assert sweep.verdict([], TARGET).best is None
    assert level(1, None, None).failures(TARGET) == ["no speed (< 10)",
                                                     "no first token (> 2.00 s)"]
    assert TARGET.describe() == "≥ 10 tok/s per user and TTFT p90 ≤ 2.00 s"


def row(k: int, ts: float, e2e: float, tokens: int, tps: float, ttft: float,
        ok: bool = True, sweep_id: str = "s1", **extra: Any) -> dict[str, Any]:
    return {"ts": ts, "source": "sweep", "server": "http://a", "model": "m", "ok": ok,
            "state": "complete" if ok else "error", "ttft_s": ttft if ok else None,
            "decode_tps": tps if ok else None, "e2e_s": e2e, "output_tokens": tokens if ok else 0,
            "concurrency": k, "sweep_id": sweep_id, **extra}


def test_levels_from_runs_on_known_rows() -> None:
    rows = [row(1, 0.0, 2.0, 20, 10.0, 0.5), row(1, 2.0, 2.0, 20, 12.0, 0.7),
            # level 2: two requests overlap from t=10 to t=13.5; one fails
            row(2, 10.0, 3.0, 30, 8.0, 1.0), row(2, 10.5, 3.0, 30, 6.0, 2.0),
            row(2, 11.0, 0.1, 0, 0.0, 0.0, ok=False)]
    got = {lv.concurrency: lv for lv in sweep.levels_from_runs(stats.runs_frame(rows))}
    one, two = got[1], got[2]
    assert (one.requests, one.ok, one.errors) == (2, 2, 0)
    assert one.wall_s == pytest.approx(4.0) and one.aggregate_tps == pytest.approx(40 / 4.0)
    assert one.tps_per_user_p50 == pytest.approx(11.0)
    assert one.ttft_p50_s == pytest.approx(0.6) and one.ttft_p90_s == pytest.approx(0.68)
    assert (two.requests, two.ok, two.errors) == (3, 2, 1)
    assert two.wall_s == pytest.approx(3.5) and two.aggregate_tps == pytest.approx(60 / 3.5)
    frame = sweep.levels_frame([one, two])
    assert list(frame["concurrency"]) == [1, 2]
    assert set(sweep.LEVEL_COLUMNS) <= set(frame.columns)


def test_sweeps_in_history_and_their_runs() -> None:
    rows = [row(1, 0.0, 1.0, 5, 9.0, 0.2, sweep_id="old"),
            row(1, 100.0, 1.0, 5, 9.0, 0.2, sweep_id="new"),
            row(4, 101.0, 1.0, 5, 9.0, 0.2, sweep_id="new"),
            row(2, 50.0, 1.0, 5, 9.0, 0.2, sweep_id=""),  # an older CLI sweep, no id
            {"ts": 1.0, "source": "chat", "model": "m", "ok": True}]
    df = stats.runs_frame(rows)
    found = sweep.sweeps_in_history(df)
    assert list(found["sweep_id"]) == ["new", "untagged:m@http://a", "old"]
    assert found["levels"][0] == (1, 4) and found["requests"][0] == 2
    assert "m · levels 1, 4 · 2 requests" in found["label"][0]
    assert len(sweep.sweep_runs(df, "new")) == 2
    assert list(sweep.sweep_runs(df, "untagged:m@http://a")["concurrency"]) == [2]
    assert sweep.sweeps_in_history(stats.runs_frame([])).empty


def test_parallel_slots_from_loaded_instances() -> None:
    loaded = ModelInfo(key="m", loaded_instances=(LoadedInstance(id="m", config={
        "parallel": 4, "context_length": 4096}),))
    assert sweep.parallel_slots(loaded) == 4
    assert sweep.parallel_slots(ModelInfo(key="m")) is None
    assert sweep.parallel_slots(None) is None










def test_sweep_jobs_take_the_route_and_tag_it_on_every_run() -> None:
    jobs = sweep.sweep_jobs(model="m", prompt="p", level=2, requests=3, sweep_id="s",
                            route="responses")
    assert {j.route for j in jobs} == {"responses"}
    assert {j.tags["route"] for j in jobs} == {"responses"}
    assert sweep.sweep_jobs(model="m", prompt="p", level=1, requests=1, sweep_id="s")[0].route \
        == "completions"


def test_sweeps_in_history_name_a_route_other_than_completions() -> None:
    rows = [row(1, 0.0, 1.0, 5, 9.0, 0.2, sweep_id="a", route="native"),
            row(1, 10.0, 1.0, 5, 9.0, 0.2, sweep_id="b")]
    found = sweep.sweeps_in_history(stats.runs_frame(rows))
    assert list(found["route"]) == ["completions", "native"]
    assert "m · levels 1" in found["label"][0]
    assert "m via native · levels 1" in found["label"][1]
def test_a_level_with_any_client_wait_says_so_and_the_verdict_names_its_model() -> None:
    clean = LevelResult(concurrency=1, requests=4, ok=4, errors=0, tps_per_user_p50=40.0,
                        aggregate_tps=40.0, ttft_p50_s=0.2, ttft_p90_s=0.3)
    waited = LevelResult(concurrency=64, requests=64, ok=64, errors=0, tps_per_user_p50=30.0,
                         aggregate_tps=900.0, ttft_p50_s=0.3, ttft_p90_s=0.5, pool_waited=3,
                         pool_wait_max_s=0.25)
    assert clean.note() == ""
    assert waited.note().startswith("3 of 64 requests at 64 in flight waited on ATOM's side")
    v = sweep.verdict([clean, waited], SweepTarget(min_tps_per_user=10, max_ttft_p90_s=2),
                      model="qwen")
    assert v.best == 64 and v.sentence.startswith("qwen: Serves 64 people at once")
    assert "Note: 3 of 64 requests at 64 in flight waited on ATOM's side" in v.sentence


def test_levels_from_stored_runs_count_client_waits() -> None:
    rows = [{"ts": 100.0 + i, "source": "sweep", "server": "s", "model": "m", "ok": True,
             "state": "complete", "ttft_s": 0.2, "decode_tps": 30.0, "e2e_s": 1.0,
             "output_tokens": 30, "concurrency": 2, "sweep_id": "x",
             "pool_wait_s": w} for i, w in enumerate((0.0, 0.3, None))]
    (lv,) = sweep.levels_from_runs(stats.runs_frame(rows))
    assert lv.pool_waited == 1 and lv.pool_wait_max_s == 0.3
    # the level's window runs from the first ask to the last end, pool wait included
    assert lv.wall_s == pytest.approx((102.0 + 1.0) - 100.0)


def test_a_sweep_of_several_models_gives_each_its_own_k_unless_shared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run_load(jobs: list[Any], **kwargs: Any) -> Any:
        calls.append({"jobs": jobs, **kwargs})
        yield from ()

    monkeypatch.setattr(sweep, "run_load", fake_run_load)
    for shared in (False, True):
        list(sweep.run_sweep(NO_CLIENT, model=["a", "b"], prompt="p", levels=[1, 4],
                             requests_per_level=2, shared=shared))
    per_model, pooled = calls[:2], calls[2:]
    assert [c["concurrency"] for c in calls] == [1, 4, 1, 4]
    assert [c["shared"] for c in per_model] == [False, False]
    assert [c["shared"] for c in pooled] == [True, True]
    # both models' requests, taken in turn, tagged with how K was given out
    assert [j.model for j in per_model[0]["jobs"]] == ["a", "b", "a", "b"]
    assert {j.tags["k_scope"] for c in per_model for j in c["jobs"]} == {"model"}
    assert {j.tags["k_scope"] for c in pooled for j in c["jobs"]} == {"shared"}
    # one model has nothing to share K with
    calls.clear()
    list(sweep.run_sweep(NO_CLIENT, model="a", prompt="p", levels=[2], requests_per_level=2,
                         shared=True))
    assert calls[0]["shared"] is False
    assert {j.tags["k_scope"] for j in calls[0]["jobs"]} == {"model"}


def test_a_shared_sweep_reads_back_per_model_and_its_verdict_says_k_was_shared() -> None:
    rows = [row(1, 0.0, 1.0, 5, 20.0, 0.2, sweep_id="s", model="a", k_scope="shared"),
            row(1, 0.5, 1.0, 5, 10.0, 0.2, sweep_id="s", model="b", k_scope="shared"),
            row(2, 3.0, 1.0, 5, 9.0, 0.2, sweep_id="s", model="b", k_scope="shared"),
            row(1, 9.0, 1.0, 5, 9.0, 0.2, sweep_id="own", model="a", k_scope="model"),
            row(1, 9.0, 1.0, 5, 9.0, 0.2, sweep_id="own", model="b", k_scope="model")]
    df = stats.runs_frame(rows)
    found = sweep.sweeps_in_history(df)
    assert list(zip(found["sweep_id"], found["model"], found["shared_by"], strict=True)) == [
        ("own", "a", 1), ("own", "b", 1), ("s", "a", 2), ("s", "b", 2)]
    assert set(found["models"]) == {2}
    assert found["label"][2].endswith("· a · levels 1 · 1 requests · K shared by 2 models")
    assert "shared" not in found["label"][0]
    b_levels = sweep.levels_from_runs(sweep.sweep_runs(df, "s", "b"))
    assert [lv.concurrency for lv in b_levels] == [1, 2]
    assert len(sweep.sweep_runs(df, "s")) == 3
    v = sweep.verdict(b_levels, TARGET, "b", shared_by=2)
    assert v.best == 1
    assert v.sentence.startswith("b: Serves 1 person at once")
    assert "shared by 2 models, so this model had only part of them" in v.sentence
    assert "shared" not in sweep.verdict(b_levels, TARGET, "b").sentence
