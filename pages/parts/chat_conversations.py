"""Chat, the conversation list: which chat is open (session state and the ?c= link), the sidebar's
search and list, New chat, delete."""

from __future__ import annotations

import streamlit as st

from atom_core.history import Conversation
from atom_core.render import plain_label
from pages.parts import chat_images, ui


def current_conversation() -> Conversation | None:
    cid = st.session_state.get("conversation_id") or st.query_params.get("c")
    store = ui.store()
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
        found = ui.store().list_conversations(query=query, limit=40)
        if query and not found:
            st.caption("No chat matches.")
        for c in found:
            st.button(
                plain_label(c.title), key=f"conv-{c.id}", use_container_width=True,
                type="primary" if conv and c.id == conv.id else "tertiary",
                on_click=select, args=(c,), help=plain_label(c.preview) or None,
            )


def delete(conversation_id: str) -> None:
    ui.store().delete_conversation(conversation_id)
    chat_images.forget(conversation_id)
    select(None)
