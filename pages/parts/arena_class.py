"""Arena, presenter mode: the class. The Class switch, the join panel the back row can read (the
phones' address, a QR code of it, the join code), and a class round's live tally with Close
voting & reveal. Drawing and session state only: the class is atom_core.arena.classroom."""

from __future__ import annotations

import streamlit as st

from atom_core import network
from atom_core.arena import classroom
from atom_core.arena.rounds import ArenaRound, get_round
from atom_core.config import settings_from_env
from atom_core.render import plain_label
from pages.parts import class_mode, ui

TALLY_S = 0.5  # the tally follows the phones' votes within a second (bench/bench_class.py)
CLASS_CSS = """<style>
.st-key-class_tally [data-testid="stProgress"] p { font-size: 1.3rem; }
.st-key-class_tally [data-testid="stProgress"] > div > div > div { height: 1.1rem; }
.st-key-class_join [data-testid="stMarkdown"] p { font-size: 1.6rem; }
.st-key-class_join .st-key-class_code p { font-size: 4rem; font-weight: 700;
  letter-spacing: .4rem; line-height: 1.1; }
</style>"""


def _switch(store: ui.HistoryStore) -> None:
    # Idempotent: a teacher's browser reconnecting to a restarted app sends the switch as it
    # was, which Streamlit reports as a change; a new class then would drop every phone.
    running = classroom.active_class(store)
    if st.session_state.get("arena_class"):
        if running is None:
            classroom.start_class(store)
    elif running is not None:
        classroom.end_class(store, running)


def _live(store: ui.HistoryStore, session: classroom.ClassSession) -> None:
    classroom.set_live(store, session, bool(st.session_state.get("class_live")))


def class_panel(store: ui.HistoryStore) -> classroom.ClassSession | None:
    """The Class switch and, while a class runs, its join panel. Returns the running class (its
    rounds are raced for the phones), or None."""
    session = classroom.active_class(store)
    if not settings_from_env().class_mode:
        st.toggle("Class", value=False, disabled=True, key="arena_class_off",
                  help="Phones vote on the race from the classroom network. Start ATOM with "
                  "`ATOM_CLASS=1 make run` to use it: it then listens on your network and locks "
                  "every page but the phones' behind the teacher's link.")
        return None
    st.session_state["arena_class"] = session is not None  # one class for every teacher tab
    cols = st.columns([1, 2, 3], vertical_alignment="center")
    cols[0].toggle("Class", key="arena_class", on_change=_switch, args=(store,),
                   help="Phones join with a code and vote on each round; you close voting and "
                   "reveal. Off ends the class (its rounds stay, marked as the class's).")
    if session is None:
        return None
    st.session_state["class_live"] = session.live
    cols[1].toggle("Replies live on phones", key="class_live", on_change=_live,
                   args=(store, session),
                   help="Off: phones show the replies once every model is done. On: while they "
                   "are written, refreshed every second (costs the race a little of the machine: "
                   "docs/BENCHMARKS.md).")
    join_panel(session, expanded=classroom.class_round(store, session) is None)
    return session


def join_panel(session: classroom.ClassSession, *, expanded: bool) -> None:
    address = network.student_address(int(st.get_option("server.port")))
    st.html(CLASS_CSS)
    label = f"Students join at {address} with code {session.code}"
    with st.expander(label, expanded=expanded, icon=":material/qr_code_2:"), \
            st.container(key="class_join"):
        left, right = st.columns([1, 2], vertical_alignment="center")
        left.image(classroom.qr_png(classroom.join_link(address, session)), width=280)
        with right:
            st.markdown(f"Open **{address}** on your phone (or scan the code), then type:")
            with st.container(key="class_code"):
                st.markdown(session.code)


def tally(store: ui.HistoryStore, rnd: ArenaRound) -> None:
    """A class round's votes, live, and Close voting & reveal (the teacher's session only)."""
    if not class_mode.is_teacher():
        return
    _tally(store, rnd.id)


def _close(store: ui.HistoryStore, round_id: str) -> None:
    if (rnd := get_round(store, round_id)) is not None:
        classroom.close(store, rnd)
        st.session_state["class_closed"] = True  # the whole page shows the names now


@st.fragment(run_every=TALLY_S)
def _tally(store: ui.HistoryStore, round_id: str) -> None:
    if st.session_state.pop("class_closed", False):
        st.rerun(scope="app")
    rnd = get_round(store, round_id)
    if rnd is None:
        return
    t = classroom.tally(rnd)
    with st.container(border=True, key="class_tally"):
        if rnd.revealed:
            st.success(plain_label(classroom.result_sentence(rnd)),
                       icon=":material/emoji_events:")
        else:
            st.markdown(f"**{t.total} vote{'' if t.total == 1 else 's'} in**")
        for label, n in t.rows():
            st.progress(n / t.total if t.total else 0.0, text=f"{label}: {n}")
        if not rnd.revealed:
            st.button("Close voting & reveal", type="primary", icon=":material/visibility:",
                      key="class_close", on_click=_close, args=(store, round_id),
                      disabled=rnd.state == "running",
                      help="Shows every phone which model wrote which reply and the class's "
                      "result; later votes are refused. The result counts once on the "
                      "Leaderboard.")
