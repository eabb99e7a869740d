"""The Stats page's frames, pinned on known data: every figure it shows is computed here."""

from __future__ import annotations

import math
import random
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from atom_core import arena, stats
from atom_core.history import open_store
from atom_core.metrics import GenerationMetrics, compute_metrics, percentile
from atom_core.runs import RunRecord, run_record
from tests.fixtures.records import T0, arena_record


def run(model: str = "m", *, ts: float = T0, ok: bool = True, state: str | None = None,
        ttft: float | None = 0.5, tps: float | None = 20.0, e2e: float = 2.0,
        tokens: int = 40, prompt: int | None = 100, source: str = "chat",
        server: str = "http://a", **extra: Any) -> dict[str, Any]:
    row = {"ts": ts, "source": source, "server": server, "model": model, "ok": ok,
           "state": state or ("complete" if ok else "error"), "error": "" if ok else "boom",
           "ttft_s": ttft, "decode_tps": tps, "e2e_s": e2e, "itl_p50_s": 0.05,
           "itl_p95_s": 0.07, "output_tokens": tokens, "prompt_tokens": prompt,
           "tokens_source": "usage", "finish_reason": "stop"}
    row.update(extra)
    return row


# -- the frame ---------------------------------------------------------------------------------


def test_runs_frame_types_and_missing_fields() -> None:
    rows = [run("a", ts=T0 + 1), {"ts": T0, "model": "b", "ok": False, "ttft_s": None,
                                  "e2e_s": 1.0, "output_tokens": 0}]  # an old row: no state
    df = stats.runs_frame(rows)
    assert list(df["model"]) == ["b", "a"]  # sorted by time
    assert df["ttft_s"].dtype == "float64" and math.isnan(df["ttft_s"].iloc[0])
    assert str(df["model"].dtype) == "category"
    assert list(df["state"]) == ["error", "complete"]  # derived from ok
    assert list(df["failed"]) == [True, False] and list(df["ok"]) == [False, True]
    assert list(df["conversation_id"]) == ["", ""]
    assert list(df["prompt_band"].astype(str)) == [stats.UNKNOWN_BAND, "short (< 256 tokens)"]


def test_empty_history_gives_empty_frames() -> None:
    df = stats.runs_frame([])
    assert df.empty and "decode_tps" in df
    assert stats.model_summary(df).empty
    assert stats.box_stats(df).empty and stats.token_histogram(df).empty
    assert stats.tps_over_time(df)[0].empty and stats.model_colors(df) == {}
    ov = stats.overview(df)
    assert ov.runs == 0 and ov.summary.empty


def test_prompt_bands_edges() -> None:
    bands = stats.prompt_bands(pd.Series([0, 255, 256, 1023, 1024, 4095, 4096, np.nan]))
    assert list(bands.astype(str)) == [
        "short (< 256 tokens)", "short (< 256 tokens)", "medium (256-1k)", "medium (256-1k)",
        "long (1k-4k)", "long (1k-4k)", "very long (4k+)", stats.UNKNOWN_BAND]


# -- the summary: the numbers must be right ----------------------------------------------------


def test_summary_maths_on_known_data() -> None:
    ttfts = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 5.0]
    tps = [10, 12, 14, 16, 18, 20, 22, 24, 26, 100]
    rows = [run("fast", ttft=t, tps=s, e2e=t + 2, tokens=10 * (i + 1))
            for i, (t, s) in enumerate(zip(ttfts, tps, strict=True))]
    rows += [run("fast", ok=False, ttft=None, tps=None, e2e=0.1, tokens=0)]  # a failure
    rows += [run("fast", ok=False, state="stopped", ttft=9.0, tps=1.0, e2e=9.0)]  # user stop
    rows += [run("slow", ttft=2.0, tps=5.0, e2e=10.0, tokens=50)]
    s = stats.model_summary(stats.runs_frame(rows))
    assert list(s["model"]) == ["fast", "slow"]  # fastest decoding first
    fast = s.iloc[0]
    assert fast["runs"] == 12
    # Timing uses completed runs only; percentiles interpolate linearly (metrics.percentile).
    assert fast["ttft_p50_s"] == pytest.approx(0.55)
    assert fast["ttft_p90_s"] == pytest.approx(percentile(ttfts, 90))  # 0.9 + 0.1 * 4.1
    assert fast["ttft_p90_s"] == pytest.approx(1.31)
    assert fast["ttft_p99_s"] == pytest.approx(percentile(ttfts, 99))
    assert fast["decode_tps_p50"] == pytest.approx(19.0)
    assert fast["e2e_p50_s"] == pytest.approx(2.55)
    assert fast["output_tokens_mean"] == pytest.approx(55.0)
    assert fast["error_rate"] == pytest.approx(1 / 12)  # the stop is not an error
    assert "server_tps_p50" not in s  # only when some run carries the server's figures


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pandas_quantiles_agree_with_metrics_percentile(seed: int) -> None:
    rng = random.Random(seed)
    rows = [run(rng.choice("abc"), ttft=rng.lognormvariate(0, 1), tps=rng.uniform(1, 90),
                e2e=rng.uniform(0.5, 30)) for _ in range(501)]
    summary = stats.model_summary(stats.runs_frame(rows)).set_index("model")
    box = stats.box_stats(stats.runs_frame(rows)).set_index("model")
    for model in "abc":
        mine = [r for r in rows if r["model"] == model]
        ttfts = [r["ttft_s"] for r in mine]
        for col, q in (("ttft_p50_s", 50), ("ttft_p90_s", 90), ("ttft_p99_s", 99)):
            assert summary.loc[model, col] == pytest.approx(percentile(ttfts, q), rel=1e-12)
        assert summary.loc[model, "decode_tps_p50"] == pytest.approx(
            percentile([r["decode_tps"] for r in mine], 50), rel=1e-12)
        assert summary.loc[model, "e2e_p50_s"] == pytest.approx(
            percentile([r["e2e_s"] for r in mine], 50), rel=1e-12)
        for col, q in (("p5", 5), ("p25", 25), ("p50", 50), ("p75", 75), ("p95", 95)):
            assert box.loc[model, col] == pytest.approx(percentile(ttfts, q), rel=1e-12)


