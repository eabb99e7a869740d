"""Arena: prompt sets (pick or upload a set, run it over the slots, show a run's results).
Drawing and session state only; the logic is in atom_core.arena.promptsets."""


import time

import streamlit as st

from atom_core.arena import promptsets, report
from atom_core.arena.results import HELP
from atom_core.arena.setup import SlotSetup
from atom_core.errors import AtomError
from atom_core.measure import hardware
from atom_core.metrics import DECODE_P50, E2E_P50, FIRST_ANSWER_P50, THINKING_P50, TTFT_P50
from atom_core.render import plain_label, safe_markdown
from atom_core.words import EMPTY_CELL, plural
from pages.parts import arena_judge, ui
from pages.parts.arena_round import downloads
from pages.parts.arena_setup import prepare

# -- prompt sets ----------------------------------------------------------------------------------


def _pick_set(store: ui.HistoryStore) -> promptsets.PromptSet | None:
    saved = promptsets.saved_sets(store)
    choices = ["new", *(sid for sid, _ in saved)]
    names = {sid: f"{s.name} ({plural(len(s.items), 'prompt')})" for sid, s in saved}
    chosen = st.selectbox("Prompt set", choices, key="ps_choice",
                          format_func=lambda c: "New set: paste or upload…" if c == "new"
                          else names[c])
    if chosen != "new":
        return next(s for sid, s in saved if sid == chosen)
    upload = st.file_uploader("Upload CSV, JSON or a text file (one prompt per line)",
                              type=["csv", "json", "txt"], key="ps_upload")
    text = st.text_area("…or paste prompts", key="ps_text", height=120, persist_state=ui.KEEP,
                        placeholder="One prompt per line, or CSV with a header "
                        "(prompt,contains,regex,json,max_latency_s), or JSON.")
    source, filename = (upload.getvalue().decode("utf-8-sig"), upload.name) if upload \
        else (text or "", None)
    if not source.strip():
        return None
    try:
        pset = promptsets.parse_prompt_set(source, filename=filename)
    except AtomError as e:
        st.error(safe_markdown(e.sentence), icon=":material/error:")
        return None
    name = st.text_input("Name", value=pset.name, key="ps_name")
    pset = promptsets.PromptSet(name=name or pset.name, items=pset.items)
    if st.button("Save this set", icon=":material/save:"):
        promptsets.save_set(store, pset)
        st.toast(f"Saved “{plain_label(pset.name)}”.")
    return pset


def _run_settings(n_slots: int) -> promptsets.RunSettings:
    a, b, c = st.columns(3)
    repeats = a.number_input("Repeats", 1, 50, value=1, key="ps_repeats", persist_state=ui.KEEP)
    concurrency = b.number_input("In flight", 1, 16, value=n_slots, key="ps_conc",
                                 persist_state=ui.KEEP, help="Requests sent at once (LM Studio "
                                 "serves 4 in parallel by default).")
    seed = c.number_input("Seed", 0, 2**31 - 1, value=42, key="ps_seed", persist_state=ui.KEEP)
    temperature = a.number_input("Temperature", 0.0, 2.0, value=0.0, step=0.1, key="ps_temp",
                                 persist_state=ui.KEEP)
    max_tokens = b.number_input("Max tokens", 1, 131072, value=512, key="ps_max",
                                persist_state=ui.KEEP)
    warmup = st.checkbox("Warm-up request per model first (not timed)", value=True,
                         key="ps_warm", persist_state=ui.KEEP)
    shuffle = st.checkbox("Random order (by the seed)", value=True, key="ps_shuffle",
                          persist_state=ui.KEEP)
    return promptsets.RunSettings(repeats=int(repeats), concurrency=int(concurrency),
                                  seed=int(seed), temperature=float(temperature),
                                  max_tokens=int(max_tokens), warmup=warmup, shuffle=shuffle)


def prompt_sets(store: ui.HistoryStore, setups: list[SlotSetup]) -> None:
    left, right = st.columns([3, 2])
    with left:
        pset = _pick_set(store)
        if pset is not None:
            st.caption(f"{plural(len(pset.items), 'prompt')} · {plural(pset.check_count, 'check')}")
    with right:
        settings = _run_settings(len(setups) or 2)
        total = len(pset.items) * len(setups) * settings.repeats if pset and setups else 0
        start = st.button(f"Run {plural(total, 'request')} on {plural(len(setups), 'model')}",
                          type="primary",
                          icon=":material/play_arrow:", disabled=not total)
    if start and pset is not None:
        listings = {s.server: ui.status_for(s.server, refresh=True).models for s in setups}
        prepared = prepare(setups, listings)
        run = promptsets.new_run(store, pset, setups, prepared.targets, settings,
                                 prepared=prepared, listings=listings)
        _execute(store, run)
    runs = promptsets.list_runs(store)
    if not runs:
        return
    st.divider()
    ids = [r.id for r in runs]
    if wanted := st.session_state.pop("ps_run_wanted", None):
        st.session_state.ps_run = wanted
    if st.session_state.get("ps_run") not in ids:
        st.session_state.ps_run = ids[0]
    labels = {r.id: f"{r.prompt_set.name} · {plural(len(r.slots), 'model')} · "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(r.created))}" for r in runs}
    run_id = st.selectbox("Runs", ids, key="ps_run", format_func=labels.__getitem__)
    _show_run(store, next(r for r in runs if r.id == run_id))


