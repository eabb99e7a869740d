"""Stats: how fast each model really is on this machine, in pictures, from every recorded run."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from atom_core import arena, stats
from atom_core.render import plain_label, safe_markdown
from atom_core.server.routes import ROUTE_LABELS
from atom_core.stats import charts
from atom_core.stats.frame import BAND_LABELS
from atom_core.words import plural
from pages.parts import stats_archive, stats_machine, ui
from pages.parts.stats_server import server_tab, table
from pages.parts.stats_sweep import sweep_tab

CHART_TITLES = {"ttft_box": "Time to first token", "first_answer_box": "Time to first answer",
                "tps_over_time": "Decode speed over time",
                "e2e_vs_tokens": "End-to-end time vs output tokens",
                "ttft_vs_prompt": "Time to first token vs prompt length",
                "tokens_histogram": "Tokens per request"}
CHART_TABS = {"ttft_box": "First token", "tps_over_time": "Speed over time",
              "e2e_vs_tokens": "Time vs length", "ttft_vs_prompt": "First token vs prompt",
              "tokens_histogram": "Tokens per request"}  # the overview's charts, one per tab
LIVE_WINDOW_S = 300.0  # the live panel's window
TABS = ["Overview", "Token timeline", "Concurrency sweep", "Server vs ATOM", "Machine"]
ui.require_app_shell("pages/stats.py")
store = ui.store()


@st.cache_resource(show_spinner=False, max_entries=4)
def history_facts(folder: str, version: Any) -> stats.HistoryFacts:
    """What the filters offer and each series' colour, over the whole history: a few columns
    of the runs archive, once per history version (not on every rerun)."""
    return stats.history_facts(store)


@st.cache_resource(show_spinner=False, max_entries=4)
def window(folder: str, version: Any, flt: stats.RunFilter, lean: bool) -> Any:
    """The runs of the time range, models and servers picked, from the runs archive; `lean`:
    only the overview's columns (no per-run text)."""
    return (stats.window_frame(store, flt, stats.OVERVIEW_COLUMNS) if lean
            else stats.window_frame(store, flt))


def runs_of(flt: stats.RunFilter, *, lean: bool = False) -> Any:
    window_flt = stats.RunFilter(models=flt.models, servers=flt.servers, start=flt.start,
                                 end=flt.end)  # the cache key: what the read depends on
    return window(str(store.data_dir), version, window_flt, lean)


@st.cache_resource(show_spinner=False, max_entries=8)
def overview(version: Any, flt: stats.RunFilter, group: str, _df: Any) -> tuple:
    ov = stats.overview(_df, flt, group=group)
    colors = facts.route_colors if group == "model_route" else facts.colors
    return ov, charts.OverviewFigures(ov, colors)  # built as drawn


def filters(facts: stats.HistoryFacts) -> tuple[stats.RunFilter, str]:
    with st.sidebar:
        st.divider()
        st.markdown("**Filter runs**")
        days = stats_archive.time_range(facts)
        models = st.multiselect("Models", facts.models, placeholder="All models")
        sources = st.multiselect("Source", facts.sources, format_func=stats.source_label,
                                 placeholder="All sources")
        servers = st.multiselect("Server", facts.servers, placeholder="All servers")
        bands = st.multiselect("Prompt length", list(BAND_LABELS),
                               placeholder="Any length")
        routes = st.multiselect("Route", facts.routes, placeholder="All routes",
                                format_func=lambda r: ROUTE_LABELS.get(r, r))
        group = st.segmented_control("Group by", list(stats.GROUPINGS), default="model",
                                     format_func=stats.GROUPINGS.__getitem__, required=True,
                                     key="stats_group", help="One row and one colour per "
                                     "model, or per model and the chat route it answered over.")
    return stats.RunFilter(models=tuple(models), sources=tuple(sources), servers=tuple(servers),
                           bands=tuple(bands), routes=tuple(routes),
                           start=days[0] if days else None,
                           end=days[1] if days else None), str(group or "model")


@st.fragment(run_every=3)
def live_panel(shown_version: Any) -> None:
    now = time.time()  # cheap: a few minutes of runs, read by time from the archive
    live = stats.live_summary(stats.recent_frame(store, now - LIVE_WINDOW_S), now=now,
                              window_s=LIVE_WINDOW_S)
    if not live.active:
        st.caption(":material/radio_button_unchecked: Live: nothing running. This panel "
                   "updates itself while a chat, arena, prompt set or sweep records runs.")
        return
    st.markdown(f":green[:material/radio_button_checked:] **Live**: {plural(live.runs, 'run')} "
                f"in the last {live.window_s / 60:.0f} min, the latest "
                f"{live.last_run_ago_s:.0f} s ago")
    table(live.per_model, {c: stats.SUMMARY_COLUMNS[c] for c in stats.LIVE_COLUMNS}, key="live")
    if store.runs_version() != shown_version and st.button("Show the new runs in the charts",
                                              icon=":material/sync:"):
        st.rerun(scope="app")