def test_summary_of_runs_recorded_by_the_real_code_path() -> None:
    """Rows made by runs.run_record from real metrics, not hand-written dicts."""
    ms = 1_000_000
    rows = []
    for gap in (10, 20, 40):  # decode speeds 100, 50, 25 tok/s
        m = compute_metrics(t_request_ns=0, token_times_ns=[300 * ms + i * gap * ms
                                                            for i in range(11)],
                            t_end_ns=(300 + 10 * gap + 5) * ms, usage=None, finish_reason="stop")
        rows.append(run_record(source="chat", server="http://a", model="x", metrics=m))
    s = stats.model_summary(stats.runs_frame(rows)).iloc[0]
    assert s["decode_tps_p50"] == pytest.approx(50.0)
    assert s["ttft_p50_s"] == pytest.approx(0.3)
    assert s["output_tokens_mean"] == 11 and s["error_rate"] == 0


def test_server_figures_join_the_summary_when_present() -> None:
    rows = [run("m", tps=20.0, server_tps=21.0, server_ttft_s=0.4, source="server-check"),
            run("m", tps=30.0), run("n", tps=10.0)]
    s = stats.model_summary(stats.runs_frame(rows)).set_index("model")
    assert s.loc["m", "server_tps_p50"] == 21.0 and s.loc["m", "server_ttft_p50_s"] == 0.4
    assert math.isnan(s.loc["n", "server_tps_p50"])


def test_the_server_figures_medians_are_the_catalogues_percentile() -> None:
    """Per (model, server): each p50 is metrics.percentile of that group (the catalogue's one
    percentile, through its Stat), with runs lacking the figure left out; and the module asks
    the catalogue rather than calling pandas' own median."""
    import ast
    from pathlib import Path

    from atom_core.stats import server_figures as sf

    rng = random.Random(7)
    rows = [run(m, server=srv, tps=rng.uniform(5, 50), ttft=rng.uniform(0.1, 2),
                server_tps=rng.choice([None, rng.uniform(5, 50)]),
                server_ttft_s=rng.uniform(0.1, 2), server_prompt_s=rng.uniform(0.01, 1))
            for m in "ab" for srv in ("http://a", "http://b") for _ in range(rng.randint(2, 9))]
    table = sf.server_figures(stats.runs_frame(rows)).set_index(["model", "server"])
    assert len(table) == 4
    for (model, srv), got in table.iterrows():
        mine = [r for r in rows if r["model"] == model and r["server"] == srv]
        for col, field in (("atom_tps_p50", "decode_tps"), ("server_tps_p50", "server_tps"),
                           ("atom_ttft_p50_s", "ttft_s"), ("server_prompt_p50_s",
                                                           "server_prompt_s")):
            want = percentile([r[field] for r in mine if r[field] is not None], 50)
            assert got[col] == pytest.approx(want, rel=1e-12)
    source = ast.parse(Path(sf.__file__).read_text())
    assert not [n.lineno for n in ast.walk(source) if isinstance(n, ast.Attribute)
                and n.attr in ("median", "quantile")]


