"""Plotly figures for the Stats page, drawn from the frames in atom_core.stats and
atom_core.measure.sweep. Pure functions: frame in, figure out; every model keeps its colour from the
map it is given (stats.model_colors), so one model looks the same in every chart.

Figures carry only aggregated or sampled data (see atom_core.stats), so even a 100k-run history
sends the browser a few thousand points.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..measure.sweep import SweepTarget
from ..metrics import TTFT_P50, TTFT_P90
from ..words import plural
from .frame import MIN_TREND_RUNS
from .summary import Overview

FALLBACK_COLOR = "#6a6a6a"
HEIGHT = 480  # tall enough for a legend of twenty models
FONT = "Source Sans Pro, sans-serif"
MAX_MARKED_BUCKETS = 40  # a speed-over-time line longer than this is drawn without markers
MAX_TEXT_LABELS = 10  # label points on the speed map only while they stay readable
LABEL_CHARS = 28  # a model's name in a legend or on an axis breaks into lines this long
POINT_LABEL_CHARS = 22  # ...and above a point on the speed map
# A box or a histogram line says how a model's runs spread: it needs a few runs to say it.
MIN_SPREAD_RUNS = 5
# Step lines of the tokens histogram: a dash per model (solid, dashed, dotted...), the solid
# ones widest and drawn first, so two models with the same shares both stay visible.
HISTOGRAM_DASHES = (("solid", 4.0), ("dash", 2.5), ("dot", 2.5), ("dashdot", 2.0))
_BREAKS = re.compile(r"(?<=[/_\-.:· ])")


def wrap_label(name: str, width: int = LABEL_CHARS) -> str:
    """A long model name over several lines (plotly's <br>), broken after its separators
    (/ - _ . : · and spaces) so a legend, an axis or a point label shows it whole without
    squeezing the plot; a stretch with no separator is cut every `width` characters."""
    if len(name) <= width:
        return name
    lines: list[str] = []
    line = ""
    for piece in _BREAKS.split(name):
        while len(piece) > width:  # no separator in reach: cut it
            room = width - len(line)
            lines.append(line + piece[:room])
            line, piece = "", piece[room:]
        if len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "<br>".join(x for x in lines if x)


def _layout(fig: go.Figure, *, title: str, x: str, y: str, height: int = HEIGHT,
            legend: bool = True) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 48, "b": 10},
        font={"family": FONT},
        showlegend=legend,
        # A column on the right: twenty models stay readable without squashing the plot.
        legend={"orientation": "v", "yanchor": "top", "y": 1, "x": 1.01, "xanchor": "left",
                "font": {"size": 10}, "tracegroupgap": 0, "itemclick": "toggleothers",
                "itemdoubleclick": "toggle"},
        hoverlabel={"namelength": -1},
    )
    fig.update_xaxes(title_text=x, zeroline=False)
    fig.update_yaxes(title_text=y, zeroline=False)
    return fig


def _figure(traces: list[dict[str, Any]]) -> go.Figure:
    """A figure from plain trace dicts, without plotly's per-property validation (most of the
    cost of building a figure). The unit tests re-validate every figure these functions
    return, so a misspelt property still fails a test."""
    return go.Figure(data=traces, _validate=False)


def _color(colors: Mapping[str, str], model: str) -> str:
    return colors.get(model, FALLBACK_COLOR)


def _tint(hex_color: str, alpha: float = 0.35) -> str:
    """'#4c78a8' -> 'rgba(76,120,168,0.35)'."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _by_model(frame: pd.DataFrame,
              order: Sequence[str] | None) -> Iterator[tuple[str, pd.DataFrame]]:
    """(model, rows) in `order` (models missing from it last, by name): every chart lists
    models in the same order as the summary table."""
    groups = {str(m): part for m, part in frame.groupby(frame["model"].astype(str), sort=True)}
    ranked = [m for m in (order or ()) if m in groups]
    for model in ranked + sorted(set(groups) - set(ranked)):
        yield model, groups[model]


