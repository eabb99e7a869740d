"""The Stats page's numbers: the runs table as a pandas frame, filters, colours and the small
frames every chart is drawn from. No drawing here (see charts.py), no streamlit; the
per-model summary, the overview and the live panel are in summary.py, the frame kept between
reruns in cache.py, token timelines and replays in timelines.py.

Every statistic follows atom_core.metrics: percentiles interpolate linearly between closest
ranks (pandas' and numpy's default, and `metrics.percentile`), so a p90 on the page equals the
p90 the command line prints for the same runs.

Which runs count where:
- Timing figures (TTFT, decode tok/s, end-to-end, output tokens) use completed runs only
  (`ok`): a failed or stopped reply has no honest end-to-end time.
- The error rate is failed runs (state "error" or "interrupted") over all runs; a reply the
  user stopped is not an error.

Charts never ship raw 100k-row columns to the browser: box plots get precomputed quartiles,
histograms precomputed counts, time series per-bucket medians, and scatter plots a seeded,
per-model sample (trend lines are fitted on every run, not on the sample).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dtime
from typing import Any

import numpy as np
import pandas as pd

from ..history.run_columns import (
    CATEGORY_COLUMNS,
    FRAME_COLUMNS,
    typed_columns,
)

__all__ = [
    "DEFAULT_ROUTE",
    "GROUPINGS",
    "PROMPT_BANDS",
    "SOURCE_LABELS",
    "RunFilter",
    "box_stats",
    "filter_options",
    "model_colors",
    "runs_frame",
    "sample_per_model",
    "source_label",
    "token_histogram",
    "tps_over_time",
    "trend_lines",
]

# -- the frame ----------------------------------------------------------------------------------

_WANTED = FRAME_COLUMNS
FAILED_STATES = ("error", "interrupted")
# A run recorded before chat routes existed (no `route`) came over chat completions.
DEFAULT_ROUTE = "completions"
# How the summary and the charts group runs: one series per model, or per model and route
# (the same model over two routes as two series, labelled by route_series).
GROUPINGS: dict[str, str] = {"model": "Model", "model_route": "Model and route"}

SOURCE_LABELS = {
    "chat": "Chat",
    "arena": "Arena",
    "promptset": "Prompt set",
    "prompt-set": "Prompt set",
    "sweep": "Concurrency sweep",
    "cli": "Command line",
    "server-check": "Server-stats check",
}

# Prompt-length bands by prompt tokens: [low, high) and the label a filter shows.
PROMPT_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 256, "short (< 256 tokens)"),
    (256, 1024, "medium (256-1k)"),
    (1024, 4096, "long (1k-4k)"),
    (4096, math.inf, "very long (4k+)"),
)
UNKNOWN_BAND = "unknown length"
BAND_LABELS = (*(b[2] for b in PROMPT_BANDS), UNKNOWN_BAND)


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source, source or "unknown")


def runs_frame(rows: Sequence[Mapping[str, Any]], *, sort: bool = True) -> pd.DataFrame:
    """The runs table as a typed frame, oldest first.

    Columns: everything in FLOAT_COLUMNS (NaN where unknown), CATEGORY_COLUMNS as categoricals,
    TEXT_COLUMNS as str ("" where absent), `ok` and `failed` (bool) and `prompt_band`. Rows
    written by older versions (no `state`) get one from `ok`.

    A row whose fields do not have the types atom_core.runs.RunRecord gives them (an `ok` that
    is not true/false, a number field holding text, a time that is not a time, a name that is
    not text: a hand-edited or damaged file) is left out, and `frame.attrs["unreadable"]` says
    how many were. The checks run column by column, not row by row (RunRecord.from_record
    for each of 100,000 rows takes about 2 s).
    """
    df, unreadable = typed_runs(rows)
    if unreadable.any():
        df = df[~unreadable].reset_index(drop=True)
    if sort and len(df) and not df["ts"].is_monotonic_increasing:
        df = df.sort_values("ts", kind="stable", ignore_index=True)
    df.attrs["unreadable"] = int(unreadable.sum())
    return df


def typed_runs(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, np.ndarray]:
    """Every row typed as runs_frame types them, in the given order, and a mask of the rows
    runs_frame leaves out as unreadable."""
    df, unreadable = typed_columns(rows, FRAME_COLUMNS)
    return finish_frame(df), unreadable


def finish_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A frame of typed columns (history.run_columns) as the page uses it: old runs' route,
    categoricals, `failed` and `prompt_band`."""
    df["route"] = df["route"].replace("", DEFAULT_ROUTE)
    for col in CATEGORY_COLUMNS:
        df[col] = df[col].astype("category")
    df["failed"] = df["state"].isin(FAILED_STATES).to_numpy(dtype=bool)
    df["prompt_band"] = prompt_bands(df["prompt_tokens"])
    return df


def prompt_bands(prompt_tokens: pd.Series) -> pd.Series:
    edges = [b[0] for b in PROMPT_BANDS] + [math.inf]
    bands = pd.cut(prompt_tokens, bins=edges, right=False,
                   labels=[b[2] for b in PROMPT_BANDS])
    bands = bands.cat.add_categories([UNKNOWN_BAND])
    return bands.fillna(UNKNOWN_BAND)


