"""Settings: server profiles (tokens kept private), chat defaults, presets and templates, and the
data ATOM keeps on this machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from atom_core.config import LIMIT_VARIABLES, settings_from_env
from atom_core.render import plain_label, safe_markdown
from atom_core.server.client import LMStudioClient
from atom_core.settings import store as ss
from atom_core.url import ServerURL
from pages.parts import ui
from pages.parts.settings_data import data_tab

ui.require_app_shell("pages/settings.py")

NEW = ""  # the "new ..." choice in the edit pickers
store = ui.store()
settings = ui.settings_store()


def act(action: Callable[[], Any], done: str) -> bool:
    """Runs a settings change; a bad value shows its sentence instead of a traceback."""
    try:
        action()
    except ValueError as e:
        st.error(safe_markdown(str(e)), icon=":material/error:")
        return False
    st.session_state["settings-notice"] = done
    return True


def fresh_form(name: str) -> str:
    """A form key that changes after each save, so its inputs (a token above all) start empty."""
    return f"{name}-{st.session_state.get(f'{name}-n', 0)}"


def saved_form(name: str) -> None:
    st.session_state[f"{name}-n"] = st.session_state.get(f"{name}-n", 0) + 1
    st.rerun()


# -- servers --------------------------------------------------------------------------------------

def servers_tab(saved: ss.AppSettings) -> None:
    st.caption("The default server is where a new session starts, unless ATOM_SERVER_URL is set; "
               "the sidebar's box still switches for the session. A server's token is used "
               "for its URL everywhere in ATOM (else ATOM_API_TOKEN); it is kept in the data "
               "folder's tokens.json, readable only by you, shown masked, never exported or "
               "logged.")
    for p in saved.profiles:
        with st.container(border=True):
            a, b = st.columns([3, 4], vertical_alignment="center")
            token = ss.mask_token(settings.token(p.name)) or "no token"
            default = " · :blue-badge[default]" if p.name == saved.default_profile else ""
            a.markdown(f"**{plain_label(p.name)}**{default}  \n{plain_label(p.url)} · {token}")
            cols = b.columns(4)
            if cols[0].button("Test", key=f"test-{p.name}", icon=":material/network_check:"):
                test_connection(p)
            cols[1].button("Use now", key=f"use-{p.name}", on_click=ui.set_server_url,
                           args=(p.url,), disabled=ServerURL(p.url) == ui.server_url())
            cols[2].button("Make default", key=f"def-{p.name}",
                           disabled=p.name == saved.default_profile,
                           on_click=settings.set_default_profile, args=(p.name,))
            if cols[3].button("Delete", key=f"del-{p.name}", icon=":material/delete:"):
                act(lambda p=p: settings.delete_profile(p.name), f"Deleted “{p.name}”.")
                ui.forget_status(p.url)
                st.rerun()
            if report := st.session_state.get(f"test-report-{p.name}"):
                (st.success if report[0] else st.error)(safe_markdown(report[1]))
    profile_form(saved)


def test_connection(p: ss.ServerProfile) -> None:
    token = ui.token_for(p.url)  # its own token, never another server's
    with st.spinner(f"Testing {plain_label(p.url)}…"), LMStudioClient(p.url, token=token) as client:
        status = client.status()
    st.session_state[f"test-report-{p.name}"] = ss.connection_report(
        status, token_sent=bool(token))


def profile_form(saved: ss.AppSettings) -> None:
    names = [p.name for p in saved.profiles]
    editing = st.selectbox("Add or edit", [NEW, *names], key="profile-pick",
                           format_func=lambda n: n or "New server…")
    current = saved.profile(editing)
    with st.form(fresh_form("profile"), border=False):
        a, b = st.columns(2)
        name = a.text_input("Name", value=current.name if current else "",
                            placeholder="Studio on my desktop")
        url = b.text_input("URL", value=current.url if current else "",
                           placeholder="http://localhost:1234")
        token = a.text_input("API token", type="password", placeholder="keep the saved one"
                             if current and current.has_token else "none (optional)")
        clear = b.checkbox("Remove the saved token", disabled=not (current and current.has_token))
        if st.form_submit_button("Save server", icon=":material/save:", type="primary") and act(
            lambda: settings.save_profile(name, url, token=token or None, clear_token=clear,
                                          replaces=editing or None),
            f"Saved “{name.strip()}”.",
        ):
            for changed in {url, current.url if current else url}:
                ui.forget_status(changed)  # its token may have changed
            saved_form("profile")


# -- chat defaults -------------------------------------------------------------------------------

LIMIT_INPUTS = (  # (saved field, label, help)
    ("stall_timeout_s", "Stall timeout (s)",
     "A reply with no new token for this long is ended (keep-alives are not tokens), before "
     "its first token too once the server has begun answering."),
    ("first_token_timeout_s", "First-token limit (s)",
     "The longest wait for a reply's first token: a model loading, a long prompt."),
    ("request_deadline_s", "Whole-request limit (s)", "The longest one reply may take."),
)


def stream_limits(saved: ss.AppSettings) -> None:
    """When a streamed reply is given up; a variable set in the environment wins (said)."""
    env = settings_from_env()
    now = ss.stream_limits(env, saved)
    for column, (key, label, help_text) in zip(st.columns(3), LIMIT_INPUTS, strict=True):
        low, high, _ = ss.LIMIT_BOUNDS[key]
        value = column.number_input(label, low, high, value=float(getattr(now, key)), step=10.0,
                                    format="%g", help=help_text, key=f"limit-{key}",
                                    disabled=key in env.limits_set)
        if key in env.limits_set:
            column.caption(f"Set by {LIMIT_VARIABLES[key]} for this run of ATOM.")
        elif value != getattr(now, key) and act(
                lambda k=key, v=value: settings.set_stream_limits(**{k: v}),
                f"Saved the {ss.LIMIT_BOUNDS[key][2]}."):
            st.rerun()

def defaults_tab(saved: ss.AppSettings) -> None:
    ttl = st.number_input("Idle TTL (seconds)", 1, 7 * 24 * 3600, value=saved.ttl_seconds,
                          step=60, placeholder="server default (60 minutes)")
    st.caption("Sent as `ttl` with each chat request; Chat starts each session with it. It "
               "applies only when that request makes LM Studio load the model on demand "
               "(just-in-time): the model is unloaded after this long unused. Models you load "
               "yourself (Models page, `lms load`) have no TTL unless `lms load --ttl` gives "
               "one. With LM Studio's Auto-Evict on (the default) only one JIT-loaded model "
               "stays in memory: asking for another unloads the previous one, whatever its TTL.")
    if ttl != saved.ttl_seconds and act(lambda: settings.set_ttl(ttl), "Saved the idle TTL."):
        st.rerun()
    stream_limits(saved)
    on = st.toggle("Unload the previous model when the chat model changes", saved.auto_unload)
    anyone = st.toggle("…even models ATOM did not load itself", saved.auto_unload_any,
                       disabled=not on, help="Off: only instances loaded from the Models page.")
    if (on, anyone and on) != (saved.auto_unload, saved.auto_unload_any):
        settings.set_auto_unload(on, any_instance=anyone)
        st.rerun()


# -- presets and templates -----------------------------------------------------------------------

def presets_tab(saved: ss.AppSettings) -> None:
    if saved.presets:
        st.table([{"Preset": plain_label(p.name), "Settings": p.summary(),
                   "Used for": plain_label(saved.preset_uses(p.name))}
                  for p in saved.presets])
    editing = st.selectbox("Add or edit a sampling preset", [NEW, *(p.name for p in saved.presets)],
                           key="preset-pick", format_func=lambda n: n or "New preset…")
    p = saved.preset(editing) or ss.SamplingPreset(name="")
    with st.form(fresh_form("preset"), border=False):
        name = st.text_input("Preset name", value=p.name, placeholder="Precise")
        cols = st.columns(3)
        values = {}
        for i, (field, (low, high)) in enumerate(ss.PRESET_BOUNDS.items()):
            step = 1 if isinstance(low, int) and isinstance(high, int) else 0.05
            values[field] = cols[i % 3].number_input(
                field.replace("_", " ").capitalize(), low, high, value=getattr(p, field),
                step=step, placeholder="model default")
        if st.form_submit_button("Save preset", icon=":material/save:") and act(
            lambda: settings.save_preset(ss.make_preset(name, **values),
                                         replaces=editing or None), f"Saved “{name}”."):
            saved_form("preset")
    if editing and st.button("Delete preset", icon=":material/delete:"):
        act(lambda: settings.delete_preset(editing), f"Deleted “{editing}”.")
        st.rerun()
    per_model(saved)
    templates(saved)


def per_model(saved: ss.AppSettings) -> None:
    st.markdown("**Default and per-model presets** — Chat starts with these.")
    names = ["", *(p.name for p in saved.presets)]
    shown = lambda n: n or "none"  # noqa: E731
    default = st.selectbox("Default preset", names, index=names.index(saved.default_preset or ""),
                           format_func=shown)
    if default != (saved.default_preset or ""):
        settings.set_default_preset(default or None)
        st.rerun()
    listing = ui.server_status().models
    models = sorted({*(m.key for m in listing.llms), *saved.model_presets} if listing
                    else saved.model_presets)
    if not models or not saved.presets:
        return
    a, b = st.columns(2)
    model = a.selectbox("Model", models, key="override-model")
    current = saved.model_presets.get(model, "")
    chosen = b.selectbox("Its preset", names, index=names.index(current) if current in names
                         else 0, format_func=shown, key=f"override-{model}")
    if chosen != current:
        settings.set_model_preset(model, chosen or None)
        st.rerun()


def templates(saved: ss.AppSettings) -> None:
    st.markdown("**System prompt templates** — pick one in Chat's settings.")
    if saved.templates:
        st.table([{"Template": plain_label(t.name), "Text": plain_label(t.text[:120])}
                  for t in saved.templates])
    editing = st.selectbox("Add or edit a template", [NEW, *(t.name for t in saved.templates)],
                           key="template-pick", format_func=lambda n: n or "New template…")
    t = saved.template(editing)
    with st.form(fresh_form("template"), border=False):
        name = st.text_input("Template name", value=t.name if t else "", placeholder="Terse")
        text = st.text_area("System prompt", value=t.text if t else "", height=100)
        if st.form_submit_button("Save template", icon=":material/save:") and act(
            lambda: settings.save_template(name, text, replaces=editing or None),
            f"Saved “{name}”.",
        ):
            saved_form("template")
    if editing and st.button("Delete template", icon=":material/delete:"):
        act(lambda: settings.delete_template(editing), f"Deleted “{editing}”.")
        st.rerun()


# -- page -----------------------------------------------------------------------------------------

st.subheader("Settings", anchor=False)
notices = st.container()  # always drawn: a notice coming or going must not move the tabs
if text := st.session_state.pop("settings-notice", None):
    notices.success(safe_markdown(text), icon=":material/check_circle:")
for warning in settings.warnings:
    notices.warning(safe_markdown(warning), icon=":material/warning:")
current = settings.load()
TABS: dict[str, Callable[[], None]] = {
    "Servers": lambda: servers_tab(current), "Chat defaults": lambda: defaults_tab(current),
    "Presets": lambda: presets_tab(current), "Data": lambda: data_tab(store, settings)}
# Only the open tab is drawn (each tab opened reruns the page): the four at once were half of a
# Settings switch, in the browser and on the server (docs/BENCHMARKS.md, page switches).
for tab, draw in zip(st.tabs(list(TABS), key="settings_tab", on_change="rerun"), TABS.values(),
                     strict=True):
    if tab.open:
        with tab:
            draw()