def speed_map(summary: pd.DataFrame, colors: Mapping[str, str]) -> go.Figure:
    """Each model as a bubble: median TTFT across, median decode tok/s up, size = runs.
    Top left is best: quick to start and fast to write."""
    traces: list[dict[str, Any]] = []
    data = summary.dropna(subset=["ttft_p50_s", "decode_tps_p50"])
    label = len(data) <= MAX_TEXT_LABELS
    biggest = float(data["runs"].max()) if len(data) else 1.0
    right = float(data["ttft_p50_s"].max()) if len(data) else 0.0
    for row in data.itertuples(index=False):
        size = 14 + 26 * float(np.sqrt(row.runs / biggest))
        # A label leans away from the nearer edge of the plot, so it is never cut off there.
        side = ("left" if row.ttft_p50_s > 0.66 * right else
                "right" if row.ttft_p50_s < 0.33 * right else "center")
        traces.append(dict(
            type="scatter",
            x=[row.ttft_p50_s], y=[row.decode_tps_p50], name=wrap_label(row.model),
            legendgroup=row.model, meta=row.model, cliponaxis=False,
            mode="markers+text" if label else "markers",
            text=[wrap_label(row.model, POINT_LABEL_CHARS)] if label else None,
            textposition=f"top {side}",
            marker={"size": size, "color": _color(colors, row.model), "opacity": 0.85,
                    "line": {"width": 1, "color": "white"}},
            customdata=[[plural(int(row.runs), "run"), row.ttft_p90_s, row.e2e_p50_s,
                         row.error_rate]],
            hovertemplate=(
                "<b>%{meta}</b><br>TTFT median %{x:.2f} s (p90 %{customdata[1]:.2f} s)"
                "<br>%{y:.1f} tok/s median<br>end-to-end median %{customdata[2]:.2f} s"
                "<br>%{customdata[0]}, %{customdata[3]:.1%} errors<extra></extra>"),
        ))
    fig = _figure(traces)
    _layout(fig, title="Speed map: top left is best (quick to start, fast to write)",
            x="Median time to first token (s), lower is better",
            y="Median decode speed (tok/s)", height=520, legend=not label)
    fig.update_xaxes(rangemode="tozero")
    fig.update_yaxes(rangemode="tozero")
    if label and len(data):  # room above the top bubble for its label (up to 3 lines)
        fig.update_yaxes(range=[0, float(data["decode_tps_p50"].max()) * 1.3])
    return fig


def ttft_box(box: pd.DataFrame, colors: Mapping[str, str], *,
             first_answer: bool = False) -> go.Figure:
    """TTFT distribution per model from precomputed quantiles (stats.box_stats): the box spans
    p25-p75 with the median inside, whiskers reach p5 and p95. Quickest model on top. A model
    with fewer than MIN_SPREAD_RUNS runs has no spread to show: it is a diamond at its median.
    `first_answer`: the box is over the time to the first answer token (the chart option)."""
    traces: list[dict[str, Any]] = []
    for row in box.iloc[::-1].itertuples(index=False):  # plotly draws the first row lowest
        color = _color(colors, row.model)
        name = wrap_label(row.model)
        if row.n < MIN_SPREAD_RUNS:
            traces.append(dict(
                type="scatter", x=[row.p50], y=[name], name=name, meta=row.model,
                mode="markers", marker={"color": color, "size": 12, "symbol": "diamond"},
                hovertemplate=f"<b>%{{meta}}</b><br>median %{{x:.2f}} s of "
                              f"{plural(int(row.n), 'run')}: a box needs {MIN_SPREAD_RUNS}"
                              "<extra></extra>",
            ))
            continue
        traces.append(dict(
            type="box", y=[name], q1=[row.p25], median=[row.p50], q3=[row.p75],
            lowerfence=[row.p5], upperfence=[row.p95], orientation="h", name=name,
            meta=row.model, marker={"color": color}, line={"color": color, "width": 2},
            fillcolor=_tint(color), boxpoints=False,  # a light box, so its median shows
            hoverinfo="x+name",
        ))
    fig = _figure(traces)
    what = "Time to first answer token" if first_answer else "Time to first token"
    _layout(fig, title=f"{what}: box p25-p75, line median, whiskers p5-p95",
            x=f"{what} (s)", y="", height=max(HEIGHT, 60 + 26 * len(box)),
            legend=False)
    fig.update_xaxes(rangemode="tozero")
    return fig


