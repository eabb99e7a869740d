"""Chat: talk to one model, with history kept on this machine."""

from __future__ import annotations

import time

import streamlit as st

from atom_core.chat import (
    BLANK_PROMPT,
    ChatTurn,
    auto_title,
    blank_prompt,
    history_for_request,
)
from atom_core.errors import DemoEngineNotReady
from atom_core.history import Conversation, Message
from atom_core.metrics import metrics_line
from atom_core.render import image_hosts, plain_label, safe_markdown
from atom_core.types import Dialect, SamplingOptions
from pages.parts import chat_conversations as conversations
from pages.parts import chat_header, chat_images, chat_route, ui
from pages.parts.chat_box import chat_box, stop_button

REDRAW_S = 0.08  # about 12 redraws a second: smooth, and cheap for the browser
SAVE_WAIT_S = 5.0  # at most, for the reply a click cut short to be saved by its own run
REDRAW_AFTER_STOP_S = 0.5  # how soon after Stop the saved reply replaces the live one
STATE_NOTES = {
    "stopped": ("Stopped", ":material/stop_circle:"),
    "interrupted": ("Interrupted: the reply broke off", ":material/link_off:"),
}

ui.require_app_shell("pages/chat.py")
store = ui.store()


# -- messages -------------------------------------------------------------------------------------

def show_message(m: Message) -> None:
    shown: set[str] = st.session_state.setdefault("_images_shown", {}).get(m.id, set())
    with st.chat_message(m.role):
        if m.reasoning:
            with st.expander("Reasoning", icon=":material/psychology:"):
                st.markdown(safe_markdown(m.reasoning, show_images_from=shown))
        if m.content:
            st.markdown(safe_markdown(m.content, show_images_from=shown))
        chat_images.thumbnails(m)
        if m.state == "error":
            st.error(safe_markdown(m.error or "The reply failed."), icon=":material/error:")
        elif m.state in STATE_NOTES:
            text, icon = STATE_NOTES[m.state]
            st.warning(text + (f": {safe_markdown(m.error)}"
                               if m.error and m.state != "stopped" else ""), icon=icon)
        line = metrics_line(m.metrics)
        if m.role == "assistant" and (line or m.model):
            st.caption(" · ".join(x for x in (plain_label(m.model), line) if x))
        image_buttons(m, shown)


def image_buttons(m: Message, shown: set[str]) -> None:
    """Images in a message load only when asked, one host at a time (off by default: an image
    URL can carry the conversation away)."""
    for host in image_hosts(f"{m.reasoning}\n\n{m.content}"):
        if host not in shown:
            st.button(f"Show images from {plain_label(host)}", key=f"img-{m.id}-{host}",
                      icon=":material/image:", type="tertiary", on_click=show_images,
                      args=(m.id, host))


def show_images(message_id: str, host: str) -> None:
    st.session_state.setdefault("_images_shown", {}).setdefault(message_id, set()).add(host)


@st.fragment(run_every=REDRAW_AFTER_STOP_S)
def redraw_after_stop() -> None:
    """Streamlit's own Stop (the status widget's, not ATOM's Stop button, which reruns the page)
    ends the script run where it is: nothing more can be drawn in it, so the reply would stay as
    it was mid-stream. This fragment is drawn while a reply streams;
    its timer fires in a new run after such a Stop and redraws the page from what
    ChatTurn.finish() saved (the reply marked Stopped, with Regenerate)."""
    if st.session_state.pop("_chat_streaming", False):
        st.rerun(scope="app")