def test_a_model_with_only_failures_still_shows_with_its_error_rate() -> None:
    rows = [run("ok", tps=9.0), run("broken", ok=False, ttft=None, tps=None)]
    s = stats.model_summary(stats.runs_frame(rows)).set_index("model")
    assert s.loc["broken", "error_rate"] == 1.0 and math.isnan(s.loc["broken", "ttft_p50_s"])
    assert list(s.index) == ["ok", "broken"]  # no speed: last


def test_summary_csv_round_trips() -> None:
    s = stats.model_summary(stats.runs_frame([run("a"), run("b", tps=40.0)]))
    back = pd.read_csv(pd.io.common.BytesIO(stats.summary_csv(s)))
    assert list(back.columns) == list(s.columns)
    assert list(back["model"]) == ["b", "a"] and list(back["decode_tps_p50"]) == [40.0, 20.0]


def test_headline_names_fastest_and_quickest() -> None:
    rows = [run("quick", ttft=0.1, tps=10.0) for _ in range(5)]
    rows += [run("fast", ttft=0.9, tps=80.0) for _ in range(5)]
    rows += [run("lucky-once", ttft=0.01, tps=999.0)]  # too few runs to headline
    best = stats.headline(stats.model_summary(stats.runs_frame(rows)))
    assert best["fastest"] == ("fast", "80.0 tok/s median")
    assert best["quickest"] == ("quick", "100 ms median")


# -- filters -----------------------------------------------------------------------------------


def test_filters_change_what_counts() -> None:
    day = 86400
    rows = [run("a", ts=T0 - 2 * day, source="chat", tps=10.0, prompt=100),
            run("a", ts=T0 - day, source="arena", tps=20.0, prompt=2000),
            run("b", ts=T0, source="cli", server="http://b", tps=30.0, prompt=None),
            run("a", ts=T0 + day, source="sweep", tps=40.0, prompt=5000, concurrency=2)]
    df = stats.runs_frame(rows)
    assert len(stats.RunFilter().apply(df)) == 4
    assert list(stats.RunFilter(models=("a",)).apply(df)["decode_tps"]) == [10, 20, 40]
    assert list(stats.RunFilter(sources=("arena", "cli")).apply(df)["decode_tps"]) == [20, 30]
    assert list(stats.RunFilter(servers=("http://b",)).apply(df)["model"]) == ["b"]
    d = date.fromtimestamp(T0)
    assert list(stats.RunFilter(start=d, end=d).apply(df)["decode_tps"]) == [30]
    assert list(stats.RunFilter(start=d).apply(df)["decode_tps"]) == [30, 40]
    assert list(stats.RunFilter(end=d - timedelta(days=1)).apply(df)["decode_tps"]) == [10, 20]
    long = stats.RunFilter(bands=("long (1k-4k)", "very long (4k+)")).apply(df)
    assert list(long["decode_tps"]) == [20, 40]
    assert list(stats.RunFilter(bands=(stats.UNKNOWN_BAND,)).apply(df)["model"]) == ["b"]
    # ...and the summary follows the filter
    only_a = stats.model_summary(stats.RunFilter(models=("a",), sources=("chat", "sweep"))
                                 .apply(df))
    assert only_a.iloc[0]["decode_tps_p50"] == 25.0 and only_a.iloc[0]["runs"] == 2


def test_filter_options_and_date_bounds() -> None:
    df = stats.runs_frame([run("rare", ts=T0), run("common", ts=T0 + 86400),
                           run("common", source="arena", prompt=300)])
    opts = stats.filter_options(df)
    assert opts["models"] == ["common", "rare"]  # most runs first
    assert opts["sources"] == ["arena", "chat"]
    assert opts["bands"] == ["short (< 256 tokens)", "medium (256-1k)"]
    assert stats.date_bounds(df) == (date.fromtimestamp(T0), date.fromtimestamp(T0 + 86400))
    assert stats.source_label("promptset") == "Prompt set" and stats.source_label("x") == "x"


# -- colours -----------------------------------------------------------------------------------


def test_model_colours_are_stable_and_distinct() -> None:
    models = [f"model-{i}" for i in range(20)]
    rows = [run(m, ts=T0 + i) for i, m in enumerate(models)]
    colors = stats.model_colors(stats.runs_frame(rows))
    assert len(set(colors.values())) == 20  # twenty models, twenty colours
    assert stats.model_colors(stats.runs_frame(list(reversed(rows)))) == colors
    # A new model never takes an existing model's colour, and filters do not matter.
    more = stats.model_colors(stats.runs_frame([*rows, run("newcomer", ts=T0 + 100)]))
    assert {m: more[m] for m in models} == colors
    assert stats.assign_colors(["x"]) == stats.assign_colors(["x"])  # deterministic


# -- chart frames ------------------------------------------------------------------------------


