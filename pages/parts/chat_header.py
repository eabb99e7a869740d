"""Chat, the header: title, the Settings popover (system prompt, template, route, preset, sampling,
idle TTL), Export and Edit (rename, delete)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import streamlit as st

from atom_core import images
from atom_core.history import Conversation, HistoryStore, Message, export
from atom_core.render import plain_label
from atom_core.settings.store import SamplingPreset
from atom_core.types import SamplingOptions
from pages.parts import chat_conversations, chat_route, ui


def header(conv: Conversation | None, model: str | None = None
           ) -> tuple[SamplingOptions, str, int | None]:
    store = ui.store()
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
        apply_preset(ui.pick_preset("chat-preset", model=model, persist_state=ui.IN_POPOVER))
        options, ttl = sampling_controls()
    if conv:
        with cols[2].popover("Export", icon=":material/download:", use_container_width=True):
            for label, ext, mime, render in (
                ("Markdown", "md", "text/markdown", export.to_markdown),
                ("JSON", "json", "application/json", partial(images.json_export, store=store)),
                ("Plain text", "txt", "text/plain", export.to_text),
            ):
                st.download_button(label, on_click_file(render, conv, store),
                                   file_name=export.export_filename(conv, ext), mime=mime,
                                   on_click="ignore", use_container_width=True)
        with cols[3].popover("Edit", icon=":material/edit:", use_container_width=True):
            title = st.text_input("Title", value=conv.title, key=f"title-{conv.id}")
            if title.strip() and title != conv.title:
                store.update_conversation(conv.id, title=title.strip())
                st.rerun()
            if st.session_state.get("confirm_delete") == conv.id:
                st.warning("Delete this chat and all its messages? This can't be undone.")
                st.button("Yes, delete", type="primary", on_click=chat_conversations.delete,
                          args=(conv.id,))
                st.button("Cancel", on_click=st.session_state.pop, args=("confirm_delete",))
            else:
                st.button("Delete chat", icon=":material/delete:",
                          on_click=st.session_state.__setitem__, args=("confirm_delete", conv.id))
    return options, system, ttl


def on_click_file(render: Callable[[Conversation, Sequence[Message]], str],
                  conv: Conversation, store: HistoryStore) -> Callable[[], str]:
    """An export made when its button is clicked, from the chat as it is then: made on every
    run, the three files (the JSON with every image of the chat) were most of a Chat switch's
    own work. Streamlit calls it outside any script run, so it uses no st.* (the store is
    passed in)."""
    return lambda: render(conv, store.messages(conv.id))


def conv_key(conv: Conversation | None) -> str:
    return conv.id if conv else "new"


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
                                 placeholder="default", persist_state=ui.IN_POPOVER)
    top_p = b.number_input("Top P", 0.0, 1.0, value=None, step=0.05, key="top_p",
                           placeholder="default", persist_state=ui.IN_POPOVER)
    top_k = a.number_input("Top K", 0, 500, value=None, step=1, key="top_k",
                           placeholder="default", persist_state=ui.IN_POPOVER)
    max_tokens = b.number_input("Max tokens", 1, 131072, value=None, step=64, key="max_tokens",
                                placeholder="no limit", persist_state=ui.IN_POPOVER)
    repeat = a.number_input("Repeat penalty", 0.5, 2.0, value=None, step=0.05,
                            key="repeat_penalty", placeholder="default",
                            persist_state=ui.IN_POPOVER)
    seed = b.number_input("Seed", 0, 2**31 - 1, value=None, step=1, key="seed",
                          placeholder="random", persist_state=ui.IN_POPOVER)
    presence = a.number_input("Presence penalty", -2.0, 2.0, value=None, step=0.1,
                              key="presence_penalty", placeholder="default",
                              persist_state=ui.IN_POPOVER)
    frequency = b.number_input("Frequency penalty", -2.0, 2.0, value=None, step=0.1,
                               key="frequency_penalty", placeholder="default",
                               persist_state=ui.IN_POPOVER)
    stop = st.text_area("Stop sequences", key="stop", placeholder="One per line",
                        height=68, persist_state=ui.IN_POPOVER)
    if "ttl" not in st.session_state:  # each visit starts from the Settings page's default
        st.session_state.ttl = ui.default_ttl()
    ttl = st.number_input(
        "Idle TTL (seconds)", 1, 7 * 24 * 3600, value=None, step=60, key="ttl",
        placeholder="server default", persist_state=ui.IN_POPOVER,
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
