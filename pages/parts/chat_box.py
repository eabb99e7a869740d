"""The chat box and ATOM's own Stop button, shared by Chat and the Arena.

Why not Streamlit's `st.chat_input(submit_mode="stop")` (or "disable", which shares its
logic): in those modes the browser keeps the box disabled from a message until it sees a full
run of the app finish as the latest finish. When a widget (a model pick) or the reply's own end
replaced the run that answered, a fragment timer that fired just before (run_every: Chat's
redraw after Stop, the sidebar's server watch) queued a fragment run right behind that full run;
a busy browser handled both ends in one render, saw only the fragment's, and the box stayed
disabled, its Stop showing, until the next click (issue 18). A box drawn with `disabled=True`
is no way out either: Streamlit 1.67 drops the value a disabled widget is sent, so the run that
reads a message cannot disable the box it came from.

So the box stays in plain submit mode: it is never disabled by a reply, and what it shows never
depends on which run the browser saw end. A message sent while a reply streams replaces that
run, like a model pick: the reply is saved as it stands, marked Stopped, and the new message is
answered. Stop is a button: a click reruns the app, which replaces the run that streams (its
`finally` saves what arrived, marked stopped) and draws the page from what was saved."""

from __future__ import annotations

import streamlit as st


def chat_box(placeholder: str, *, key: str | None = None, disabled: bool = False) -> str | None:
    """The page's chat input, pinned to the bottom (see the module docstring for its mode)."""
    return st.chat_input(placeholder, key=key, disabled=disabled)


def stop_button(key: str) -> None:
    """Drawn while a reply streams, under the chat box. Clicking it ends that run."""
    st.bottom.button("Stop", key=key, icon=":material/stop_circle:",
                     help="Stop the reply: what has arrived is kept, marked Stopped.")