def overview_tab(version: Any, df: Any, flt: stats.RunFilter, group: str) -> None:
    live_panel(version)
    ov, figs = overview(version, flt, group, df)
    if not ov.runs:
        if facts.runs:
            st.info("No runs match these filters.", icon=":material/filter_alt_off:")
        return
    best = stats.headline(ov.summary)
    cols = st.columns(4)
    cols[0].metric("Runs", f"{ov.runs:,}")
    cols[1].metric("Models" if group == "model" else "Models × routes", len(ov.summary))
    for col, key, label in ((cols[2], "fastest", "Fastest decoding"),
                            (cols[3], "quickest", "Quickest first answer")):
        if best[key]:
            with col.container(border=True, key=f"card_{key}"):  # the full name, wrapped
                st.caption(label)
                st.markdown(f"**{plain_label(str(best[key][0]))}**")
                st.caption(best[key][1])
    st.caption(f"From every run recorded here that matches the filters ({ov.runs:,}): chat, "
               "arena, prompt sets, sweeps and bench. The Arena leaderboard's speeds use Arena "
               "runs only.")
    st.plotly_chart(figs["speed_map"], key="speed_map")
    shown, held_back = stats.summary_view(ov.summary)
    row = stats.name_row_height(ov.summary["model"])  # long names wrap, whole
    table(ov.summary, shown, key="summary", widths={"model": stats.MODEL_COLUMN_PX},
          helps=stats.SUMMARY_HELP, row_height=row,
          height=min(38 + (row or 35) * len(ov.summary), 740))
    if held_back:
        st.caption(held_back)
    st.download_button("Download summary (CSV)", lambda: stats.summary_csv(ov.summary),
                       file_name="atom-model-summary.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore")
    gaps = charts.chart_gaps(ov)
    # One chart drawn at a time, the open tab's: the five at once took seconds of plotly in
    # the browser on a busy machine (docs/BENCHMARKS.md, page switches).
    views = st.tabs(list(CHART_TABS.values()), key="overview_chart", on_change="rerun")
    for view, name in zip(views, CHART_TABS, strict=True):
        if view.open:
            with view:
                overview_chart(name, figs, gaps)


def overview_chart(name: str, figs: dict[str, Any], gaps: dict[str, str]) -> None:
    if name == "ttft_box":
        start = st.segmented_control(
            "First token chart", ["First token (any)", "First answer token"],
            default="First token (any)", key="start_chart",
            help="TTFT counts a reasoning model's first thinking token; the first answer token "
                 "is when the reply visibly begins. They are the same for models that don't "
                 "reason.")
        name = "first_answer_box" if start == "First answer token" else name
    if name in gaps:
        st.caption(f"**{CHART_TITLES[name]}**: {gaps[name]}")
    else:
        st.plotly_chart(figs[name], key=name)


def timeline_tab(df: Any, colors: dict) -> None:
    rounds = stats.arena_timelines(arena.load_rounds(store))
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
            label = plain_label(timelines[i].label)
            st.caption(f"{label} · token {frame.tokens} · {frame.at_s:.2f} s")
            if frame.reasoning:
                st.caption(safe_markdown(frame.reasoning))
            st.markdown(safe_markdown(frame.content) + ("" if n == len(frames) - 1 else "▌"))


st.subheader("Stats")
stats_archive.catch_up(store)  # the first start on a long history: a progress bar
version = store.runs_version()
facts = history_facts(str(store.data_dir), version)
if facts.unreadable:  # damaged or hand-edited rows: never a crash
    st.warning(f"Left out: {plural(facts.unreadable, 'stored run')} that could not be read.",
               icon=":material/warning:")
if not facts.runs:
    st.info("No runs yet. Every reply in Chat, every arena race, prompt set and command-line "
            "bench adds one; come back after a few.", icon=":material/monitoring:")
flt, group = filters(facts)
colors = facts.colors
if facts.runs:
    stats_archive.range_caption(facts, (flt.start, flt.end) if flt.start and flt.end else None)
    stats_archive.export_buttons(store, flt)
views = (lambda: overview_tab(version, runs_of(flt, lean=True), flt, group),
         lambda: timeline_tab(flt.apply(runs_of(flt)), colors),
         lambda: sweep_tab(runs_of(flt)),
         lambda: server_tab(flt.apply(runs_of(flt)), store),
         lambda: stats_machine.machine_tab(store))
for tab, draw in zip(st.tabs(TABS, key="stats_tab", on_change="rerun"), views, strict=True):
    if tab.open:
        with tab:
            draw()