def stream_reply(conv: Conversation, model: str, options: SamplingOptions, system: str,
                 ttl: int | None) -> None:
    history = history_for_request(store.messages(conv.id), chat_images.loader(conv.id))
    if refused := chat_images.refusal(model, history):  # said before anything is sent
        store.add_message(conv.id, role="assistant", content="", model=model, state="error",
                          error=refused)
        st.rerun()
    chosen = chat_route.chosen(conv)
    if ui.server_status().dialect not in (Dialect.LMSTUDIO_04, Dialect.LMSTUDIO_03):
        ttl = None  # LM Studio's JIT setting; other servers never asked for it
    # A reply cut short by another widget (a model picked mid-reply) left the flag set: it must
    # not make this run, which has a message to send, restart itself instead of sending it.
    st.session_state.pop("_chat_streaming", None)
    redraw_after_stop()  # drawn first: its first run (this one) must find nothing to redraw
    st.session_state["_chat_streaming"] = True
    turn = ChatTurn(store=store, client=ui.client(), conversation_id=conv.id, model=model,
                    history=history, options=options, system_prompt=system, ttl=ttl,
                    route=chosen.route, previous_response_id=chosen.continues_from,
                    reasoning=chosen.reasoning)
    stop_button("chat_stop")
    st.session_state["_chat_turn"] = turn  # the next run waits until it is saved
    with st.chat_message("assistant"):
        status = st.empty()
        reasoning_box = st.empty()
        body = st.empty()
        reasoning_view = None
        try:
            turn.start()
            last = 0.0
            while not turn.done:
                turn.poll(0.05)
                now = time.perf_counter()
                if now - last < REDRAW_S and not turn.done:
                    continue
                last = now
                reply = turn.slot.reply
                if reply.reasoning:
                    if reasoning_view is None:
                        reasoning_view = reasoning_box.expander(
                            "Reasoning…", icon=":material/psychology:").empty()
                    reasoning_view.markdown(safe_markdown(reply.reasoning))
                if reply.content:
                    body.markdown(safe_markdown(reply.content) + "▌")
                if not chat_route.waiting(turn, status):
                    status.caption(live_line(turn))
        finally:
            turn.finish()  # runs on Stop too: saves what arrived, marked "stopped"
    if turn.note:
        st.toast(turn.note, icon=":material/history:")
    st.session_state.pop("_chat_streaming", None)
    ui.forget_status(ui.server_url())  # the server may have just loaded the model (JIT)
    st.rerun()


def live_line(turn: ChatTurn) -> str:
    slot = turn.slot
    reply = slot.reply
    if not reply.token_times_ns:
        waited = (time.perf_counter_ns() - slot.t_start_ns) / 1e9
        return f"{plain_label(turn.model)} · waiting for the first token… {waited:.1f} s"
    tps = reply.live_tps()
    speed = f" · {tps:.1f} tok/s" if tps else ""
    return f"{plain_label(turn.model)} · {reply.tokens} tokens{speed}"


# -- page -----------------------------------------------------------------------------------------

# Read the input first (it is pinned to the bottom wherever it is called), so that a first message
# creates its conversation before the header and the list are drawn.
prompt = chat_box("Message the model")
pictures = chat_images.picker("chat")
if blank_prompt(prompt, pictures):
    st.toast(BLANK_PROMPT, icon=":material/edit_note:")
    prompt = None
conv = conversations.current_conversation()
model = ui.selected_model() or (conv.model if conv else None)
if prompt and conv is None:
    conv = store.create_conversation(title=auto_title(prompt), model=model or "",
                                     system_prompt=st.session_state.get("sys-new", ""))
    conversations.select(conv)
    chat_route.adopt_new(conv)
conversations.conversation_list(conv)
options, system, ttl = chat_header.header(conv, model)
chat_route.route_caption(conv)
if (previous := st.session_state.pop("_chat_turn", None)) is not None:
    previous.wait_saved(SAVE_WAIT_S)  # a click mid-reply: its run may still be saving the reply
messages = store.messages(conv.id) if conv else []
if not messages and not prompt:
    st.caption("Ask anything. Replies stream from the model picked in the sidebar; every chat "
               "is kept on this machine.")
for m in messages:
    show_message(m)

last = messages[-1] if messages else None
if conv and last is not None and last.role == "user" and not prompt \
        and st.session_state.get("_answer_when_ready") == conv.id:
    if model:  # the demo engine is ready: answer what was asked while it was building
        st.session_state.pop("_answer_when_ready")
        stream_reply(conv, model, options, system, ttl)
    ui.show_error(ui.server_status().error or DemoEngineNotReady("The model is not ready yet."))
    st.caption("Your message is kept: it is answered as soon as the model is ready.")
    st.stop()
if conv and last is not None and model and not prompt:
    again = last.role == "assistant"
    if st.button("Regenerate" if again else "Answer", icon=":material/refresh:", type="tertiary",
                 help=f"Ask {plain_label(model)} {'again ' if again else ''}for a reply"):
        if again:
            store.delete_message(conv.id, last.id)
        stream_reply(conv, model, options, system, ttl)

if prompt and conv is not None:
    sent = store.add_message(conv.id, role="user", content=prompt)  # saved before anything fails
    chat_images.keep(conv.id, sent.id, pictures)
    if not model:
        status = ui.server_status(refresh=True)
        if isinstance(status.error, DemoEngineNotReady):  # no error reply: answered when ready
            st.session_state["_answer_when_ready"] = conv.id
            st.rerun()
        store.add_message(conv.id, role="assistant", content="", state="error",
                          error=status.sentence if status.error else
                          "Pick a model in the sidebar first, then press Answer.")
        st.rerun()
    if conv.model != model:
        store.update_conversation(conv.id, model=model)
    with st.chat_message("user"):
        st.markdown(safe_markdown(prompt))
        chat_images.thumbnails(sent)
    stream_reply(conv, model, options, system, ttl)
