"""Streamlit glue shared by app.py and the pages: the one client, the one store, the server
status and the model picker. Drawing and session state only; logic lives in atom_core."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import streamlit as st

from atom_core.config import StreamLimits, settings_from_env
from atom_core.errors import AtomError, DemoEngineNotReady
from atom_core.history import HistoryStore, open_store
from atom_core.launch import demo
from atom_core.launch.host_guard import refusal_sentence
from atom_core.network import host_admitted
from atom_core.render import plain_label, safe_markdown
from atom_core.server.admin import auto_unload_targets
from atom_core.server.client import LMStudioClient, ServerStatus
from atom_core.server.status_cache import StatusCache
from atom_core.settings.store import (
    SamplingPreset,
    SettingsStore,
    initial_server_url,
    open_settings,
    server_token,
    stream_limits,
)
from atom_core.types import ModelInfo, SamplingOptions
from atom_core.url import ServerURL

STATUS_MAX_AGE_S = 15.0
KEEP: Literal["session"] = "session"  # widget values survive view and page switches
# For every field in a popover whose value the page sets. A closed popover does not draw its
# fields, so the browser has no value for one it has not shown yet; after any rerun it came up
# at its empty default and sent that back (Settings' idle TTL, a model's preset, a chat's route
# were lost, issue 18). With persist_state, a field the browser has no value for gets the
# page's value; "page" keeps the rule that each visit to a page starts from the saved defaults.
IN_POPOVER: Literal["page"] = "page"
LOADED = "●"
NOT_LOADED = "○"


@st.cache_resource(show_spinner=False, on_release=LMStudioClient.close)  # release: sockets too
def _client(base_url: ServerURL, token: str | None, limits: StreamLimits) -> LMStudioClient:
    # One client per server (and token and limits) for the whole process: httpx.Client is
    # thread-safe and pools connections, which the arena's parallel streams share.
    return LMStudioClient(base_url, token=token, limits=limits)


@st.cache_resource(show_spinner=False)
def _store(data_dir: str) -> HistoryStore:
    return open_store(data_dir)


def server_url() -> ServerURL:
    """This session's server: ATOM_SERVER_URL if set, else the default profile from Settings,
    else http://localhost:1234; the sidebar's box switches it for the session."""
    if "server_url" not in st.session_state:
        st.session_state.server_url = initial_server_url(settings_from_env(),
                                                         settings_store().load())
    return ServerURL(st.session_state.server_url)


def client() -> LMStudioClient:
    return client_for(server_url())


def store() -> HistoryStore:
    return _store(str(settings_from_env().data_dir))


def settings_store() -> SettingsStore:
    """Server profiles, tokens, TTL and presets (Settings page), beside the history."""
    return open_settings(settings_from_env().data_dir)


def token_for(url: ServerURL) -> str | None:
    """The token saved in Settings for this URL, else ATOM_API_TOKEN for ATOM_SERVER_URL only."""
    return server_token(settings_store(), settings_from_env(), ServerURL(url))


def server_status(*, refresh: bool = False) -> ServerStatus:
    """The current server's status, re-checked at most every STATUS_MAX_AGE_S seconds."""
    return status_for(server_url(), refresh=refresh)


def _statuses() -> StatusCache[ServerStatus]:
    cache: StatusCache[ServerStatus] = st.session_state.setdefault(
        "_statuses", StatusCache(STATUS_MAX_AGE_S))
    return cache


def status_for(url: str, *, refresh: bool = False) -> ServerStatus:
    """Any known server's status (models included), cached per session for a few seconds."""
    def ask(u: ServerURL) -> ServerStatus:
        return demo.explain_status(client_for(u).status())

    status = _statuses().get(url, ask, refresh=refresh)
    if isinstance(status.error, DemoEngineNotReady) and demo.engine_progress() is None:
        # The demo engine got ready since that answer was kept: ask now, not when it expires (a
        # message sent as the build ended waited for the "not ready" answer).
        status = _statuses().get(url, ask, refresh=True)
    return status