def test_tps_over_time_buckets_by_day() -> None:
    rows = [run("a", ts=T0 + d * 86400 + h * 3600, tps=10.0 + d) for d in range(90)
            for h in (0, 1)]
    buckets, size = stats.tps_over_time(stats.runs_frame(rows))
    assert size == 7 * 86400  # 90 days: weekly medians keep it under 80 points
    assert buckets["runs"].sum() == 180
    first_week = buckets.iloc[0]
    assert first_week["tps_p50"] == pytest.approx(np.median(
        [r["decode_tps"] for r in rows if r["ts"] < first_week["bucket"] + size]))
    short, size = stats.tps_over_time(stats.runs_frame(rows[:4]))
    assert size == 3600 and list(short["runs"]) == [1, 1, 1, 1]
    assert stats.bucket_seconds(0) == 60 and stats.bucket_seconds(1e12) == 365 * 86400


def test_sample_per_model_is_bounded_and_repeatable() -> None:
    rows = [run("big", ts=T0 + i) for i in range(1000)] + [run("small", ts=T0 + 2000)]
    rows += [run("big", ok=False, ts=T0 + 3000)]
    df = stats.runs_frame(rows)
    s1 = stats.sample_per_model(df, per_model=50)
    assert s1["model"].value_counts().to_dict() == {"big": 50, "small": 1}
    assert s1["ok"].all() and s1["ts"].is_monotonic_increasing
    assert list(stats.sample_per_model(df, per_model=50)["ts"]) == list(s1["ts"])


def test_trend_lines_recover_a_known_line() -> None:
    rows = [run("m", tokens=n, e2e=0.4 + 0.02 * n) for n in range(10, 500, 10)]
    rows += [run("flat", tokens=100, e2e=3.0) for _ in range(5)]  # one x value: no line
    rows += [run("m", ok=False, tokens=1000, e2e=99.0)]  # failures never bend the line
    t = stats.trend_lines(stats.runs_frame(rows), "output_tokens", "e2e_s")
    assert list(t["model"]) == ["m"]
    assert t.iloc[0]["slope"] == pytest.approx(0.02) and t.iloc[0]["intercept"] == pytest.approx(
        0.4)
    assert (t.iloc[0]["x_min"], t.iloc[0]["x_max"], t.iloc[0]["n"]) == (10, 490, 49)


def test_token_histogram_counts_shares_and_overflow() -> None:
    rows = [run("a", tokens=n) for n in range(1, 101)] + [run("a", tokens=10_000)]
    rows += [run("b", tokens=50) for _ in range(4)]
    h = stats.token_histogram(stats.runs_frame(rows), bins=10)
    for model, n in (("a", 101), ("b", 4)):
        part = h[h["model"] == model]
        assert part["count"].sum() == n and part["share"].sum() == pytest.approx(1.0)
    a = h[h["model"] == "a"]
    assert a["left"].iloc[0] == 0 and a["right"].iloc[0] == 10  # round bin edges
    assert len(a) == len(h[h["model"] == "b"])  # every model has every bin (zeros too)
    assert a["overflow"].iloc[-1] and not a["overflow"].iloc[:-1].any()
    assert a["count"].iloc[-1] >= 1  # the 10,000-token reply is counted, in the last bin
    assert a["right"].iloc[-1] < 1000  # ...and does not stretch the axis


# -- live --------------------------------------------------------------------------------------


def test_live_summary_covers_the_recent_window() -> None:
    now = T0 + 1000
    rows = [run("old", ts=T0 - 10_000)] + [run("new", ts=now - 20 + i, tps=10.0 + i)
                                            for i in range(3)]
    df = stats.runs_frame(rows)
    live = stats.live_summary(df, now=now, window_s=300)
    assert live.runs == 3 and live.active and live.last_run_ago_s == pytest.approx(18)
    assert list(live.per_model["model"]) == ["new"]
    assert live.per_model["decode_tps_p50"][0] == 11.0
    assert list(live.per_model.columns) == list(stats.LIVE_COLUMNS)
    idle = stats.live_summary(df, now=now + 3600)
    assert idle.runs == 0 and not idle.active and idle.per_model.empty
    assert not stats.live_summary(stats.runs_frame([]), now=now).active


# -- token timelines ---------------------------------------------------------------------------