def tps_over_time(buckets: pd.DataFrame, bucket_s: int, colors: Mapping[str, str],
                  order: Sequence[str] | None = None) -> go.Figure:
    """Median decode tok/s per model per time bucket (stats.tps_over_time)."""
    traces: list[dict[str, Any]] = []
    for model, part in _by_model(buckets, order):
        traces.append(dict(
            type="scatter",
            x=part["time"], y=part["tps_p50"], name=wrap_label(model), legendgroup=model,
            meta=model,
            # a marker per bucket only while they stay few: each is an SVG node to draw
            mode="lines+markers" if len(part) <= MAX_MARKED_BUCKETS else "lines",
            line={"color": _color(colors, str(model)), "width": 2},
            marker={"size": 5}, customdata=[[plural(int(n), "run")] for n in part["runs"]],
            hovertemplate="<b>%{meta}</b><br>%{x}<br>%{y:.1f} tok/s median of "
                          "%{customdata[0]}<extra></extra>",
        ))
    fig = _figure(traces)
    _layout(fig, title=f"Decode speed over time (median per {_bucket_name(bucket_s)})",
            x="", y="Decode tok/s")
    fig.update_yaxes(rangemode="tozero")
    return fig


def _bucket_name(seconds: int) -> str:
    for size, name in ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            n = seconds // size
            return name if n == 1 else f"{n} {name}s"
    return f"{seconds} s"


def scatter_with_trend(sample: pd.DataFrame, trends: pd.DataFrame, *, x: str, y: str,
                       colors: Mapping[str, str], title: str, x_title: str, y_title: str,
                       trend_label: str = "{intercept:.2f} s + {slope_ms:.1f} ms per unit",
                       order: Sequence[str] | None = None) -> go.Figure:
    """Sampled runs as points and each model's least-squares line over all its runs.

    `trend_label` is formatted with intercept, slope, slope_ms (slope x 1000) and
    per_second (1 / slope) for the line's hover text and legend."""
    traces: list[dict[str, Any]] = []
    lines = {str(r.model): r for r in trends.itertuples(index=False)}
    for name, part in _by_model(sample, order):
        color = _color(colors, name)
        line = lines.get(name)
        traces.append(dict(
            type="scatter",
            x=part[x], y=part[y], name=wrap_label(name), legendgroup=name, mode="markers",
            showlegend=line is None,  # the legend shows the model's line when it has one
            marker={"color": color, "size": 5, "opacity": 0.45},
            hovertemplate=f"<b>{name}</b><br>{x_title}: %{{x:.0f}}<br>{y_title}: "
                          "%{y:.2f}<extra></extra>",
        ))
        if line is None:
            continue
        text = trend_label.format(
            intercept=line.intercept, slope=line.slope, slope_ms=line.slope * 1000,
            per_second=(1 / line.slope) if line.slope > 0 else float("inf"))
        xs = [line.x_min, line.x_max]
        traces.append(dict(
            type="scatter",
            x=xs, y=[line.intercept + line.slope * v for v in xs], name=wrap_label(name),
            legendgroup=name, mode="lines", line={"color": color, "width": 2.5},
            hovertemplate=f"<b>{name}</b><br>trend: {text} (fitted on {line.n} runs)"
                          "<extra></extra>",
        ))
    fig = _figure(traces)
    _layout(fig, title=title, x=x_title, y=y_title)
    fig.update_xaxes(rangemode="tozero")
    fig.update_yaxes(rangemode="tozero")
    return fig


