"""Stats, the "Concurrency sweep" tab: how many people a model serves at once, over the chat
route picked for it; several models each get their own K in flight and their own verdict,
unless "Share K between models" is on. Drawing only; the logic is in atom_core.measure.sweep."""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st

from atom_core import stats
from atom_core.history.batch import RunBatch
from atom_core.measure import sweep
from atom_core.render import plain_label, safe_markdown
from atom_core.server.routes import ROUTE_LABELS, ROUTES
from atom_core.stats import charts
from atom_core.types import SamplingOptions
from pages.parts import ui
from pages.parts.stats_server import table


def sweep_tab(df: Any) -> None:
    status, picked, client = ui.server_status(), ui.selected_model(), ui.client()
    models = [m.key for m in status.models.llms] if status.models else []
    if status.error is not None:
        ui.show_error(status.error)
    with st.form("sweep_form"):
        a, b, r = st.columns(3)
        chosen = a.multiselect("Models to sweep", models,
                               [picked] if picked in models else models[:1], key="sweep_models")
        levels = b.text_input("Requests in flight (levels)", "1,2,4,8")
        route = r.selectbox("Route", ROUTES, key="sweep_route",
                            format_func=lambda k: ROUTE_LABELS[k] + (
                                " — not offered here" if client.route_problem(k) else ""),
                            help="The chat route every request of the sweep takes.")
        prompt = st.text_area("Prompt", "Explain in three sentences why the sky is blue.")
        shared = st.toggle(
            "Share K between models", False, key="sweep_shared",
            help="Off: each model gets its own K requests in flight and its own verdict. On: "
                 "one pool of K for all the models picked (like `bench --shared`); each "
                 "model's verdict then says it had only part of K.")
        c, d, e, f = st.columns(4)
        per_level = c.number_input("Requests per level", 1, 200, 8)
        max_tokens = d.number_input("Max tokens", 1, 8192, 128)
        target = sweep.SweepTarget(
            min_tps_per_user=e.number_input("Target: tok/s per user ≥", 0.0, 1e4, 10.0),
            max_ttft_p90_s=f.number_input("Target: TTFT p90 ≤ (s)", 0.0, 600.0, 2.0))
        start = st.form_submit_button("Run sweep", icon=":material/speed:", disabled=not models)
    model = chosen[0] if chosen else None
    if problem := client.route_problem(str(route)):
        st.caption(problem)
    slots = sweep.parallel_slots(status.models.get(model) if status.models and model else None)
    if slots:
        st.caption(f"The server runs {plain_label(model)} with {slots} parallel slots: above "
                   f"{slots} requests in flight, the rest wait in a queue.")
    if start and not chosen:
        st.error("Pick at least one model to sweep.")
    elif start:
        try:
            run_sweep(chosen, prompt, sweep.parse_levels(levels), per_level, max_tokens, target,
                      str(route), shared)
        except ValueError as e:
            st.error(safe_markdown(str(e)))
    found = sweep.sweeps_in_history(df)
    if found.empty:
        st.caption("No sweeps yet. From the command line: `python -m atom_core bench "
                   "--models KEY --prompt Hi --concurrency 1,2,4,8 --requests 8`.")
        return
    i = st.selectbox("Sweep", range(len(found)), format_func=lambda i: found.label[i]) or 0
    runs = sweep.sweep_runs(df, found.sweep_id[i], found.model[i])
    several = int(found.models[i]) > 1  # name the model in its verdict
    show_sweep(sweep.levels_from_runs(runs), target, slots if found.model[i] == model else None,
               "sweep_result", model=str(found.model[i]) if several else None,
               shared_by=int(found.shared_by[i]))


def show_sweep(levels: list[sweep.LevelResult], target: sweep.SweepTarget, slots: int | None,
               key: str, *, model: str | None = None, shared_by: int = 1) -> None:
    v = sweep.verdict(levels, target, model, shared_by=shared_by)
    (st.success if v.best else st.warning)(v.sentence, icon=":material/groups:")
    st.plotly_chart(charts.sweep_chart(sweep.levels_frame(levels), target, slots), key=key)
    table(sweep.levels_frame(levels), sweep.LEVEL_COLUMNS, key=f"{key}_table")


def run_sweep(models: list[str], prompt: str, levels: list[int], per_level: int,
              max_tokens: int, target: sweep.SweepTarget, route: str, shared: bool) -> None:
    cancel, rows = threading.Event(), []
    total = per_level * len(levels) * len(models)
    shared_by = len(models) if shared else 1
    progress, live = st.progress(0.0, "Starting the sweep…"), st.empty()
    records = sweep.run_sweep(ui.client(), model=models, prompt=prompt, levels=levels,
                              requests_per_level=per_level, cancel=cancel, route=route,
                              options=SamplingOptions(max_tokens=max_tokens), shared=shared)
    batch = RunBatch(ui.store())  # thousands of runs: written in batches, not one by one
    try:  # a click anywhere stops the script here; `finally` ends the requests in flight
        for record in records:
            run = record.as_run("sweep")
            rows.append(run.to_record())
            batch.add(run)
            progress.progress(len(rows) / total, f"{len(rows)} of {total} requests · "
                                                 f"{record.job.tags['concurrency']} in flight")
            frame = stats.runs_frame(rows)
            with live.container():
                for m in models:
                    show_sweep(sweep.levels_from_runs(frame[frame["model"] == m]), target, None,
                               f"sweep_live_{m}_{len(rows)}",
                               model=m if len(models) > 1 else None, shared_by=shared_by)
    finally:
        cancel.set()
        records.close()
        batch.flush()
    st.rerun()