# -- filters ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """What the page's filters picked. An empty tuple means "all"."""

    models: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    start: date | None = None  # first day included (local time)
    end: date | None = None  # last day included (local time)
    bands: tuple[str, ...] = ()  # PROMPT_BANDS labels or UNKNOWN_BAND
    routes: tuple[str, ...] = ()  # chat routes (server.routes.ROUTES); old runs: completions

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        mask = np.ones(len(df), dtype=bool)
        for col, wanted in (("model", self.models), ("source", self.sources),
                            ("server", self.servers), ("prompt_band", self.bands),
                            ("route", self.routes)):
            if wanted:
                mask &= df[col].isin(wanted).to_numpy()
        if self.start is not None:
            mask &= (df["ts"] >= datetime.combine(self.start, dtime.min).timestamp()).to_numpy()
        if self.end is not None:
            after = datetime.combine(self.end, dtime.min).timestamp() + 86400
            mask &= (df["ts"] < after).to_numpy()
        return df if mask.all() else df[mask]


def filter_options(df: pd.DataFrame) -> dict[str, list[str]]:
    """The choices for each filter: models by run count (most first), the rest by name."""
    def present(col: str) -> list[str]:
        counts = df[col].value_counts(sort=False)
        return sorted((str(k) for k, n in counts.items() if n and str(k)))

    models = df["model"].value_counts()
    return {
        "models": [str(m) for m, n in models.items() if n and str(m)],
        "sources": present("source"),
        "servers": present("server"),
        "routes": present("route"),
        "bands": [b for b in BAND_LABELS if (df["prompt_band"] == b).any()],
    }


def date_bounds(df: pd.DataFrame) -> tuple[date, date] | None:
    """First and last day (local time) with a run."""
    if df.empty:
        return None
    return (datetime.fromtimestamp(float(df["ts"].min())).date(),
            datetime.fromtimestamp(float(df["ts"].max())).date())


# -- colours ------------------------------------------------------------------------------------

# 20 colours that stay apart on a white background (Tableau-like, then darker variants).
PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d",
    "#ff9da6", "#2e4a87", "#8c564b", "#17becf", "#bcbd22", "#7f3c8d", "#11a579", "#e68310",
    "#3969ac", "#cf1c90", "#80ba5a", "#6a6a6a",
)


def model_colors(df: pd.DataFrame) -> dict[str, str]:
    """A colour for every model in the history, the same in every chart and every filter.

    Each model prefers the palette slot its name hashes to (so a model tends to keep its colour
    across data folders); models claim slots in the order they first appeared, so a new model
    never takes an existing model's colour. Past 20 models, colours repeat by hash.
    """
    if df.empty:
        return {}
    first_seen = df.groupby("model", observed=True)["ts"].min().sort_values(kind="stable")
    return assign_colors([str(m) for m in first_seen.index])


def assign_colors(models_in_order: Iterable[str]) -> dict[str, str]:
    taken: set[int] = set()
    out: dict[str, str] = {}
    n = len(PALETTE)
    for model in models_in_order:
        slot = zlib.crc32(model.encode("utf-8")) % n
        if len(taken) < n:
            while slot in taken:
                slot = (slot + 1) % n
            taken.add(slot)
        out[model] = PALETTE[slot]
    return out


# -- chart frames -------------------------------------------------------------------------------


def box_stats(df: pd.DataFrame, column: str = "ttft_s") -> pd.DataFrame:
    """Per model: n, p5, p25, p50, p75, p95 of `column` over completed runs; lowest median
    first (for TTFT: the quickest model on top)."""
    done = df[df["ok"] & df[column].notna()]
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    names = ["p5", "p25", "p50", "p75", "p95"]
    if done.empty:
        return pd.DataFrame(columns=["model", "n", *names])
    g = done.groupby("model", observed=True)[column]
    out = g.quantile(qs).unstack()
    out.columns = names
    out.insert(0, "n", g.size())
    out = out.reset_index()
    out["model"] = out["model"].astype(str)
    return out.sort_values(["p50", "model"], ignore_index=True)


# Bucket sizes for "over time" charts, smallest first; the first that gives <= MAX_BUCKETS wins.
BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)
MAX_BUCKETS = 80


def bucket_seconds(span_s: float) -> int:
    for size in BUCKETS_S:
        if span_s / size <= MAX_BUCKETS:
            return size
    return BUCKETS_S[-1]


