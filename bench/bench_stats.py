"""How quick is the Stats page with a long history?

    python bench/bench_stats.py [--runs 100000] [--conversations 10000] [--reps 5]

Builds a temp data folder with RUNS runs across 20 models (each model with its own speed, so
the charts have something to tell) and CONVERSATIONS conversations whose replies carry token
timelines, then times, in this process:

- the baseline: json.load of every runs shard (the least any reader of the history must do),
- store.run_rows() on a fresh store (cold parse cache),
- the runs frame (atom_core.stats.runs_frame), the per-model summary from that frame, and
  the whole overview (summary plus every chart frame and plotly figure),
- the page's runs cache: its first build, its refresh after one new run (what the live panel
  pays while a prompt set records runs), and one live-panel tick,
- the Stats page's first render in Streamlit's AppTest (a new session, fresh caches),
  and a second render (what a filter change or rerun costs, caches warm),
- the same first render in a fresh Python process, so that importing pandas and plotly is
  paid too (what the first visit after `make run` costs).

Then the runs archive (issue 24; history/tinydb_archive.py), each figure beside a baseline
measured in the same run:

- archiving the whole history on a first start (the archive removed, a fresh store),
- a bare `pyarrow.parquet.read_table` of the columns Stats shows, over the last 30 days and
  over all runs (the baseline), read before and after the page, median of both,
- the Stats page's first render and a rerun in AppTest (it reads the archive),
- adding one run at this size (median and max of many, fsync on, as the app writes),
- a 10,000-run sweep's writes through RunBatch, and 500 runs one add_run at a time,
- the peak memory (max RSS) of a fresh process that renders the Stats page.

`--skip-rows` leaves out the row-path steps above (run_rows, frames; minutes at 1M runs);
`--data DIR` builds the history there once and reuses it on the next run.

Prints figures; asserts nothing. Goals: first render <= 2 s, summary <= 0.5 s; at 1M runs
first render <= 2 s and <= 3 x the bare read, rerun <= 0.3 s, archiving <= 60 s, one run
<= 2 ms, a 10,000-run sweep's writes <= 1 s.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from tests.fixtures.realistic_runs import (  # noqa: E402
    build_history,
    realistic_runs,
)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def median_s(fn: Callable[[], object], reps: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(reps))


def app_test_renders(data_dir: Path) -> tuple[float, float, int]:
    """(first render s, second render s, plotly charts drawn) of the Stats page in AppTest."""
    os.environ["ATOM_DATA_DIR"] = str(data_dir)
    os.environ["ATOM_SERVER_URL"] = "http://127.0.0.1:9"  # nothing there: the page must cope
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from atom_core.history import reset_for_tests

    original = PagesManager.__init__

    def init(self: PagesManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False  # as tests/ui/conftest.py does

    PagesManager.__init__ = init  # type: ignore[method-assign]
    st.cache_resource.clear()
    reset_for_tests()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()  # the shell and the Chat page: not what is measured
    first, _ = timed(lambda: at.switch_page("pages/stats.py").run())
    assert not at.exception, at.exception
    second, _ = timed(lambda: at.run())
    return first, second, len(at.get("plotly_chart"))


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_read_s(data: Path, since: float | None) -> float:
    """pyarrow.parquet.read_table of the Stats frame's columns from the archive's parts."""
    import pyarrow.parquet as pq

    from atom_core.history.run_columns import FRAME_COLUMNS

    parts = sorted(str(p) for p in (data / "archive" / "runs").glob("*.parquet"))
    filters = [("ts", ">=", since)] if since is not None else None
    t0 = time.perf_counter()
    table = pq.read_table(parts, columns=list(FRAME_COLUMNS), filters=filters)
    table.to_pandas()
    return time.perf_counter() - t0


def archive_bench(data: Path, runs: int, reps: int) -> None:
    import shutil

    from atom_core.history.batch import RunBatch
    from atom_core.history.run_columns import FRAME_COLUMNS
    from atom_core.history.tinydb_store import TinyDBHistoryStore
    from atom_core.runs import RunRecord

    load = os.getloadavg()[0]
    shutil.rmtree(data / "archive", ignore_errors=True)  # a history from before the archive
    ticks: list[float] = []
    archived_s, archived = timed(lambda: TinyDBHistoryStore(data).archive_runs(
        lambda share, n: ticks.append(share)))
    parts = len(list((data / "archive" / "runs").glob("*.parquet")))
    since = time.time() - 30 * 86400
    before = [bare_read_s(data, since) for _ in range(reps)]
    all_before = [bare_read_s(data, None) for _ in range(max(1, reps // 2))]
    first, second, drawn = app_test_renders(data)
    after = [bare_read_s(data, since) for _ in range(reps)]
    all_after = [bare_read_s(data, None) for _ in range(max(1, reps // 2))]
    bare = statistics.median(before + after)
    bare_all = statistics.median(all_before + all_after)
    window = TinyDBHistoryStore(data).runs_table(["ts"], since=since).table.num_rows
    fresh = subprocess.run([sys.executable, __file__, "--render-only", str(data), "--rss"],
                           capture_output=True, text=True, check=True)
    fresh_first, rss = (float(x) for x in fresh.stdout.strip().splitlines()[-1].split())

    from atom_core.files import atomic_write_bytes
    from atom_core.history.tinydb_records import RecordsPart

    store = TinyDBHistoryStore(data)  # fsync on, as the app
    shard = max((data / "tables" / "runs").glob("*.json"))
    blob = os.urandom(shard.stat().st_size)
    scratch = data / "bench-scratch.bin"
    one, bare_one, fsynced = [], [], []
    rows_in = [RecordsPart.append, TinyDBHistoryStore.append]  # before the archive / now
    for i, row in enumerate(realistic_runs(400, seed=123, days=0.01)):  # alternated
        fsynced.append(timed(lambda: atomic_write_bytes(scratch, blob))[0])
        write = rows_in[i % 2]
        secs = timed(lambda write=write, row=row: write(store, "runs", dict(row)))[0]
        (one if i % 2 else bare_one).append(secs)
    scratch.unlink()
    sweep = [RunRecord.from_record(r) for r in realistic_runs(10_000, seed=125, days=0.01)]

    def write_sweep() -> None:
        with RunBatch(store, max_wait_s=3600) as batch:  # batches of 500, as a fast sweep's
            for run in sweep:
                batch.add(run)

    def bare_sweep() -> None:  # the same batches into the shards only, no archive
        for k in range(0, len(sweep), 500):
            RecordsPart.append_many(store, "runs", [r.to_record() for r in sweep[k:k + 500]])

    sweep_s, bare_sweep_s = [], []
    for _ in range(2):
        bare_sweep_s.append(timed(bare_sweep)[0])
        sweep_s.append(timed(write_sweep)[0])
    nofsync = TinyDBHistoryStore(data, durable=False)
    cpu_sweep_s = timed(lambda: [nofsync.add_runs(sweep[k:k + 500])
                                 for k in range(0, len(sweep), 500)])[0]
    load_after = os.getloadavg()[0]
    print(f"\nRuns archive at {runs:,} runs ({parts} Parquet parts; {window:,} runs in the "
          f"last 30 days), load average {load:.1f} -> {load_after:.1f}")
    print(f"{'Step':<62}{'seconds':>9}{'ratio':>16}")
    rows = (
        (f"baseline: pq.read_table, Stats' {len(FRAME_COLUMNS)} columns, last 30 days", bare,
         "1.0x"),
        ("baseline: pq.read_table, the same columns, all runs", bare_all,
         f"{bare_all / bare:.1f}x"),
        (f"archiving the whole history on first start ({len(ticks)} progress ticks)",
         archived_s, f"{archived:,} runs"),
        (f"Stats first render, AppTest ({drawn} charts)", first, f"{first / bare:.1f}x bare"),
        ("Stats rerun (caches warm)", second, f"{second / bare:.1f}x bare"),
        ("Stats first render in a fresh process (imports too)", fresh_first,
         f"{fresh_first / bare:.1f}x bare"),
        ("baseline: one fsync'd atomic write of a shard-sized file", statistics.median(fsynced),
         "1.0x"),
        ("one run into the shards only (before the archive), median", statistics.median(
            bare_one), f"{statistics.median(bare_one) / statistics.median(fsynced):.1f}x fsync"),
        ("one run appended with the archive, median of 200 (fsync)", statistics.median(one),
         f"{statistics.median(one) / statistics.median(bare_one):.2f}x before"),
        ("one run appended with the archive, max of 200", max(one),
         f"{max(one) / max(bare_one):.2f}x before's max"),
        ("10,000-run sweep, 20 batches into the shards only", statistics.median(bare_sweep_s),
         "1.0x"),
        ("10,000-run sweep through RunBatch (shards + archive)", statistics.median(sweep_s),
         f"{statistics.median(sweep_s) / statistics.median(bare_sweep_s):.2f}x shards only"),
        ("the same sweep's writes without fsync (CPU: durable=False)", cpu_sweep_s, ""),
    )
    for label, secs, ratio in rows:
        print(f"{label:<62}{secs:>9.3f}{ratio:>16}")
    print(f"Peak memory (max RSS) of a fresh process rendering Stats: {rss:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--render-only", metavar="DATA_DIR",
                        help="(internal) print the first render of DATA_DIR's Stats page, s")
    parser.add_argument("--rss", action="store_true", help="(internal) and the peak RSS, MB")
    parser.add_argument("--skip-rows", action="store_true",
                        help="only the archive's figures (the row path takes minutes at 1M)")
    parser.add_argument("--data", metavar="DIR", help="build the history here once, reuse it")
    args = parser.parse_args()
    if args.render_only:
        first = app_test_renders(Path(args.render_only))[0]
        print(f"{first} {peak_rss_mb()}" if args.rss else first)
        return

    from atom_core import stats
    from atom_core.history.tinydb_store import TinyDBHistoryStore
    from atom_core.runs import RunRecord
    from atom_core.stats import charts

    with tempfile.TemporaryDirectory(prefix="atom-bench-stats-") as tmp:
        data = Path(args.data) if args.data else Path(tmp) / "data"
        if not (data / "tables" / "runs").is_dir():
            built, _ = timed(lambda: build_history(data, args.runs, args.conversations))
            files = sum(1 for _ in data.rglob("*.json"))
            size = sum(p.stat().st_size for p in data.rglob("*.json")) / 1e6
            print(f"Built {args.runs:,} runs across 20 models and {args.conversations:,} "
                  f"conversations in {built:.1f} s: {size:.0f} MB in {files:,} files\n")
        if args.skip_rows:
            archive_bench(data, args.runs, args.reps)
            return

        shards = sorted((data / "tables" / "runs").glob("*.json"))
        raw = median_s(lambda: [json.loads(p.read_bytes()) for p in shards], args.reps)
        cold, rows = timed(TinyDBHistoryStore(data).run_rows)
        assert isinstance(rows, list) and len(rows) == args.runs
        frame_s = median_s(lambda: stats.runs_frame(rows), args.reps)
        df = stats.runs_frame(rows)
        summary_s = median_s(lambda: stats.model_summary(df), args.reps)
        filtered = stats.RunFilter(sources=("chat",))
        filtered_s = median_s(lambda: stats.model_summary(filtered.apply(df)), args.reps)
        colors = stats.model_colors(df)
        overview_s = median_s(lambda: charts.overview_figures(stats.overview(df), colors),
                              args.reps)
        end_to_end = median_s(lambda: stats.model_summary(
            stats.runs_frame(TinyDBHistoryStore(data).run_rows())), args.reps)
        cache = stats.RunsCache()
        cache_first, _ = timed(lambda: cache.snapshot(TinyDBHistoryStore(data)))
        live_store = TinyDBHistoryStore(data)
        refresh = []
        for row in realistic_runs(args.reps, seed=99, days=0.002):  # arriving while it is open
            live_store.add_run(RunRecord.from_record(row))
            refresh.append(timed(lambda: cache.snapshot(live_store))[0])
        refresh_s = statistics.median(refresh)
        live_s = median_s(lambda: stats.live_summary(cache.frame(live_store), now=time.time()),
                          args.reps)
        first, second, drawn = app_test_renders(data)
        fresh = subprocess.run([sys.executable, __file__, "--render-only", str(data)],
                               capture_output=True, text=True, check=True)
        cold_process = float(fresh.stdout.strip().splitlines()[-1])

        print(f"{'Step (median of ' + str(args.reps) + ')':<58}{'seconds':>9}{'x baseline':>12}")
        for label, secs in (
            (f"baseline: json.loads of {len(shards)} runs shards", raw),
            ("store.run_rows() on a fresh store (cold parse cache)", cold),
            (f"runs frame from {args.runs:,} rows", frame_s),
            ("summary per model from the frame", summary_s),
            ("summary, source=chat filter applied first", filtered_s),
            ("summary from disk: fresh store -> frame -> summary", end_to_end),
            ("overview: summary + every chart frame + plotly figures", overview_s),
            ("page's runs cache, first build (reads the shard files)", cache_first),
            ("page's runs cache after one new run (reads 1 shard)", refresh_s),
            ("live panel tick (cache check + last 5 min summary)", live_s),
            (f"Stats page first render, AppTest ({drawn} charts)", first),
            ("Stats page second render (caches warm)", second),
            ("Stats page first render in a fresh process (imports too)", cold_process),
        ):
            print(f"{label:<58}{secs:>9.3f}{secs / raw:>11.1f}x")
        goal = "met" if first <= 2 and summary_s <= 0.5 else "NOT met"
        print(f"\nGoals (first render <= 2 s, summary <= 0.5 s): {goal}. "
              f"{math.ceil(args.runs / len(shards)):,} runs per shard.")
        archive_bench(data, args.runs, args.reps)


if __name__ == "__main__":
    main()
