"""Models: every downloaded model and what is loaded with which settings; load, unload and
download, saying exactly what the server applied."""

from __future__ import annotations

import streamlit as st

from atom_core.errors import AtomError
from atom_core.render import plain_label, safe_markdown
from atom_core.server import admin as ma
from atom_core.types import ModelList
from atom_core.words import EMPTY_CELL, plural
from pages.parts import ui
from pages.parts.models_download import download_panel

ui.require_app_shell("pages/models.py")

TRISTATE = {None: "server default", True: "on", False: "off"}
GPU_CHOICES = ["", "max", "off", "0.25", "0.5", "0.75"]

store = ui.store()
settings = ui.settings_store()


def notice(text: str) -> None:
    """A message that outlives the rerun that follows an action."""
    st.session_state["models-notice"] = text


def refresh(url: str) -> None:
    ui.status_for(url, refresh=True)
    st.rerun()


# -- the table ------------------------------------------------------------------------------------

def model_table(listing: ModelList) -> None:
    a, b, c, d = st.columns([3, 2, 2, 1.4], vertical_alignment="bottom")
    query = a.text_input("Search", placeholder="Name, publisher, architecture, quant…",
                         key="models-q")
    types = b.multiselect("Type", ["LLM", "Embedding"], key="models-types")
    caps = c.multiselect("Capabilities", ["vision", "tools", "reasoning"], key="models-caps")
    loaded_only = d.toggle("Loaded only", key="models-loaded")
    shown = ma.filter_models(listing.models, query=query, types=types, capabilities=caps,
                             loaded_only=loaded_only)
    frame = ma.table_for_display(ma.models_frame(shown))
    if "Loaded" in frame:
        frame["Loaded"] = frame["Loaded"].replace("?", "")  # unknown load state: blank
    st.dataframe(frame, hide_index=True, width="stretch", placeholder=EMPTY_CELL,
                 column_config={
                     "Loaded": st.column_config.TextColumn(width=60),
                     "Size (GB)": st.column_config.NumberColumn(format="%.2f GB"),
                     "Max context": st.column_config.NumberColumn(format="%d"),
                     "Instances (live config)": st.column_config.TextColumn(width="large"),
                 })
    st.caption(f"{len(shown)} of {len(listing.models)} models · from `{listing.route}`")


def loaded_instances(url: str, listing: ModelList) -> None:
    st.subheader("Loaded now", anchor=False)
    instances = [i for m in listing.models for i in m.loaded_instances]
    if not instances:
        st.caption("Nothing is loaded. Load a model below, or let LM Studio load one when a chat "
                   "asks for it.")
        return
    mine = settings.loaded_by_atom(url)
    for inst in instances:
        a, b = st.columns([5, 1], vertical_alignment="center")
        summary = ma.instance_summary(inst.config) or "config not reported"
        a.markdown(f"**{plain_label(inst.id)}** · {plain_label(summary)}"
                   + (" · loaded by ATOM" if inst.id in mine else ""))
        if b.button("Unload", key=f"unload-{inst.id}", icon=":material/eject:"):
            unload(url, [inst.id])
    if st.session_state.get("models-confirm-all") != url:
        st.button("Unload all", icon=":material/eject:", on_click=st.session_state.__setitem__,
                  args=("models-confirm-all", url))
        return
    st.warning(f"Unload all {plural(len(instances), 'instance')} from {plain_label(url)}?")
    if st.button("Yes, unload all", type="primary"):
        st.session_state.pop("models-confirm-all", None)
        unload(url, [i.id for i in instances])
    st.button("Cancel", on_click=st.session_state.pop, args=("models-confirm-all", None))


def unload(url: str, instance_ids: list[str]) -> None:
    done = []
    for instance_id in instance_ids:
        try:
            ui.client_for(url).unload_model(instance_id)
        except AtomError as e:
            ui.show_error(e)
            continue
        settings.note_unloaded(url, instance_id)
        done.append(instance_id)
        last = st.session_state.get("last-load")
        if last and last[0] == url and last[3].instance_id == instance_id:
            del st.session_state["last-load"]  # its "Loaded … in 0.30 s" box goes with it
    if done:
        notice("Unloaded " + ", ".join(f"“{i}”" for i in done) + ".")
        refresh(url)


# -- load -----------------------------------------------------------------------------------------

