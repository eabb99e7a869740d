"""Arena: a round as this browser may see it (answers, results grid, vote bar, reveal,
downloads), and the watcher that redraws it when another browser changed it. Drawing and
session state only; the logic (who sees what, which vote counts) is in atom_core.arena.rounds."""


import uuid
from collections.abc import Callable, Sequence

import streamlit as st

from atom_core import arena
from atom_core.arena import report
from atom_core.arena.ratings import Outcome
from atom_core.arena.results import HELP
from atom_core.arena.rounds import ArenaRound
from atom_core.measure import hardware
from atom_core.render import plain_label, safe_markdown
from pages.parts import arena_class, arena_judge, chat_images, ui

# -- a round, as this browser may see it ----------------------------------------------------------

WATCH_S = 1.0  # how often an open Race view looks whether its round changed elsewhere


def voter() -> str:
    """This browser session's anonymous id: a vote is attributed to the session that cast it,
    and only that session sees it as its own."""
    return str(st.session_state.setdefault("arena_voter", uuid.uuid4().hex[:12]))


def current_round(store: ui.HistoryStore) -> ArenaRound | None:
    """The round this session last ran, else the latest saved one (a reload shows it again; a
    browser that has not raced follows the newest round)."""
    return arena.current_round(store, st.session_state.get("arena_round_id"))


@st.fragment(run_every=WATCH_S)
def watch(store: ui.HistoryStore, shown: str) -> None:
    """Redraws the page when the round it shows changed in another browser (a vote, a Reveal,
    a race ending, a newer round to follow): one record read a second (about 0.2 ms,
    bench/bench_round_watch.py), no redraw otherwise. `shown` is arena.state_key of the round
    as drawn."""
    if arena.state_key(current_round(store)) != shown:
        st.rerun(scope="app")


def draw_round(store: ui.HistoryStore, rnd: ArenaRound, presenter: bool) -> None:
    view = rnd.seen_by(voter())  # names, reasoning and "your vote" as this session may see them
    with st.chat_message("user"):
        st.markdown(safe_markdown(rnd.prompt))
        chat_images.round_thumbnails(rnd.id)
    for note in ui.notes_to_show(rnd.notes, rnd.id):
        st.info(safe_markdown(note), icon=":material/info:")
    if rnd.state == "running":  # its replies show when it is done (arena.state_key says why)
        st.info("Racing in another browser: the replies show here when every model is done.",
                icon=":material/sprint:")
        return
    _results_grid(view)
    for position, column in enumerate(st.columns(len(rnd.slots), border=True)):
        s = rnd.slots[rnd.positions[position]]
        with column:
            st.markdown(f"#### {plain_label(view.title_at(position))}")
            if subtitle := view.subtitle_at(position):
                st.caption(plain_label(subtitle))
            if s.state == "error":
                st.error(safe_markdown(s.error or ""), icon=":material/error:")
            elif s.state == "stopped":
                st.warning("Stopped", icon=":material/stop_circle:")
            elif s.state == "interrupted":
                st.warning(f"Interrupted: {safe_markdown(s.error or 'the reply broke off')}",
                           icon=":material/link_off:")
            # Only a model that reasons has reasoning, so before the vote it would say which
            # reply is the reasoning model's: hidden for every reply until the vote or Reveal.
            if s.reasoning and not view.hidden:
                with st.expander("Reasoning", icon=":material/psychology:"):
                    st.markdown(safe_markdown(s.reasoning))
            if s.content:
                st.markdown(safe_markdown(s.content))
    if rnd.class_id:  # the phones vote: the teacher sees their tally
        arena_class.tally(store, rnd)
    else:
        _vote_bar(store, rnd, view, presenter)
    arena_judge.judge_panel(store, view)  # a model as judge, kept apart from the vote


def _results_grid(rnd: ArenaRound) -> None:
    if rnd.hidden:  # speed gives a 1B away from an 8B as surely as its name does
        when = "when you close voting" if rnd.class_id else "after your vote (or Reveal)"
        st.caption(f":material/visibility_off: Blind: names, speeds, sizes and any model's "
                   f"reasoning show {when}, so the answers are judged on what they say.")
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
    arena.record_vote(store, rnd, outcome, winner, voter=voter())
    # No names: a toast outlives the round, and would name a model over the next blind race.
    st.toast("Vote saved.", icon=":material/how_to_vote:")


def _reveal(store: ui.HistoryStore, rnd: ArenaRound) -> None:
    arena.reveal(store, rnd)


def _vote_bar(store: ui.HistoryStore, rnd: ArenaRound, view: ArenaRound,
              presenter: bool) -> None:
    """`rnd` is the round as stored (its vote: the one the Leaderboard counts), `view` as this
    session sees it (its vote: this session's own)."""
    # Keys name the place, not the round: Streamlit 1.67 keeps a widget's metadata (its
    # callback and args, which hold the round) for every key a session ever drew, so a key per
    # round grew the app by every round shown (docs/BENCHMARKS.md, memory over a long session).
    if view.vote is not None:
        blind = " (voted blind)" if view.vote.blind else ""
        counted = ("It counts on the Leaderboard." if rnd.counts(voter()) else
                   "The Leaderboard counts one vote per round: the first, cast in another "
                   "browser.")
        st.success(f"Your vote: {plain_label(view.vote_sentence)}{blind}. {counted}",
                   icon=":material/how_to_vote:")
    else:
        st.markdown("**Which answer is better?**")
        buttons = st.columns(len(rnd.slots) + 2)
        for position, i in enumerate(rnd.positions):
            name = view.short_label(i)
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
    if others := rnd.others_votes(voter()):
        if view.hidden:  # what others chose would sway a vote not yet cast
            st.caption(f":material/group: {_votes(len(others))} cast in another browser; "
                       "what they chose shows once you vote or reveal.")
        else:
            st.caption(":material/group: Other browsers: "
                       + plain_label(" · ".join(view.sentence(v) for v in others)))
    tools = st.columns([3, 1, 1] if view.hidden else [4, 1], vertical_alignment="center")
    if view.hidden:
        tools[1].button("Reveal", icon=":material/visibility:", width="stretch",
                        on_click=_reveal, args=(store, rnd), key="reveal",
                        help="Show every browser which model wrote which reply, without voting.")
        return  # no Export before the vote: a report names the models (and their speeds)
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


def _votes(n: int) -> str:
    return "1 vote" if n == 1 else f"{n} votes"


def downloads(kind: str, ts: float, key: str,
               items: Sequence[tuple[str, str, str, Callable[[], str]]]) -> None:
    for label, ext, mime, render in items:
        st.download_button(label, render, file_name=report.filename(kind, ts, ext),
                           mime=mime, on_click="ignore", key=f"dl-{key}-{ext}",
                           width="stretch")
