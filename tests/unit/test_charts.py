"""Plotly figures built from the stats frames: right data, stable colours, small payloads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from atom_core import stats
from atom_core.measure import sweep
from atom_core.stats import charts
from atom_core.stats.frame import SAMPLE_POINTS
from tests.fixtures.plotly_data import decode
from tests.fixtures.realistic_runs import realistic_runs


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return stats.runs_frame(list(realistic_runs(6000, seed=3)))


@pytest.fixture(scope="module")
def figures(df: pd.DataFrame) -> dict[str, go.Figure]:
    """The overview figures, re-validated: charts.py builds them without plotly's validation
    (for speed), so this raises on any property plotly does not know."""
    built = charts.overview_figures(stats.overview(df), stats.model_colors(df))
    return {name: go.Figure(decode(fig.to_dict())) for name, fig in built.items()}




def trace_color(t: Any) -> str | None:
    line = getattr(t, "line", None)
    marker = getattr(t, "marker", None)
    if t.type == "box":
        return str(t.marker.color)
    return (line.color if line is not None and line.color else None) or (
        marker.color if marker is not None else None)


def test_every_model_keeps_one_colour_in_every_chart(df: pd.DataFrame,
                                                     figures: dict[str, go.Figure]) -> None:
    colors = stats.model_colors(df)
    assert len(colors) == 20
    seen = 0
    for name, fig in figures.items():
        for t in fig.data:
            model = str(t.name)
            assert trace_color(t) == colors[model], (name, model)
            seen += 1
    assert seen > 100


def test_charts_list_models_in_the_summary_order(df: pd.DataFrame,
                                                 figures: dict[str, go.Figure]) -> None:
    order = list(stats.model_summary(df)["model"])
    assert [t.name for t in figures["speed_map"].data] == order
    assert [t.name for t in figures["tps_over_time"].data] == order
    # the histogram draws its wide lines first; its legend keeps the summary's order
    legend = sorted(figures["tokens_histogram"].data, key=lambda t: t.legendrank)
    assert [t.name for t in legend] == order
    points = [t.name for t in figures["e2e_vs_tokens"].data if t.mode == "markers"]
    assert points == order


def test_speed_map_plots_the_summary(df: pd.DataFrame, figures: dict[str, go.Figure]) -> None:
    summary = stats.model_summary(df).set_index("model")
    for t in figures["speed_map"].data:
        assert t.x[0] == summary.loc[t.name, "ttft_p50_s"]
        assert t.y[0] == summary.loc[t.name, "decode_tps_p50"]
    assert figures["speed_map"].layout.showlegend  # 20 models: a legend, no point labels
    few = charts.speed_map(summary.reset_index().head(3), {})
    assert not few.layout.showlegend and few.data[0].mode == "markers+text"


def test_box_plot_uses_the_precomputed_quantiles(df: pd.DataFrame,
                                                 figures: dict[str, go.Figure]) -> None:
    box = stats.box_stats(df).set_index("model")
    traces = figures["ttft_box"].data
    assert len(traces) == 20
    assert traces[-1].name == box.index[0]  # quickest median drawn on top
    for t in traces:
        row = box.loc[t.name]
        assert (t.q1[0], t.median[0], t.q3[0]) == (row["p25"], row["p50"], row["p75"])
        assert (t.lowerfence[0], t.upperfence[0]) == (row["p5"], row["p95"])
        assert t.x is None  # no raw values shipped


def test_scatter_trend_lines_come_from_the_fit(df: pd.DataFrame,
                                               figures: dict[str, go.Figure]) -> None:
    trends = stats.trend_lines(df, "output_tokens", "e2e_s").set_index("model")
    lines = [t for t in figures["e2e_vs_tokens"].data if t.mode == "lines"]
    assert len(lines) == 20
    for t in lines:
        assert t.showlegend is not False  # the legend shows the line, not the faint dots
        fit = trends.loc[t.name]
        assert t.x == (fit["x_min"], fit["x_max"])
        assert t.y[1] == pytest.approx(fit["intercept"] + fit["slope"] * fit["x_max"])
        assert "ms per token" in t.hovertemplate


def test_payload_stays_small_for_a_long_history(figures: dict[str, go.Figure]) -> None:
    points = sum(len(t.x) if t.x is not None else 1 for f in figures.values() for t in f.data)
    assert points < 2 * 300 * 20 + 2000  # two sampled scatters plus small aggregates
    total = sum(len(f.to_json()) for f in figures.values())
    assert total < 600_000


def test_overview_figures_are_built_when_first_drawn(df: pd.DataFrame) -> None:
    ov, colors = stats.overview(df), stats.model_colors(df)
    figs = charts.OverviewFigures(ov, colors)
    assert len(figs) == 0  # nothing built until the page draws it
    speed = figs["speed_map"]
    assert list(figs) == ["speed_map"] and figs["speed_map"] is speed  # built once, kept
    assert speed.to_dict() == charts.overview_figures(ov, colors)["speed_map"].to_dict()


def marker_points(fig: go.Figure) -> int:
    """Points drawn as markers (each an SVG node in the browser)."""
    return sum(len(t.x) for t in fig.data if "markers" in (t.mode or ""))


def test_scatter_charts_draw_a_bounded_sample(figures: dict[str, go.Figure]) -> None:
    # Twenty models at 300 runs each made 6,000 points a chart: seconds to draw in a browser.
    for name in ("e2e_vs_tokens", "ttft_vs_prompt"):
        assert 1000 < marker_points(figures[name]) <= SAMPLE_POINTS, name


def test_a_short_history_keeps_every_run_in_the_scatter() -> None:
    rows = [r for r in realistic_runs(3000, seed=5) if r["ok"]]
    two = [dict(r, model="a" if i % 2 else "b") for i, r in enumerate(rows[:900])]
    df = stats.runs_frame(two)
    figs = charts.overview_figures(stats.overview(df), stats.model_colors(df))
    assert marker_points(figs["e2e_vs_tokens"]) == 900  # the budget is shared, not 300 each


def test_long_speed_lines_drop_their_markers(df: pd.DataFrame,
                                             figures: dict[str, go.Figure]) -> None:
    long = figures["tps_over_time"].data  # 60 days: a bucket a day per model
    assert all(t.mode == "lines" for t in long if len(t.x) > charts.MAX_MARKED_BUCKETS)
    assert any(len(t.x) > charts.MAX_MARKED_BUCKETS for t in long)
    days = df[df["ts"] >= df["ts"].max() - 4 * 86400]  # 32 buckets of 3 hours at most
    short = charts.overview_figures(stats.overview(days), stats.model_colors(df))
    assert all(t.mode == "lines+markers" for t in short["tps_over_time"].data)


def test_histogram_shares_sum_to_one(figures: dict[str, go.Figure]) -> None:
    for t in figures["tokens_histogram"].data:
        assert sum(t.y) == pytest.approx(1.0)
        assert t.line.shape == "hvh"


def test_tps_over_time_has_a_point_per_bucket(df: pd.DataFrame,
                                              figures: dict[str, go.Figure]) -> None:
    buckets, size = stats.tps_over_time(df)
    assert sum(len(t.x) for t in figures["tps_over_time"].data) == len(buckets)
    assert "median per day" in figures["tps_over_time"].layout.title.text
    assert size == 86400


def test_token_timeline_one_stream_and_several() -> None:
    one = stats.Timeline(label="m", model="m", offsets_ms=(100.0, 120.0, 140.0, 300.0))
    fig = charts.token_timeline(stats.timeline_frame([one]), {"m": "#123456"})
    arrival, gaps = fig.data
    assert list(arrival.y) == [100.0, 120.0, 140.0, 300.0] and arrival.line.color == "#123456"
    assert gaps.type == "bar" and np.isnan(gaps.y[0]) and list(gaps.y[1:]) == [20, 20, 160]
    assert {s.y0 for s in fig.layout.shapes} == {20.0, np.percentile([20, 20, 160], 95)}
    two = [stats.Timeline(label="A: m", model="m", offsets_ms=(1.0, 2.0)),
           stats.Timeline(label="B: m", model="m", offsets_ms=(3.0, 4.0))]
    fig = charts.token_timeline(stats.timeline_frame(two), {"m": "#123456"})
    assert [t.type for t in fig.data] == ["scatter"] * 4
    colours = {t.name: t.line.color for t in fig.data}
    assert colours["A: m"] == "#123456" and colours["B: m"] != "#123456"  # same model, told apart


def test_sweep_chart_draws_targets_and_slots() -> None:
    levels = [sweep.LevelResult(concurrency=k, requests=4, ok=4, errors=0,
                                tps_per_user_p50=40 / k, aggregate_tps=40 * k ** 0.5,
                                ttft_p50_s=0.2 * k, ttft_p90_s=0.3 * k) for k in (1, 2, 4, 8)]
    target = sweep.SweepTarget(min_tps_per_user=10, max_ttft_p90_s=2)
    fig = charts.sweep_chart(sweep.levels_frame(levels), target, parallel=4)
    names = [t.name for t in fig.data]
    assert names == ["aggregate (all requests together)", "per user (median request)",
                     "TTFT p50", "TTFT p90"]
    assert list(fig.data[1].y) == [40, 20, 10, 5]
    horizontal = sorted(s.y0 for s in fig.layout.shapes if s.y0 == s.y1)
    assert horizontal == [2, 10]
    assert any(s.x0 == 4 and s.x0 == s.x1 for s in fig.layout.shapes)
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 4, 8]
    json.loads(fig.to_json())


def test_empty_frames_still_make_figures() -> None:
    ov = stats.overview(stats.runs_frame([]))
    for fig in charts.overview_figures(ov, {}).values():
        assert len(go.Figure(decode(fig.to_dict())).data) == 0


def test_unvalidated_figures_are_valid_plotly(df: pd.DataFrame) -> None:
    few = stats.RunFilter(models=tuple(stats.filter_options(df)["models"][:3]))
    for fig in charts.overview_figures(stats.overview(df, few), stats.model_colors(df)).values():
        go.Figure(decode(fig.to_dict()))  # raises ValueError on an unknown property


# -- a laptop's first comparison: a run or two per model, long names -----------------------------

LONG = ("deepseek-r1-distill-qwen-14b-instruct-abliterated-q4_k_m",
        "lmstudio-community/meta-llama-3.1-8b-instruct-gguf",
        "qwen3-30b-a3b-instruct-2507-mlx-4bit-dwq")


def few_runs(per_model: dict[str, int], *, same_lengths: bool = False) -> pd.DataFrame:
    """`per_model` completed runs of each model, a second apart; replies 200, 260, 320...
    tokens long (all 200 with `same_lengths`), prompts 40, 45, 50... tokens."""
    rows: list[dict[str, Any]] = []
    for m, (model, n) in enumerate(per_model.items()):
        for k in range(n):
            out = 200 if same_lengths else 200 + 60 * k
            rows.append({"ts": 1_700_000_000.0 + len(rows), "model": model, "ok": True,
                         "state": "complete", "ttft_s": 0.3 + 0.3 * m + 0.01 * k,
                         "decode_tps": 50.0 - 10 * m, "e2e_s": 0.3 + out / (50.0 - 10 * m),
                         "output_tokens": out, "prompt_tokens": 40 + 5 * k})
    return stats.runs_frame(rows)


def test_a_run_or_two_per_model_gives_sentences_not_ticks_spikes_and_dots() -> None:
    df = few_runs({LONG[0]: 2, LONG[1]: 2, LONG[2]: 1})
    gaps = charts.chart_gaps(stats.overview(df))
    for box in ("ttft_box", "first_answer_box"):
        assert gaps[box].startswith("Needs 5 completed runs of a model to show how its time")
        assert "the most any model has here is 2" in gaps[box]
    assert gaps["tokens_histogram"] == (
        "Needs 5 completed runs of a model to show how long its replies run: the most any "
        "model has here is 2.")
    assert gaps["e2e_vs_tokens"] == (
        "Needs 3 completed runs of a model, with replies of different lengths, to draw its "
        "line: the most any model has here is 2.")
    assert gaps["ttft_vs_prompt"].startswith("Needs 3 completed runs of a model, with prompts")
    # with enough runs, every one of those charts draws
    assert not {"ttft_box", "first_answer_box", "tokens_histogram", "e2e_vs_tokens",
                "ttft_vs_prompt"} & set(charts.chart_gaps(stats.overview(
                    few_runs({LONG[0]: 6, LONG[1]: 1}))))


def test_a_model_with_too_few_runs_for_a_box_is_a_diamond_at_its_median() -> None:
    df = few_runs({"steady": 8, "newcomer": 2})
    fig = charts.ttft_box(stats.box_stats(df), {"steady": "#4c78a8", "newcomer": "#f58518"})
    kinds = {t.meta: t.type for t in fig.data}
    assert kinds == {"steady": "box", "newcomer": "scatter"}
    (diamond,) = [t for t in fig.data if t.type == "scatter"]
    assert diamond.marker.symbol == "diamond" and diamond.x[0] == pytest.approx(0.605)
    assert "2 runs: a box needs 5" in diamond.hovertemplate


def test_histogram_lines_of_models_with_the_same_lengths_stay_apart() -> None:
    """Three models whose replies were all the same lengths: three identical step lines. Each
    has its own dash, the widest is drawn first (underneath), the legend keeps the summary's
    order; a model with one run (a 100 % spike) is left out, and the title says so."""
    models = {"a-model": 6, "b-model": 6, "c-model": 6, "d-single": 1}
    df = few_runs(models)
    fig = charts.tokens_histogram(stats.token_histogram(df), {},
                                  order=["c-model", "a-model", "b-model", "d-single"])
    assert sorted(t.legendgroup for t in fig.data) == ["a-model", "b-model", "c-model"]
    assert "1 model with fewer than 5 runs left out" in fig.layout.title.text
    assert len({t.line.dash for t in fig.data}) == 3
    widths = [t.line.width for t in fig.data]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    legend = [t.legendgroup for t in sorted(fig.data, key=lambda t: t.legendrank)]
    assert legend == ["c-model", "a-model", "b-model"]
    assert all(list(t.y) == list(fig.data[0].y) for t in fig.data)  # the case: same shares


def test_wrap_label_keeps_the_whole_name_over_short_lines() -> None:
    for name in (*LONG, "x" * 70, "short-name", "a/b c·d_e.f:g-" * 6):
        wrapped = charts.wrap_label(name)
        lines = wrapped.split("<br>")
        assert "".join(lines) == name
        assert all(len(line) <= charts.LABEL_CHARS for line in lines)
    assert charts.wrap_label("short-name") == "short-name"
    assert charts.wrap_label(LONG[1]).split("<br>")[0] == "lmstudio-community/meta-"  # at a "-"


def test_long_names_are_whole_in_labels_legends_and_hovers() -> None:
    df = few_runs({LONG[0]: 6, LONG[1]: 6, LONG[2]: 6})
    ov = stats.overview(df)
    figs = charts.overview_figures(ov, stats.model_colors(df))
    speed = figs["speed_map"]
    for t in speed.data:  # a label on each bubble, wrapped, whole; the hover has the full name
        assert t.text[0].replace("<br>", "") == t.meta and "<br>" in t.text[0]
        assert "%{meta}" in t.hovertemplate and t.cliponaxis is False
    sides = {t.meta: t.textposition for t in speed.data}
    slowest_start = ov.summary.sort_values("ttft_p50_s")["model"].iloc[-1]
    assert sides[slowest_start] == "top left"  # away from the plot's right edge
    for name in ("ttft_box", "tps_over_time", "e2e_vs_tokens", "ttft_vs_prompt",
                 "tokens_histogram"):
        for t in figs[name].data:
            assert "<br>" in t.name and t.name.replace("<br>", "") in LONG, (name, t.name)