def test_timeline_frame_and_stats() -> None:
    t = stats.Timeline(label="x", model="m", offsets_ms=(200.0, 250.0, 300.0, 400.0))
    f = stats.timeline_frame([t])
    assert list(f["position"]) == [1, 2, 3, 4]
    assert list(f["gap_ms"].iloc[1:]) == [50.0, 50.0, 100.0] and math.isnan(f["gap_ms"].iloc[0])
    s = stats.timeline_stats(t.offsets_ms)
    # The same definitions as metrics.compute_metrics on the same stamps.
    m = compute_metrics(t_request_ns=0, token_times_ns=[int(x * 1e6) for x in t.offsets_ms],
                        t_end_ns=int(450e6))
    assert s["ttft_ms"] == pytest.approx(m.ttft_s * 1000)  # type: ignore[operator]
    assert s["decode_tps"] == pytest.approx(m.decode_tps)
    assert s["gap_p50_ms"] == pytest.approx(m.itl_p50_s * 1000)  # type: ignore[operator]
    assert s["gap_p95_ms"] == pytest.approx(m.itl_p95_s * 1000)  # type: ignore[operator]
    assert s["gap_max_ms"] == 100.0 and s["tokens"] == 4
    assert stats.timeline_table([t])[0]["label"] == "x"
    assert stats.timeline_frame([]).empty


