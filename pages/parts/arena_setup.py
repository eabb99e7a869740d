"""Arena: the slot pickers (server, model, settings per slot), system prompt and load plan.
Drawing and session state only; the logic is in atom_core.arena."""


from collections.abc import Mapping, Sequence

import streamlit as st

from atom_core import arena
from atom_core.arena.results import HELP
from atom_core.arena.setup import SlotSetup
from atom_core.render import plain_label, safe_markdown
from atom_core.server.routes import ROUTE_LABELS, ROUTES, STATEFUL_ROUTES
from atom_core.types import ModelInfo, ModelList
from pages.parts import ui

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
                                 persist_state=ui.KEEP) or 3
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
        ui.show_error(first.error)  # the demo engine still building says so, with its progress
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
                           format_func=lambda u: f"{names[u]} ({u})", persist_state=ui.KEEP)
    status = ui.status_for(url)
    listing = status.models
    if listing is None:
        if status.error is not None:
            ui.show_error(status.error)
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
                         format_func=lambda k: _model_name(by_key[k]), persist_state=ui.KEEP)
    # Its fields are drawn only while it is open (opening it reruns the page): three slots'
    # dozen fields each were a third of an Arena switch's elements. Open or folded, the slot's
    # settings are read from what the fields hold (their keys keep them for the session).
    settings = st.popover("Settings", icon=":material/tune:", width="stretch",
                          key=f"arena_settings_{i}", on_change="rerun")
    if settings.open:
        with settings:
            _slot_settings(i, listing)
            route = _slot_route(i, url)
            _slot_reasoning(i, route, by_key[model])
    options, load_config, route, reasoning = _slot_fields(i).choices(
        can_manage_models=listing.dialect.can_manage_models,
        reasoning_options=by_key[model].reasoning_options)
    setup = SlotSetup(server=url, model=model, options=options, load_config=load_config,
                      route=route, reasoning=reasoning)
    st.caption(safe_markdown(_slot_state(by_key[model], listing)), help=HELP["load"])
    if setup.contestant != model:
        st.caption(plain_label(setup.contestant.removeprefix(model).strip(" ()")))
    return setup, by_key.get(model)


def _slot_fields(i: int) -> arena.SlotFields:
    kept = st.session_state
    return arena.SlotFields(
        temperature=kept.get(f"arena_temp_{i}"), top_p=kept.get(f"arena_top_p_{i}"),
        max_tokens=kept.get(f"arena_max_{i}"), seed=kept.get(f"arena_seed_{i}"),
        context_length=kept.get(f"arena_ctx_{i}"), flash=kept.get(f"arena_flash_{i}"),
        route=kept.get(f"arena_route_{i}"), reasoning=kept.get(f"arena_reason_{i}"))


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


def _slot_route(i: int, url: str) -> str:
    client = ui.client_for(url)
    route = st.selectbox("Route", ROUTES, key=f"arena_route_{i}", persist_state=ui.KEEP,
                         help=HELP["route"], format_func=lambda r: ROUTE_LABELS[r] + (
                             " — not offered here" if client.route_problem(r) else ""))
    if problem := client.route_problem(route):
        st.caption(problem)
    return str(route)


def _slot_reasoning(i: int, route: str, model: ModelInfo) -> None:
    """Off/on/low/medium/high, where the route carries it and the model lists the options."""
    if route not in STATEFUL_ROUTES or not model.reasoning_options:
        return
    st.selectbox("Reasoning", ["default", *model.reasoning_options], key=f"arena_reason_{i}",
                 persist_state=ui.KEEP, help=HELP["reasoning"])


def _slot_settings(i: int, listing: ModelList) -> None:
    st.caption("Empty fields use the model's defaults. Give the same model two slots with "
               "different settings to compare configurations.")
    a, b = st.columns(2)
    a.number_input("Temperature", 0.0, 2.0, value=None, step=0.1, key=f"arena_temp_{i}",
                   placeholder="default", persist_state=ui.KEEP)
    b.number_input("Top P", 0.0, 1.0, value=None, step=0.05, key=f"arena_top_p_{i}",
                   placeholder="default", persist_state=ui.KEEP)
    a.number_input("Max tokens", 1, 131072, value=None, step=64, key=f"arena_max_{i}",
                   placeholder="no limit", persist_state=ui.KEEP)
    b.number_input("Seed", 0, 2**31 - 1, value=None, step=1, key=f"arena_seed_{i}",
                   placeholder="random", persist_state=ui.KEEP)
    if listing.dialect.can_manage_models:
        st.markdown("**Load config**", help="Used when the Arena loads this model: a slot "
                    "with its own load config gets its own loaded instance.")
        a.number_input("Context length", 256, 1_048_576, value=None, step=1024,
                       key=f"arena_ctx_{i}", placeholder="as loaded", help=HELP["context"],
                       persist_state=ui.KEEP)
        b.selectbox("Flash attention", arena.FLASH_CHOICES, key=f"arena_flash_{i}",
                    persist_state=ui.KEEP)


def system_prompt(presenter: bool) -> str:
    with st.expander("System prompt", icon=":material/description:",
                     expanded=bool(st.session_state.get("arena_system")) and not presenter):
        return str(st.text_area("System prompt", key="arena_system", height=80,
                                label_visibility="collapsed", persist_state=ui.KEEP,
                                placeholder="Optional: sent to every model before the prompt.")
                   or "")


def prepare(setups: Sequence[SlotSetup],
            listings: Mapping[str, ModelList | None]) -> arena.Prepared:
    """Loads what the race needs (LM Studio 0.4), showing it while it happens."""
    plan = arena.plan_loads(setups, listings)
    loads = []
    if plan.steps:
        names = ", ".join(plain_label(step.label) for step in plan.steps)  # model names
        with st.status(f"Loading {names} before the race…", expanded=True) as status:
            st.caption("Loading explicitly keeps LM Studio's Auto-Evict from unloading one "
                       "model while loading the next; the load time is kept out of TTFT.")
            for step in plan.steps:
                line = st.empty()
                load = arena.start_load(ui.client_for(step.server), step)
                while not load.wait(0.25):
                    line.markdown(f"Loading **{plain_label(step.label)}**… {load.elapsed:.1f} s")
                if load.error is not None:
                    line.error(f"{plain_label(step.label)}: {safe_markdown(load.error.sentence)}")
                else:
                    line.markdown(f"Loaded **{plain_label(step.label)}** in {load.elapsed:.1f} s")
                loads.append(load)
            failed = any(x.error for x in loads)
            status.update(label="Some models could not be loaded" if failed else
                          f"Loaded {names}", state="error" if failed else "complete",
                          expanded=failed)
    return arena.prepared_from(plan, loads)
