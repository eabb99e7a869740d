"""Stats, the "Concurrency sweep" tab: how many people one model serves at once, over the chat
route picked for it. Drawing only; the logic is in atom_core.measure.sweep."""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st

from atom_core import stats
from atom_core.measure import sweep
from atom_core.render import plain_label, safe_markdown
from atom_core.server.routes import ROUTE_LABELS, ROUTES
from atom_core.stats import charts
from atom_core.types import SamplingOptions
from pages import _ui as ui
from pages._stats_server import table


def sweep_tab(df: Any) -> None:
    status, picked, client = ui.server_status(), ui.selected_model(), ui.client()
    models = [m.key for m in status.models.llms] if status.models else []
    if status.error is not None:
        ui.show_error(status.error)
    with st.form("sweep_form"):
        a, b, r = st.columns(3)
        model = a.selectbox("Model", models, models.index(picked) if picked in models else 0)
        levels = b.text_input("Requests in flight (levels)", "1,2,4,8")
        route = r.selectbox("Route", ROUTES, key="sweep_route",
                            format_func=lambda k: ROUTE_LABELS[k] + (
                                " — not offered here" if client.route_problem(k) else ""),
                            help="The chat route every request of the sweep takes.")
        prompt = st.text_area("Prompt", "Explain in three sentences why the sky is blue.")
        c, d, e, f = st.columns(4)
        per_level = c.number_input("Requests per level", 1, 200, 8)
        max_tokens = d.number_input("Max tokens", 1, 8192, 128)
        target = sweep.SweepTarget(
            min_tps_per_user=e.number_input("Target: tok/s per user ≥", 0.0, 1e4, 10.0),
            max_ttft_p90_s=f.number_input("Target: TTFT p90 ≤ (s)", 0.0, 600.0, 2.0))
        start = st.form_submit_button("Run sweep", icon=":material/speed:", disabled=not models)
    if problem := client.route_problem(str(route)):
        st.caption(problem)
    slots = sweep.parallel_slots(status.models.get(model) if status.models and model else None)
    if slots:
        st.caption(f"The server runs {plain_label(model)} with {slots} parallel slots: above "
                   f"{slots} requests in flight, the rest wait in a queue.")
    if start and model:
        try:
            run_sweep(model, prompt, sweep.parse_levels(levels), per_level, max_tokens, target,
                      str(route))
        except ValueError as e:
            st.error(safe_markdown(str(e)))
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
              target: sweep.SweepTarget, route: str) -> None:
    cancel, rows, total = threading.Event(), [], per_level * len(levels)
    progress, live = st.progress(0.0, "Starting the sweep…"), st.empty()
    records = sweep.run_sweep(ui.client(), model=model, prompt=prompt, levels=levels,
                              requests_per_level=per_level, cancel=cancel, route=route,
                              options=SamplingOptions(max_tokens=max_tokens))
    try:  # a click anywhere stops the script here; `finally` ends the requests in flight
        for record in records:
            rows.append(record.run_row("sweep"))
            ui.store().add_run(rows[-1])
            progress.progress(len(rows) / total, f"{len(rows)} of {total} requests · "
                                                 f"{record.job.tags['concurrency']} in flight")
            with live.container():
                show_sweep(sweep.levels_from_runs(stats.runs_frame(rows)), target, None,
                           f"sweep_live_{len(rows)}")
    finally:
        cancel.set()
        records.close()
    st.rerun()