def forget_status(url: str) -> None:
    """Drops a server's cached status (its token or profile changed): the next look asks it."""
    _statuses().forget(url)


@dataclass(frozen=True, slots=True)
class ServerChoice:
    """A server the user can pick models from."""

    name: str
    url: ServerURL
    token: str | None = field(default=None, repr=False)  # never shown


def servers() -> list[ServerChoice]:
    """Every server ATOM knows this session: the current one first, then any extra servers
    (ATOM_EXTRA_SERVERS, comma-separated URLs, e.g. the second demo engine), then the server
    profiles saved in Settings."""
    profiles = settings_store().load().profiles
    names = {ServerURL(p.url): p.name for p in reversed(profiles)}
    current = server_url()
    out = [ServerChoice(name=names.get(current, "Current server"), url=current,
                        token=token_for(current))]
    for i, url in enumerate(settings_from_env().extra_servers):
        if all(c.url != url for c in out):
            out.append(ServerChoice(name=names.get(url, f"Server {i + 2}"), url=url,
                                    token=token_for(url)))
    for p in profiles:
        url = ServerURL(p.url)
        if all(c.url != url for c in out):
            out.append(ServerChoice(name=p.name, url=url, token=token_for(url)))
    return out


def client_for(url: str) -> LMStudioClient:
    """The shared client for a server (its token from Settings, else from the environment)."""
    url = ServerURL(url)  # a no-op for a ServerURL: pages pass the ones ui gave them
    return _client(url, token_for(url), stream_limits(settings_from_env(), settings_store().load()))


def set_server_url(url: ServerURL) -> None:
    """This session's server from now on (the sidebar's box checks what was typed)."""
    st.session_state.server_url = ServerURL(url)


def notes_to_show(notes: Sequence[str], shown_with: str) -> list[str]:
    """Arena's notes about servers worth hearing once: none about the bundled demo engine (ATOM
    started it and knows what it serves), and each other note once per session, with the
    round (`shown_with`) that first raised it."""
    demo_urls = demo.demo_servers()
    first: dict[str, str] = st.session_state.setdefault("_notes_first_shown", {})
    return [n for n in notes if not any(n.startswith(u) for u in demo_urls)
            and first.setdefault(n, shown_with) == shown_with]


def model_label(m: ModelInfo) -> str:
    extra = " · ".join(x for x in (m.params, m.quantization) if x)
    return m.name + (f"  ({extra})" if extra else "")


def selected_model() -> str | None:
    """The model key picked in the sidebar, or None."""
    value = st.session_state.get("model")
    return str(value) if value else None


def _refused() -> None:
    """The only page a refused browser gets; refuse_foreign_host() has drawn its sentence."""


def refuse_foreign_host() -> None:
    """Call before anything else runs. A browser that reached ATOM by a name it does not answer
    to (a web page that rebound its own name to 127.0.0.1) gets one sentence and nothing else:
    no sidebar, no page, no widget whose action it could trigger."""
    host = st.context.headers.get("Host")
    if host_admitted(host, settings_from_env()):  # class mode adds this machine's LAN names
        return
    # One hidden page, so Streamlit does not fall back to listing the pages/ folder either.
    st.navigation([st.Page(_refused, title="ATOM", url_path="refused")], position="hidden")
    st.error(plain_label(refusal_sentence(host or "")), icon=":material/block:")
    st.stop()


def require_app_shell(page: str) -> None:
    """Call first in a page script. Opening a page's own URL (a bookmark of /arena) on a server
    that has not run app.py yet runs that page alone: Streamlit starts in its legacy mode for a
    `pages/` folder until app.py calls st.navigation, so there is no sidebar, no wide layout,
    and a second page list. This sends the session through app.py, which comes back to `page`.
    `streamlit run app.py` imports app.py for its st.App before any session, and app.py turns
    that mode off there, so on ATOM's server this is only a fallback."""
    refuse_foreign_host()
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        st.session_state["_atom_return_to"] = page
        # and its query (a phone's student id in /vote?s=…, after an app restart)
        st.session_state["_atom_return_query"] = st.query_params.to_dict()
        st.switch_page("app.py")


