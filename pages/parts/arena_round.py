"""Arena: a finished round (answers, results grid, vote bar, reveal, downloads).
Drawing and session state only; the logic is in atom_core.arena."""


from collections.abc import Callable, Sequence

import streamlit as st

from atom_core import arena
from atom_core.arena import report
from atom_core.arena.ratings import Outcome
from atom_core.arena.results import HELP
from atom_core.arena.rounds import ArenaRound
from atom_core.measure import hardware
from atom_core.render import plain_label, safe_markdown
from pages.parts import arena_judge, chat_images, ui

# -- a finished round -----------------------------------------------------------------------------


def current_round(store: ui.HistoryStore) -> ArenaRound | None:
    """The round this session last ran, else the latest saved one (a reload shows it again)."""
    return arena.current_round(store, st.session_state.get("arena_round_id"))


def draw_round(store: ui.HistoryStore, rnd: ArenaRound, presenter: bool) -> None:
    with st.chat_message("user"):
        st.markdown(safe_markdown(rnd.prompt))
        chat_images.round_thumbnails(rnd.id)
    for note in ui.notes_to_show(rnd.notes, rnd.id):
        st.info(safe_markdown(note), icon=":material/info:")
    _results_grid(rnd)
    for position, column in enumerate(st.columns(len(rnd.slots), border=True)):
        s = rnd.slots[rnd.positions[position]]
        with column:
            st.markdown(f"#### {plain_label(rnd.title_at(position))}")
            if subtitle := rnd.subtitle_at(position):
                st.caption(plain_label(subtitle))
            if s.state == "error":
                st.error(safe_markdown(s.error or ""), icon=":material/error:")
            elif s.state == "stopped":
                st.warning("Stopped", icon=":material/stop_circle:")
            elif s.state == "interrupted":
                st.warning(f"Interrupted: {safe_markdown(s.error or 'the reply broke off')}",
                           icon=":material/link_off:")
            if s.reasoning:
                with st.expander("Reasoning", icon=":material/psychology:"):
                    st.markdown(safe_markdown(s.reasoning))
            if s.content:
                st.markdown(safe_markdown(s.content))
    _vote_bar(store, rnd, presenter)
    arena_judge.judge_panel(store, rnd)  # a model as judge, kept apart from the vote


def _results_grid(rnd: ArenaRound) -> None:
    if rnd.hidden:  # speed gives a 1B away from an 8B as surely as its name does
        st.caption(":material/visibility_off: Blind: speeds, names and sizes show after your "
                   "vote (or Reveal), so the answers are judged on what they say.")
        return
    rows = arena.stat_rows(rnd) + arena.fact_rows(rnd)
    spec = [1.2] + [1.0] * len(rnd.slots)
    with st.container(border=True, gap="xxsmall"):
        head = st.columns(spec)
        head[0].markdown("**Results**", help="The fastest value of each speed row is "
                         "highlighted, among replies that completed.")
        for position, i in enumerate(rnd.positions):
            head[position + 1].markdown(f"**{plain_label(rnd.short_label(i))}**")
        for row in rows:
            cells = st.columns(spec)
            cells[0].markdown(row.name, help=HELP.get(row.key))
            for position, i in enumerate(rnd.positions):
                value = safe_markdown(row.cells[i])
                cells[position + 1].markdown(
                    f":green-background[**{value}**] :material/bolt:" if i in row.best else value)


def _vote(store: ui.HistoryStore, rnd: ArenaRound, outcome: Outcome, winner: int | None) -> None:
    voted = arena.record_vote(store, rnd, outcome, winner)
    st.toast(f"Vote saved: {plain_label(voted.vote_sentence)}.", icon=":material/how_to_vote:")


def _reveal(store: ui.HistoryStore, rnd: ArenaRound) -> None:
    arena.reveal(store, rnd)


def _vote_bar(store: ui.HistoryStore, rnd: ArenaRound, presenter: bool) -> None:
    # Keys name the place, not the round: Streamlit 1.67 keeps a widget's metadata (its
    # callback and args, which hold the round) for every key a session ever drew, so a key per
    # round grew the app by every round shown (docs/BENCHMARKS.md, memory over a long session).
    if rnd.vote is not None:
        blind = " (voted blind)" if rnd.vote.blind else ""
        st.success(f"Your vote: {plain_label(rnd.vote_sentence)}{blind}. It counts on the "
                   "Leaderboard.", icon=":material/how_to_vote:")
    elif not any(s.state == "running" for s in rnd.slots):
        st.markdown("**Which answer is better?**")
        buttons = st.columns(len(rnd.slots) + 2)
        for position, i in enumerate(rnd.positions):
            name = rnd.short_label(i)
            buttons[position].button(
                name, key=f"vote-{position}", on_click=_vote,
                args=(store, rnd, "win", i), width="stretch",
                type="primary" if presenter else "secondary",
                icon=":material/thumb_up:", help=f"Vote: {name} gave the best answer.")
        buttons[-2].button("Tie", key="vote-tie", on_click=_vote,
                           args=(store, rnd, "tie", None), width="stretch",
                           help="Equally good: a draw between every pair.")
        buttons[-1].button("All bad", key="vote-bad", on_click=_vote,
                           args=(store, rnd, "all_bad", None), width="stretch",
                           help="None is good enough: not counted in the ratings.")
    tools = st.columns([3, 1, 1] if rnd.hidden else [4, 1], vertical_alignment="center")
    if rnd.hidden:
        tools[1].button("Reveal", icon=":material/visibility:", width="stretch",
                        on_click=_reveal, args=(store, rnd), key="reveal",
                        help="Show which model wrote which reply, without voting.")
    with tools[-1].popover("Export", icon=":material/download:", width="stretch"):
        def known() -> dict[str, hardware.MachineInfo]:  # the machine each report names
            return hardware.machines(store)

        downloads("arena", rnd.ts, "round", [
            ("Markdown report", "md", "text/markdown",
             lambda: report.round_markdown(rnd, known())),
            ("HTML report", "html", "text/html", lambda: report.round_html(rnd, known())),
            ("Records (CSV)", "csv", "text/csv", lambda: report.round_csv(rnd, known())),
            ("Records (JSON)", "json", "application/json",
             lambda: report.round_json(rnd, known())),
        ])


def downloads(kind: str, ts: float, key: str,
               items: Sequence[tuple[str, str, str, Callable[[], str]]]) -> None:
    for label, ext, mime, render in items:
        st.download_button(label, render, file_name=report.filename(kind, ts, ext),
                           mime=mime, on_click="ignore", key=f"dl-{key}-{ext}",
                           width="stretch")