def load_panel(url: str, listing: ModelList) -> None:
    by_key = {m.key: m for m in listing.models}
    if not by_key:
        st.info("This server has no models yet: download one first.", icon=":material/info:")
        return
    # The load state goes in the caption, not the option label: the browser keeps showing a
    # selected option's old label when only its text changes (○ would stay after a load).
    key = st.selectbox("Model to load", list(by_key), key="load-model",
                       format_func=lambda k: ui.model_label(by_key[k]))
    m = by_key[key]
    n = len(m.loaded_instances)
    st.caption(f"{ui.LOADED} Loaded ({n} instance{'s' if n != 1 else ''}); loading again adds "
               "another instance." if n else f"{ui.NOT_LOADED} Not loaded.")
    # Outside the form, so the `lms load` line below follows it before Load is pressed.
    ctx = st.number_input("Context length", 1, m.max_context or 10_000_000, value=None,
                          step=1024, key=f"load-ctx-{key}", placeholder="server default"
                          + (f" (model max {m.max_context:,})" if m.max_context else ""))
    with st.form("load-form", border=False):
        batch = flash = kv = experts = None
        if ma.uses_llama_cpp_options(m):
            a, b = st.columns(2)
            batch = a.number_input("Eval batch size", 1, 65536, value=None, step=128,
                                   key="load-batch", placeholder="server default")
            experts = b.number_input("Experts", 1, 256, value=None, key="load-experts",
                                     placeholder="server default", disabled=not ma.is_moe(m),
                                     help="Mixture-of-experts models only")
            flash = a.selectbox("Flash attention", list(TRISTATE), format_func=TRISTATE.get,
                                key="load-flash")
            kv = b.selectbox("KV cache on GPU", list(TRISTATE), format_func=TRISTATE.get,
                             key="load-kv")
        else:
            st.caption("Only the context length applies to this model (the other settings are "
                       "llama.cpp options; this is an MLX or embedding model).")
        submitted = st.form_submit_button("Load", icon=":material/upload:", type="primary")
    if submitted:
        try:
            config = ma.build_load_config(m, context_length=ctx, eval_batch_size=batch,
                                          flash_attention=flash, offload_kv_cache_to_gpu=kv,
                                          num_experts=experts)
            with st.spinner(f"Loading {plain_label(key)}…"):
                result = ui.client_for(url).load_model(key, config)
        except (ValueError, AtomError) as e:
            st.error(safe_markdown(getattr(e, "sentence", str(e))), icon=":material/error:")
        else:
            settings.note_loaded(url, result.instance_id)
            st.session_state["last-load"] = (url, key, config, result)
            st.session_state.pop("last-load-listed", None)
            refresh(url)
    last_load(url, listing)
    lms_command(key, ctx)


def last_load(url: str, listing: ModelList) -> None:
    last = st.session_state.get("last-load")
    if not last or last[0] != url:
        return
    _, key, config, result = last
    if any(i.id == result.instance_id for m in listing.models for i in m.loaded_instances):
        st.session_state["last-load-listed"] = True
    elif st.session_state.pop("last-load-listed", False):  # unloaded since (by TTL, elsewhere)
        del st.session_state["last-load"]
        return
    st.success(safe_markdown(ma.load_summary(key, result)), icon=":material/check_circle:")
    if result.rejected_keys:
        refused = plain_label(", ".join(result.rejected_keys))
        st.warning(f"The server refused {refused}, so ATOM loaded the "
                   "model without it.", icon=":material/warning:")
    live = next((i.config for m in listing.models for i in m.loaded_instances
                 if i.id == result.instance_id), None)
    source = ("echoed by the server (echo_load_config)" if result.applied_config is not None
              else "from the server's model list" if live else "not reported by the server")
    st.caption(f"What the server applied — {source}:")
    st.table([{"Setting": r.setting, "Asked": safe_markdown(r.asked),
               "Applied": safe_markdown(r.applied), "Note": safe_markdown(r.note)}
              for r in ma.applied_rows(config, result, live)])  # cells are Markdown


def lms_command(key: str, ctx: int | None) -> None:
    st.markdown("**Settings the REST API can't set**")
    st.caption("LM Studio's load route takes only the settings above. For GPU offload, parallel "
               "slots, an idle TTL or your own identifier, run this in a terminal instead:")
    a, b, c, d = st.columns(4)
    gpu = a.selectbox("GPU offload", GPU_CHOICES, format_func=lambda g: g or "default",
                      key="lms-gpu")
    parallel = b.number_input("Parallel slots", 1, 64, value=None, key="lms-parallel",
                              placeholder="default")
    ttl = c.number_input("TTL (s)", 1, 7 * 24 * 3600, value=None, key="lms-ttl",
                         placeholder="none")
    ident = d.text_input("Identifier", key="lms-id", placeholder="model key")
    st.code(ma.lms_load_command(key, context_length=ctx, gpu=gpu or None, parallel=parallel,
                                ttl=ttl, identifier=ident), language="bash")


# -- page -----------------------------------------------------------------------------------------

st.subheader("Models", anchor=False)
choices = ui.servers()
names = {c.url: c.name for c in choices}
if st.session_state.get("models-server-for") != ui.server_url() or st.session_state.get(
        "models-server") not in names:  # follow the sidebar's server when it changes
    st.session_state["models-server-for"] = st.session_state["models-server"] = ui.server_url()
url = st.selectbox("Server", list(names), format_func=lambda u: f"{names[u]} · {u}",
                   key="models-server") if len(choices) > 1 else choices[0].url
if text := st.session_state.pop("models-notice", None):
    st.success(safe_markdown(text), icon=":material/check_circle:")
status = ui.status_for(url)
if status.error is not None:
    ui.show_error(status.error)
    st.stop()
assert status.models is not None
listing = status.models
if missing := ma.missing_features(listing):
    st.info(f"Server type: {listing.dialect.label}. What ATOM can't do with it:\n\n"
            + "\n".join(f"- {s}" for s in missing), icon=":material/info:")
model_table(listing)
if listing.dialect.can_manage_models:
    loaded_instances(url, listing)
    load_tab, download_tab = st.tabs(["Load a model", "Download a model"])
    with load_tab:
        load_panel(url, listing)
    with download_tab:
        download_panel(url)
