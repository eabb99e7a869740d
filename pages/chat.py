"""Chat: talk to one model, with history kept on this machine."""

from __future__ import annotations

import time

import streamlit as st

from atom_core.chat import ChatTurn, auto_title, history_for_request, metrics_line
from atom_core.history import Conversation, Message, export
from atom_core.render import image_hosts, plain_label, safe_markdown
from atom_core.settings.store import SamplingPreset
from atom_core.types import Dialect, SamplingOptions
from pages import _chat_images
from pages import _chat_route as chat_route
from pages import _ui as ui

REDRAW_S = 0.08  # about 12 redraws a second: smooth, and cheap for the browser
REDRAW_AFTER_STOP_S = 0.5  # how soon after Stop the saved reply replaces the live one
STATE_NOTES = {
    "stopped": ("Stopped", ":material/stop_circle:"),
    "interrupted": ("Interrupted: the reply broke off", ":material/link_off:"),
}

ui.require_app_shell("pages/chat.py")
store = ui.store()


# -- conversation selection (sidebar) ----------------------------------------------------------

def current_conversation() -> Conversation | None:
    cid = st.session_state.get("conversation_id") or st.query_params.get("c")
    conv = store.get_conversation(cid) if cid else None
    if conv is None and "conversation_id" not in st.session_state:
        recent = store.list_conversations(limit=1)  # a reload lands on the latest chat
        conv = recent[0] if recent else None
    select(conv)
    return conv


def select(conv: Conversation | None) -> None:
    new_id = conv.id if conv else ""
    if st.session_state.get("conversation_id") != new_id:
        st.session_state.pop("confirm_delete", None)
    st.session_state.conversation_id = new_id
    if conv:
        st.query_params["c"] = conv.id
    elif "c" in st.query_params:
        del st.query_params["c"]


def conversation_list(conv: Conversation | None) -> None:
    with st.sidebar:
        st.divider()
        st.button("New chat", icon=":material/add:", use_container_width=True,
                  on_click=select, args=(None,))
        query = st.text_input("Search chats", placeholder="Title or text…", key="chat_search",
                              label_visibility="collapsed")
        found = store.list_conversations(query=query, limit=40)
        if query and not found:
            st.caption("No chat matches.")
        for c in found:
            st.button(
                plain_label(c.title), key=f"conv-{c.id}", use_container_width=True,
                type="primary" if conv and c.id == conv.id else "tertiary",
                on_click=select, args=(c,), help=plain_label(c.preview) or None,
            )


# -- header: title, settings, export, rename, delete ----------------------------------------------

def header(conv: Conversation | None, model: str | None = None
           ) -> tuple[SamplingOptions, str, int | None]:
    cols = st.columns([3, 1, 1, 1], vertical_alignment="center")
    cols[0].subheader(plain_label(conv.title) if conv else "New chat")
    with cols[1].popover("Settings", icon=":material/tune:", use_container_width=True):
        ui.pick_template("chat-template", f"sys-{conv_key(conv)}")
        system = st.text_area(
            "System prompt", value=conv.system_prompt if conv else "", key=f"sys-{conv_key(conv)}",
            help="Sent before the conversation on every request.",
        )
        if conv and system != conv.system_prompt:
            store.update_conversation(conv.id, system_prompt=system)
        chat_route.picker(conv, model)
        apply_preset(ui.pick_preset("chat-preset", model=model))
        options, ttl = sampling_controls()
    if conv:
        with cols[2].popover("Export", icon=":material/download:", use_container_width=True):
            messages = store.messages(conv.id)
            for label, ext, mime, render in (
                ("Markdown", "md", "text/markdown", export.to_markdown),
                ("JSON", "json", "application/json", _chat_images.to_json),
                ("Plain text", "txt", "text/plain", export.to_text),
            ):
                st.download_button(label, render(conv, messages),
                                   file_name=export.export_filename(conv, ext), mime=mime,
                                   on_click="ignore", use_container_width=True)
        with cols[3].popover("Edit", icon=":material/edit:", use_container_width=True):
            title = st.text_input("Title", value=conv.title, key=f"title-{conv.id}")
            if title.strip() and title != conv.title:
                store.update_conversation(conv.id, title=title.strip())
                st.rerun()
            if st.session_state.get("confirm_delete") == conv.id:
                st.warning("Delete this chat and all its messages? This can't be undone.")
                st.button("Yes, delete", type="primary", on_click=delete, args=(conv.id,))
                st.button("Cancel", on_click=st.session_state.pop, args=("confirm_delete",))
            else:
                st.button("Delete chat", icon=":material/delete:",
                          on_click=st.session_state.__setitem__, args=("confirm_delete", conv.id))
    return options, system, ttl


def conv_key(conv: Conversation | None) -> str:
    return conv.id if conv else "new"


def delete(conversation_id: str) -> None:
    store.delete_conversation(conversation_id)
    _chat_images.forget(conversation_id)
    select(None)


def apply_preset(preset: SamplingPreset | None) -> None:
    """Puts a newly picked preset (Settings) into the fields below, which stay editable."""
    name = preset.name if preset else ""
    if st.session_state.get("_preset_applied") == name and "temperature" in st.session_state:
        return  # already applied, and the fields still hold it (or the user's edits)
    st.session_state["_preset_applied"] = name
    values = preset.values() if preset else {}
    for key in ("temperature", "top_p", "top_k", "max_tokens", "repeat_penalty", "seed"):
        st.session_state[key] = values.get(key)