def _execute(store: ui.HistoryStore, run: promptsets.PromptSetRunSpec) -> None:
    """Runs (or resumes) a run here, with a progress bar; Stop (or leaving) ends it and keeps
    every finished record."""
    st.session_state.ps_run_wanted = run.id  # shown in the Run picker after this
    runner = promptsets.PromptSetRun(store, run, ui.client_for)
    bar = st.progress(runner.progress.fraction, text=runner.progress.sentence)
    st.button("Stop", icon=":material/stop_circle:", key="ps_stop",
              help="Ends the requests in flight; finished results are kept and Resume "
              "carries on from there.")
    latest = st.empty()
    try:
        runner.start()
        while not runner.finished:
            runner.poll(0.2)
            p = runner.progress
            bar.progress(p.fraction, text=("Warming up… · " if runner.warming else "")
                         + p.sentence)
            if runner.new_records:
                r = runner.new_records[-1]
                latest.caption(f"Last: Model {r.label} · prompt {r.prompt_index + 1} · "
                               + ("ok" if r.ok else f"failed: {plain_label(r.error)}"))
    finally:
        runner.stop()
    st.rerun()


def _show_run(store: ui.HistoryStore, run: promptsets.PromptSetRunSpec) -> None:
    records = promptsets.run_records(store, run.id)
    runner_total = run.total
    ok = sum(1 for r in records if r.ok)
    cols = st.columns([3, 1, 1], vertical_alignment="center")
    cols[0].progress(ok / runner_total if runner_total else 1.0,
                     text=f"{ok} of {runner_total} succeeded"
                     + (f" · {len(records) - ok} failed" if len(records) > ok else ""))
    if ok < runner_total and cols[1].button("Resume", icon=":material/resume:",
                                            help="Runs only what has no result yet."):
        setups = promptsets.run_setups(run)
        listings = {s.server: ui.status_for(s.server, refresh=True).models for s in setups}
        prepared = prepare(setups, listings)
        _execute(store, promptsets.retarget(store, run, prepared.targets, prepared=prepared,
                                            listings=listings))
    with cols[2].popover("Export", icon=":material/download:", width="stretch"):
        def known() -> dict[str, hardware.MachineInfo]:  # the machines each report names
            return hardware.machines(store)

        downloads("promptset", run.created, run.id, [
            ("Markdown report", "md", "text/markdown",
             lambda: report.run_markdown(run, records, known())),
            ("HTML report", "html", "text/html",
             lambda: report.run_html(run, records, known())),
            ("Records (CSV)", "csv", "text/csv",
             lambda: report.run_csv(run, records, known())),
            ("Records (JSON)", "json", "application/json",
             lambda: report.run_json(run, records, known())),
        ])
    if not records:
        return
    cc = st.column_config
    summary = promptsets.summary_rows(run, records)
    if all(r["thinking_p50_s"] is None for r in summary):  # no slot reasoned: no such columns
        summary = [{k: v for k, v in r.items()
                    if k not in ("first_answer_p50_s", "thinking_p50_s")} for r in summary]
    st.dataframe(summary, hide_index=True, placeholder=EMPTY_CELL,
                 width="stretch", column_config={
                     "slot": cc.TextColumn("Slot", width="small"),
                     "contestant": cc.TextColumn("Model"),
                     "requests": cc.NumberColumn("Requests", width="small"),
                     "ok": cc.NumberColumn("OK", width="small"),
                     "failed": cc.NumberColumn("Failed", width="small"),
                     "checks_passed": cc.NumberColumn("Checks passed", width="small"),
                     "checks_total": cc.NumberColumn("Checks run", width="small"),
                     "ttft_p50_s": cc.NumberColumn(TTFT_P50.header, format="%.3f",
                                                   help=HELP["ttft"]),
                     "first_answer_p50_s": cc.NumberColumn(
                         FIRST_ANSWER_P50.header, format="%.3f", help=HELP["first_answer"]),
                     "thinking_p50_s": cc.NumberColumn(THINKING_P50.header, format="%.2f",
                                                       help=HELP["thinking"]),
                     "tps_p50": cc.NumberColumn(DECODE_P50.header, format="%.1f",
                                                help=HELP["tps"]),
                     "e2e_p50_s": cc.NumberColumn(E2E_P50.header, format="%.2f",
                                                  help=HELP["e2e"]),
                 })
    checks = promptsets.check_rows(run, records)
    if checks:
        st.markdown("**Checks** (passed / total over the repeats)")
        st.dataframe(checks, hide_index=True, width="stretch", placeholder=EMPTY_CELL)
    arena_judge.promptset_panel(store, run, records)  # a model as judge of every prompt