def test_message_timelines_come_from_the_store(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    ms = 1_000_000
    m = compute_metrics(t_request_ns=0, token_times_ns=[(100 + 10 * i) * ms for i in range(5)],
                        t_end_ns=200 * ms, usage=None, finish_reason="stop")
    reply = store.add_message(conv.id, role="assistant", content="a b c d e", model="m",
                              metrics=m)
    store.add_run(RunRecord.measured(source="chat", server="s", model="m", metrics=m,
                             conversation_id=conv.id, message_id=reply.id))
    store.add_run(RunRecord.measured(source="cli", server="s", model="m", metrics=m))  # no message
    choices = stats.message_choices(stats.runs_frame(store.run_rows()))
    assert len(choices) == 1 and choices.message_id[0] == reply.id
    assert "m · 5 tokens · 100.0 tok/s" in choices.label[0]
    t = stats.load_message_timeline(store, conv.id, reply.id)
    assert t is not None and t.offsets_ms == (100.0, 110.0, 120.0, 130.0, 140.0)
    assert t.content == "a b c d e"
    assert stats.load_message_timeline(store, conv.id, "nope") is None
    store.delete_conversation(conv.id)
    assert stats.load_message_timeline(store, conv.id, reply.id) is None




def test_arena_rounds_give_one_timeline_per_slot(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    store.append("arena_rounds", arena_record())
    store.append("arena_rounds", arena_record(blind=True))  # names still hidden: skipped
    store.append("arena_rounds", arena_record(blind=True, vote={"outcome": "tie"}))
    racing = store.append("arena_rounds", arena_record(state="running"))
    arena.rounds.racing(racing, True)  # raced in this process now: skipped
    try:
        rounds = stats.arena_timelines(arena.load_rounds(store))
    finally:
        arena.rounds.racing(racing, False)
    assert len(rounds) == 2
    label, timelines = rounds[0]
    assert "Why is the sky blue?" in label
    assert [t.label for t in timelines] == ["A: m1", "B: m2"]  # C kept no timeline
    assert timelines[1].offsets_ms == (300.0, 310.0)
    assert stats.arena_timelines(arena.load_rounds(open_store(isolated_env / "empty"))) == []


def test_replay_frames_follow_the_recorded_times() -> None:
    t = stats.Timeline(label="x", model="m", offsets_ms=(100.0, 200.0, 400.0, 800.0),
                       reasoning="think hard", content="The sky is blue")
    frames = stats.replay_frames(t, 1.0)
    assert [f.at_s for f in frames] == [0.1, 0.2, 0.4, 0.8]
    assert [f.tokens for f in frames] == [1, 2, 3, 4]
    assert frames[-1].reasoning == "think hard" and frames[-1].content == "The sky is blue"
    assert frames[0].content == "" and frames[0].reasoning.startswith("think")
    shown = [len(f.reasoning) + len(f.content) for f in frames]
    assert shown == sorted(shown)  # text only grows
    slow = stats.replay_frames(t, 0.25)
    assert [f.at_s for f in slow] == [0.4, 0.8, 1.6, 3.2]  # four times slower
    with pytest.raises(ValueError):
        stats.replay_frames(t, 0)


# -- caching between reruns --------------------------------------------------------------------


def test_runs_cache_rebuilds_only_when_runs_change(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    cache = stats.RunsCache()
    v0, empty = cache.snapshot(store)
    assert empty.empty
    store.add_run(RunRecord.from_record(run("a")))
    v1, one = cache.snapshot(store)
    assert v1 != v0 and len(one) == 1
    v2, again = cache.snapshot(store)
    assert v2 == v1 and again is one  # nothing changed: the same frame, no re-read
    store.add_run(RunRecord.from_record(run("b")))
    v3, two = cache.snapshot(store)
    assert v3 > v1 and list(two["model"]) == ["a", "b"]
    cache.clear()
    assert cache.frame(store) is not two and len(cache.frame(store)) == 2


def test_overview_bundles_every_frame() -> None:
    rng = random.Random(5)
    rows = [run(rng.choice(["a", "b"]), ts=T0 + i * 60, tps=rng.uniform(5, 50),
                tokens=rng.randint(1, 300), prompt=rng.randint(1, 3000)) for i in range(400)]
    df = stats.runs_frame(rows)
    ov = stats.overview(df, stats.RunFilter(models=("a",)))
    assert ov.runs == (df["model"] == "a").sum()
    assert list(ov.summary["model"]) == ["a"] and list(ov.box["model"]) == ["a"]
    assert set(ov.sample["model"]) == {"a"} and list(ov.e2e_trend["model"]) == ["a"]
    assert list(ov.prompt_trend["model"]) == ["a"]


def test_frame_build_is_quick_enough_for_a_long_history() -> None:
    """Not a benchmark (see bench/bench_stats.py): a guard against an accidental O(n^2)."""
    rows = [run(f"m{i % 20}", ts=T0 + i) for i in range(20_000)]
    started = time.perf_counter()
    stats.model_summary(stats.runs_frame(rows))
    assert time.perf_counter() - started < 5


def test_timeline_table_takes_tokens_and_speed_from_the_stored_metrics() -> None:
    """A chunk may carry several tokens: the table uses the server's count, like the chat
    caption, and keeps the chunk gaps from the timeline."""
    t = stats.Timeline(label="x", model="m", offsets_ms=(100.0, 200.0, 300.0),
                       metrics=GenerationMetrics.from_dict(
                           {"output_tokens": 6, "decode_tps": 25.0, "ttft_s": 0.1}))
    row = stats.timeline_table([t])[0]
    assert (row["tokens"], row["decode_tps"], row["ttft_ms"]) == (6, 25.0, 100.0)
    assert row["gap_p50_ms"] == 100.0
    bare = stats.timeline_table([stats.Timeline(label="y", model="m", offsets_ms=(1.0, 3.0))])
    assert bare[0]["tokens"] == 2 and bare[0]["decode_tps"] == pytest.approx(500.0)


def test_runs_cache_reads_only_new_shards_while_runs_arrive(
        isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from atom_core.history.tinydb_store import TinyDBHistoryStore

    store = TinyDBHistoryStore(isolated_env, shard_rows=10)
    store.append_many("runs", [run(f"m{i % 3}", ts=T0 + i) for i in range(35)])
    cache = stats.RunsCache()
    _, first = cache.snapshot(store)
    assert len(first) == 35 and cache.full_builds == 1
    deltas: list[tuple[int, int]] = []
    original = store.runs_since

    def spy(token: Any) -> Any:
        delta = original(token)
        deltas.append((delta.start, len(delta.rows)))
        return delta

    monkeypatch.setattr(store, "runs_since", spy)
    for i in range(35, 47):  # the open shard fills up and a new one starts
        store.add_run(RunRecord.from_record(run(f"m{i % 3}", ts=T0 + i)))
        _, df = cache.snapshot(store)
        assert len(df) == i + 1 and list(df["ts"]) == sorted(df["ts"])
    # never the three older shards: each look keeps their 30 rows and reads at most the rest
    assert all(start >= 30 and rows <= 20 for start, rows in deltas), deltas
    assert cache.full_builds == 1
    assert str(df["model"].dtype) == "category" and df["model"].nunique() == 3
    full = stats.runs_frame(store.run_rows())
    pd.testing.assert_frame_equal(df.drop(columns="id"), full.drop(columns="id"))
    assert stats.model_summary(df).equals(stats.model_summary(full))
    version, same = cache.snapshot(store)  # nothing new: the same frame, the same version
    assert same is df and cache.snapshot(store)[0] == version


def test_runs_cache_survives_a_damaged_shard(isolated_env: Path) -> None:
    from atom_core.history.tinydb_store import TinyDBHistoryStore

    store = TinyDBHistoryStore(isolated_env, shard_rows=10)
    store.append_many("runs", [run("m", ts=T0 + i) for i in range(25)])
    (isolated_env / "tables" / "runs" / "000001.json").write_text("{not json")
    cache = stats.RunsCache()
    _, df = cache.snapshot(store)
    assert len(df) == 15 and cache.full_builds == 1  # the store moved the bad file aside
    assert store.warnings


def test_quickest_is_the_first_answer_for_a_model_that_reasons() -> None:
    # "thinker" streams a reasoning token after 35 ms but its answer begins at 435 ms;
    # "plain" answers at 200 ms. TTFT alone would crown the thinker.
    rows = [run("thinker", ttft=0.035, first_answer_s=0.435, thinking_s=0.4) for _ in range(5)]
    rows += [run("plain", ttft=0.2, first_answer_s=0.2) for _ in range(5)]
    rows += [run("old-plain", ttft=0.3) for _ in range(5)]  # older rows: no first answer field
    summary = stats.model_summary(stats.runs_frame(rows)).set_index("model")
    assert summary.loc["thinker", "ttft_p50_s"] == pytest.approx(0.035)
    assert summary.loc["thinker", "first_answer_p50_s"] == pytest.approx(0.435)
    assert summary.loc["thinker", "thinking_p50_s"] == pytest.approx(0.4)
    assert summary.loc["old-plain", "first_answer_p50_s"] == pytest.approx(0.3)  # = TTFT
    assert pd.isna(summary.loc["plain", "thinking_p50_s"])
    best = stats.headline(stats.model_summary(stats.runs_frame(rows)))
    assert best["quickest"] == ("plain", "200 ms median")


def test_unreadable_rows_are_left_out_and_counted() -> None:
    rows = [run(ts=T0), run(ts=T0 + 1, ok="maybe"), run(ts=T0 + 2, ttft={"x": 1}),  # type: ignore[arg-type]
            run(ts=float("inf")), run(model=["m"], ts=T0 + 4), run(ts=T0 + 5)]  # type: ignore[arg-type]
    df = stats.runs_frame(rows)
    assert list(df["ts"]) == [T0, T0 + 5] and df.attrs["unreadable"] == 4
    assert df["ok"].dtype == bool and list(stats.model_summary(df)["runs"]) == [2]
    clean = stats.runs_frame([run(ts=T0), run(ts=T0 + 1, ok=None)])  # type: ignore[arg-type]
    assert clean.attrs["unreadable"] == 0 and len(clean) == 2  # a missing ok is no problem


def test_runs_cache_keeps_positions_past_an_unreadable_row() -> None:
    from atom_core.history.memory_store import MemoryHistoryStore

    store = MemoryHistoryStore()
    store.append_many("runs", [run(ts=T0), run(ts=T0 + 1, ok="maybe"), run(ts=T0 + 2)])
    cache = stats.RunsCache()
    assert list(cache.frame(store)["ts"]) == [T0, T0 + 2]
    store.add_run(RunRecord.from_record(run(ts=T0 + 3)))
    df = cache.frame(store)
    assert list(df["ts"]) == [T0, T0 + 2, T0 + 3] and df.attrs["unreadable"] == 1
    assert cache.full_builds == 1


def test_summary_csv_neutralises_formula_cells_and_keeps_numbers() -> None:
    s = stats.model_summary(stats.runs_frame([run("=cmd|'/C calc'!A0", ts=T0),
                                              run("@evil", ts=T0 + 1), run("m-1", ts=T0 + 2)]))
    back = pd.read_csv(pd.io.common.BytesIO(stats.summary_csv(s)))
    assert sorted(back["model"]) == sorted(["'=cmd|'/C calc'!A0", "'@evil", "m-1"])
    assert back["runs"].dtype.kind == "i" and back["ttft_p50_s"].dtype.kind == "f"


# -- chat routes: filter and group by route ----------------------------------------------------


def test_runs_without_a_route_count_as_chat_completions() -> None:
    rows = [run("a", ts=T0), run("a", ts=T0 + 1, route="native"),
            run("a", ts=T0 + 2, route=None)]
    df = stats.runs_frame(rows)
    assert list(df["route"]) == ["completions", "native", "completions"]
    assert str(df["route"].dtype) == "category"
    assert stats.filter_options(df)["routes"] == ["completions", "native"]
    assert list(stats.runs_frame([run("a")])["route"]) == [stats.DEFAULT_ROUTE]


def test_route_filter_keeps_only_the_picked_routes() -> None:
    rows = [run("a", ts=T0 + i, route=r) for i, r in enumerate(
        ["native", "responses", "native", None])]
    df = stats.runs_frame(rows)
    assert len(stats.RunFilter(routes=("native",)).apply(df)) == 2
    assert len(stats.RunFilter(routes=("completions", "responses")).apply(df)) == 2
    assert stats.overview(df, stats.RunFilter(routes=("messages",))).runs == 0


def test_grouping_by_model_and_route_splits_one_model_into_two_rows() -> None:
    rows = [run("qwen", ts=T0 + i, tps=10.0 + i, ttft=0.2, route="native") for i in range(3)]
    rows += [run("qwen", ts=T0 + 10 + i, tps=30.0 + i, ttft=0.4) for i in range(2)]  # no route
    rows += [run("qwen", ts=T0 + 20, ok=False, ttft=None, tps=None, route="native")]
    rows += [run("llama", ts=T0 + 30, tps=5.0, route="responses")]
    df = stats.runs_frame(rows)
    by_model = stats.overview(df).summary
    assert list(by_model["model"]) == ["qwen", "llama"] and "route" not in by_model
    assert by_model["runs"].tolist() == [6, 1]
    ov = stats.overview(df, group="model_route")
    s = ov.summary
    assert list(s["model"]) == ["qwen · completions", "qwen · native", "llama · responses"]
    assert list(s["route"]) == ["completions", "native", "responses"]
    assert s["runs"].tolist() == [2, 4, 1]
    assert s["decode_tps_p50"].tolist() == pytest.approx([30.5, 11.0, 5.0])
    assert s["ttft_p50_s"].tolist() == pytest.approx([0.4, 0.2, 0.5])
    assert s["error_rate"].tolist() == pytest.approx([0.0, 0.25, 0.0])
    # every chart frame has the same series
    assert set(ov.box["model"]) == set(s["model"])
    assert set(ov.buckets["model"]) == set(s["model"])
    assert set(ov.hist["model"]) == set(s["model"])
    # the combination of grouping and filter: one route, still labelled by route
    only = stats.overview(df, stats.RunFilter(routes=("native",)), group="model_route")
    assert list(only.summary["model"]) == ["qwen · native"]
    with pytest.raises(ValueError, match="grouping"):
        stats.overview(df, group="route")


def test_route_series_colours_each_model_route_pair_apart() -> None:
    df = stats.runs_frame([run("qwen", ts=T0, route="native"), run("qwen", ts=T0 + 1)])
    colors = stats.model_colors(stats.route_series(df))
    assert set(colors) == {"qwen · native", "qwen · completions"}
    assert len(set(colors.values())) == 2
    assert list(stats.route_series(df)["route"]) == ["native", "completions"]
    assert stats.route_series(stats.runs_frame([])).empty


def test_grouped_summary_csv_carries_the_route() -> None:
    df = stats.runs_frame([run("qwen", route="messages")])
    text = stats.summary_csv(stats.overview(df, group="model_route").summary).decode()
    header, line = text.splitlines()[:2]
    assert header.startswith("model,route,runs")
    assert line.startswith("qwen · messages,messages,1")


def test_the_summary_shows_only_columns_that_say_something() -> None:
    """At 1,400 px the summary fits beside the sidebar: a TTFT percentile waits for the runs
    that make it one, and the first-answer and thinking columns wait for a model that
    reasons; a sentence says what is held back. The CSV keeps every column."""
    few = stats.model_summary(stats.runs_frame([run("a"), run("a"), run("b")]))
    shown, note = stats.summary_view(few)
    assert list(shown) == ["model", "runs", "ttft_p50_s", "decode_tps_p50", "e2e_p50_s",
                           "output_tokens_mean", "error_rate"]
    assert note == ("TTFT p90 and p99 appear once a model has 10 and 100 runs (the CSV has "
                    "every column).")
    assert "ttft_p90_s" in stats.summary_csv(few).decode().splitlines()[0]
    rows = [run("a", ts=T0 + i) for i in range(12)] + [
        run("thinker", first_answer_s=2.0, thinking_s=1.5)]
    shown, note = stats.summary_view(stats.model_summary(stats.runs_frame(rows)))
    assert {"ttft_p90_s", "first_answer_p50_s", "thinking_p50_s"} <= set(shown)
    assert "ttft_p99_s" not in shown and note.startswith("TTFT p99 appears once a model has 100")
    many = stats.model_summary(stats.runs_frame([run("a", ts=T0 + i) for i in range(100)]))
    assert stats.summary_view(many)[1] == "" and "ttft_p99_s" in stats.summary_view(many)[0]
    # the headers are short, the unit sits in the cell
    assert {kind for _label, kind in shown.values()} <= {"text", "int", "duration", "speed",
                                                         "tokens", "percent"}
    assert not [label for label, kind in stats.SUMMARY_COLUMNS.values()
                if kind in ("duration", "speed") and ("(s)" in label or "tok/s" in label)]


def test_a_long_model_name_gets_rows_tall_enough_to_wrap_it_whole() -> None:
    assert stats.name_row_height(["qwen3-4b", "gemma-3-270m-it-qat-q4_0"]) is None
    two_lines = stats.name_row_height(["lmstudio-community/meta-llama-3.1-8b-instruct-gguf"])
    three = stats.name_row_height(["deepseek-r1-distill-qwen-14b-instruct-abliterated-q4_k_m"])
    assert two_lines is not None and three is not None
    assert two_lines > 64 and three > two_lines  # Streamlit wraps only in rows over 64 px
    assert stats.name_row_height(["x" * 500]) == stats.name_row_height(["x" * 200])  # a cap
