"""Drawing for the Arena page: slot pickers, a finished round, the leaderboard, prompt sets.
Drawing and session state only; the logic is in atom_core.arena, ratings, promptsets, report."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import streamlit as st

from atom_core import arena
from atom_core.arena import charts as arena_charts
from atom_core.arena import promptsets, report
from atom_core.arena.race import HELP, ArenaRound, SlotSetup
from atom_core.arena.ratings import Outcome, Rating
from atom_core.errors import AtomError
from atom_core.types import LoadConfig, ModelInfo, ModelList, SamplingOptions
from pages import _ui as ui

KEEP: Literal["session"] = "session"  # widget values survive view and page switches
PRESENTER_CSS = """<style>
[data-testid="stMainBlockContainer"] [data-testid="stMarkdown"] p,
[data-testid="stMainBlockContainer"] [data-testid="stMarkdown"] li {
  font-size: 1.35rem; line-height: 1.55; }
[data-testid="stMainBlockContainer"] h4 { font-size: 1.8rem; }
[data-testid="stMainBlockContainer"] [data-testid="stCaptionContainer"] { font-size: 1.1rem; }
[data-testid="stMainBlockContainer"] button p { font-size: 1.2rem; }
[data-testid="stChatInputTextArea"] { font-size: 1.3rem; }
</style>"""


def presenter_style() -> None:
    st.html(PRESENTER_CSS)


# -- the slots ------------------------------------------------------------------------------------


def slot_setup(presenter: bool) -> tuple[list[SlotSetup], dict[int, ModelInfo | None]]:
    """Two to four slot pickers (folded away in presenter mode). Returns the slots, or [] when
    no server has a model to race."""
    box = st.expander("Contestants and settings", icon=":material/tune:") if presenter \
        else st.container()
    with box:
        if "arena_n" not in st.session_state:  # a first visit: as many slots as models, 2-3
            listing = ui.server_status().models
            st.session_state.arena_n = min(3, max(2, len(listing.llms) if listing else 2))
        n = st.segmented_control("Models in the race", [2, 3, 4], key="arena_n",
                                 required=True, format_func=lambda k: f"{k} models",
                                 persist_state=KEEP) or 3
        known = ui.servers()
        if not _any_models(known):
            return [], {}
        setups: list[SlotSetup] = []
        models: dict[int, ModelInfo | None] = {}
        for i, column in enumerate(st.columns(n)):
            with column.container(border=True):
                picked = _slot(i, known)
            if picked is None:
                continue
            setups.append(picked[0])
            models[len(setups) - 1] = picked[1]
    if len(setups) < n:
        return [], {}
    return setups, models


def _any_models(known: Sequence[ui.ServerChoice]) -> bool:
    """One clear sentence, instead of the same error in every slot, when no server can race."""
    statuses = [ui.status_for(s.url) for s in known]
    if any(s.models is not None and s.models.llms for s in statuses):
        if sum(len(s.models.llms) for s in statuses if s.models is not None) == 1:
            st.caption("Only one model here: the slots race the same model. Give them different "
                       "settings (Settings under each slot) to compare configurations.")
        return True
    first = statuses[0]
    if first.error is not None:
        st.error(first.sentence, icon=":material/cloud_off:")
    else:
        st.info("The server has no language models yet. Download one in LM Studio (or on the "
                "Models page), then come back to race.", icon=":material/download:")
    return False


def _slot(i: int, known: Sequence[ui.ServerChoice]) -> tuple[SlotSetup, ModelInfo | None] | None:
    label = arena.SLOT_LABELS[i]
    st.markdown(f"**Model {label}**")
    url = known[0].url
    listings = [ui.status_for(s.url).models for s in known]
    picks = arena.default_picks([ls.llms if ls else [] for ls in listings], i + 1)
    if len(known) > 1:
        names = {s.url: s.name for s in known}
        if st.session_state.get(f"arena_server_{i}") not in names:
            st.session_state[f"arena_server_{i}"] = known[picks[i][0]].url if picks else url
        url = st.selectbox("Server", list(names), key=f"arena_server_{i}",
                           format_func=lambda u: f"{names[u]} ({u})", persist_state=KEEP)
    status = ui.status_for(url)
    listing = status.models
    if listing is None:
        st.error(status.sentence, icon=":material/cloud_off:")
        return None
    llms = listing.llms
    if not llms:
        st.info("No language models on this server yet.")
        return None
    by_key = {m.key: m for m in llms}
    key = f"arena_model_{i}"
    if st.session_state.get(key) not in by_key:
        pick = picks[i] if picks and known[picks[i][0]].url == url else None
        st.session_state[key] = pick[1] if pick else arena.default_models(llms, i + 1)[i]
    # Labels without the load state: the browser keeps showing a selected option's old label
    # when only its text changes, so the state goes in the caption below.
    model = st.selectbox(f"Model {label}", list(by_key), key=key, label_visibility="collapsed",
                         format_func=lambda k: _model_name(by_key[k]), persist_state=KEEP)
    with st.popover("Settings", icon=":material/tune:", width="stretch"):
        options, load_config = _slot_settings(i, listing)
    setup = SlotSetup(server=url, model=model, options=options, load_config=load_config)
    st.caption(_slot_state(by_key[model], listing), help=HELP["load"])
    if setup.contestant != model:
        st.caption(setup.contestant.removeprefix(model).strip(" ()"))
    return setup, by_key.get(model)


def _model_name(m: ModelInfo) -> str:
    extra = " · ".join(x for x in (m.params, m.quantization) if x)
    return f"{m.name}  ({extra})" if extra else m.name


def _slot_state(m: ModelInfo, listing: ModelList) -> str:
    if not m.load_state_known:
        return "Load state unknown (OpenAI-compatible server)"
    if m.is_loaded:
        ctx = m.loaded_instances[0].config.get("context_length") if m.loaded_instances else None
        return f"{ui.LOADED} Loaded" + (f" · context {ctx:,}" if ctx else "")
    if listing.dialect.can_manage_models:
        return f"{ui.NOT_LOADED} Not loaded: the Arena loads it before the race"
    return f"{ui.NOT_LOADED} Not loaded: it loads on first use, inside its TTFT"


def _slot_settings(i: int, listing: ModelList) -> tuple[SamplingOptions, LoadConfig]:
    st.caption("Empty fields use the model's defaults. Give the same model two slots with "
               "different settings to compare configurations.")
    a, b = st.columns(2)
    temperature = a.number_input("Temperature", 0.0, 2.0, value=None, step=0.1,
                                 key=f"arena_temp_{i}", placeholder="default", persist_state=KEEP)
    top_p = b.number_input("Top P", 0.0, 1.0, value=None, step=0.05, key=f"arena_top_p_{i}",
                           placeholder="default", persist_state=KEEP)
    max_tokens = a.number_input("Max tokens", 1, 131072, value=None, step=64,
                                key=f"arena_max_{i}", placeholder="no limit", persist_state=KEEP)
    seed = b.number_input("Seed", 0, 2**31 - 1, value=None, step=1, key=f"arena_seed_{i}",
                          placeholder="random", persist_state=KEEP)
    load = LoadConfig()
    if listing.dialect.can_manage_models:
        st.markdown("**Load config**", help="Used when the Arena loads this model: a slot "
                    "with its own load config gets its own loaded instance.")
        ctx = a.number_input("Context length", 256, 1_048_576, value=None, step=1024,
                             key=f"arena_ctx_{i}", placeholder="as loaded",
                             help=HELP["context"], persist_state=KEEP)
        flash = b.selectbox("Flash attention", ["as loaded", "on", "off"],
                            key=f"arena_flash_{i}", persist_state=KEEP)
        load = LoadConfig(context_length=ctx,
                          flash_attention=None if flash == "as loaded" else flash == "on")
    options = SamplingOptions(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                              seed=seed)
    return options, load


def system_prompt(presenter: bool) -> str:
    with st.expander("System prompt", icon=":material/description:",
                     expanded=bool(st.session_state.get("arena_system")) and not presenter):
        return str(st.text_area("System prompt", key="arena_system", height=80,
                                label_visibility="collapsed", persist_state=KEEP,
                                placeholder="Optional: sent to every model before the prompt.")
                   or "")


def prepare(setups: Sequence[SlotSetup],
            listings: Mapping[str, ModelList | None]) -> arena.Prepared:
    """Loads what the race needs (LM Studio 0.4), showing it while it happens."""
    plan = arena.plan_loads(setups, listings)
    loads = []
    if plan.steps:
        names = ", ".join(step.label for step in plan.steps)
        with st.status(f"Loading {names} before the race…", expanded=True) as status:
            st.caption("Loading explicitly keeps LM Studio's Auto-Evict from unloading one "
                       "model while loading the next; the load time is kept out of TTFT.")
            for step in plan.steps:
                line = st.empty()
                load = arena.start_load(ui.client_for(step.server), step)
                while not load.wait(0.25):
                    line.markdown(f"Loading **{step.label}**… {load.elapsed:.1f} s")
                if load.error is not None:
                    line.error(f"{step.label}: {load.error.sentence}")
                else:
                    line.markdown(f"Loaded **{step.label}** in {load.elapsed:.1f} s")
                loads.append(load)
            failed = any(x.error for x in loads)
            status.update(label="Some models could not be loaded" if failed else
                          f"Loaded {names}", state="error" if failed else "complete",
                          expanded=failed)
    return arena.prepared_from(plan, loads)


# -- a finished round -----------------------------------------------------------------------------


def current_round(store: ui.HistoryStore) -> ArenaRound | None:
    """The round this session last ran, else the latest saved one (a reload shows it again)."""
    rounds = arena.load_rounds(store)
    wanted = st.session_state.get("arena_round_id")
    found = next((r for r in rounds if r.id == wanted), None)
    return found or (rounds[-1] if rounds and wanted is None else None)


def draw_round(store: ui.HistoryStore, rnd: ArenaRound, presenter: bool) -> None:
    with st.chat_message("user"):
        st.markdown(rnd.prompt)
    for note in rnd.notes:
        st.info(note, icon=":material/info:")
    _results_grid(rnd)
    for position, column in enumerate(st.columns(len(rnd.slots), border=True)):
        s = rnd.slots[rnd.positions[position]]
        with column:
            st.markdown(f"#### {rnd.title_at(position)}")
            if subtitle := rnd.subtitle_at(position):
                st.caption(subtitle)
            if s.state == "error":
                st.error(s.error, icon=":material/error:")
            elif s.state == "stopped":
                st.warning("Stopped", icon=":material/stop_circle:")
            elif s.state == "interrupted":
                st.warning(f"Interrupted: {s.error or 'the reply broke off'}",
                           icon=":material/link_off:")
            if s.reasoning:
                with st.expander("Reasoning", icon=":material/psychology:"):
                    st.markdown(s.reasoning)
            if s.content:
                st.markdown(s.content)
    _vote_bar(store, rnd, presenter)


def _results_grid(rnd: ArenaRound) -> None:
    rows = arena.stat_rows(rnd) + ([] if rnd.hidden else arena.fact_rows(rnd))
    spec = [1.2] + [1.0] * len(rnd.slots)
    with st.container(border=True, gap="xxsmall"):
        head = st.columns(spec)
        head[0].markdown("**Results**", help="The fastest value of each speed row is "
                         "highlighted, among replies that completed.")
        for position, i in enumerate(rnd.positions):
            head[position + 1].markdown(f"**{rnd.short_label(i)}**")
        for row in rows:
            cells = st.columns(spec)
            cells[0].markdown(row.name, help=HELP.get(row.key))
            for position, i in enumerate(rnd.positions):
                value = row.cells[i]
                cells[position + 1].markdown(
                    f":green-background[**{value}**] :material/bolt:" if i in row.best else value)


def _vote(store: ui.HistoryStore, rnd: ArenaRound, outcome: Outcome, winner: int | None) -> None:
    voted = arena.record_vote(store, rnd, outcome, winner)
    st.toast(f"Vote saved: {voted.vote_sentence}.", icon=":material/how_to_vote:")


def _reveal(store: ui.HistoryStore, rnd: ArenaRound) -> None:
    arena.reveal(store, rnd)


def _vote_bar(store: ui.HistoryStore, rnd: ArenaRound, presenter: bool) -> None:
    if rnd.vote is not None:
        blind = " (voted blind)" if rnd.vote.blind else ""
        st.success(f"Your vote: {rnd.vote_sentence}{blind}. It counts on the Leaderboard.",
                   icon=":material/how_to_vote:")
    elif not any(s.state == "running" for s in rnd.slots):
        st.markdown("**Which answer is better?**")
        buttons = st.columns(len(rnd.slots) + 2)
        for position, i in enumerate(rnd.positions):
            name = rnd.short_label(i)
            buttons[position].button(
                name, key=f"vote-{rnd.id}-{position}", on_click=_vote,
                args=(store, rnd, "win", i), width="stretch",
                type="primary" if presenter else "secondary",
                icon=":material/thumb_up:", help=f"Vote: {name} gave the best answer.")
        buttons[-2].button("Tie", key=f"vote-{rnd.id}-tie", on_click=_vote,
                           args=(store, rnd, "tie", None), width="stretch",
                           help="Equally good: a draw between every pair.")
        buttons[-1].button("All bad", key=f"vote-{rnd.id}-bad", on_click=_vote,
                           args=(store, rnd, "all_bad", None), width="stretch",
                           help="None is good enough: not counted in the ratings.")
    tools = st.columns([3, 1, 1] if rnd.hidden else [4, 1], vertical_alignment="center")
    if rnd.hidden:
        tools[1].button("Reveal", icon=":material/visibility:", width="stretch",
                        on_click=_reveal, args=(store, rnd), key=f"reveal-{rnd.id}",
                        help="Show which model wrote which reply, without voting.")
    with tools[-1].popover("Export", icon=":material/download:", width="stretch"):
        _downloads("arena", rnd.ts, rnd.id, [
            ("Markdown report", "md", "text/markdown", lambda: report.round_markdown(rnd)),
            ("HTML report", "html", "text/html", lambda: report.round_html(rnd)),
            ("Records (CSV)", "csv", "text/csv", lambda: report.round_csv(rnd)),
            ("Records (JSON)", "json", "application/json", lambda: report.round_json(rnd)),
        ])


def _downloads(kind: str, ts: float, key: str,
               items: Sequence[tuple[str, str, str, Callable[[], str]]]) -> None:
    for label, ext, mime, render in items:
        st.download_button(label, render, file_name=report.filename(kind, ts, ext),
                           mime=mime, on_click="ignore", key=f"dl-{key}-{ext}",
                           width="stretch")


# -- the leaderboard ------------------------------------------------------------------------------


@st.cache_data(show_spinner="Computing ratings…", max_entries=8)
def _board(signature: str, _rounds: Sequence[ArenaRound]) -> list[Rating]:
    return arena.leaderboard(_rounds)


def leaderboard(store: ui.HistoryStore) -> None:
    rounds = arena.load_rounds(store)
    votes = sum(1 for r in rounds if r.vote is not None)
    if not votes:
        st.info("No votes yet. Race two or more models, read the answers (Blind makes it fair) "
                "and vote: every vote moves this table.", icon=":material/leaderboard:")
        return
    board = _board(arena.vote_signature(rounds), rounds)
    st.caption(f"{votes} votes over {len(rounds)} rounds. Sorted by Bradley–Terry rating.")
    frame = arena_charts.leaderboard_frame(board)
    cc = st.column_config
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "Model": cc.TextColumn(width="medium"),
        "BT": cc.NumberColumn(width="small", help="Bradley–Terry rating on the Elo scale "
                              "(1000 = average), from all votes at once: order doesn't matter."),
        "BT 95% CI": cc.TextColumn(help="95% interval from 500 bootstrap resamples of the "
                                   "rounds: overlapping intervals mean the votes can't tell the "
                                   "models apart yet."),
        "Elo": cc.NumberColumn(width="small", help="Elo rating, votes replayed in time order "
                               "(K = 32, start 1000)."),
        "Elo 95% CI": cc.TextColumn(help="95% interval from the same bootstrap resamples."),
        "Win rate": cc.ProgressColumn(min_value=0.0, max_value=1.0, format="percent",
                                      help="Pairwise: a win beats every other reply in its round, "
                                      "a tie is half a win each. 50% = as good as the field."),
        "Battles": cc.NumberColumn(width="small",
                                   help="Pairwise comparisons it took part in."),
        "W/T/L": cc.TextColumn(width="small", help="Pairwise wins / ties / losses."),
        "All bad": cc.NumberColumn(width="small", help="Rounds voted “all bad”: left out of the "
                                   "ratings."),
        "TTFT p50 (s)": cc.NumberColumn(format="%.2f", width="small", help=HELP["ttft"]),
        "tok/s p50": cc.NumberColumn(format="%.1f", width="small", help=HELP["tps"]),
    })
    st.plotly_chart(arena_charts.speed_vs_win_rate(board), width="stretch")
    st.caption("How votes count: the winner beats every other reply in the round; a tie is a "
               "draw between every pair; “all bad” is left out of the ratings. Two slots with "
               "the same model and settings never play each other. A model with different "
               "settings is its own contestant.")


# -- prompt sets ----------------------------------------------------------------------------------


def _pick_set(store: ui.HistoryStore) -> promptsets.PromptSet | None:
    saved = promptsets.saved_sets(store)
    choices = ["new", *(sid for sid, _ in saved)]
    names = {sid: f"{s.name} ({len(s.items)} prompts)" for sid, s in saved}
    chosen = st.selectbox("Prompt set", choices, key="ps_choice",
                          format_func=lambda c: "New set: paste or upload…" if c == "new"
                          else names[c])
    if chosen != "new":
        return next(s for sid, s in saved if sid == chosen)
    upload = st.file_uploader("Upload CSV, JSON or a text file (one prompt per line)",
                              type=["csv", "json", "txt"], key="ps_upload")
    text = st.text_area("…or paste prompts", key="ps_text", height=120, persist_state=KEEP,
                        placeholder="One prompt per line, or CSV with a header "
                        "(prompt,contains,regex,json,max_latency_s), or JSON.")
    source, filename = (upload.getvalue().decode("utf-8-sig"), upload.name) if upload \
        else (text or "", None)
    if not source.strip():
        return None
    try:
        pset = promptsets.parse_prompt_set(source, filename=filename)
    except AtomError as e:
        st.error(e.sentence, icon=":material/error:")
        return None
    name = st.text_input("Name", value=pset.name, key="ps_name")
    pset = promptsets.PromptSet(name=name or pset.name, items=pset.items)
    if st.button("Save this set", icon=":material/save:"):
        promptsets.save_set(store, pset)
        st.toast(f"Saved “{pset.name}”.")
    return pset


def _run_settings(n_slots: int) -> promptsets.RunSettings:
    a, b, c = st.columns(3)
    repeats = a.number_input("Repeats", 1, 50, value=1, key="ps_repeats", persist_state=KEEP)
    concurrency = b.number_input("In flight", 1, 16, value=n_slots, key="ps_conc",
                                 persist_state=KEEP, help="Requests sent at once (LM Studio "
                                 "serves 4 in parallel by default).")
    seed = c.number_input("Seed", 0, 2**31 - 1, value=42, key="ps_seed", persist_state=KEEP)
    temperature = a.number_input("Temperature", 0.0, 2.0, value=0.0, step=0.1, key="ps_temp",
                                 persist_state=KEEP)
    max_tokens = b.number_input("Max tokens", 1, 131072, value=512, key="ps_max",
                                persist_state=KEEP)
    warmup = st.checkbox("Warm-up request per model first (not timed)", value=True,
                         key="ps_warm", persist_state=KEEP)
    shuffle = st.checkbox("Random order (by the seed)", value=True, key="ps_shuffle",
                          persist_state=KEEP)
    return promptsets.RunSettings(repeats=int(repeats), concurrency=int(concurrency),
                                  seed=int(seed), temperature=float(temperature),
                                  max_tokens=int(max_tokens), warmup=warmup, shuffle=shuffle)


def prompt_sets(store: ui.HistoryStore, setups: list[SlotSetup]) -> None:
    left, right = st.columns([3, 2])
    with left:
        pset = _pick_set(store)
        if pset is not None:
            st.caption(f"{len(pset.items)} prompts · {pset.check_count} checks")
    with right:
        settings = _run_settings(len(setups) or 2)
        total = len(pset.items) * len(setups) * settings.repeats if pset and setups else 0
        start = st.button(f"Run {total} requests on {len(setups)} models", type="primary",
                          icon=":material/play_arrow:", disabled=not total)
    if start and pset is not None:
        listings = {s.server: ui.status_for(s.server, refresh=True).models for s in setups}
        prepared = prepare(setups, listings)
        run = promptsets.new_run(store, pset, setups, prepared.targets, settings)
        _execute(store, run)
    runs = promptsets.list_runs(store)
    if not runs:
        return
    st.divider()
    ids = [str(r["id"]) for r in runs]
    if wanted := st.session_state.pop("ps_run_wanted", None):
        st.session_state.ps_run = wanted
    if st.session_state.get("ps_run") not in ids:
        st.session_state.ps_run = ids[0]
    labels = {str(r["id"]): f"{r['set']['name']} · {len(r['slots'])} models · "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(r['created']))}" for r in runs}
    run_id = st.selectbox("Runs", ids, key="ps_run", format_func=labels.__getitem__)
    _show_run(store, next(r for r in runs if str(r["id"]) == run_id))


def _execute(store: ui.HistoryStore, run: dict[str, Any]) -> None:
    """Runs (or resumes) a run here, with a progress bar; Stop (or leaving) ends it and keeps
    every finished record."""
    st.session_state.ps_run_wanted = run["id"]  # shown in the Run picker after this
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
                latest.caption(f"Last: Model {r['label']} · prompt {r['prompt_index'] + 1} · "
                               + ("ok" if r["ok"] else f"failed: {r['error']}"))
    finally:
        runner.stop()
    st.rerun()


def _show_run(store: ui.HistoryStore, run: dict[str, Any]) -> None:
    records = promptsets.run_records(store, str(run["id"]))
    runner_total = len(promptsets.PromptSet.from_dict(run["set"]).items) * \
        len(run["slots"]) * int(run["settings"]["repeats"])
    ok = sum(1 for r in records if r["ok"])
    cols = st.columns([3, 1, 1], vertical_alignment="center")
    cols[0].progress(ok / runner_total if runner_total else 1.0,
                     text=f"{ok} of {runner_total} succeeded"
                     + (f" · {len(records) - ok} failed" if len(records) > ok else ""))
    if ok < runner_total and cols[1].button("Resume", icon=":material/resume:",
                                            help="Runs only what has no result yet."):
        setups = promptsets.run_setups(run)
        listings = {s.server: ui.status_for(s.server, refresh=True).models for s in setups}
        prepared = prepare(setups, listings)
        _execute(store, promptsets.retarget(store, run, prepared.targets))
    with cols[2].popover("Export", icon=":material/download:", width="stretch"):
        _downloads("promptset", float(run["created"]), str(run["id"]), [
            ("Markdown report", "md", "text/markdown",
             lambda: report.run_markdown(run, records)),
            ("HTML report", "html", "text/html", lambda: report.run_html(run, records)),
            ("Records (CSV)", "csv", "text/csv", lambda: report.run_csv(run, records)),
            ("Records (JSON)", "json", "application/json",
             lambda: report.run_json(run, records)),
        ])
    if not records:
        return
    cc = st.column_config
    st.dataframe(promptsets.summary_rows(run, records), hide_index=True,
                 width="stretch", column_config={
                     "slot": cc.TextColumn("Slot", width="small"),
                     "contestant": cc.TextColumn("Model"),
                     "requests": cc.NumberColumn("Requests", width="small"),
                     "ok": cc.NumberColumn("OK", width="small"),
                     "failed": cc.NumberColumn("Failed", width="small"),
                     "checks_passed": cc.NumberColumn("Checks passed", width="small"),
                     "checks_total": cc.NumberColumn("Checks run", width="small"),
                     "ttft_p50_s": st.column_config.NumberColumn("TTFT p50 (s)", format="%.3f",
                                                                 help=HELP["ttft"]),
                     "tps_p50": st.column_config.NumberColumn("tok/s p50", format="%.1f",
                                                              help=HELP["tps"]),
                     "e2e_p50_s": st.column_config.NumberColumn("End-to-end p50 (s)",
                                                                format="%.2f", help=HELP["e2e"]),
                 })
    checks = promptsets.check_rows(run, records)
    if checks:
        st.markdown("**Checks** (passed / total over the repeats)")
        st.dataframe(checks, hide_index=True, width="stretch")