def tokens_histogram(hist: pd.DataFrame, colors: Mapping[str, str],
                     order: Sequence[str] | None = None) -> go.Figure:
    """Output tokens per request: each model's share of runs per bin, as a step outline (so
    many models stay readable on one chart). Each model has its own dash (HISTOGRAM_DASHES), and
    the wider lines are drawn first, so a model whose shares match another's still shows
    around or between its dashes; the legend keeps the summary's order. Models with fewer than
    MIN_SPREAD_RUNS runs are left out (one run is a 100 % spike that says nothing), and the
    title says how many."""
    traces: list[dict[str, Any]] = []
    runs = hist.groupby(hist["model"].astype(str))["count"].sum() if len(hist) else {}
    few = 0
    for name, part in _by_model(hist, order):
        if runs[name] < MIN_SPREAD_RUNS:
            few += 1
            continue
        dash, width = HISTOGRAM_DASHES[len(traces) % len(HISTOGRAM_DASHES)]
        centres = (part["left"] + part["right"]) / 2
        ranges = [f"{lo:.0f}+" if over else f"{lo:.0f}-{hi:.0f}"
                  for lo, hi, over in zip(part["left"], part["right"], part["overflow"],
                                          strict=True)]
        traces.append(dict(
            type="scatter",
            x=centres, y=part["share"], name=wrap_label(name), legendgroup=name, mode="lines",
            legendrank=1000 + len(traces),  # the summary's order, whatever the drawing order
            line={"color": _color(colors, name), "width": width, "shape": "hvh", "dash": dash},
            customdata=[[r, plural(int(n), "run")] for r, n in zip(ranges, part["count"],
                                                                    strict=True)],
            hovertemplate=f"<b>{name}</b><br>%{{customdata[0]}} tokens: %{{customdata[1]}} "
                          "(%{y:.1%})<extra></extra>",
        ))
    traces.sort(key=lambda t: -t["line"]["width"])  # stable: the summary's order within a width
    fig = _figure(traces)
    title = "Tokens per request"
    if few:
        title += f" ({plural(few, 'model')} with fewer than {MIN_SPREAD_RUNS} runs left out)"
    _layout(fig, title=title, x="Output tokens", y="Share of the model's runs")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def token_timeline(frame: pd.DataFrame, colors: Mapping[str, str]) -> go.Figure:
    """When each token arrived (top) and the gap before it (bottom), by token position: the
    first token's height is TTFT, the slope is the decode speed, spikes are stalls."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.55, 0.45],
                        subplot_titles=("Arrival time of each token",
                                        "Gap before each token (inter-token latency)"))
    labels = list(dict.fromkeys(frame["label"]))
    single = len(labels) == 1
    used: set[str] = set()
    spare = iter(("#222222", "#999999", "#b8860b", "#008b8b"))
    for label in labels:
        part = frame[frame["label"] == label]
        color = _color(colors, str(part["model"].iloc[0]) if len(part) else "")
        if color in used:  # two slots of one model: tell them apart
            color = next(spare, FALLBACK_COLOR)
        used.add(color)
        fig.add_trace(go.Scatter(
            x=part["position"], y=part["arrival_ms"], name=wrap_label(label), legendgroup=label,
            meta=label, mode="lines+markers", marker={"size": 4, "color": color},
            line={"color": color, "width": 2},
            hovertemplate="token %{x}: arrived at %{y:.0f} ms<extra>%{meta}</extra>",
        ), row=1, col=1)
        gap_style = dict(name=wrap_label(label), legendgroup=label, meta=label,
                         showlegend=False, x=part["position"], y=part["gap_ms"],
                         hovertemplate="token %{x}: %{y:.1f} ms after the previous one"
                                       "<extra>%{meta}</extra>")
        if single:
            fig.add_trace(go.Bar(marker_color=color, **gap_style), row=2, col=1)
        else:
            fig.add_trace(go.Scatter(mode="lines", line={"color": color, "width": 1.5},
                                     **gap_style), row=2, col=1)
    if single and len(frame) > 2:
        gaps = frame["gap_ms"].dropna()
        for q, dash, where in ((50, "dot", "bottom right"), (95, "dash", "top right")):
            value = float(np.percentile(gaps, q))
            fig.add_hline(y=value, line_dash=dash, line_color="#444", line_width=1,
                          annotation_text=f"p{q} {value:.0f} ms", annotation_position=where,
                          annotation_bgcolor="rgba(255,255,255,0.8)", row=2, col=1)
    _layout(fig, title="", x="", y="", height=520, legend=not single)
    fig.update_layout(margin={"t": 30}, bargap=0.1)
    fig.update_yaxes(title_text="ms after request", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="gap (ms)", row=2, col=1, rangemode="tozero")
    fig.update_xaxes(title_text="Token position", row=2, col=1)
    return fig


SWEEP_COLORS = {"aggregate": "#4338ca", "per_user": "#f58518", "p50": "#11a579",
                "p90": "#e45756"}


def sweep_chart(levels: pd.DataFrame, target: SweepTarget | None = None,
                parallel: int | None = None) -> go.Figure:
    """Tok/s (aggregate and per user) and TTFT p50/p90 against requests in flight, with the
    target drawn in and LM Studio's parallel slots marked when known."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Tokens per second", "Time to first token"))
    x = levels["concurrency"]
    series: Sequence[tuple[str, str, str, int]] = (
        ("aggregate_tps", "aggregate (all requests together)", "aggregate", 1),
        ("tps_per_user_p50", "per user (median request)", "per_user", 1),
        (TTFT_P50.key, TTFT_P50.label, "p50", 2),
        (TTFT_P90.key, TTFT_P90.label, "p90", 2),
    )
    for col, name, key, pos in series:
        unit = "s" if pos == 2 else "tok/s"
        fig.add_trace(go.Scatter(
            x=x, y=levels[col], name=name, mode="lines+markers",
            line={"color": SWEEP_COLORS[key], "width": 2.5}, marker={"size": 8},
            hovertemplate=f"%{{x}} in flight: %{{y:.2f}} {unit}<extra>{name}</extra>",
        ), row=1, col=pos)
    if target is not None:
        fig.add_hline(y=target.min_tps_per_user, line_dash="dash", line_color="#f58518",
                      annotation_text=f"target ≥ {target.min_tps_per_user:g} tok/s per user",
                      annotation_position="top left", row=1, col=1)
        fig.add_hline(y=target.max_ttft_p90_s, line_dash="dash", line_color="#e45756",
                      annotation_text=f"target p90 ≤ {target.max_ttft_p90_s:g} s",
                      annotation_position="top left", row=1, col=2)
    if parallel is not None and len(levels) and x.min() <= parallel <= x.max():
        for pos in (1, 2):
            fig.add_vline(x=parallel, line_dash="dot", line_color="#888", row=1, col=pos)
        # On a log axis, annotations take log10 positions (shapes take data values).
        at_end = parallel == x.max()
        fig.add_annotation(x=math.log10(parallel), y=0.98, yref="y domain", xref="x",
                           xanchor="right" if at_end else "left",
                           yanchor="top", text=f" {parallel} parallel slots: above, requests "
                           "queue", showarrow=False, font={"size": 11, "color": "#666"})
    _layout(fig, title="", x="", y="", height=420)
    fig.update_layout(margin={"t": 40}, legend={"orientation": "h", "x": 0, "y": -0.2,
                                                "xanchor": "left", "yanchor": "top"})
    ticks = sorted({int(v) for v in x}) if len(levels) else []
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(t) for t in ticks],
                     title_text="Requests in flight")
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(title_text="tok/s", row=1, col=1)
    fig.update_yaxes(title_text="seconds", row=1, col=2)
    return fig


