"""The phones' page in class mode (/vote). A phone joins with the class's code once, then sees
only the current class round: the prompt, the anonymous replies as Response 1, 2, …, and a
button per response, Tie and All bad; its own vote, which it may change until voting closes;
after Close voting & reveal, which model was which and the class's result. It follows the
teacher's rounds by itself. Drawing only: the logic is in atom_core.arena.classroom.

Light on purpose (sixty of these share the laptop that runs the models): no sidebar, one record
read per watch tick, no redraw for other students' votes (docs/BENCHMARKS.md, class mode)."""

from __future__ import annotations

import streamlit as st

from atom_core.arena import classroom
from atom_core.arena.ratings import Outcome
from atom_core.arena.rounds import ArenaRound, get_round
from atom_core.render import plain_label, safe_markdown
from pages.parts import class_mode, ui

WATCH_S = 2.0  # how often a phone looks for the teacher's next step (bench/bench_class.py)
SAID = "phone_said"  # the last sentence for this phone (a wrong code, a refused vote)
PHONE_CSS = """<style>
[data-testid="stMainBlockContainer"] { max-width: 40rem; padding-top: 1.5rem; }
[data-testid="stMainBlockContainer"] [data-testid="stMarkdown"] p { font-size: 1.1rem; }
[data-testid="stMainBlockContainer"] button { min-height: 3.2rem; }
[data-testid="stMainBlockContainer"] button p { font-size: 1.15rem; }
</style>"""

ui.require_app_shell("pages/vote.py")
store = ui.store()


def say() -> None:
    if said := st.session_state.pop(SAID, None):
        st.warning(said, icon=":material/info:")


def joining(session: classroom.ClassSession | None) -> bool:
    """The join form. True when the phone just joined (the round is drawn in the same run)."""
    st.markdown("Type the code shown on your teacher's screen.")
    with st.form("join", border=False):
        typed = st.text_input("Join code", max_chars=12, placeholder="4 digits")
        if st.form_submit_button("Join", type="primary", width="stretch"):
            if not (sentence := class_mode.join(session, typed)):
                return True
            st.session_state[SAID] = sentence
    say()
    return False


def vote(round_id: str, outcome: Outcome, winner: int | None) -> None:
    session = classroom.active_class(store)
    student = class_mode.student(session)
    rnd = get_round(store, round_id)
    if rnd is None or student is None:
        st.session_state[SAID] = "This round is gone: reload the page."
        return
    if sentence := classroom.cast(store, session, rnd, student, outcome, winner,
                                  class_mode.limiter()):
        st.session_state[SAID] = sentence


def replies(rnd: ArenaRound, *, live: bool) -> None:
    for position, i in enumerate(rnd.positions):
        s = rnd.slots[i]
        with st.container(border=True):
            title = rnd.title_at(position)
            if who := rnd.subtitle_at(position):  # only once the teacher has revealed
                title += f" · {who}"
            st.markdown(f"**{plain_label(title)}**")
            if s.content:
                st.markdown(safe_markdown(s.content) + (" ▌" if live and s.state == "running"
                                                        else ""))
            if s.state in ("error", "stopped", "interrupted"):
                st.caption("This reply broke off." if s.content else "No reply.")
            elif live and s.state == "running" and not s.content:
                st.caption("writing…")


def buttons(rnd: ArenaRound, student: str) -> None:
    mine = rnd.vote_of(student)
    if mine is not None:
        st.success(f"Your vote: {classroom.choice_label(rnd, mine.outcome, mine.winner)}. "
                   "You can change it until voting closes.", icon=":material/how_to_vote:")
    else:
        st.markdown("**Which answer is better?**")
    choices: list[tuple[str, Outcome, int | None]] = [
        (f"Response {p + 1}", "win", i) for p, i in enumerate(rnd.positions)]
    choices += [("Tie", "tie", None), ("All bad", "all_bad", None)]
    for n, (label, outcome, winner) in enumerate(choices):
        chosen = mine is not None and (mine.outcome, mine.winner) == (outcome, winner)
        st.button(label, key=f"phone-{n}", on_click=vote,
                              args=(rnd.id, outcome, winner), width="stretch",
                              type="primary" if chosen else "secondary")
    say()


def results(rnd: ArenaRound, student: str) -> None:
    st.success(plain_label(classroom.result_sentence(rnd)), icon=":material/emoji_events:")
    counts = classroom.tally(rnd).rows()
    st.caption(" · ".join(f"{label}: {n}" for label, n in counts))
    if (mine := rnd.vote_of(student)) is not None:
        st.caption(f"Your vote: {classroom.choice_label(rnd, mine.outcome, mine.winner)}.")
    say()  # a vote that arrived after the close


def the_round(session: classroom.ClassSession, student: str) -> ArenaRound | None:
    rnd = classroom.class_round(store, session)
    if rnd is None:
        st.info("You're in. The next question appears here by itself when your teacher sends "
                "it.", icon=":material/check_circle:")
        return None
    with st.container(border=True):
        st.caption("Question")
        st.markdown(safe_markdown(rnd.prompt))
    stage = classroom.stage(rnd)
    if stage == "racing" and not session.live:
        st.info("The models are answering. Their replies show here when every one is done.",
                icon=":material/hourglass_top:")
        return rnd
    replies(rnd, live=stage == "racing")
    if stage == "voting":
        buttons(rnd, student)
    elif stage == "closed":
        results(rnd, student)
    return rnd


@st.fragment(run_every=WATCH_S)
def watch(shown: str | None) -> None:
    """Redraws the page when the teacher moves on (a class starts or ends, a round's replies
    are in, voting closes) or this phone's own vote changed: two unparsed record reads a tick,
    no redraw otherwise (see classroom.phone_key for what is left out and why)."""
    now = looks()
    if now is not None and now != shown:
        st.rerun(scope="app")


def looks() -> str | None:
    """What this phone shows, as a key (None: nothing to redraw while a race runs)."""
    session = classroom.active_class(store)
    student = class_mode.student(session)
    if session is None or student is None:
        return f"{session.id if session else ''}|{bool(student)}"
    key = classroom.phone_key(classroom.newest_watch(store, session), student, session.live)
    return None if key is None else f"{session.id}|True|{key}"


st.html(PHONE_CSS)
st.markdown("#### :material/how_to_vote: Class vote")
session = classroom.active_class(store)
student = class_mode.student(session)
link = st.query_params.get("code")  # the QR code's link brings the code: join without typing
if session is not None and student is None and link and not st.session_state.get("phone_link"):
    st.session_state["phone_link"] = True  # once: a wrong code in a link is typed over
    if sentence := class_mode.join(session, link):
        st.session_state[SAID] = sentence
    student = class_mode.student(session)
if session is None:
    st.info("No class vote is running now. Keep this page open: it starts by itself when your "
            "teacher turns on Class.", icon=":material/schedule:")
elif student is None:
    form = st.empty()
    with form.container():
        joined = joining(session)
    if joined:  # one run, not two: sixty phones join at once
        form.empty()
        the_round(session, str(class_mode.student(session)))
else:
    the_round(session, student)
watch(looks())
