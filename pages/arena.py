"""Arena: one prompt, two to four models answering side by side at the same moment.

Race (live columns, results, blind vote), Leaderboard (ratings from the votes) and Prompt sets
(many prompts, unattended). Drawing only: the race, ratings and runs live in atom_core."""

from __future__ import annotations

import time

import streamlit as st

from atom_core import arena, images
from atom_core.arena.race import ArenaRace
from atom_core.arena.setup import SlotSetup
from atom_core.chat import BLANK_PROMPT, blank_prompt
from atom_core.images import ImageAttachment
from atom_core.measure.runner import Slot
from atom_core.render import plain_label, safe_markdown
from atom_core.types import ModelInfo
from pages.parts import (
    arena_board,
    arena_class,
    arena_machine,
    arena_round,
    arena_sets,
    arena_setup,
    chat_images,
    ui,
)
from pages.parts.chat_box import chat_box, stop_button

REDRAW_S = 0.08  # about 12 redraws a second across all columns
VIEWS = ["Race", "Leaderboard", "Prompt sets"]

ui.require_app_shell("pages/arena.py")
store = ui.store()


def presenter_changed() -> None:
    if st.session_state.get("arena_presenter"):
        st.session_state.arena_blind = True  # a class votes before it knows who is who


def header() -> tuple[str, bool, bool]:
    cols = st.columns([1.6, 2.6, 1, 1], vertical_alignment="center")
    cols[0].subheader("Arena")
    view = cols[1].segmented_control(
        "View", VIEWS, key="arena_view", default="Race", required=True,
        label_visibility="collapsed", persist_state="session")
    presenter = cols[2].toggle(
        "Presenter", key="arena_presenter", on_change=presenter_changed,
        persist_state="session",
        help="For a projector: large type, settings folded away, blind voting and a Reveal "
        "button.")
    blind = cols[3].toggle(
        "Blind", key="arena_blind", persist_state="session", disabled=presenter,
        help="Hide which model wrote which reply (shown as Response 1, 2… in a shuffled "
        "order) until you vote or reveal.")
    return str(view or "Race"), presenter, blind or presenter


def live_title(race: ArenaRace, position: int) -> tuple[str, str]:
    """Title and subtitle of a column while it streams (no names when blind)."""
    if race.blind:
        return f"Response {position + 1}", ""
    i = race.order[position]
    return f"Model {arena.SLOT_LABELS[i]}", race.setups[i].contestant


def blind_line(slot: Slot) -> str:
    """A blind column's live caption: no token count or speed, which would give it away, and
    "writing…" only once the answer itself has begun (thinking would single out the model
    that reasons)."""
    if slot.error is not None:
        return "failed"
    return "done" if slot.done else "writing…" if slot.reply.content else "waiting…"


def run_race(prompt: str, system: str, setups: list[SlotSetup],
             models: dict[int, ModelInfo | None], blind: bool,
             pictures: list[ImageAttachment], class_id: str | None = None) -> None:
    listings = {s.server: ui.status_for(s.server, refresh=True).models for s in setups}
    prepared = arena_setup.prepare(setups, listings)
    if pictures:  # a slot whose model can't read images ends with that sentence, unsent
        names = {i: s.model for i, s in enumerate(setups)}
        for i, refusal in images.vision_errors(models, names).items():
            prepared.errors[i] = prepared.errors[i] or refusal
    race = ArenaRace(store=store, client_for=ui.client_for, prompt=prompt, system_prompt=system,
                     setups=setups, prepared=prepared, models=models, blind=blind,
                     images=[a.data_url for a in pictures], class_id=class_id)
    with st.chat_message("user"):
        st.markdown(safe_markdown(prompt))
        if pictures:
            st.image([a.data for a in pictures], width=120)
    notes_box = st.container()
    lives, bodies = [], []
    for position, column in enumerate(st.columns(len(setups), border=True)):
        with column:
            title, subtitle = live_title(race, position)
            st.markdown(f"#### {plain_label(title)}")
            if subtitle:
                st.caption(plain_label(subtitle))
            lives.append(st.empty())
            bodies.append(st.empty())
    strip = arena_machine.MachineStrip(st.empty())  # what the machine does during the race
    stop_button("arena_stop")
    try:
        race.start()
        st.session_state.arena_round_id = race.round_id
        chat_images.keep_round(race.round_id, pictures)
        for note in ui.notes_to_show(prepared.notes, race.round_id):
            notes_box.info(safe_markdown(note), icon=":material/info:")
        last = 0.0
        while not race.done:
            race.poll(0.05)
            now = time.perf_counter()
            if now - last < REDRAW_S and not race.done:
                continue
            last = now
            for position, i in enumerate(race.order):
                slot = race.slots[i]
                lives[position].caption(blind_line(slot) if race.blind else arena.live_line(slot))
                reply = slot.reply
                if reply.content:
                    bodies[position].markdown(safe_markdown(reply.content)
                                              + ("" if slot.done else " ▌"))
                elif reply.reasoning and not race.blind:  # blind: no model is seen thinking
                    bodies[position].caption(f"Thinking… ({len(reply.reasoning.split())} words)")
            strip.draw()
    finally:
        race.finish()  # on Stop and on a new prompt too: every request ends, the round is saved
    for url in listings:
        ui.status_for(url, refresh=True)  # the sidebar shows what the race loaded
    st.rerun()


view, presenter, blind = header()
klass = None  # the class whose phones vote on this presenter's rounds (class mode)
if presenter:
    arena_setup.presenter_style()
    if view == "Race":
        klass = arena_class.class_panel(store)

if view == "Leaderboard":
    arena_board.leaderboard(store)
elif view == "Prompt sets":
    setups, models = arena_setup.slot_setup(presenter)
    arena_sets.prompt_sets(store, setups)
else:
    # Three places, in page order: the pickers, where a race streams, where a saved round is
    # drawn; each run empties the one of the last two it does not use. Streamlit keeps a
    # container's children when a container is drawn again at its place (until the run ends),
    # and merges st.empty().container() into one container: so a race drawn where the last
    # round was showed that round's results grid, replies, Export and Judge controls until it
    # ended. An element (st.empty) at a container's place drops it. The places are laid out
    # before the pickers are drawn, so a prompt just sent empties the last round's place first.
    pickers, live = st.container(), st.empty()
    sent = bool(st.session_state.get("arena_prompt"))  # Enter pressed: this run races
    last = st.empty() if sent else st.container()  # a round redrawn in place (a vote) or gone
    with pickers:
        setups, models = arena_setup.slot_setup(presenter)
        system = arena_setup.system_prompt(presenter)
    prompt = chat_box("Ask every model at once…", key="arena_prompt", disabled=not setups)
    pictures = chat_images.picker("arena")
    if blank_prompt(prompt, pictures):
        st.toast(BLANK_PROMPT, icon=":material/edit_note:")
        prompt = None
    if prompt and setups:
        with live.container():
            run_race(prompt, system, setups, models, blind, pictures,
                     class_id=klass.id if klass else None)
    else:
        with last.container() if sent else last:  # sent, yet no race: no model to race
            if (shown := arena_round.current_round(store)) is not None:
                arena_round.draw_round(store, shown, presenter)
            else:
                st.info("Type a prompt below: every model above answers it at the same moment, "
                        "side by side, and you see which is faster. Turn on **Blind** to judge "
                        "the answers without knowing who wrote them, then vote; the votes build "
                        "the **Leaderboard**.", icon=":material/sports_score:")
            arena_round.watch(store, arena.state_key(shown))
