"""Arena: the leaderboard (ratings with intervals, speed against win rate), by people's votes
or by a judge model's verdicts. Drawing only; the ratings are computed in
atom_core.arena.ratings."""


from collections.abc import Sequence

import streamlit as st

from atom_core import arena
from atom_core.arena import charts as arena_charts
from atom_core.arena import classroom, judge, judge_totals, ratings
from atom_core.arena.leaderboard import contestant_speeds
from atom_core.arena.ratings import Rating
from atom_core.arena.results import HELP
from atom_core.arena.rounds import ArenaRound
from atom_core.metrics import DECODE_P50, TTFT_P50
from atom_core.words import EMPTY_CELL, plural
from pages.parts import ui

# -- the leaderboard ------------------------------------------------------------------------------


@st.cache_data(show_spinner="Computing ratings…", max_entries=8)
def _board(signature: str, _rounds: Sequence[ArenaRound]) -> list[Rating]:
    return arena.leaderboard(_rounds)


def leaderboard(store: ui.HistoryStore) -> None:
    rounds, unreadable = arena.read_rounds(store)
    if unreadable:  # damaged or hand-edited records: left out, never a crash
        st.warning(f"Left out: {plural(unreadable, 'stored arena round')} that could not be read.",
                   icon=":material/warning:")
    verdicts = judge.load_verdicts(store)
    if verdicts and st.segmented_control(
            "Ratings by", ["People", "Judge"], default="People", key="board_basis",
            help="People: your votes. Judge: a model's blind verdicts, kept apart.") == "Judge":
        judge_board(rounds, verdicts)
        return
    rounds = _which_rounds(rounds)
    votes = sum(1 for r in rounds if r.vote is not None)
    if not votes:
        st.info("No votes yet. Race two or more models, read the answers (Blind makes it fair) "
                "and vote: every vote moves this table.", icon=":material/leaderboard:")
        return
    board = _board(arena.vote_signature(rounds), rounds)
    st.caption(f"{plural(votes, 'vote')} over {plural(len(rounds), 'round')}. Sorted by "
               "Bradley–Terry rating. Speeds are medians of each model's Arena runs only "
               "(Stats counts every run: chat, arena, prompt sets, sweeps).")
    board_table(board, key="people_leaderboard")
    st.plotly_chart(arena_charts.speed_vs_win_rate(board), width="stretch")
    st.caption("Speed: median decode tok/s of each model's Arena runs only.")
    st.caption("How votes count: the winner beats every other reply in the round; a tie is a "
               "draw between every pair; “all bad” is left out of the ratings. Two slots with "
               "the same model and settings never play each other. A model with different "
               "settings is its own contestant.")


ROUND_KINDS: dict[classroom.RoundKind, str] = {
    "all": "All rounds", "single": "Single-user rounds", "class": "Class rounds"}


def _which_rounds(rounds: list[ArenaRound]) -> list[ArenaRound]:
    """A class's rounds apart from single-user rounds, once there are any."""
    if not any(r.class_id for r in rounds):
        return rounds
    kind = st.segmented_control(
        "Rounds", list(ROUND_KINDS), format_func=ROUND_KINDS.__getitem__, default="all",
        required=True, key="board_rounds",
        help="A class round counts once: the class's result (the choice with the most votes; "
        "a tie when several share the most), not each student's vote.")
    return classroom.rounds_of_kind(rounds, kind or "all")


def board_table(board: Sequence[Rating], key: str) -> None:
    """A leaderboard as a table, the same for people's votes and a judge's verdicts."""
    cc = st.column_config
    st.dataframe(arena_charts.leaderboard_frame(board), hide_index=True, width="stretch",
                 placeholder=EMPTY_CELL, key=key, column_config={
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
        TTFT_P50.header: cc.NumberColumn(format="%.2f", help=HELP["ttft"]),
        DECODE_P50.header: cc.NumberColumn(format="%.1f", help=HELP["tps"]),
    })


# -- the leaderboard by judge ---------------------------------------------------------------------


def judge_board(rounds: list[ArenaRound], verdicts: list[judge.JudgeVerdict]) -> None:
    """Ratings from a judge's agreed verdicts, apart from the people's, with how often the
    judge agreed with people and how often its two orders disagreed."""
    summaries = judge_totals.judge_summaries(verdicts)
    st.dataframe([{"Judge": s.judge_model, "Verdicts": s.verdicts, "Pairs": s.pairs,
                   "Orders disagreed": s.disagreement_rate,
                   "Unreadable replies": s.unreadable} for s in summaries],
                 hide_index=True, key="judge_summaries", placeholder=EMPTY_CELL, column_config={
                     "Orders disagreed": st.column_config.ProgressColumn(
                         min_value=0.0, max_value=1.0, format="percent",
                         help="Share of pairs where the judge's verdict changed with the order "
                         "the answers were shown in (position bias). Those pairs count as ties.")})
    models = [s.judge_model for s in summaries]
    model = st.selectbox("Judge", models, key="board_judge") if len(models) > 1 else models[0]
    agree = judge_totals.agreement_with_people(rounds, verdicts, model)
    ci = agree.interval
    if agree.rate is not None and ci is not None:
        st.markdown(f"**Agreement with people:** {agree.rate:.0%} of "
                    f"{plural(agree.rounds, 'round')} with both a vote and a verdict "
                    f"(95 % interval {ci[0]:.0%}–{ci[1]:.0%}).",
                    help="Same winner, or a tie on both sides. Rounds voted “all bad” are left "
                    "out. The interval is Wilson's.")
    else:
        st.caption("No round has both a people's vote and this judge's verdict yet.")
    votes = judge_totals.judge_votes(verdicts, model)
    if not votes:
        st.info("This judge has no verdict read in both orders yet.", icon=":material/gavel:")
        return
    board = ratings.leaderboard(votes, speeds=contestant_speeds(rounds))
    st.caption(f"{plural(len(votes), 'judged pair')}. Sorted by Bradley–Terry rating. Speeds "
               "are the contestants' own, never the judge's.")
    board_table(board, key="judge_leaderboard")