def sampling_controls() -> tuple[SamplingOptions, int | None]:
    st.caption("Empty fields use the model's own defaults.")
    a, b = st.columns(2)
    temperature = a.number_input("Temperature", 0.0, 2.0, value=None, step=0.1, key="temperature",
                                 placeholder="default")
    top_p = b.number_input("Top P", 0.0, 1.0, value=None, step=0.05, key="top_p",
                           placeholder="default")
    top_k = a.number_input("Top K", 0, 500, value=None, step=1, key="top_k",
                           placeholder="default")
    max_tokens = b.number_input("Max tokens", 1, 131072, value=None, step=64, key="max_tokens",
                                placeholder="no limit")
    repeat = a.number_input("Repeat penalty", 0.5, 2.0, value=None, step=0.05,
                            key="repeat_penalty", placeholder="default")
    seed = b.number_input("Seed", 0, 2**31 - 1, value=None, step=1, key="seed",
                          placeholder="random")
    presence = a.number_input("Presence penalty", -2.0, 2.0, value=None, step=0.1,
                              key="presence_penalty", placeholder="default")
    frequency = b.number_input("Frequency penalty", -2.0, 2.0, value=None, step=0.1,
                               key="frequency_penalty", placeholder="default")
    stop = st.text_area("Stop sequences", key="stop", placeholder="One per line",
                        height=68)
    if "ttl" not in st.session_state:  # each visit starts from the Settings page's default
        st.session_state.ttl = ui.default_ttl()
    ttl = st.number_input(
        "Idle TTL (seconds)", 1, 7 * 24 * 3600, value=None, step=60, key="ttl",
        placeholder="server default",
        help="If this request makes LM Studio load the model (just-in-time), unload it after "
        "this long unused. The default comes from Settings.",
    )
    options = SamplingOptions(
        temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
        repeat_penalty=repeat, seed=seed, presence_penalty=presence,
        frequency_penalty=frequency,
        stop=tuple(s for s in (stop or "").splitlines() if s),
    )
    return options, ttl


# -- messages -------------------------------------------------------------------------------------

def show_message(m: Message) -> None:
    shown: set[str] = st.session_state.setdefault("_images_shown", {}).get(m.id, set())
    with st.chat_message(m.role):
        if m.reasoning:
            with st.expander("Reasoning", icon=":material/psychology:"):
                st.markdown(safe_markdown(m.reasoning, show_images_from=shown))
        if m.content:
            st.markdown(safe_markdown(m.content, show_images_from=shown))
        _chat_images.thumbnails(m)
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
    """Stop (the chat input's button) ends the script run where it is: nothing more can be drawn
    in it, so the reply would stay as it was mid-stream. This fragment is drawn while a reply
    streams; its timer fires in a new run after Stop and redraws the page from what
    ChatTurn.finish() saved (the reply marked Stopped, with Regenerate)."""
    if st.session_state.pop("_chat_streaming", False):
        st.rerun(scope="app")


def stream_reply(conv: Conversation, model: str, options: SamplingOptions, system: str,
                 ttl: int | None) -> None:
    history = history_for_request(store.messages(conv.id), _chat_images.loader(conv.id))
    if refused := _chat_images.refusal(model, history):  # said before anything is sent
        store.add_message(conv.id, role="assistant", content="", model=model, state="error",
                          error=refused)
        st.rerun()
    chosen = chat_route.chosen(conv)
    if ui.server_status().dialect not in (Dialect.LMSTUDIO_04, Dialect.LMSTUDIO_03):
        ttl = None  # LM Studio's JIT setting; other servers never asked for it
    redraw_after_stop()  # drawn first: its first run (this one) must find nothing to redraw
    st.session_state["_chat_streaming"] = True
    turn = ChatTurn(store=store, client=ui.client(), conversation_id=conv.id, model=model,
                    history=history, options=options, system_prompt=system, ttl=ttl,
                    route=chosen.route, previous_response_id=chosen.continues_from,
                    reasoning=chosen.reasoning)
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
prompt = st.chat_input("Message the model", submit_mode="stop")
pictures = _chat_images.picker("chat")
conv = current_conversation()
model = ui.selected_model() or (conv.model if conv else None)
if prompt and conv is None:
    conv = store.create_conversation(title=auto_title(prompt), model=model or "",
                                     system_prompt=st.session_state.get("sys-new", ""))
    select(conv)
    chat_route.adopt_new(conv)
conversation_list(conv)
options, system, ttl = header(conv, model)
chat_route.route_caption(conv)
messages = store.messages(conv.id) if conv else []
if not messages and not prompt:
    st.caption("Ask anything. Replies stream from the model picked in the sidebar; every chat "
               "is kept on this machine.")
for m in messages:
    show_message(m)

last = messages[-1] if messages else None
if conv and last is not None and model and not prompt:
    again = last.role == "assistant"
    if st.button("Regenerate" if again else "Answer", icon=":material/refresh:", type="tertiary",
                 help=f"Ask {plain_label(model)} {'again ' if again else ''}for a reply"):
        if again:
            store.delete_message(conv.id, last.id)
        stream_reply(conv, model, options, system, ttl)

if prompt and conv is not None:
    sent = store.add_message(conv.id, role="user", content=prompt)  # saved before anything fails
    _chat_images.keep(conv.id, sent.id, pictures)
    if not model:
        status = ui.server_status(refresh=True)
        store.add_message(conv.id, role="assistant", content="", state="error",
                          error=status.sentence if status.error else
                          "Pick a model in the sidebar first, then press Answer.")
        st.rerun()
    if conv.model != model:
        store.update_conversation(conv.id, model=model)
    with st.chat_message("user"):
        st.markdown(safe_markdown(prompt))
        _chat_images.thumbnails(sent)
    stream_reply(conv, model, options, system, ttl)
