"""Chat: the route picker (per conversation) and what a route shows while a reply waits.
Drawing only; the logic is in atom_core.chat (ConversationRoute) and atom_core.server.routes."""

import streamlit as st

from atom_core.chat import ChatTurn, ConversationRoute, conversation_route, set_conversation_route
from atom_core.history import Conversation
from atom_core.render import plain_label
from atom_core.server.routes import REASONING_LEVELS, ROUTE_LABELS, ROUTES, STATEFUL_ROUTES
from pages.parts import ui

NEW_KEY = "route-new"  # the picker's key before the first message creates the conversation
STAGES = {"model_load": "Loading the model", "prompt_processing": "Reading the prompt"}


def picker(conv: Conversation | None, model: str | None) -> None:
    """The route select box (for the Settings popover), remembered with the conversation, and
    the reasoning setting on routes that take one, where the model lists its options. Before
    the first message they are kept in the session (`adopt_new` gives them to the new chat)."""
    client = ui.client()
    suffix = conv.id if conv else "new"
    key = f"route-{suffix}"
    chosen = conversation_route(ui.store(), conv.id) if conv else ConversationRoute()
    if key not in st.session_state:
        st.session_state[key] = chosen.route

    def label(route: str) -> str:
        return ROUTE_LABELS[route] + (" — not offered here" if client.route_problem(route)
                                      else "")

    route = st.selectbox("Route", ROUTES, key=key, format_func=label,
                         persist_state=ui.IN_POPOVER,
                         help="Which of the server's chat routes this conversation talks over. "
                         "LM Studio native and Responses keep the conversation on the server: "
                         "each turn sends only the new message.")
    if problem := client.route_problem(route):
        st.caption(problem)
    if conv is not None and route != chosen.route:
        chosen = set_conversation_route(ui.store(), conv.id, route=route)
    if route not in STATEFUL_ROUTES:
        return
    if options := _reasoning_options(model):
        level = st.selectbox("Reasoning", ["default", *options], key=f"route-reason-{suffix}",
                             index=([None, *options].index(chosen.reasoning)
                                    if chosen.reasoning in options else 0),
                             help="The model's reasoning setting, as the server lists it.")
        if conv is not None and (None if level == "default" else level) != chosen.reasoning:
            set_conversation_route(ui.store(), conv.id, reasoning=None if level == "default"
                                   else level, default_reasoning=level == "default")
    full = st.checkbox("Send the whole history every turn", value=chosen.full_history,
                       key=f"route-full-{suffix}",
                       help="Instead of continuing the server's stored conversation.")
    if conv is not None and full != chosen.full_history:
        set_conversation_route(ui.store(), conv.id, full_history=full)


def _reasoning_options(model: str | None) -> tuple[str, ...]:
    listing = ui.server_status().models
    info = next((m for m in listing.models if m.key == model), None) if listing else None
    return info.reasoning_options if info else ()


def chosen(conv: Conversation) -> ConversationRoute:
    return conversation_route(ui.store(), conv.id)


def adopt_new(conv: Conversation) -> None:
    """Gives a conversation just created from its first message the route, reasoning setting
    and history choice picked for it."""
    route = st.session_state.pop(NEW_KEY, None)
    level = st.session_state.pop("route-reason-new", None)
    full = st.session_state.pop("route-full-new", None)
    if not route or route == "completions":
        return
    stateful = route in STATEFUL_ROUTES
    set_conversation_route(ui.store(), conv.id, route=route,
                           reasoning=level if stateful and level in REASONING_LEVELS else None,
                           full_history=True if stateful and full else None)


def route_caption(conv: Conversation | None) -> None:
    """Which route this chat uses, and the stored reply it continues from."""
    if conv is None:
        return
    chosen = conversation_route(ui.store(), conv.id)
    if chosen.route == "completions":
        return
    line = f"Route: {ROUTE_LABELS[chosen.route]}"
    if rid := chosen.continues_from:
        line += f" · continuing response {plain_label(rid[:16])}…"  # the server's id
    if chosen.request_bytes is not None:
        line += f" · last request {chosen.request_bytes:,} bytes"
    st.caption(line)


def waiting(turn: ChatTurn, status: st.delta_generator.DeltaGenerator) -> bool:
    """Model-load / prompt-processing progress (native route) as a bar while the first token
    waits. Returns False when there is nothing to show."""
    reply = turn.slot.reply
    if reply.token_times_ns or not reply.progress:
        return False
    stage, value = list(reply.progress.items())[-1]
    status.progress(min(max(value, 0.0), 1.0), text=f"{STAGES.get(stage) or plain_label(stage)}… "
                    f"{value:.0%}")
    return True