def show_error(error: AtomError) -> None:
    if isinstance(error, DemoEngineNotReady):  # not a failure: `make run` is still building it
        st.info(safe_markdown(error.sentence), icon=":material/construction:")
        return
    st.error(safe_markdown(error.sentence), icon=":material/error:")


def auto_unload_on_change(model: str) -> bool:
    """Settings' auto-unload, called with the sidebar's model on every run: when it changes,
    unload the previous model's instances that ATOM loaded (every instance if the user opted in
    to that). Off by default; never across a server switch. True when it unloaded something."""
    key = (server_url(), model)
    previous = st.session_state.get("_auto_unload_prev")
    st.session_state["_auto_unload_prev"] = key
    saved = settings_store().load()
    if not saved.auto_unload or previous is None or previous[0] != key[0] or previous == key:
        return False
    listing = status_for(key[0], refresh=True).models
    if listing is None:
        return False
    targets = auto_unload_targets(listing, previous[1], model, any_instance=saved.auto_unload_any,
                                  loaded_by_atom=settings_store().loaded_by_atom(key[0]))
    for instance_id in targets:
        try:
            client_for(key[0]).unload_model(instance_id)
        except AtomError as e:
            st.toast(safe_markdown(e.sentence), icon=":material/error:")
            continue
        settings_store().note_unloaded(key[0], instance_id)
        st.toast(f"Unloaded “{plain_label(instance_id)}” (auto-unload is on in Settings).",
                 icon=":material/eject:")
    if targets:
        status_for(key[0], refresh=True)
    return bool(targets)


def default_ttl() -> int | None:
    """The idle TTL from Settings, the default for chat requests' `ttl`."""
    return settings_store().load().ttl_seconds


def pick_preset(key: str, *, model: str | None = None, label: str = "Preset",
                persist_state: Literal["page", "session"] | None = None
                ) -> SamplingPreset | None:
    """A picker of the sampling presets saved in Settings (nothing is drawn when there are
    none). It starts on the model's own preset, else the default preset; when `model` changes to
    one with its own preset, it switches to that. `persist_state` goes to the selectbox (a
    picker in a popover needs IN_POPOVER)."""
    saved = settings_store().load()
    if not saved.presets:
        return None
    options = ["", *(p.name for p in saved.presets)]
    seen = f"{key}:model"
    if key not in st.session_state:
        st.session_state[key] = getattr(saved.preset_for(model), "name", "")
    elif st.session_state.get(seen) != model and model in saved.model_presets:
        st.session_state[key] = saved.model_presets[model]
    st.session_state[seen] = model
    if st.session_state[key] not in options:
        st.session_state[key] = ""
    name = st.selectbox(label, options, key=key, format_func=lambda n: n or "None (defaults)",
                        help="Sampling presets and per-model presets are kept in Settings.",
                        persist_state=persist_state)
    return saved.preset(name)


def pick_template(key: str, target_key: str) -> None:
    """A picker of the system prompt templates saved in Settings (nothing is drawn when there
    are none): picking one writes its text into the widget whose key is `target_key` (draw
    this before that widget)."""
    templates = settings_store().load().templates
    if not templates:
        return

    def use() -> None:
        chosen = next((t for t in templates if t.name == st.session_state.get(key)), None)
        if chosen is not None:
            st.session_state[target_key] = chosen.text
        st.session_state[key] = ""  # a one-shot action: the text area stays editable

    st.selectbox("System prompt template", ["", *(t.name for t in templates)], key=key,
                 on_change=use, format_func=lambda n: n or "Insert a template…")


def preset_picker(key: str, *, model: str | None = None) -> SamplingOptions:
    """A preset picker for any page (Arena too): the chosen preset's SamplingOptions, or
    SamplingOptions() (model defaults) when none is chosen or none is saved."""
    preset = pick_preset(key, model=model)
    return preset.options() if preset else SamplingOptions()
