"""The Stats page's numbers: the runs table as a pandas frame, filters, the per-model summary,
and the small frames every chart is drawn from. No drawing here (see charts.py), no streamlit.

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
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ..history.tinydb_store import HistoryStore

__all__ = [
    "PROMPT_BANDS",
    "SOURCE_LABELS",
    "SUMMARY_COLUMNS",
    "ReplayFrame",
    "Overview",
    "RunFilter",
    "RunsCache",
    "Timeline",
    "arena_timelines",
    "box_stats",
    "filter_options",
    "headline",
    "live_summary",
    "load_message_timeline",
    "message_choices",
    "model_colors",
    "model_summary",
    "overview",
    "replay_frames",
    "runs_frame",
    "sample_per_model",
    "source_label",
    "summary_csv",
    "timeline_frame",
    "timeline_stats",
    "token_histogram",
    "tps_over_time",
    "trend_lines",
]

# -- the frame ----------------------------------------------------------------------------------

FLOAT_COLUMNS = (
    "ts", "ttft_s", "decode_tps", "e2e_s", "itl_p50_s", "itl_p95_s", "output_tokens",
    "prompt_tokens", "concurrency",
    # reasoning models and client-side waits (atom_core.metrics defines each)
    "first_answer_s", "thinking_s", "pool_wait_s",
    # what the server said about the same run (LM Studio's native /api/v1/chat stats,
    # llama.cpp's timings)
    "server_tps", "server_ttft_s", "server_load_s", "server_prompt_s", "server_output_tokens",
)
CATEGORY_COLUMNS = ("model", "source", "server", "state", "tokens_source")
TEXT_COLUMNS = ("id", "error", "finish_reason", "conversation_id", "message_id", "sweep_id",
                "round_id")
_WANTED = ("ok", *FLOAT_COLUMNS, *CATEGORY_COLUMNS, *TEXT_COLUMNS)
FAILED_STATES = ("error", "interrupted")

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


def runs_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The runs table as a typed frame, oldest first.

    Columns: everything in FLOAT_COLUMNS (NaN where unknown), CATEGORY_COLUMNS as categoricals,
    TEXT_COLUMNS as str ("" where absent), `ok` and `failed` (bool) and `prompt_band`. Rows
    written by older versions (no `state`) get one from `ok`.
    """
    df = pd.DataFrame(list(rows), columns=list(_WANTED))
    ok = df["ok"]
    state = df["state"]
    if len(df):
        ok = ok.astype("boolean").fillna(True).astype(bool)
        state = state.where(state.notna(), np.where(ok, "complete", "error"))
    df["ok"] = ok.astype(bool)
    df["state"] = state
    for col in FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in (*CATEGORY_COLUMNS, *TEXT_COLUMNS):
        values = df[col]
        if values.dtype.kind == "f":  # a field no row has: all NaN
            values = values.astype(object)
        df[col] = values.fillna("").astype(str)
    for col in CATEGORY_COLUMNS:
        df[col] = df[col].astype("category")
    df["failed"] = df["state"].isin(FAILED_STATES).to_numpy(dtype=bool)
    df["prompt_band"] = prompt_bands(df["prompt_tokens"])
    if len(df) and not df["ts"].is_monotonic_increasing:
        df = df.sort_values("ts", kind="stable", ignore_index=True)
    return df


def prompt_bands(prompt_tokens: pd.Series) -> pd.Series:
    edges = [b[0] for b in PROMPT_BANDS] + [math.inf]
    bands = pd.cut(prompt_tokens, bins=edges, right=False,
                   labels=[b[2] for b in PROMPT_BANDS])
    bands = bands.cat.add_categories([UNKNOWN_BAND])
    return bands.fillna(UNKNOWN_BAND)


# -- caching the frame between reruns -----------------------------------------------------------


@dataclass(slots=True)
class _Cached:
    fingerprint: object
    version: int
    frame: pd.DataFrame
    base: pd.DataFrame | None = None  # rows of every shard but the newest (TinyDB layout)
    base_shards: tuple[tuple[str, int, int], ...] = ()


