"""Arena: the leaderboard (ratings with intervals, speed against win rate).
Drawing only; the ratings are computed in atom_core.arena.ratings."""


from collections.abc import Sequence

import streamlit as st

from atom_core import arena
from atom_core.arena import charts as arena_charts
from atom_core.arena import judge
from atom_core.arena.ratings import Rating
from atom_core.arena.results import HELP
from atom_core.arena.rounds import ArenaRound
from pages.parts import arena_judge, ui

# -- the leaderboard ------------------------------------------------------------------------------


@st.cache_data(show_spinner="Computing ratings…", max_entries=8)
def _board(signature: str, _rounds: Sequence[ArenaRound]) -> list[Rating]:
    return arena.leaderboard(_rounds)


def leaderboard(store: ui.HistoryStore) -> None:
    rounds, unreadable = arena.read_rounds(store)
    if unreadable:  # damaged or hand-edited records: left out, never a crash
        st.warning(f"{unreadable} stored arena round(s) could not be read and are left out.",
                   icon=":material/warning:")
    verdicts = judge.load_verdicts(store)
    if verdicts and st.segmented_control(
            "Ratings by", ["People", "Judge"], default="People", key="board_basis",
            help="People: your votes. Judge: a model's blind verdicts, kept apart.") == "Judge":
        arena_judge.judge_board(rounds, verdicts)
        return
    votes = sum(1 for r in rounds if r.vote is not None)
    if not votes:
        st.info("No votes yet. Race two or more models, read the answers (Blind makes it fair) "
                "and vote: every vote moves this table.", icon=":material/leaderboard:")
        return
    board = _board(arena.vote_signature(rounds), rounds)
    st.caption(f"{ui.plural(votes, 'vote')} over {ui.plural(len(rounds), 'round')}. Sorted by "
               "Bradley–Terry rating. Speeds are medians of each model's Arena runs only "
               "(Stats counts every run: chat, arena, prompt sets, sweeps).")
    frame = arena_charts.leaderboard_frame(board)
    cc = st.column_config
    st.dataframe(frame, hide_index=True, width="stretch", placeholder="", column_config={
        "Model": cc.TextColumn(width="medium"),
        "BT": cc.NumberColumn(width="small", help="Bradley–Terry rating on the Elo scale "
                              "(1000 = average), from all votes at once: order doesn't matter."),
        "BT 95% CI": cc.TextColumn(help="95% interval from 500 bootstrap resamples of the "
                                   "rounds: overlapping intervals mean the votes can't tell the "
                                   "models apart yet."),
        "Elo": cc.NumberColumn(width="small", help="Elo rating, votes replayed in time order "
                               "(K = 32, start 1000)."),
        "Elo 95% CI": cc.TextColumn(help="95% interval from the same bootstrap resamples."),
        "Win rate": cc.ProgressColumn(min_value=0.0, max_value=1.0, format="percent",
                                      help="Pairwise: a win beats every other reply in its round, "
                                      "a tie is half a win each. 50% = as good as the field."),
        "Battles": cc.NumberColumn(width="small",
                                   help="Pairwise comparisons it took part in."),
        "W/T/L": cc.TextColumn(width="small", help="Pairwise wins / ties / losses."),
        "All bad": cc.NumberColumn(width="small", help="Rounds voted “all bad”: left out of the "
                                   "ratings."),
        "TTFT p50 (s)": cc.NumberColumn(format="%.2f", help=HELP["ttft"]),
        "tok/s p50": cc.NumberColumn(format="%.1f", help=HELP["tps"]),
    })
    st.plotly_chart(arena_charts.speed_vs_win_rate(board), width="stretch")
    st.caption("Speed: median decode tok/s of each model's Arena runs only.")
    st.caption("How votes count: the winner beats every other reply in the round; a tie is a "
               "draw between every pair; “all bad” is left out of the ratings. Two slots with "
               "the same model and settings never play each other. A model with different "
               "settings is its own contestant.")