def tps_over_time(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Median decode tok/s per model per time bucket, and the bucket size in seconds.

    Columns: model, bucket (epoch s, start of bucket), time (local datetime), tps_p50, runs.
    """
    done = df[df["ok"] & df["decode_tps"].notna()]
    cols = ["model", "bucket", "time", "tps_p50", "runs"]
    if done.empty:
        return pd.DataFrame(columns=cols), BUCKETS_S[0]
    span = float(done["ts"].max() - done["ts"].min())
    size = bucket_seconds(span)
    start = _local_bucket_origin(float(done["ts"].min()), size)
    bucket = start + ((done["ts"] - start) // size) * size
    g = done.assign(bucket=bucket).groupby(["model", "bucket"], observed=True)["decode_tps"]
    out = pd.DataFrame({"tps_p50": g.median(), "runs": g.size()}).reset_index()
    out["model"] = out["model"].astype(str)
    out["time"] = [datetime.fromtimestamp(t + size / 2) for t in out["bucket"]]
    return out[cols], size


def _local_bucket_origin(first_ts: float, size: int) -> float:
    """Buckets of a day or more start at local midnight; shorter ones on the minute."""
    if size >= 86400:
        day = datetime.fromtimestamp(first_ts).date()
        return datetime.combine(day, dtime.min).timestamp()
    return math.floor(first_ts / 60) * 60


SAMPLE_POINTS = 2000  # points per scatter chart, over every model: each is an SVG node to draw


def sample_size(models: int) -> int:
    """Runs per model in a scatter chart's sample: SAMPLE_POINTS shared out, at least 60 each.
    Twenty models at 300 each made each scatter chart 6,000 SVG points, 2-4 s to draw on a
    busy machine (docs/BENCHMARKS.md, page switches)."""
    return max(60, SAMPLE_POINTS // max(models, 1))


def sample_per_model(df: pd.DataFrame, per_model: int = 300, seed: int = 0) -> pd.DataFrame:
    """At most `per_model` completed runs of each model, picked at random (seeded: the same
    picture on every rerun), oldest first."""
    done = df[df["ok"]]
    if done.empty:
        return done
    rng = np.random.default_rng(seed)
    shuffled = done.iloc[rng.permutation(len(done))]
    picked = shuffled.groupby("model", observed=True, sort=False).head(per_model)
    return picked.sort_values("ts", kind="stable")


MIN_TREND_RUNS = 3  # a line fitted on fewer runs than this is not drawn


def trend_lines(df: pd.DataFrame, x: str, y: str,
                min_points: int = MIN_TREND_RUNS) -> pd.DataFrame:
    """A least-squares line y = intercept + slope * x per model, fitted on every completed run
    with both values. Columns: model, slope, intercept, x_min, x_max, n. Models with too few
    points or a single x value get no line."""
    done = df[df["ok"] & df[x].notna() & df[y].notna()]
    rows = []
    for model, part in done.groupby("model", observed=True):
        xs = part[x].to_numpy(dtype=float)
        ys = part[y].to_numpy(dtype=float)
        if len(xs) < min_points or xs.min() == xs.max():
            continue
        slope, intercept = np.polyfit(xs, ys, 1)
        rows.append({"model": str(model), "slope": float(slope), "intercept": float(intercept),
                     "x_min": float(xs.min()), "x_max": float(xs.max()), "n": len(xs)})
    return pd.DataFrame(rows, columns=["model", "slope", "intercept", "x_min", "x_max", "n"])


def token_histogram(df: pd.DataFrame, bins: int = 24) -> pd.DataFrame:
    """Output tokens per completed request, counted in shared bins for every model.

    The bins cover the lowest value to the 99th percentile (so a few very long replies do not
    squash the rest into one bar); longer replies count in the last bin (`overflow`).
    Columns: model, left, right, count, share (count / the model's runs), overflow."""
    done = df[df["ok"] & df["output_tokens"].notna()]
    cols = ["model", "left", "right", "count", "share", "overflow"]
    if done.empty:
        return pd.DataFrame(columns=cols)
    values = done["output_tokens"].to_numpy(dtype=float)
    top = float(np.percentile(values, 99))
    edges = _nice_edges(float(values.min()), top, bins)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    models = done["model"].astype(str).to_numpy()
    grid = pd.MultiIndex.from_product([sorted(set(models)), range(len(edges) - 1)],
                                      names=["model", "bin"])
    counts = (pd.Series(1, index=pd.MultiIndex.from_arrays([models, index]))
              .groupby(level=[0, 1]).sum().reindex(grid, fill_value=0)
              .rename("count").reset_index())
    totals = counts.groupby("model")["count"].transform("sum")
    counts["share"] = counts["count"] / totals
    counts["left"] = edges[counts["bin"].to_numpy()]
    counts["right"] = edges[counts["bin"].to_numpy() + 1]
    counts["overflow"] = (counts["bin"] == len(edges) - 2) & bool(values.max() >= edges[-1])
    return counts[cols]


def _nice_edges(low: float, high: float, bins: int) -> np.ndarray:
    """Bin edges on round numbers (1, 2, 5 x 10^k wide) covering [low, high]."""
    if high <= low:
        return np.array([math.floor(low), math.floor(low) + 1], dtype=float)
    raw = (high - low) / bins
    power = 10 ** math.floor(math.log10(raw))
    width = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    width = max(width, 1.0)  # tokens are whole
    start = math.floor(low / width) * width
    count = int(math.ceil((high - start) / width)) + (1 if (high - start) % width == 0 else 0)
    return start + width * np.arange(count + 1, dtype=float)