class RunsCache:
    """Keeps the last runs frame per store and rebuilds only what changed.

    For the TinyDB store (runs in `<data_dir>/tables/runs/NNNNNN.json`, append-only shards, see
    atom_core.history.tinydb_store) the fingerprint is the shard files' (name, mtime_ns, size):
    a directory scan instead of reading 100k rows. When only the newest shard changed or new
    shards were added (runs being recorded), only those files are parsed and appended to the frame
    of the older shards, so a live panel can refresh every few seconds at any history size. Anything
    unexpected (a file that will not parse) falls back to `store.runs()`, which also moves a
    damaged file aside with a warning. Other backends are keyed
    on (row count, last id). Each rebuild gets a new `version`, a cheap key for caching what is
    computed from the frame. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = Lock()
        self._cached: dict[str, _Cached] = {}
        self._versions = 0
        self.full_builds = 0  # how often the whole history was read (for tests and benches)

    def snapshot(self, store: HistoryStore) -> tuple[int, pd.DataFrame]:
        """(version, frame) of the store's runs now."""
        from ..history.tinydb_store import TinyDBHistoryStore

        key = str(store.data_dir)
        folder = Path(store.data_dir) / "tables" / "runs"
        shards = _shard_fingerprint(folder) if isinstance(store, TinyDBHistoryStore) else None
        with self._lock:
            hit = self._cached.get(key)
            if shards is not None and hit is not None and hit.fingerprint == shards:
                return hit.version, hit.frame
        entry = None
        if shards is not None:
            entry = self._from_shards(folder, shards, hit)
        if entry is None:
            rows = store.runs()
            fingerprint = shards if shards is not None else (
                len(rows), rows[-1].get("id") if rows else None)
            if hit is not None and shards is None and hit.fingerprint == fingerprint:
                return hit.version, hit.frame
            entry = _Cached(fingerprint=fingerprint, version=0, frame=runs_frame(rows))
            self.full_builds += 1
        with self._lock:
            self._versions += 1
            entry.version = self._versions
            self._cached[key] = entry
            return entry.version, entry.frame

    def _from_shards(self, folder: Path, shards: tuple[tuple[str, int, int], ...],
                     hit: _Cached | None) -> _Cached | None:
        """The frame from the shard files, reusing the older shards' frame when only newer
        shards changed; None to ask for a full rebuild."""
        if not shards:
            return _Cached(fingerprint=shards, version=0, frame=runs_frame([]))
        base_shards, newest = shards[:-1], shards[-1:]
        if hit is not None and hit.base is not None and shards[:len(hit.base_shards)] == (
                hit.base_shards) and len(hit.base_shards) <= len(base_shards):
            grown = base_shards[len(hit.base_shards):]  # shards closed since the last look
            extra = _read_shards(folder, grown)
            if extra is None:
                return None
            base = _concat(hit.base, runs_frame(extra)) if extra else hit.base
        else:
            rows = _read_shards(folder, base_shards)
            if rows is None:
                return None
            base = runs_frame(rows)
        tail = _read_shards(folder, newest)
        if tail is None:
            return None
        return _Cached(fingerprint=shards, version=0, frame=_concat(base, runs_frame(tail)),
                       base=base, base_shards=base_shards)

    def frame(self, store: HistoryStore) -> pd.DataFrame:
        return self.snapshot(store)[1]

    def clear(self) -> None:
        with self._lock:
            self._cached.clear()


def _shard_fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...] | None:
    try:
        with os.scandir(folder) as entries:
            found = []
            for e in entries:
                if re.fullmatch(r"\d{6}\.json", e.name):
                    st = e.stat()
                    found.append((e.name, st.st_mtime_ns, st.st_size))
    except FileNotFoundError:
        return ()
    except OSError:
        return None
    return tuple(sorted(found))


