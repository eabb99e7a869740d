"""Rating maths against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import random

import pytest

from atom_core.arena.ratings import (
    Battle,
    VotedRound,
    bradley_terry,
    elo_ratings,
    expected_score,
    leaderboard,
    pairwise_outcomes,
    records_of,
)

# -- N-way vote -> pairwise outcomes --------------------------------------------------------------


def test_a_winner_beats_every_other_response() -> None:
    vote = VotedRound(contestants=("a", "b", "c"), outcome="win", winner=1)
    assert pairwise_outcomes(vote) == [Battle("b", "a", 1.0), Battle("b", "c", 1.0)]


def test_a_tie_is_a_draw_between_every_pair() -> None:
    vote = VotedRound(contestants=("a", "b", "c", "d"), outcome="tie")
    battles = pairwise_outcomes(vote)
    assert len(battles) == 6 and all(b.score == 0.5 for b in battles)
    assert {(b.a, b.b) for b in battles} == {("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"),
                                              ("b", "d"), ("c", "d")}


def test_all_bad_gives_no_outcome_but_is_counted() -> None:
    vote = VotedRound(contestants=("a", "b"), outcome="all_bad")
    assert pairwise_outcomes(vote) == []
    rec = records_of([vote])
    assert rec["a"].all_bad == 1 and rec["a"].rounds == 1 and rec["a"].battles == 0
    assert rec["a"].win_rate is None


def test_the_same_contestant_twice_never_plays_itself() -> None:
    vote = VotedRound(contestants=("a", "a", "b"), outcome="win", winner=0)
    assert pairwise_outcomes(vote) == [Battle("a", "b", 1.0)]
    assert pairwise_outcomes(VotedRound(contestants=("a", "a"), outcome="tie")) == []


def test_a_win_without_a_winner_is_refused() -> None:
    with pytest.raises(ValueError):
        pairwise_outcomes(VotedRound(contestants=("a", "b"), outcome="win", winner=None))


def test_win_rate_is_pairwise_with_draws_counting_half() -> None:
    votes = [
        VotedRound(contestants=("a", "b", "c"), outcome="win", winner=0),  # a: 2 wins
        VotedRound(contestants=("a", "b"), outcome="tie"),  # a: 1 draw
        VotedRound(contestants=("a", "c"), outcome="win", winner=1),  # a: 1 loss
    ]
    a = records_of(votes)["a"]
    assert (a.battles, a.wins, a.ties, a.losses, a.rounds, a.rounds_won) == (4, 2, 1, 1, 3, 1)
    assert a.win_rate == pytest.approx((2 + 0.5) / 4)


# -- Elo ------------------------------------------------------------------------------------------


def test_elo_by_hand() -> None:
    # 1000 v 1000: expected 0.5; a wins: +32 * 0.5 = +16.
    r = elo_ratings([Battle("a", "b", 1.0)])
    assert r == {"a": 1016.0, "b": 984.0}
    # Then a draw. b's expected score = 1 / (1 + 10^(32/400)) = 1 / 2.2022644 = 0.4540782,
    # b gains 32 * (0.5 - 0.4540782) = 1.4695; a loses the same.
    r = elo_ratings([Battle("a", "b", 1.0), Battle("b", "a", 0.5)])
    assert r["a"] == pytest.approx(1014.5305, abs=1e-3)
    assert r["b"] == pytest.approx(985.4695, abs=1e-3)
    assert expected_score(1200, 1000) == pytest.approx(1 / (1 + 10 ** -0.5))


def test_elo_k_is_a_parameter_and_ratings_are_zero_sum() -> None:
    r = elo_ratings([Battle("a", "b", 1.0), Battle("c", "a", 1.0)], k=16)
    assert r["a"] + r["b"] + r["c"] == pytest.approx(3000)
    assert r["b"] == 992.0


# -- Bradley–Terry --------------------------------------------------------------------------------


def test_bradley_terry_two_players_by_hand() -> None:
    # a beats b 3 times, loses once: the MLE is p_a / p_b = 3 / 1, so the gap is
    # 400 * log10(3) = 190.849, centred on 1000.
    battles = [Battle("a", "b", 1.0)] * 3 + [Battle("a", "b", 0.0)]
    r = bradley_terry(battles, prior=0)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert r["a"] == pytest.approx(1095.4243, abs=1e-3)
    assert r["b"] == pytest.approx(904.5757, abs=1e-3)


def test_bradley_terry_counts_a_draw_as_half_a_win() -> None:
    # a: 1 win + 1 draw = 1.5 points; b: 0.5 -> ratio 3, the same 190.85 gap.
    r = bradley_terry([Battle("a", "b", 1.0), Battle("a", "b", 0.5)], prior=0)
    assert r["a"] - r["b"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    even = bradley_terry([Battle("a", "b", 1.0), Battle("b", "a", 1.0), Battle("a", "b", 0.5)],
                         prior=0)
    assert even == pytest.approx({"a": 1000.0, "b": 1000.0})


def test_bradley_terry_prior_by_hand() -> None:
    # One virtual draw each against a reference of strength 1: a has 3 + 0.5 points, b 1 + 0.5.
    # The records mirror each other, so p_b = 1 / p_a, and a's likelihood equation is
    #   3.5 = 4 p_a^2 / (p_a^2 + 1) + p_a / (p_a + 1).
    # p_a = 1.6071195: p_a^2 = 2.582833, 4 * 2.582833 / 3.582833 = 2.883559,
    # 1.6071195 / 2.6071195 = 0.616441; sum 3.500000. Gap = 800 * log10(1.6071195) = 164.839,
    # smaller than the 190.849 without the prior.
    r = bradley_terry([Battle("a", "b", 1.0)] * 3 + [Battle("a", "b", 0.0)], prior=1.0)
    assert r["a"] - r["b"] == pytest.approx(164.839, abs=1e-3)
    assert r["a"] + r["b"] == pytest.approx(2000)


def test_bradley_terry_three_players_solve_the_likelihood_equations() -> None:
    # Every player's points must equal its expected points under the fitted strengths.
    battles = ([Battle("a", "b", 1.0)] * 2 + [Battle("b", "a", 1.0)] + [Battle("b", "c", 1.0)] * 2
               + [Battle("c", "b", 1.0)] + [Battle("a", "c", 1.0), Battle("c", "a", 1.0)])
    r = bradley_terry(battles, prior=0)
    p = {k: 10 ** (v / 400) for k, v in r.items()}
    for name in p:
        points = sum(b.score for b in battles if b.a == name) + sum(
            1 - b.score for b in battles if b.b == name)
        expected = sum(p[name] / (p[name] + p[b.b if b.a == name else b.a])
                       for b in battles if name in (b.a, b.b))
        assert points == pytest.approx(expected, abs=1e-8)
    assert r["a"] > r["b"] > r["c"]
    assert sum(r.values()) / 3 == pytest.approx(1000)


def test_unbeaten_without_prior_is_infinite_and_finite_with_it() -> None:
    battles = [Battle("a", "b", 1.0), Battle("b", "c", 1.0), Battle("a", "c", 1.0)]
    assert bradley_terry(battles, prior=0) == {"a": math.inf, "b": 1000.0, "c": -math.inf}
    r = bradley_terry(battles)
    assert all(math.isfinite(v) for v in r.values()) and r["a"] > r["b"] > r["c"]
    assert r["a"] - 1000 == pytest.approx(1000 - r["c"])  # symmetric record, symmetric rating


def test_bradley_terry_does_not_depend_on_order() -> None:
    battles = [Battle("a", "b", 1.0), Battle("b", "c", 1.0), Battle("c", "a", 0.5)] * 3
    shuffled = battles[:]
    random.Random(3).shuffle(shuffled)
    assert bradley_terry(battles) == pytest.approx(bradley_terry(shuffled))


# -- the leaderboard ------------------------------------------------------------------------------


def some_votes(n: int = 60, seed: int = 1) -> list[VotedRound]:
    rng = random.Random(seed)
    strength = {"strong": 3.0, "middle": 1.0, "weak": 0.3}
    votes = []
    for t in range(n):
        names = tuple(rng.sample(sorted(strength), 2))
        p0 = strength[names[0]] / (strength[names[0]] + strength[names[1]])
        votes.append(VotedRound(contestants=names, outcome="win",
                                winner=0 if rng.random() < p0 else 1, ts=float(t)))
    return votes


def test_leaderboard_orders_by_strength_with_intervals_around_the_estimate() -> None:
    board = leaderboard(some_votes(), speeds={"strong": (0.2, 40.0)}, n_boot=200)
    assert [r.contestant for r in board] == ["strong", "middle", "weak"]
    for r in board:
        assert r.bt_low is not None and r.bt_high is not None and r.bt is not None
        assert r.bt_low <= r.bt <= r.bt_high
        assert r.elo_low is not None and r.elo_high is not None and r.elo_low < r.elo_high
    assert board[0].ttft_p50_s == 0.2 and board[0].tps_p50 == 40.0
    assert board[1].ttft_p50_s is None
    assert board[0].row()["win_rate"] == board[0].win_rate


def test_the_bootstrap_is_repeatable() -> None:
    a = leaderboard(some_votes(), n_boot=50, seed=7)
    b = leaderboard(some_votes(), n_boot=50, seed=7)
    assert [r.row() for r in a] == [r.row() for r in b]


def test_a_contestant_with_only_all_bad_votes_is_listed_unrated() -> None:
    votes = [VotedRound(contestants=("a", "b"), outcome="win", winner=0, ts=1),
             VotedRound(contestants=("c", "d"), outcome="all_bad", ts=2)]
    board = {r.contestant: r for r in leaderboard(votes, n_boot=20)}
    assert board["c"].bt is None and board["c"].record.all_bad == 1
    assert board["a"].bt is not None and board["a"].bt > board["b"].bt  # type: ignore[operator]
    assert list(board)[-2:] == ["c", "d"]  # unrated ones last


def test_no_votes_no_board() -> None:
    assert leaderboard([]) == []


def test_leaderboard_table_and_chart() -> None:
    from atom_core.arena.charts import leaderboard_frame, speed_vs_win_rate

    votes = some_votes(12)
    board = leaderboard(votes, speeds={"strong": (0.3, 20.0), "middle": (0.1, 60.0)}, n_boot=20)
    frame = leaderboard_frame(board)
    assert list(frame["Model"]) == [r.contestant for r in board]
    first = frame.iloc[0]
    rec = board[0].record
    assert first["W/T/L"] == f"{rec.wins}/{rec.ties}/{rec.losses}"
    assert "–" in first["BT 95% CI"] and first["BT"] == round(board[0].bt or 0)
    few = leaderboard_frame(leaderboard(votes[:2], n_boot=5))
    assert set(few["BT 95% CI"]) == {"more votes needed"}
    fig = speed_vs_win_rate(board)
    (trace,) = fig.data
    assert list(trace.text) == ["strong", "middle"]  # "weak" has no speed: left out
    assert list(trace.x) == [20.0, 60.0]
    assert list(trace.y) == [board[0].win_rate, board[1].win_rate]
