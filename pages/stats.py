"""Stats: how fast each model really is on this machine, in pictures, from every recorded run."""

from __future__ import annotations

import threading
import time
from typing import Any

import streamlit as st

from atom_core import stats
from atom_core.errors import AtomError
from atom_core.measure import sweep
from atom_core.server.native import COMPARISON_COLUMNS, comparison_rows, native_chat
from atom_core.stats import charts
from atom_core.types import Dialect, SamplingOptions
from pages import _ui as ui

FORMATS = {"int": "%d", "seconds": "%.2f", "tps": "%.1f", "tokens": "%.0f", "percent": "percent"}
CHART_TITLES = {"tps_over_time": "Decode speed over time",
                "e2e_vs_tokens": "End-to-end time vs output tokens",
                "ttft_vs_prompt": "Time to first token vs prompt length",
                "tokens_histogram": "Tokens per request"}
TABS = ["Overview", "Token timeline", "Concurrency sweep", "Server vs ATOM"]
ui.require_app_shell("pages/stats.py")
store = ui.store()


@st.cache_resource(show_spinner=False)
def runs_cache() -> stats.RunsCache:
    return stats.RunsCache()


@st.cache_resource(show_spinner=False, max_entries=8)
def overview(version: int, flt: stats.RunFilter, _df: Any, _colors: dict) -> tuple:
    ov = stats.overview(_df, flt)
    return ov, charts.overview_figures(ov, _colors)


def filters(df: Any) -> stats.RunFilter:
    opts, bounds = stats.filter_options(df), stats.date_bounds(df)
    with st.sidebar:
        st.divider()
        st.markdown("**Filter runs**")
        models = st.multiselect("Models", opts["models"], placeholder="All models")
        sources = st.multiselect("Source", opts["sources"], format_func=stats.source_label,
                                 placeholder="All sources")
        servers = st.multiselect("Server", opts["servers"], placeholder="All servers")
        days = st.date_input("Dates", bounds, *bounds) if bounds else ()
        bands = st.multiselect("Prompt length", opts["bands"], placeholder="Any length")
    days = tuple(days) if isinstance(days, tuple | list) else (days,)
    return stats.RunFilter(models=tuple(models), sources=tuple(sources), servers=tuple(servers),
                           bands=tuple(bands), start=days[0] if days else None,
                           end=days[-1] if days else None)


def table(rows: Any, columns: dict[str, tuple[str, str]], **kw: Any) -> None:
    config = {c: st.column_config.NumberColumn(label, format=FORMATS[kind]) if kind in FORMATS
              else st.column_config.TextColumn(label) for c, (label, kind) in columns.items()}
    st.dataframe(rows, hide_index=True, column_config=config, column_order=list(columns),
                 placeholder="", **kw)  # a missing value is a blank cell, not "None"


@st.fragment(run_every=3)
def live_panel(shown_version: int) -> None:
    version, df = runs_cache().snapshot(store)  # cheap: only new shards are read
    live = stats.live_summary(df, now=time.time())
    if not live.active:
        st.caption(":material/radio_button_unchecked: Live: nothing running. This panel "
                   "updates itself while a chat, arena, prompt set or sweep records runs.")
        return
    st.markdown(f":green[:material/radio_button_checked:] **Live**: {live.runs} runs in the "
                f"last {live.window_s / 60:.0f} min, the latest {live.last_run_ago_s:.0f} s ago")
    table(live.per_model, {c: stats.SUMMARY_COLUMNS[c] for c in stats.LIVE_COLUMNS}, key="live")
    if version != shown_version and st.button("Show the new runs in the charts",
                                              icon=":material/sync:"):
        st.rerun(scope="app")