def _read_shards(folder: Path,
                 shards: Sequence[tuple[str, int, int]]) -> list[dict[str, Any]] | None:
    """The records of these shard files (TinyDB JSON: {"records": {doc_id: record}}), or None
    if any file is missing or not in that shape."""
    import json

    rows: list[dict[str, Any]] = []
    for name, _mtime, _size in shards:
        try:
            data = json.loads((folder / name).read_bytes() or b"{}")
        except (OSError, ValueError):
            return None
        table = data.get("records", {}) if isinstance(data, dict) else None
        if not isinstance(table, dict):
            return None
        rows.extend(r for r in table.values() if isinstance(r, dict))
    return rows


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two runs frames as one, categoricals kept categorical, oldest first."""
    if b.empty:
        return a
    if a.empty:
        return b
    out = pd.concat([a, b], ignore_index=True)
    for col in (*CATEGORY_COLUMNS, "prompt_band"):
        if out[col].dtype != "category":
            out[col] = out[col].astype("category")
    if not out["ts"].is_monotonic_increasing:
        out = out.sort_values("ts", kind="stable", ignore_index=True)
    return out


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

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        mask = np.ones(len(df), dtype=bool)
        for col, wanted in (("model", self.models), ("source", self.sources),
                            ("server", self.servers), ("prompt_band", self.bands)):
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
        "bands": [b for b in BAND_LABELS if (df["prompt_band"] == b).any()],
    }


def date_bounds(df: pd.DataFrame) -> tuple[date, date] | None:
    """First and last day (local time) with a run."""
    if df.empty:
        return None
    return (datetime.fromtimestamp(float(df["ts"].min())).date(),
            datetime.fromtimestamp(float(df["ts"].max())).date())


# -- the summary table --------------------------------------------------------------------------

# column -> (label, kind) for the page; kind: "int", "seconds", "tps", "tokens", "percent"
SUMMARY_COLUMNS: dict[str, tuple[str, str]] = {
    "model": ("Model", "text"),
    "runs": ("Runs", "int"),
    "ttft_p50_s": ("TTFT p50 (s)", "seconds"),
    "ttft_p90_s": ("TTFT p90 (s)", "seconds"),
    "ttft_p99_s": ("TTFT p99 (s)", "seconds"),
    # when the reply visibly begins: the first answer token (TTFT for models that don't reason)
    "first_answer_p50_s": ("First answer p50 (s)", "seconds"),
    "thinking_p50_s": ("Thinking p50 (s)", "seconds"),
    "decode_tps_p50": ("Decode tok/s p50", "tps"),
    "e2e_p50_s": ("End-to-end p50 (s)", "seconds"),
    "output_tokens_mean": ("Output tokens (mean)", "tokens"),
    "error_rate": ("Errors", "percent"),
    "server_tps_p50": ("Server tok/s p50", "tps"),
    "server_ttft_p50_s": ("Server TTFT p50 (s)", "seconds"),
}


def model_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model: runs, TTFT p50/p90/p99, median decode tok/s, median end-to-end, mean
    output tokens, error rate, and (when any run has them) the server's own figures.

    Fastest decoding first. Timing columns are NaN for a model with no completed run.
    """
    columns = [c for c in SUMMARY_COLUMNS if not c.startswith("server_")]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    by_model = df.groupby("model", observed=True, sort=False)
    out = pd.DataFrame({"runs": by_model.size(), "failed": by_model["failed"].sum()})
    done = df[df["ok"]].groupby("model", observed=True, sort=False)
    ttft = done["ttft_s"].quantile([0.5, 0.9, 0.99]).unstack()
    if ttft.empty:
        ttft = pd.DataFrame(columns=[0.5, 0.9, 0.99], dtype="float64")
    out["ttft_p50_s"] = ttft.get(0.5)
    out["ttft_p90_s"] = ttft.get(0.9)
    out["ttft_p99_s"] = ttft.get(0.99)
    ok_runs = df[df["ok"]]
    visible = ok_runs["first_answer_s"].fillna(ok_runs["ttft_s"])
    out["first_answer_p50_s"] = visible.groupby(ok_runs["model"], observed=True).median()
    out["thinking_p50_s"] = done["thinking_s"].median()
    out["decode_tps_p50"] = done["decode_tps"].median()
    out["e2e_p50_s"] = done["e2e_s"].median()
    out["output_tokens_mean"] = done["output_tokens"].mean()
    out["error_rate"] = out["failed"] / out["runs"]
    if df["server_tps"].notna().any() or df["server_ttft_s"].notna().any():
        out["server_tps_p50"] = done["server_tps"].median()
        out["server_ttft_p50_s"] = done["server_ttft_s"].median()
        columns += ["server_tps_p50", "server_ttft_p50_s"]
    out = out.reset_index().rename(columns={"index": "model"})
    out["model"] = out["model"].astype(str)
    out["runs"] = out["runs"].astype("int64")
    out = out.sort_values(["decode_tps_p50", "model"], ascending=[False, True],
                          na_position="last", ignore_index=True)
    return out[columns]


def summary_csv(summary: pd.DataFrame) -> bytes:
    """The summary as CSV (machine names with units in them: ttft_p50_s, decode_tps_p50...)."""
    return summary.to_csv(index=False, float_format="%.6g").encode("utf-8")


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


