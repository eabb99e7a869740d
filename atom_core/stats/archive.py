"""The Stats page's runs read from the runs archive (HistoryStore.runs_table): only the
columns a view shows, only the runs its time range, models and servers pick, never the whole
history as rows. Also the few facts about the whole history the filters need (which models,
servers, sources and routes exist, the first and last day, a colour per series), and the
runs export (Parquet, CSV) for people who go on in pandas, DuckDB or a notebook.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..history.run_columns import FRAME_COLUMNS, TEXT_COLUMNS
from .frame import DEFAULT_ROUTE, RunFilter, assign_colors, finish_frame
from .summary import ROUTE_SEPARATOR

if TYPE_CHECKING:
    from ..history import HistoryStore

__all__ = [
    "DEFAULT_DAYS",
    "EXPORT_FORMATS",
    "OVERVIEW_COLUMNS",
    "HistoryFacts",
    "default_days",
    "export_runs",
    "history_facts",
    "machine_runs",
    "recent_frame",
    "window_frame",
]

DEFAULT_DAYS = 30  # what Stats shows until the time range is moved
# What the overview (summary, charts) reads: the frame without its per-run text (ids, errors,
# links), which only the timeline, sweep and server tabs need. Taking rows of 500,000 runs
# copies every column: without the text columns the overview at 1M runs took half the time.
OVERVIEW_COLUMNS = tuple(c for c in FRAME_COLUMNS if c not in TEXT_COLUMNS)
EXPORT_FORMATS = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
_FACT_COLUMNS = ["model", "server", "source", "route", "ts"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryFacts:
    """What the filters offer, over the whole history (not only the runs shown)."""

    runs: int
    models: list[str]  # most runs first
    servers: list[str]
    sources: list[str]
    routes: list[str]
    first_day: date | None  # local days with a run; None for no runs
    last_day: date | None
    colors: dict[str, str]  # per model (stats.model_colors over the whole history)
    route_colors: dict[str, str]  # per "model · route" series
    unreadable: int


def history_facts(store: HistoryStore) -> HistoryFacts:
    """Reads five columns of every run, aggregated in Arrow (no row of the history in
    Python): a million runs in well under a second."""
    import pyarrow.compute as pc

    view = store.runs_table(_FACT_COLUMNS)
    t = view.table
    if not len(t):
        return HistoryFacts(runs=0, models=[], servers=[], sources=[], routes=[],
                            first_day=None, last_day=None, colors={}, route_colors={},
                            unreadable=view.unreadable)
    route = pc.if_else(pc.equal(t["route"], ""), DEFAULT_ROUTE, t["route"])
    t = t.set_column(t.schema.get_field_index("route"), "route", route)
    counts = t.group_by("model").aggregate([("ts", "count"), ("ts", "min")]).to_pandas()
    by_runs = counts[counts["model"] != ""].sort_values(["ts_count", "model"],
                                                        ascending=[False, True], kind="stable")
    pairs = t.group_by(["model", "route"]).aggregate([("ts", "min")]).to_pandas()

    def first_seen(frame: pd.DataFrame, label: pd.Series) -> dict[str, str]:
        # model_colors' order: first appearance, ties by name
        order = frame.assign(label=label).sort_values(["ts_min", "label"], kind="stable")
        return assign_colors([str(x) for x in order["label"]])

    def present(col: str) -> list[str]:
        return sorted(str(v) for v in pc.unique(t[col]).to_pylist() if v)

    ts = pc.min_max(t["ts"]).as_py()
    return HistoryFacts(
        runs=len(t),
        models=[str(m) for m in by_runs["model"]],
        servers=present("server"),
        sources=present("source"),
        routes=present("route"),
        first_day=datetime.fromtimestamp(ts["min"]).date(),
        last_day=datetime.fromtimestamp(ts["max"]).date(),
        colors=first_seen(counts, counts["model"]),
        route_colors=first_seen(pairs, pairs["model"] + ROUTE_SEPARATOR + pairs["route"]),
        unreadable=view.unreadable,
    )


def default_days(facts: HistoryFacts, today: date, days: int = DEFAULT_DAYS,
                 ) -> tuple[date, date]:
    """The time range Stats opens on: the last `days` days up to today (or up to the last
    run, if a clock moved back), never before the first run."""
    end = max(today, facts.last_day or today)
    start = end - timedelta(days=days - 1)
    if facts.first_day is not None:
        start = max(start, min(facts.first_day, end))
    return start, end


def day_span(start: date | None, end: date | None) -> tuple[float | None, float | None]:
    """[since, until) in epoch seconds for whole local days `start`..`end`."""
    since = datetime.combine(start, dtime.min).timestamp() if start is not None else None
    until = (datetime.combine(end, dtime.min).timestamp() + 86400) if end is not None else None
    return since, until


def _frame(table: Any, unreadable: int) -> pd.DataFrame:
    df = table.to_pandas()
    df = finish_frame(df)
    if len(df) and not df["ts"].is_monotonic_increasing:
        df = df.sort_values("ts", kind="stable", ignore_index=True)
    df.attrs["unreadable"] = unreadable
    return df


def window_frame(store: HistoryStore, flt: RunFilter,
                 columns: Sequence[str] = FRAME_COLUMNS) -> pd.DataFrame:
    """The runs frame (stats.runs_frame's columns) of the runs `flt` picks by time range,
    model and server, read from the archive; its other filters (sources, routes, prompt
    bands) are for `flt.apply`."""
    since, until = day_span(flt.start, flt.end)
    view = store.runs_table(columns, models=flt.models, servers=flt.servers, since=since,
                            until=until)
    return _frame(view.table, view.unreadable)


def recent_frame(store: HistoryStore, since: float) -> pd.DataFrame:
    """The runs frame of the runs since `since` (the live panel: a few minutes of runs)."""
    view = store.runs_table(FRAME_COLUMNS, since=since)
    return _frame(view.table, view.unreadable)


MACHINE_COLUMNS = ["machine_id", "model", "source", "ok", "decode_tps", "ttft_s",
                   "cpu_percent_mean", "ram_used_mb_peak", "gpu_util_mean", "vram_used_mb_peak"]


def machine_runs(store: HistoryStore) -> list[dict[str, Any]]:
    """The runs the Machine tab and the benchmark card count (measure.card.machine_table):
    completed runs that name their machine, judge requests left out; only the columns the
    table reads, filtered in Arrow before any row becomes a dict (None where unknown)."""
    import pyarrow.compute as pc

    t = store.runs_table(MACHINE_COLUMNS).table
    keep = pc.and_(pc.and_(pc.not_equal(t["machine_id"], ""), t["ok"]),
                   pc.not_equal(t["source"], "judge"))
    return t.filter(keep).to_pylist()


def export_runs(store: HistoryStore, flt: RunFilter, fmt: str) -> bytes:
    """Every stored field of the runs the filters pick, as Parquet or CSV ("parquet" /
    "csv"). In CSV, text a spreadsheet would run as a formula is neutralised (history.export.
    csv_cell); Parquet keeps the values as they are, typed."""
    from ..history.export import csv_cell

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {sorted(EXPORT_FORMATS)}, not {fmt!r}")
    since, until = day_span(flt.start, flt.end)
    view = store.runs_table(None, models=flt.models, servers=flt.servers, since=since,
                            until=until)
    df = _frame(view.table, view.unreadable)
    df = flt.apply(df).drop(columns=["failed", "prompt_band"])
    for col in df.columns:  # categoricals back to plain text for other tools
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(str)
    out = io.BytesIO()
    if fmt == "parquet":
        df.to_parquet(out, index=False)
    else:
        for col in df.columns:
            if not pd.api.types.is_numeric_dtype(df[col]) and df[col].dtype != bool:
                df[col] = df[col].map(csv_cell)
        df.to_csv(out, index=False, float_format="%.6g")
    return out.getvalue()
