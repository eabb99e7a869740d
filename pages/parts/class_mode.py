"""Class mode (ATOM_CLASS=1): who gets in where. The teacher's link carries the teacher key
once (`/?teacher=<key>`, as Jupyter's token does): it marks that browser session as the
teacher's and leaves the address bar, which the projector shows. Every other session gets the
phones' page, /vote, and on every other address one sentence and nothing else: no navigation, no
sidebar (server URL, status, model list), no page body. Outside class mode nothing here runs.

Drawing and session state only; the class itself is atom_core.arena.classroom."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from atom_core.arena import classroom
from atom_core.config import settings_from_env

TEACHER = "_atom_teacher"  # session state: this browser session opened the teacher's link
COOKIE = "atom_teacher"  # the browser's session cookie that keeps it the teacher's over reloads
STUDENT = "class_student"  # session state: this phone's student id (also in its address, ?s=)


def vote_page() -> StreamlitPage:
    """/vote, the phones' page: a page of its own in the navigation, never listed."""
    return st.Page("pages/vote.py", title="Vote", icon=":material/how_to_vote:",
                   url_path="vote", visibility="hidden")


@st.cache_resource(show_spinner=False)
def _process_key() -> str:
    """The teacher key when ATOM_TEACHER_KEY is unset and the app was not started by
    `ATOM_CLASS=1 make run` (which sets it): a new one per server process, printed once."""
    key = secrets.token_urlsafe(16)
    port = st.get_option("server.port")
    from atom_core import network

    print(f"ATOM class mode. Teacher: {network.base_url(port)}/?teacher={key}", flush=True)
    return key


def teacher_key() -> str:
    return settings_from_env().teacher_key or _process_key()


@st.cache_resource(show_spinner=False)
def throttle() -> classroom.JoinThrottle:
    """Wrong join codes, per address, for the whole server process."""
    return classroom.JoinThrottle()


@st.cache_resource(show_spinner=False)
def limiter() -> classroom.VoteLimiter:
    """Votes per student, for the whole server process."""
    return classroom.VoteLimiter()


def _cookie_value() -> str:
    """What the teacher's cookie holds: derived from the key, never the key itself."""
    return hmac.new(teacher_key().encode(), b"atom-teacher-cookie", "sha256").hexdigest()


def _remember_teacher() -> None:
    """Sets the teacher's cookie for this browser session (like Jupyter's token: gone when the
    browser closes), so a reload or a new tab of the teacher's stays the teacher's. Streamlit
    has no call that sets a cookie: a script in the page does (same origin, SameSite=Strict)."""
    with st.container(key="atom_teacher_cookie", height=1, border=False):
        st.html(f"<script>document.cookie = '{COOKIE}={_cookie_value()}; path=/; "
                "SameSite=Strict';</script>", unsafe_allow_javascript=True)


def is_teacher() -> bool:
    """Outside class mode every session is (there is no one else); in class mode, the sessions
    that opened the teacher's link."""
    return not settings_from_env().class_mode or bool(st.session_state.get(TEACHER))


def admit(page_paths: Sequence[str]) -> None:
    """Call in app.py before drawing anything. In class mode, a session without the teacher
    key runs /vote or the one-sentence page and this stops the script; the teacher's session
    (and every session outside class mode) goes on. `page_paths` are the url paths of the
    app's own pages, the first the default: each gets the sentence."""
    if not settings_from_env().class_mode:
        return
    given = st.query_params.get("teacher")
    if given is not None:
        if hmac.compare_digest(given.encode(), teacher_key().encode()):
            st.session_state[TEACHER] = True
        del st.query_params["teacher"]  # out of the address bar, which the projector shows
    cookie = st.context.cookies.get(COOKIE)
    if cookie and hmac.compare_digest(cookie.encode(), _cookie_value().encode()):
        st.session_state[TEACHER] = True
    if st.session_state.get(TEACHER):
        if cookie is None:
            _remember_teacher()
        return
    # The same addresses as the teacher's, so a bookmark of /chat gets the sentence and not
    # "page not found"; hidden, so nothing lists them.
    locked = [st.Page(locked_page, title="ATOM", url_path=path, default=i == 0)
              for i, path in enumerate(page_paths)]
    vote = vote_page()
    page = st.navigation([*locked, vote], position="hidden")
    if st.session_state.pop("_atom_return_to", None) == "pages/vote.py":
        # a phone opened /vote before app.py ever ran (an app restart): see ui.py
        st.switch_page(vote, query_params=st.session_state.pop("_atom_return_query", None))
    page.run()
    st.stop()


def locked_page() -> None:
    """Every page but /vote, for a session without the teacher key: one sentence."""
    # The Host header passed the Host check: it is one of the names ATOM answers to.
    host = st.context.headers.get("Host") or "localhost"
    st.info(f"ATOM is in class mode: this page opens with the teacher's link. Students vote at "
            f"`http://{host.replace('`', '')}/vote`.", icon=":material/lock:")


def student(session: classroom.ClassSession | None) -> str | None:
    """This phone's student id in the class running now, from its session or its address
    (?s=, so a reload or an app restart keeps it); None when it has not joined this class."""
    if session is None:
        return None
    for candidate in (st.session_state.get(STUDENT), st.query_params.get("s")):
        if candidate and classroom.is_student(session, candidate):
            st.session_state[STUDENT] = candidate
            if st.query_params.get("s") != candidate:
                st.query_params["s"] = candidate
            return str(candidate)
    st.session_state.pop(STUDENT, None)
    return None


def join(session: classroom.ClassSession | None, typed: str) -> str:
    """A join code typed (or brought by the QR code's link): "" when the phone joined, else the
    sentence to show."""
    address = st.context.ip_address or "unknown"
    joined = classroom.join(session, typed, address, throttle())
    if joined.student is None:
        return joined.sentence
    st.session_state[STUDENT] = joined.student
    st.query_params.pop("code", None)
    st.query_params["s"] = joined.student
    return ""