def overview_tab(version: int, df: Any, flt: stats.RunFilter, colors: dict) -> None:
    live_panel(version)
    ov, figs = overview(version, flt, df, colors)
    if not ov.runs:
        if len(df):
            st.info("No runs match these filters.", icon=":material/filter_alt_off:")
        return
    best = stats.headline(ov.summary)
    cols = st.columns(4)
    cols[0].metric("Runs", f"{ov.runs:,}")
    cols[1].metric("Models", len(ov.summary))
    for col, key, label in ((cols[2], "fastest", "Fastest decoding"),
                            (cols[3], "quickest", "Quickest first token")):
        if best[key]:
            with col.container(border=True, key=f"card_{key}"):  # the full name, wrapped
                st.caption(label)
                st.markdown(f"**{ui.plain(best[key][0])}**")
                st.caption(best[key][1])
    st.caption(f"From every run recorded here that matches the filters ({ov.runs:,}): chat, "
               "arena, prompt sets, sweeps and bench. The Arena leaderboard's speeds use Arena "
               "runs only.")
    st.plotly_chart(figs["speed_map"], key="speed_map")
    table(ov.summary, stats.SUMMARY_COLUMNS, key="summary",
          height=min(38 + 35 * len(ov.summary), 740))
    st.download_button("Download summary (CSV)", stats.summary_csv(ov.summary),
                       file_name="atom-model-summary.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
    gaps = charts.chart_gaps(ov)
    for name in ("ttft_box", "tps_over_time", "e2e_vs_tokens", "ttft_vs_prompt",
                 "tokens_histogram"):
        if name in gaps:
            st.caption(f"**{CHART_TITLES[name]}**: {gaps[name]}")
        else:
            st.plotly_chart(figs[name], key=name)


def timeline_tab(df: Any, colors: dict) -> None:
    rounds = stats.arena_timelines(store)
    if rounds and st.segmented_control("Show", ["Chat reply", "Arena round"],
                                       default="Chat reply", key="tl_kind") == "Arena round":
        i = st.selectbox("Arena round", range(len(rounds)), format_func=lambda i: rounds[i][0])
        timelines = rounds[i or 0][1]
    else:
        choices = stats.message_choices(df)
        if choices.empty:
            st.info("No chat replies with a recorded timeline match the filters yet.")
            return
        i = st.selectbox("Reply", range(len(choices)), format_func=lambda i: choices.label[i])
        found = stats.load_message_timeline(store, choices.conversation_id[i or 0],
                                            choices.message_id[i or 0])
        if found is None:
            st.warning("That reply is gone or has no token timeline.")
            return
        timelines = [found]
    table(stats.timeline_table(timelines), stats.TIMELINE_COLUMNS, key="timeline_stats")
    st.plotly_chart(charts.token_timeline(stats.timeline_frame(timelines), colors),
                    key="timeline")
    replay(timelines)


@st.fragment
def replay(timelines: list[stats.Timeline]) -> None:
    speed = st.segmented_control("Replay speed", ["1x", "0.25x"], default="1x", key="speed")
    if not st.button("Replay the stream", icon=":material/slow_motion_video:"):
        return
    factor = 0.25 if speed == "0.25x" else 1.0
    boxes = [c.empty() for c in st.columns(len(timelines))]
    frames = sorted(((f, i) for i, t in enumerate(timelines)
                     for f in stats.replay_frames(t, factor)), key=lambda p: p[0].at_s)
    start = time.perf_counter()
    for n, (frame, i) in enumerate(frames):
        time.sleep(max(0.0, frame.at_s - (time.perf_counter() - start)))
        later = frames[n + 1:n + 2]
        if later and later[0][1] == i and later[0][0].at_s < time.perf_counter() - start:
            continue  # behind schedule: the next frame of this stream is already due
        with boxes[i].container(border=True):
            st.caption(f"{timelines[i].label} · token {frame.tokens} · {frame.at_s:.2f} s")
            if frame.reasoning:
                st.markdown(f":gray[*{frame.reasoning}*]")
            st.markdown(frame.content + ("" if n == len(frames) - 1 else "▌"))


def sweep_tab(df: Any) -> None:
    status, picked = ui.server_status(), ui.selected_model()
    models = [m.key for m in status.models.llms] if status.models else []
    if status.error is not None:
        ui.show_error(status.error)
    with st.form("sweep_form"):
        a, b = st.columns(2)
        model = a.selectbox("Model", models, models.index(picked) if picked in models else 0)
        levels = b.text_input("Requests in flight (levels)", "1,2,4,8")
        prompt = st.text_area("Prompt", "Explain in three sentences why the sky is blue.")
        c, d, e, f = st.columns(4)
        per_level = c.number_input("Requests per level", 1, 200, 8)
        max_tokens = d.number_input("Max tokens", 1, 8192, 128)
        target = sweep.SweepTarget(
            min_tps_per_user=e.number_input("Target: tok/s per user ≥", 0.0, 1e4, 10.0),
            max_ttft_p90_s=f.number_input("Target: TTFT p90 ≤ (s)", 0.0, 600.0, 2.0))
        start = st.form_submit_button("Run sweep", icon=":material/speed:", disabled=not models)
    slots = sweep.parallel_slots(status.models.get(model) if status.models and model else None)
    if slots:
        st.caption(f"The server runs {model} with {slots} parallel slots: above {slots} "
                   "requests in flight, the rest wait in a queue.")
    if start and model:
        try:
            run_sweep(model, prompt, sweep.parse_levels(levels), per_level, max_tokens, target)
        except ValueError as e:
            st.error(str(e))
    found = sweep.sweeps_in_history(df)
    if found.empty:
        st.caption("No sweeps yet. From the command line: `python -m atom_core bench "
                   "--models KEY --prompt Hi --concurrency 1,2,4,8 --requests 8`.")
        return
    i = st.selectbox("Sweep", range(len(found)), format_func=lambda i: found.label[i]) or 0
    show_sweep(sweep.levels_from_runs(sweep.sweep_runs(df, found.sweep_id[i])), target,
               slots if found.model[i] == model else None, "sweep_result")


def show_sweep(levels: list[sweep.LevelResult], target: sweep.SweepTarget, slots: int | None,
               key: str) -> None:
    v = sweep.verdict(levels, target)
    (st.success if v.best else st.warning)(v.sentence, icon=":material/groups:")
    st.plotly_chart(charts.sweep_chart(sweep.levels_frame(levels), target, slots), key=key)
    table(sweep.levels_frame(levels), sweep.LEVEL_COLUMNS, key=f"{key}_table")


def run_sweep(model: str, prompt: str, levels: list[int], per_level: int, max_tokens: int,
              target: sweep.SweepTarget) -> None:
    cancel, rows, total = threading.Event(), [], per_level * len(levels)
    progress, live = st.progress(0.0, "Starting the sweep…"), st.empty()
    records = sweep.run_sweep(ui.client(), model=model, prompt=prompt, levels=levels,
                              requests_per_level=per_level, cancel=cancel,
                              options=SamplingOptions(max_tokens=max_tokens))
    try:  # a click anywhere stops the script here; `finally` ends the requests in flight
        for record in records:
            rows.append(record.run_row("sweep"))
            store.add_run(rows[-1])
            progress.progress(len(rows) / total, f"{len(rows)} of {total} requests · "
                                                 f"{record.job.tags['concurrency']} in flight")
            with live.container():
                show_sweep(sweep.levels_from_runs(stats.runs_frame(rows)), target, None,
                           f"sweep_live_{len(rows)}")
    finally:
        cancel.set()
        records.close()
    st.rerun()


def server_tab() -> None:
    status, picked = ui.server_status(), ui.selected_model()
    if status.error is not None:
        ui.show_error(status.error)
        return
    if status.dialect is not Dialect.LMSTUDIO_04:
        st.info("Only LM Studio 0.4's native API reports the server's own figures; this "
                "server does not, so ATOM's own measurement is all there is.")
        return
    st.caption("One request over LM Studio's native `POST /api/v1/chat`: ATOM times the "
               "stream itself and shows its figures beside the ones the server reports.")
    models = [m.key for m in status.models.llms] if status.models else []
    with st.form("server_form"):
        model = st.selectbox("Model", models, models.index(picked) if picked in models else 0)
        prompt = st.text_input("Prompt", "Write a haiku about fast computers.")
        start = st.form_submit_button("Measure with server stats", icon=":material/compare:")
    if start and model:
        try:
            with st.spinner(f"Asking {model}…"):
                result = native_chat(ui.client(), model, prompt, max_output_tokens=256)
            store.add_run(result.run_row())
            st.session_state.server_check = (model, comparison_rows(result))
        except AtomError as e:
            ui.show_error(e)
    if "server_check" in st.session_state:
        model, rows = st.session_state.server_check
        st.markdown(f"**{model}**")
        table(rows, COMPARISON_COLUMNS, key="server_comparison")


version, runs = runs_cache().snapshot(store)
st.subheader("Stats")
if runs.empty:
    st.info("No runs yet. Every reply in Chat, every arena race, prompt set and command-line "
            "bench adds one; come back after a few.", icon=":material/monitoring:")
flt = filters(runs)
colors = stats.model_colors(runs)
views = (lambda: overview_tab(version, runs, flt, colors),
         lambda: timeline_tab(flt.apply(runs), colors), lambda: sweep_tab(runs), server_tab)
for tab, draw in zip(st.tabs(TABS, key="stats_tab", on_change="rerun"), views, strict=True):
    if tab.open:
        with tab:
            draw()