def trend_lines(df: pd.DataFrame, x: str, y: str, min_points: int = 3) -> pd.DataFrame:
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


def overview(df: pd.DataFrame, flt: RunFilter | None = None) -> Overview:
    """The summary and every chart frame for the runs that pass `flt`."""
    runs = flt.apply(df) if flt is not None else df
    buckets, bucket_s = tps_over_time(runs)
    return Overview(
        runs=len(runs), summary=model_summary(runs), box=box_stats(runs, "ttft_s"),
        buckets=buckets, bucket_s=bucket_s, sample=sample_per_model(runs),
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
    from ..metrics import format_seconds

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


# -- token timelines ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    """One recorded stream: when each token arrived, and the text it carried."""

    label: str
    model: str
    offsets_ms: tuple[float, ...]  # arrival of each token chunk after the request was sent
    content: str = ""
    reasoning: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def timeline_frame(timelines: Sequence[Timeline]) -> pd.DataFrame:
    """One row per token: label, model, position (1-based), arrival_ms, gap_ms (time since the
    previous token; NaN for the first, whose wait is TTFT)."""
    parts = []
    for t in timelines:
        arrival = np.asarray(t.offsets_ms, dtype=float)
        gaps = np.diff(arrival, prepend=np.nan)
        parts.append(pd.DataFrame({
            "label": t.label, "model": t.model,
            "position": np.arange(1, len(arrival) + 1), "arrival_ms": arrival, "gap_ms": gaps,
        }))
    if not parts:
        return pd.DataFrame(columns=["label", "model", "position", "arrival_ms", "gap_ms"])
    return pd.concat(parts, ignore_index=True)


TIMELINE_COLUMNS: dict[str, tuple[str, str]] = {
    "label": ("Stream", "text"),
    "tokens": ("Tokens", "int"),
    "ttft_ms": ("TTFT (ms)", "tokens"),
    "gap_p50_ms": ("Gap p50 (ms)", "seconds"),
    "gap_p95_ms": ("Gap p95 (ms)", "seconds"),
    "gap_max_ms": ("Longest gap (ms)", "tokens"),
    "decode_tps": ("Decode tok/s", "tps"),
}


def timeline_table(timelines: Sequence[Timeline]) -> list[dict[str, Any]]:
    """One row per stream (columns: TIMELINE_COLUMNS): gaps from the arrival times; tokens,
    TTFT and decode tok/s from the stored metrics when the stream has them, so the figures
    match the chat caption and the runs table (the server's token count, not chunks)."""
    rows = []
    for t in timelines:
        row: dict[str, Any] = {"label": t.label, **timeline_stats(t.offsets_ms)}
        m = t.metrics
        if isinstance(m.get("output_tokens"), int) and m["output_tokens"] > 0:
            row["tokens"] = m["output_tokens"]
        if isinstance(m.get("decode_tps"), int | float):
            row["decode_tps"] = float(m["decode_tps"])
        if isinstance(m.get("ttft_s"), int | float):
            row["ttft_ms"] = float(m["ttft_s"]) * 1000
        rows.append(row)
    return rows


def timeline_stats(offsets_ms: Sequence[float]) -> dict[str, float | int | None]:
    """TTFT, gap median/p95/max and decode tok/s of one stream, from its offsets alone (the
    same definitions as atom_core.metrics, counting chunks as tokens)."""
    from ..metrics import percentile

    arrival = [float(x) for x in offsets_ms]
    gaps = [b - a for a, b in zip(arrival, arrival[1:], strict=False)]
    tps = None
    if len(arrival) >= 2 and arrival[-1] > arrival[0]:
        tps = (len(arrival) - 1) / ((arrival[-1] - arrival[0]) / 1000)
    return {
        "tokens": len(arrival),
        "ttft_ms": arrival[0] if arrival else None,
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p95_ms": percentile(gaps, 95),
        "gap_max_ms": max(gaps) if gaps else None,
        "decode_tps": tps,
    }


def message_choices(df: pd.DataFrame, limit: int = 300) -> pd.DataFrame:
    """Recent runs that point at a stored message (chat replies), newest first, with a label
    for a picker. Columns: conversation_id, message_id, model, label."""
    has = df[(df["message_id"] != "") & (df["conversation_id"] != "")]
    recent = has.iloc[::-1].head(limit)
    labels = [
        f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M} · {model} · "
        f"{'' if math.isnan(tok) else int(tok)} tokens"
        + ("" if math.isnan(tps) else f" · {tps:.1f} tok/s")
        for ts, model, tok, tps in zip(recent["ts"], recent["model"].astype(str),
                                       recent["output_tokens"], recent["decode_tps"],
                                       strict=True)
    ]
    out = recent[["conversation_id", "message_id"]].copy()
    out["model"] = recent["model"].astype(str).to_numpy()
    out["label"] = labels
    return out.reset_index(drop=True)