OVERVIEW_CHARTS = ("speed_map", "ttft_box", "first_answer_box", "tps_over_time",
                   "e2e_vs_tokens", "ttft_vs_prompt", "tokens_histogram")


def overview_figures(ov: Overview, colors: Mapping[str, str]) -> dict[str, go.Figure]:
    """Every overview chart, keyed by the name the page lays them out under."""
    return {name: overview_figure(ov, colors, name) for name in OVERVIEW_CHARTS}


class OverviewFigures(dict[str, go.Figure]):
    """The overview's figures by name, each built the first time it is asked for and kept:
    a page that draws two of the seven builds two."""

    def __init__(self, ov: Overview, colors: Mapping[str, str]) -> None:
        super().__init__()
        self.ov, self.colors = ov, colors

    def __missing__(self, name: str) -> go.Figure:
        fig = self[name] = overview_figure(self.ov, self.colors, name)
        return fig


def overview_figure(ov: Overview, colors: Mapping[str, str], name: str) -> go.Figure:
    """One overview chart (OVERVIEW_CHARTS), built alone: the page builds only those it
    draws (the open chart tab's)."""
    order = [str(m) for m in ov.summary["model"]]
    build = {
        "speed_map": lambda: speed_map(ov.summary, colors),
        "ttft_box": lambda: ttft_box(ov.box, colors),
        "first_answer_box": lambda: ttft_box(
            ov.answer_box if ov.answer_box is not None else ov.box, colors, first_answer=True),
        "tps_over_time": lambda: tps_over_time(ov.buckets, ov.bucket_s, colors, order),
        "e2e_vs_tokens": lambda: scatter_with_trend(
            ov.sample, ov.e2e_trend, x="output_tokens", y="e2e_s", colors=colors,
            title="End-to-end time vs output tokens (line: fit over all runs)",
            x_title="Output tokens", y_title="End-to-end (s)",
            trend_label="{intercept:.2f} s + {slope_ms:.1f} ms per token", order=order),
        "ttft_vs_prompt": lambda: scatter_with_trend(
            ov.sample, ov.prompt_trend, x="prompt_tokens", y="ttft_s", colors=colors,
            title="Time to first token vs prompt length (line: fit over all runs)",
            x_title="Prompt tokens", y_title="Time to first token (s)",
            trend_label="{intercept:.2f} s + {slope_ms:.2f} ms per prompt token "
                        "(≈ {per_second:.0f} prompt tok/s)", order=order),
        "tokens_histogram": lambda: tokens_histogram(ov.hist, colors, order),
    }
    return build[name]()


