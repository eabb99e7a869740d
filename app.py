"""ATOM: a dashboard for local language models (LM Studio 0.4 or any OpenAI-compatible server).

Run with `make run` (or `streamlit run app.py`). This file draws the shared sidebar (server,
connection state, model picker) and hands over to the page chosen in the navigation.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from atom_core.launch import allocator, demo
from atom_core.launch.host_guard import HostGuard
from atom_core.measure import hardware
from atom_core.render import plain_label, safe_markdown
from atom_core.url import ServerURL
from pages.parts import class_mode, ui

allocator.fix_mmap_threshold()  # RSS stays flat over a long session (docs/BENCHMARKS.md)
# The favicon ships with ATOM: a ":material/..." page icon is fetched from a font CDN.
FAVICON = Path(__file__).parent / "atom_core" / "assets" / "favicon.svg"
SCRIPT_RUN = __name__ == "__main__"  # Streamlit runs this file as __main__ for each session
if not SCRIPT_RUN:
    # `streamlit run app.py` (and `make run`) finds this st.App, Streamlit's supported way to
    # put middleware in front of its routes, imports this file for it and serves it over
    # uvicorn: HostGuard refuses a foreign Host (HTTP and websocket) and a foreign Origin (the
    # websocket) before Streamlit answers at all (DNS rebinding; atom_core/launch/host_guard.py).
    import logging

    from starlette.middleware import Middleware
    from streamlit.runtime.pages_manager import PagesManager

    app = st.App(__file__, middleware=[Middleware(HostGuard)])
    # app.py calls st.navigation on every run. With a `pages/` folder beside it, Streamlit
    # starts in its legacy folder mode until some session's app.py has run, so the first
    # sessions after a (re)start ran a page alone and bounced through app.py
    # (ui.require_app_shell); a teacher's reload of /arena just after a restart landed on Chat
    # (tests/e2e/test_class_e2e.py). Said before the first session: never that mode.
    PagesManager.uses_pages_directory = False
    # Importing it builds st.Page objects outside a session: Streamlit would warn six times.
    QUIET = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
    QUIET_LEVEL, QUIET.level = QUIET.level, logging.ERROR
else:
    ui.refuse_foreign_host()  # the same rule inside, for a run without the guard (AppTest)
    st.set_page_config(page_title="ATOM", page_icon=str(FAVICON), layout="wide")

CHAT = st.Page("pages/chat.py", title="Chat", icon=":material/chat:", url_path="chat")


def home() -> None:
    """The app's root URL opens Chat. Chat itself is not the default page: Streamlit serves the
    default page at "/" only, so a bookmark of /chat would meet "Page not found"."""
    st.switch_page(CHAT, query_params=st.query_params.to_dict())


WATCH_S = 10  # how often the sidebar asks the server what is loaded, without a click

PAGES = [
    st.Page(home, title="Chat", url_path="home", default=True, visibility="hidden"),
    CHAT,
    st.Page("pages/arena.py", title="Arena", icon=":material/sports_score:", url_path="arena"),
    st.Page("pages/stats.py", title="Stats", icon=":material/monitoring:", url_path="stats"),
    st.Page("pages/models.py", title="Models", icon=":material/deployed_code:",
            url_path="models"),
    st.Page("pages/settings.py", title="Settings", icon=":material/settings:",
            url_path="settings"),
]


def page_links() -> None:
    """The five pages, drawn by ATOM: Streamlit's own page list is switched off in
    .streamlit/config.toml (client.showSidebarNavigation), because on the first visit to a fresh
    server Streamlit lists every file in pages/ (its legacy mode) before app.py has run."""
    with st.container(key="atom_nav"):
        for page in PAGES[1:]:
            st.page_link(page)


def sidebar() -> None:
    with st.sidebar:
        page_links()
        st.markdown("### :material/bolt: ATOM")
        url = st.text_input(
            "Server",
            value=ui.server_url(),
            help="LM Studio's server or any OpenAI-compatible server. A new session starts on "
            "ATOM_SERVER_URL if set, else the default server in Settings, else "
            "http://localhost:1234.",
        )
        if url and ServerURL(url) != ui.server_url():
            try:  # where a typed URL enters: checked as the Settings form checks it
                ui.set_server_url(ServerURL.checked(url))
            except ValueError as e:
                st.error(plain_label(str(e)), icon=":material/error:")
        # Drawn after the picker, whose auto-unload can change it, in the place it has here: a
        # run never restarts itself to redraw the sidebar (see watch_server).
        status_box = st.container()
        st.button("Check again", icon=":material/refresh:", type="tertiary",
                  help="Ask the server again for its state and models",
                  on_click=ui.server_status, kwargs={"refresh": True})
        model_picker(ui.server_status())
        with status_box:
            server_state(ui.server_status())
        watch_server()


def server_state(status: ui.ServerStatus) -> None:
    sentence = safe_markdown(status.sentence)  # may quote the server's own words
    if demo.is_demo_server(ui.server_url()) and demo.engine_progress() is not None:
        demo_engine_progress()  # `make run` is still building or starting it
    elif status.error is None:
        st.success(sentence, icon=":material/check_circle:")
    elif status.reachable:
        st.warning(sentence, icon=":material/lock:")
    else:
        st.error(sentence, icon=":material/cloud_off:")
    if demo.is_demo_server(ui.server_url()):
        st.info(demo.NOTICE, icon=":material/science:")


@st.fragment(run_every=3)
def demo_engine_progress() -> None:
    """The demo engine's build or start, updated every few seconds; the app reruns when it
    answers, so its model appears without a click."""
    text = demo.engine_progress()
    if text is None:
        ui.server_status(refresh=True)
        st.rerun(scope="app")
    st.info(safe_markdown(text), icon=":material/construction:")


@st.fragment(run_every=WATCH_S)
def watch_server() -> None:
    """Asks the server again every few seconds; when what is loaded changed (LM Studio's own
    TTL, another app, the CLI), the sidebar is redrawn from the new answer.

    Only on its own timer: drawn in a full run, it does nothing. A full run that restarted
    itself (st.rerun) would drop what that run was given: a message sent or a button pressed
    just as the server changed was lost (issue 18)."""
    def seen(s: ui.ServerStatus) -> tuple[bool, int, int]:
        return s.reachable, s.model_count, s.loaded_count

    if not on_own_timer("watch_server"):
        return
    if seen(ui.server_status()) != seen(ui.server_status(refresh=True)):
        st.rerun(scope="app")


def on_own_timer(fragment: str) -> bool:
    """True when `fragment` runs on its own (its run_every timer), False when it is drawn as
    part of a full run of the app (the first time it runs after count_full_run())."""
    full_run = st.session_state.get("_atom_full_run", 0)
    seen_key = f"_atom_full_run_seen_by_{fragment}"
    if st.session_state.get(seen_key) == full_run:
        return True
    st.session_state[seen_key] = full_run
    return False


def count_full_run() -> None:
    st.session_state["_atom_full_run"] = st.session_state.get("_atom_full_run", 0) + 1


def model_picker(status: ui.ServerStatus) -> None:
    listing = status.models
    if listing is None:
        return
    llms = listing.llms
    if not llms:
        st.info("The server has no language models yet. Download one in LM Studio.")
        return
    keys = [m.key for m in llms]
    by_key = {m.key: m for m in llms}
    current = st.session_state.get("model")
    if current not in by_key:
        # Prefer a loaded model: it answers at once instead of loading first.
        loaded = [m.key for m in llms if m.is_loaded]
        st.session_state.model = (loaded or keys)[0]
    # The load state is in the caption, not the option label: the browser keeps showing a
    # selected option's old label when only its text changes ("○" would stay after a load).
    # KEEP: a run that cannot draw the picker (one failed listing on a busy server) must not
    # forget the pick, or the next message goes to the first loaded model instead.
    st.selectbox("Model", keys, key="model", format_func=lambda k: ui.model_label(by_key[k]),
                 persist_state=ui.KEEP)
    ui.auto_unload_on_change(st.session_state.model)  # the status is drawn after this
    picked = by_key[st.session_state.model]
    if picked.load_state_known:
        st.caption(f"{ui.LOADED} Loaded" if picked.is_loaded else
                   f"{ui.NOT_LOADED} Not loaded: the server loads it on the first message")
    if listing.loaded_only:
        st.caption(
            "This server lists models over the OpenAI-compatible route only, so ATOM can't "
            "tell which are loaded."
        )


def store_notices(box: st.delta_generator.DeltaGenerator, shown: set[str]) -> None:
    """Damaged history files found so far (moved aside, never silently emptied)."""
    for warning in ui.store().warnings:
        if warning not in shown:
            shown.add(warning)
            box.warning(warning, icon=":material/warning:")


def main() -> None:
    class_mode.admit([p.url_path or "home" for p in PAGES])  # class mode: phones get /vote only
    if "_atom_machine_id" not in st.session_state:  # once per browser session, not per rerun
        st.session_state["_atom_machine_id"] = hardware.start_session(ui.store()).id
    count_full_run()
    sidebar()
    notices, shown = st.container(), set[str]()
    store_notices(notices, shown)
    navigation = st.navigation([*PAGES, class_mode.vote_page()])
    if return_to := st.session_state.pop("_atom_return_to", None):
        # a page's own URL opened before app.py ever ran: see ui.py
        st.switch_page(return_to, query_params=st.session_state.pop("_atom_return_query", None))
    navigation.run()
    store_notices(notices, shown)  # a file found damaged while the page ran


if SCRIPT_RUN:
    main()
else:
    QUIET.setLevel(QUIET_LEVEL)
