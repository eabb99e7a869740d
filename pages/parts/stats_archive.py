"""Stats: the runs archive seen from the page: catching it up with a progress bar (a history
from before the archive, or one whose archive was lost), the time range, and the runs export."""

from __future__ import annotations

import logging
import time
from datetime import date

import streamlit as st

from atom_core import stats
from atom_core.errors import AtomError
from pages.parts import ui

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def _caught_up() -> dict[str, object]:
    """Per data folder, the runs version the archive was last brought up to date at."""
    return {}


def catch_up(store: ui.HistoryStore) -> None:
    """Brings the runs archive up to date; a progress bar while there is real work (the first
    start on a long history). A failure is one sentence: Stats still reads every run."""
    key, version = str(store.data_dir), store.runs_version()
    if _caught_up().get(key) == version:
        return
    bar = None
    shown = 0.0

    def progress(share: float, runs: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = st.progress(0.0, "Archiving the run history for quick Stats…")
        if time.monotonic() - shown > 0.2 or share >= 1:
            shown = time.monotonic()
            bar.progress(min(share, 1.0), f"Archiving the run history for quick Stats: "
                                          f"{runs:,} runs so far ({share:.0%})")

    try:
        store.archive_runs(progress)
    except (AtomError, OSError) as exc:  # a read-only folder, one written by a newer ATOM
        log.warning("Runs archive not brought up to date: %s", exc)
        st.warning("The runs archive could not be brought up to date; Stats reads the runs it "
                   "lacks from the history, more slowly.", icon=":material/warning:")
        return
    if bar is not None:
        bar.empty()
    _caught_up()[key] = store.runs_version()


def time_range(facts: stats.HistoryFacts) -> tuple[date, date] | None:
    """The sidebar's time range slider (the last 30 days until moved); None without runs."""
    if facts.first_day is None:
        return None
    start, end = stats.default_days(facts, date.today())
    low = min(facts.first_day, start)
    if low >= end:
        return start, end
    picked = st.slider("Time range", min_value=low, max_value=end, value=(start, end),
                       format="YYYY-MM-DD", key="stats_days",
                       help=f"Stats opens on the last {stats.DEFAULT_DAYS} days; move either "
                            "end to see older runs.")
    return picked[0], picked[1]


def range_caption(facts: stats.HistoryFacts, days: tuple[date, date] | None) -> None:
    if days is None:
        return
    default = days == stats.default_days(facts, date.today())
    st.caption(f"Runs from {days[0]:%d %b %Y} to {days[1]:%d %b %Y}"
               + (f": the last {stats.DEFAULT_DAYS} days. Move the time range in the sidebar "
                  "to see older runs." if default else "."))


def export_buttons(store: ui.HistoryStore, flt: stats.RunFilter) -> None:
    """The runs the filters pick, every stored field, made on the click."""
    cols = st.columns(2)
    with cols[0]:
        _export_button(store, flt, "parquet", "Download runs (Parquet)")
    with cols[1]:
        _export_button(store, flt, "csv", "Download runs (CSV)")


def _export_button(store: ui.HistoryStore, flt: stats.RunFilter, fmt: str,
                   text: str) -> None:
    st.download_button(text, lambda: stats.export_runs(store, flt, fmt),
                       file_name=f"atom-runs.{fmt}", mime=stats.EXPORT_FORMATS[fmt],
                       icon=":material/download:", on_click="ignore", key=f"export_{fmt}",
                       help="Every run the filters pick, with every field ATOM stores: for "
                            "pandas, DuckDB or a notebook.")