def chart_gaps(ov: Overview) -> dict[str, str]:
    """Charts that would come out empty or misleading with the runs at hand (a class's first
    minutes: every run the same length, no prompt lengths, all runs in one minute; a laptop's
    first comparison: a run or two per model), each with one sentence saying what it needs.
    The page shows the sentence instead of empty axes, a bare tick or two lone dots."""
    gaps: dict[str, str] = {}
    for name, box, what in (("ttft_box", ov.box, "time to first token"),
                            ("first_answer_box", ov.answer_box, "time to the first answer")):
        most = int(box["n"].max()) if box is not None and len(box) else 0
        if most == 0:
            gaps[name] = "Needs completed runs that record their time to first token."
        elif most < MIN_SPREAD_RUNS:
            gaps[name] = (f"Needs {MIN_SPREAD_RUNS} completed runs of a model to show how its "
                          f"{what} varies: the most any model has here is {most}. The table "
                          "above has each model's median.")
    done = ov.sample
    tokens = done["output_tokens"].dropna().unique() if len(done) else np.array([])
    if len(tokens) == 0:
        gaps["tokens_histogram"] = gaps["e2e_vs_tokens"] = (
            "Needs completed runs that report their output tokens.")
    elif len(tokens) == 1:
        gaps["tokens_histogram"] = gaps["e2e_vs_tokens"] = (
            f"Needs runs of different lengths: every run here wrote {tokens[0]:.0f} tokens "
            "(set different Max tokens, or ask for longer and shorter answers).")
    else:
        most = int(ov.hist.groupby("model")["count"].sum().max()) if len(ov.hist) else 0
        if most < MIN_SPREAD_RUNS:
            gaps["tokens_histogram"] = (
                f"Needs {MIN_SPREAD_RUNS} completed runs of a model to show how long its replies "
                f"run: the most any model has here is {most}.")
        if ov.e2e_trend.empty:
            gaps["e2e_vs_tokens"] = _trend_gap(done, "output_tokens", "e2e_s",
                                               "replies of different lengths")
    prompts = done["prompt_tokens"].dropna().unique() if len(done) else np.array([])
    if len(prompts) == 0:
        gaps["ttft_vs_prompt"] = ("Needs runs that record their prompt length: this server "
                                  "reported none (LM Studio does).")
    elif len(prompts) == 1:
        gaps["ttft_vs_prompt"] = ("Needs prompts of different lengths: every run here had "
                                  f"{prompts[0]:.0f} prompt tokens.")
    elif ov.prompt_trend.empty:
        gaps["ttft_vs_prompt"] = _trend_gap(done, "prompt_tokens", "ttft_s",
                                            "prompts of different lengths")
    buckets = ov.buckets["bucket"].nunique() if len(ov.buckets) else 0
    if buckets < 2:
        gaps["tps_over_time"] = (
            "Needs completed runs spread over more than one "
            f"{_bucket_name(ov.bucket_s)}: come back after more runs." if buckets else
            "Needs completed runs with a decode speed.")
    return gaps


def _trend_gap(done: pd.DataFrame, x: str, y: str, what: str) -> str:
    """The sentence for a scatter where no model has the runs for its line (trend_lines)."""
    both = done[done[x].notna() & done[y].notna()]
    most = int(both.groupby("model", observed=True).size().max()) if len(both) else 0
    need = f"Needs {MIN_TREND_RUNS} completed runs of a model, with {what}, to draw its line"
    if most < MIN_TREND_RUNS:
        return f"{need}: the most any model has here is {most}."
    return f"{need}: each model's runs here are all the same length."