def load_message_timeline(store: HistoryStore, conversation_id: str,
                          message_id: str) -> Timeline | None:
    """The token timeline of one stored chat reply, or None if it is gone or has none."""
    try:
        messages = store.messages(conversation_id)
    except KeyError:
        return None
    for m in messages:
        if m.id == message_id:
            offsets = tuple((m.metrics or {}).get("token_offsets_ms") or ())
            if not offsets:
                return None
            return Timeline(label=m.model or "reply", model=m.model, offsets_ms=offsets,
                            content=m.content, reasoning=m.reasoning, metrics=m.metrics or {})
    return None


def arena_timelines(store: HistoryStore, limit: int = 100) -> list[tuple[str, list[Timeline]]]:
    """Arena rounds with per-slot token timelines, newest first: (round label, slots).

    Reads the "arena_rounds" records (atom_core.arena.ArenaRound.to_record): each slot has a
    label ("A"), a model and metrics; a slot counts when its metrics carry token_offsets_ms,
    as chat messages do. Rounds still running, rounds whose names are still hidden (blind, not
    voted on, not revealed) and rounds without any timeline are skipped.
    """
    out: list[tuple[str, list[Timeline]]] = []
    for record in reversed(store.records("arena_rounds")):
        hidden = record.get("blind") and not record.get("vote") and not record.get("revealed")
        if hidden or record.get("state") == "running":
            continue
        slots = record.get("slots")
        timelines = []
        for i, slot in enumerate(slots if isinstance(slots, list) else []):
            metrics = slot.get("metrics") if isinstance(slot, dict) else None
            offsets = tuple(metrics.get("token_offsets_ms") or ()) if isinstance(
                metrics, dict) else ()
            if not offsets:
                continue
            assert isinstance(slot, dict) and isinstance(metrics, dict)
            model = str(slot.get("model") or "")
            label = f"{slot.get('label') or chr(65 + i)}: {model}"
            timelines.append(Timeline(label=label, model=model, offsets_ms=offsets,
                                      content=str(slot.get("content") or ""),
                                      reasoning=str(slot.get("reasoning") or ""),
                                      metrics=metrics))
        if timelines:
            ts = record.get("ts")
            when = (f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M}"
                    if isinstance(ts, int | float) else "")
            prompt = " ".join(str(record.get("prompt") or "").split())[:60]
            out.append((" · ".join(x for x in (when, prompt) if x) or str(record.get("id")),
                        timelines))
            if len(out) >= limit:
                break
    return out


# -- slow-motion replay -------------------------------------------------------------------------

_PIECE_RE = re.compile(r"\s*\S+|\s+$")


@dataclass(frozen=True, slots=True)
class ReplayFrame:
    at_s: float  # when to show this frame, after the replay starts (already slowed down)
    reasoning: str
    content: str
    tokens: int  # token chunks arrived so far


def replay_frames(timeline: Timeline, speed: float = 1.0) -> list[ReplayFrame]:
    """The recorded stream as frames to redraw: frame i is token chunk i's arrival time
    (divided by `speed`: 0.25 plays four times slower) with the text that had arrived by then.

    The store keeps each chunk's time but not its text, so the text is spread over the chunks
    evenly by words, reasoning first, then the answer; the timing is exactly as recorded.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    r_pieces = _PIECE_RE.findall(timeline.reasoning)
    c_pieces = _PIECE_RE.findall(timeline.content)
    total = len(r_pieces) + len(c_pieces)
    offsets = timeline.offsets_ms
    frames = []
    for i, offset in enumerate(offsets):
        shown = math.ceil((i + 1) * total / len(offsets))
        r = "".join(r_pieces[:shown])
        c = "".join(c_pieces[: max(0, shown - len(r_pieces))])
        frames.append(ReplayFrame(at_s=offset / 1000 / speed, reasoning=r, content=c,
                                  tokens=i + 1))
    return frames
