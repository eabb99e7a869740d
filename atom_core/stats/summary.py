"""The Stats page's per-model summary (its columns from metrics' catalogue of measures), the
overview every chart of the page is drawn from, the headline and the live panel, over a runs
frame (frame.py). Percentiles are pandas' linear quantiles, the method of `metrics.percentile`,
so a p90 on the page equals the p90 the command line prints for the same runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from ..metrics import (
    DECODE_P50,
    E2E_P50,
    FIRST_ANSWER_P50,
    SERVER_TPS_P50,
    SERVER_TTFT_P50,
    THINKING_P50,
    TOKENS_MEAN,
    TTFT_P50,
    TTFT_P90,
    TTFT_P99,
    Stat,
    format_seconds,
)
from .frame import (
    GROUPINGS,
    RunFilter,
    box_stats,
    sample_per_model,
    sample_size,
    token_histogram,
    tps_over_time,
    trend_lines,
)

# -- the summary table --------------------------------------------------------------------------

# column -> (label, kind) for the page; kind: "int", "tokens", "percent", "duration" (seconds,
# shown "0.30 s") and "speed" (tok/s, shown "55.0 tok/s"): the unit sits in the cell, so the
# headers stay short and the whole table fits beside the sidebar on a 1,400 px screen
KIND_OF_UNIT = {"s": "duration", "tok/s": "speed", "tokens": "tokens"}
# The figures of the table, in order (the first answer is when the reply visibly begins: the
# TTFT for models that don't reason); the server's own only when some run has them.
SUMMARY_STATS: tuple[Stat, ...] = (TTFT_P50, TTFT_P90, TTFT_P99, FIRST_ANSWER_P50, THINKING_P50,
                                   DECODE_P50, E2E_P50, TOKENS_MEAN)
SERVER_STATS: tuple[Stat, ...] = (SERVER_TPS_P50, SERVER_TTFT_P50)


def _columns(stats: tuple[Stat, ...]) -> dict[str, tuple[str, str]]:
    return {s.key: (s.short, KIND_OF_UNIT[s.measure.unit]) for s in stats}


SUMMARY_COLUMNS: dict[str, tuple[str, str]] = {
    "model": ("Model", "text"),
    "route": ("Route", "text"),  # only when grouped by model and route
    "runs": ("Runs", "int"),
    **_columns(SUMMARY_STATS),
    "error_rate": ("Errors", "percent"),
    **_columns(SERVER_STATS),
}
# What a summary header means, on hover (the short headers above leave it out).
SUMMARY_HELP: dict[str, str] = {
    "ttft_p50_s": "Time to first token, median: from sending the prompt to the first token of "
                  "any kind (thinking included).",
    "ttft_p90_s": "Time to first token: 90 % of runs started at least this quickly.",
    "ttft_p99_s": "Time to first token: 99 % of runs started at least this quickly.",
    "first_answer_p50_s": "First answer token, median: when the reply visibly begins, after any "
                          "thinking (the TTFT for a model that does not reason).",
    "thinking_p50_s": "Thinking time, median: first reasoning token to first answer token.",
    "decode_tps_p50": "Decode speed, median: tokens per second once the reply has started.",
    "e2e_p50_s": "End-to-end, median: from sending the prompt to the last byte of the reply.",
    "output_tokens_mean": "Output tokens per reply (thinking included), mean.",
    "error_rate": "Runs that failed or broke off (a reply you stopped is not an error).",
}
# A percentile column shows once some model has the runs to give one: the p90 of three runs is
# just the slowest of them.
PERCENTILE_MIN_RUNS = {"ttft_p90_s": 10, "ttft_p99_s": 100}
REASONING_COLUMNS = ("first_answer_p50_s", "thinking_p50_s")
# The Model column's width on the page; a longer name wraps onto more lines (rows grow to fit).
MODEL_COLUMN_PX = 200
_NAME_CHAR_PX = 7.0  # a character of a model name in the table's font, wide side of average
_LINE_PX = 21
MAX_NAME_LINES = 4


def summary_view(summary: pd.DataFrame) -> tuple[dict[str, tuple[str, str]], str]:
    """The summary columns worth showing for these rows, and a sentence about the ones held back
    ("" when none is): a TTFT percentile until a model has PERCENTILE_MIN_RUNS runs, the first
    answer and thinking columns while no model reasoned (the first answer is then the TTFT).
    The summary CSV keeps every column."""
    runs = int(summary["runs"].max()) if len(summary) else 0
    held = [c for c, need in PERCENTILE_MIN_RUNS.items() if runs < need]
    if "thinking_p50_s" in summary and not summary["thinking_p50_s"].notna().any():
        held += REASONING_COLUMNS
    shown = {c: v for c, v in SUMMARY_COLUMNS.items() if c in summary and c not in held}
    waiting = [c for c in PERCENTILE_MIN_RUNS if c in held]
    if not waiting:
        return shown, ""
    names = " and ".join(SUMMARY_COLUMNS[c][0] for c in waiting).replace(" and TTFT", " and")
    runs_needed = " and ".join(str(PERCENTILE_MIN_RUNS[c]) for c in waiting)
    verb = "appears" if len(waiting) == 1 else "appear"
    return shown, (f"{names} {verb} once a model has {runs_needed} runs (the CSV has every "
                   "column).")


def name_row_height(names: Iterable[str]) -> int | None:
    """A table row height (px) that shows the longest name whole in the Model column
    (MODEL_COLUMN_PX wide), wrapped over up to MAX_NAME_LINES lines; None when every name fits
    on one line. (Streamlit wraps cell text only in rows taller than 64 px.)"""
    per_line = int((MODEL_COLUMN_PX - 17) / _NAME_CHAR_PX)  # 17 px: the cell's padding
    longest = max((len(str(n)) for n in names), default=0)
    lines = min(MAX_NAME_LINES, math.ceil(longest / per_line))
    return None if lines <= 1 else max(66, 12 + _LINE_PX * lines)


def model_summary(df: pd.DataFrame, *, by_route: bool = False) -> pd.DataFrame:
    """One row per model: runs, TTFT p50/p90/p99, median decode tok/s, median end-to-end, mean
    output tokens, error rate, and (when any run has them) the server's own figures.

    Fastest decoding first. Timing columns are NaN for a model with no completed run.
    `by_route`: `df` is a route_series frame (one "model · route" per series) and the summary
    gets a `route` column beside the series' name.
    """
    columns = [c for c in SUMMARY_COLUMNS
               if not c.startswith("server_") and (by_route or c != "route")]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    by_model = df.groupby("model", observed=True, sort=False)
    out = pd.DataFrame({"runs": by_model.size(), "failed": by_model["failed"].sum()})
    if by_route:
        out["route"] = by_model["route"].first().astype(str)
    ok_runs = df[df["ok"]]
    # the first answer token, or the first token for a reply without reasoning
    ok_runs = ok_runs.assign(first_answer_s=ok_runs["first_answer_s"].fillna(ok_runs["ttft_s"]))
    done = ok_runs.groupby("model", observed=True, sort=False)
    stats = SUMMARY_STATS
    if df["server_tps"].notna().any() or df["server_ttft_s"].notna().any():
        stats += SERVER_STATS
        columns += [s.key for s in SERVER_STATS]
    for name, group in itertools.groupby(stats, key=lambda s: s.measure.name):
        wanted = list(group)
        for s, values in zip(wanted, grouped(done[name], wanted), strict=True):
            out[s.key] = values
    out["error_rate"] = out["failed"] / out["runs"]
    out = out.reset_index().rename(columns={"index": "model"})
    out["model"] = out["model"].astype(str)
    out["runs"] = out["runs"].astype("int64")
    out = out.sort_values(["decode_tps_p50", "model"], ascending=[False, True],
                          na_position="last", ignore_index=True)
    return out[columns]


def grouped(column: pd.core.groupby.SeriesGroupBy, stats: list[Stat]) -> list[pd.Series]:
    """Each of `stats` (one measure's) per group: the mean, or pandas' linear quantile, the
    method of `metrics.percentile`, all percentiles of a measure in one pass."""
    qs = [s.q / 100 for s in stats if s.q is not None]
    by_q = column.quantile(qs).unstack() if qs else None
    if by_q is not None and by_q.empty:
        by_q = pd.DataFrame(columns=qs, dtype="float64")
    return [column.mean() if s.q is None else by_q[s.q / 100]  # type: ignore[index]
            for s in stats]


def summary_csv(summary: pd.DataFrame) -> bytes:
    """The summary as CSV (machine names with units in them: ttft_p50_s, decode_tps_p50...).
    Text cells that a spreadsheet would run as a formula are neutralised (history.export.
    csv_cell); numbers stay numbers."""
    from ..history.export import csv_cell

    out = summary.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(csv_cell)
    return out.to_csv(index=False, float_format="%.6g").encode("utf-8")


def route_series(df: pd.DataFrame) -> pd.DataFrame:
    """The runs with each one's `model` relabelled "model · route", so every per-model summary,
    colour and chart treats one model over two routes as two series (the route stays in
    `route`). Old runs without a route count as chat completions."""
    if df.empty:
        return df
    label = df["model"].astype(str) + ROUTE_SEPARATOR + df["route"].astype(str)
    return df.assign(model=label.astype("category"))


ROUTE_SEPARATOR = " · "


# -- the overview ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    """Everything the Stats overview draws, computed once per (history version, filter)."""

    runs: int
    summary: pd.DataFrame
    box: pd.DataFrame
    buckets: pd.DataFrame
    bucket_s: int
    sample: pd.DataFrame
    e2e_trend: pd.DataFrame
    prompt_trend: pd.DataFrame
    hist: pd.DataFrame
    # the same box over the time to the first answer token (TTFT where a model doesn't reason)
    answer_box: pd.DataFrame | None = None


def overview(df: pd.DataFrame, flt: RunFilter | None = None, *,
             group: str = "model") -> Overview:
    """The summary and every chart frame for the runs that pass `flt`, one series per model,
    or per model and route when `group` is "model_route" (GROUPINGS)."""
    if group not in GROUPINGS:
        raise ValueError(f"unknown grouping {group!r}; one of {', '.join(GROUPINGS)}")
    runs = flt.apply(df) if flt is not None else df
    by_route = group == "model_route"
    if by_route:
        runs = route_series(runs)
    buckets, bucket_s = tps_over_time(runs)
    return Overview(
        runs=len(runs), summary=model_summary(runs, by_route=by_route),
        box=box_stats(runs, "ttft_s"),
        buckets=buckets, bucket_s=bucket_s,
        sample=sample_per_model(runs, sample_size(runs["model"].nunique())),
        e2e_trend=trend_lines(runs, "output_tokens", "e2e_s"),
        prompt_trend=trend_lines(runs, "prompt_tokens", "ttft_s"),
        hist=token_histogram(runs),
        answer_box=box_stats(
            runs.assign(first_answer_s=runs["first_answer_s"].fillna(runs["ttft_s"])),
            "first_answer_s"),
    )


def headline(summary: pd.DataFrame) -> dict[str, tuple[str, str] | None]:
    """The fastest decoder and the quickest starter (median time to the first answer token,
    which is TTFT for models that do not reason) with their figure as text,
    among models with at least MIN_RUNS_FOR_HEADLINE runs when any model has that many."""
    enough = summary[summary["runs"] >= MIN_RUNS_FOR_HEADLINE]
    pool = enough if len(enough) else summary
    out: dict[str, tuple[str, str] | None] = {"fastest": None, "quickest": None}
    tps = pool.dropna(subset=["decode_tps_p50"])
    if len(tps):
        best = tps.loc[tps["decode_tps_p50"].idxmax()]
        out["fastest"] = (str(best["model"]), f"{best['decode_tps_p50']:.1f} tok/s median")
    # "Quickest" is when the reply visibly begins: a model that reasons first must not win it
    # with its first reasoning token (metrics: first_visible_s).
    start = "first_answer_p50_s" if "first_answer_p50_s" in pool else "ttft_p50_s"
    ttft = pool.dropna(subset=[start])
    if len(ttft):
        best = ttft.loc[ttft[start].idxmin()]
        out["quickest"] = (str(best["model"]),
                           f"{format_seconds(float(best[start]))} median")
    return out


MIN_RUNS_FOR_HEADLINE = 5


# -- live ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSummary:
    """What ran in the last `window_s` seconds."""

    window_s: float
    runs: int
    last_run_ago_s: float | None  # None: no run at all in the history
    per_model: pd.DataFrame  # model_summary over the window (LIVE_COLUMNS)

    @property
    def active(self) -> bool:
        """A run finished in the last half minute: something is probably still running."""
        return self.last_run_ago_s is not None and self.last_run_ago_s <= 30


LIVE_COLUMNS = ("model", "runs", "ttft_p50_s", "decode_tps_p50", "e2e_p50_s")


def live_summary(df: pd.DataFrame, *, now: float, window_s: float = 300.0) -> LiveSummary:
    """The last `window_s` seconds of a runs frame, summarised (for a panel that refreshes
    itself every few seconds; RunsCache keeps the frame current cheaply)."""
    recent = df[df["ts"] >= now - window_s]
    last = float(df["ts"].iloc[-1]) if len(df) else None
    return LiveSummary(window_s=window_s, runs=len(recent),
                       last_run_ago_s=None if last is None else now - last,
                       per_model=model_summary(recent)[list(LIVE_COLUMNS)])
