"""Ratings from Arena votes: pairwise outcomes, Elo, Bradley–Terry, bootstrap intervals.

How an N-way vote becomes pairwise outcomes (`pairwise_outcomes`):

- **X wins**: X beats every other response in the round (N - 1 outcomes, score 1 for X).
- **Tie**: a draw between every pair of responses (N·(N-1)/2 outcomes, score ½ each).
- **All bad**: no outcome at all. "All bad" says every reply failed the user, not that they were
  equally good, so it is left out of the ratings (counting it as draws would pull good and bad
  models together). It is still counted per model, in `all_bad`.
- Two slots that are the same contestant (same model, same settings) never play each other.

A contestant is a model plus the settings that change its answers (see `arena.contestant_name`).

Elo: every outcome in time order, start 1000, K = 32, logistic with scale 400 (base 10); a draw
scores ½. K = 32 moves fast enough to mean something after the few dozen votes one person casts.
Elo depends on the order of the votes; Bradley–Terry does not, so the leaderboard sorts by BT.

Bradley–Terry: maximum likelihood of P(i beats j) = p_i / (p_i + p_j), fitted by Newton's method
on log p (the same maximum as Hunter's MM algorithm, in a handful of iterations instead of
thousands); a draw counts as half a win for each side. Each contestant also plays `prior`
virtual draws against a fixed reference player, which keeps an undefeated (or winless) model at a
finite rating; the default 1.0 moves a 3-1 record by about 25 points. Ratings are put on the Elo
scale, 1000 + 400·log10(p_i), shifted so that their mean is 1000.

Intervals: a bootstrap over rounds (not over pairwise outcomes: the outcomes of one N-way vote are
not independent), `n_boot` resamples (default 500) with a fixed seed so the same votes always give
the same table; the 2.5th and 97.5th percentiles of each rating.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..metrics import percentile

Outcome = Literal["win", "tie", "all_bad"]
OUTCOMES: tuple[Outcome, ...] = ("win", "tie", "all_bad")

ELO_START = 1000.0
ELO_K = 32.0
ELO_SCALE = 400.0
BT_PRIOR = 1.0
N_BOOT = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class VotedRound:
    """One round's vote, reduced to what the ratings need."""

    contestants: tuple[str, ...]  # one per slot, in slot order
    outcome: Outcome
    winner: int | None = None  # slot index when outcome == "win"
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class Battle:
    """One pairwise outcome: `score` is a's result against b (1 win, 0.5 draw, 0 loss)."""

    a: str
    b: str
    score: float


def pairwise_outcomes(vote: VotedRound) -> list[Battle]:
    """The pairwise outcomes of one N-way vote (rules in the module docstring)."""
    names = vote.contestants
    if vote.outcome == "all_bad":
        return []
    if vote.outcome == "win":
        if vote.winner is None or not 0 <= vote.winner < len(names):
            raise ValueError(f"a win needs a winner among {len(names)} slots, got {vote.winner}")
        w = names[vote.winner]
        return [Battle(w, other, 1.0) for i, other in enumerate(names)
                if i != vote.winner and other != w]
    if vote.outcome == "tie":
        return [Battle(names[i], names[j], 0.5) for i in range(len(names))
                for j in range(i + 1, len(names)) if names[i] != names[j]]
    raise ValueError(f"unknown outcome {vote.outcome!r}; expected one of {OUTCOMES}")


def battles_of(votes: Sequence[VotedRound]) -> list[Battle]:
    """Every pairwise outcome of `votes`, in time order."""
    out: list[Battle] = []
    for v in sorted(votes, key=lambda v: v.ts):
        out.extend(pairwise_outcomes(v))
    return out


def expected_score(r_a: float, r_b: float, scale: float = ELO_SCALE) -> float:
    """Elo's expected score of a against b."""
    return 1.0 / (1.0 + 10 ** ((r_b - r_a) / scale))


def elo_ratings(battles: Sequence[Battle], *, k: float = ELO_K, start: float = ELO_START,
                scale: float = ELO_SCALE) -> dict[str, float]:
    """Elo over `battles` in the order given (oldest first)."""
    r: dict[str, float] = {}
    for b in battles:
        ra, rb = r.setdefault(b.a, start), r.setdefault(b.b, start)
        delta = k * (b.score - expected_score(ra, rb, scale))
        r[b.a], r[b.b] = ra + delta, rb - delta
    return r


def bradley_terry(battles: Sequence[Battle], *, prior: float = BT_PRIOR,
                  scale: float = ELO_SCALE, start: float = ELO_START,
                  max_iter: int = 100, tol: float = 1e-10) -> dict[str, float]:
    """Bradley–Terry ratings on the Elo scale (mean `start`), by maximum likelihood.

    With `prior=0` a contestant that never lost (or never won) has no finite rating: it is
    reported as +inf (-inf)."""
    names = sorted({b.a for b in battles} | {b.b for b in battles})
    if not names:
        return {}
    wins, games = _matrices(battles, names)
    return _bt_fit(wins, games, names, prior=prior, scale=scale, start=start,
                   max_iter=max_iter, tol=tol)


def _matrices(battles: Sequence[Battle], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """wins[i, j]: points i scored against j; games[i, j]: games between i and j."""
    index = {n: i for i, n in enumerate(names)}
    m = len(names)
    wins = np.zeros((m, m))
    games = np.zeros((m, m))
    for b in battles:
        i, j = index[b.a], index[b.b]
        wins[i, j] += b.score
        wins[j, i] += 1.0 - b.score
        games[i, j] += 1.0
        games[j, i] += 1.0
    return wins, games


def _bt_fit(wins: np.ndarray, games: np.ndarray, names: Sequence[str], *, prior: float,
            scale: float, start: float, max_iter: int, tol: float) -> dict[str, float]:
    m = len(names)
    if prior <= 0:  # no anchor: the unbounded cases are decided up front
        points = wins.sum(axis=1)
        played = games.sum(axis=1)
        losses = played - points
        unbounded = {i: (math.inf if losses[i] <= 1e-12 else -math.inf) for i in range(m)
                     if played[i] > 0 and (points[i] <= 1e-12 or losses[i] <= 1e-12)}
        if unbounded:
            keep = [i for i in range(m) if i not in unbounded]
            out = {names[i]: v for i, v in unbounded.items()}
            if keep:
                out.update(_bt_fit(wins[np.ix_(keep, keep)], games[np.ix_(keep, keep)],
                                   [names[i] for i in keep], prior=prior, scale=scale,
                                   start=start, max_iter=max_iter, tol=tol))
            return out
    p = _bt_strengths(wins, games, prior=prior, max_iter=max_iter, tol=tol)
    ratings = _to_scale(p, games.sum(axis=1) > 0, scale=scale, start=start)
    return {n: float(ratings[i]) for i, n in enumerate(names)}


def _bt_strengths(wins: np.ndarray, games: np.ndarray, *, prior: float, max_iter: int = 100,
                  tol: float = 1e-10, p0: np.ndarray | None = None) -> np.ndarray:
    """Maximum-likelihood strengths p (Newton's method on log p).

    Log-likelihood: sum_i W_i log p_i - sum_{i<j} n_ij log(p_i + p_j) - prior sum_i
    log(p_i + 1), with W_i the points of i plus prior/2: the reference player (strength 1)
    draws `prior` games with everyone. The function is concave, so Newton steps (clipped to
    ±3 in log p) reach it in a handful of iterations where Hunter's MM needs thousands on
    close contests; both find the same maximum."""
    w = wins.sum(axis=1) + prior / 2
    theta = np.zeros(len(w)) if p0 is None else np.log(p0)
    for _ in range(max_iter):
        p = np.exp(theta)
        s = p[:, None] / (p[:, None] + p[None, :])  # P(i beats j)
        s0 = p / (p + 1.0)  # P(i beats the reference)
        grad = w - (games * s).sum(axis=1) - prior * s0
        c = games * s * s.T
        neg_hess = np.diag(c.sum(axis=1) + prior * s0 * (1.0 - s0)) - c
        step = np.linalg.lstsq(neg_hess, grad, rcond=None)[0]
        step = np.clip(step, -3.0, 3.0)
        theta = theta + step
        if prior <= 0:
            theta -= theta.mean()  # no anchor: fix the scale
        if float(np.max(np.abs(step))) < tol:
            break
    return np.asarray(np.exp(theta))


def _to_scale(p: np.ndarray, present: np.ndarray, *, scale: float, start: float) -> np.ndarray:
    ratings = scale * np.log10(p)
    if present.any():
        ratings += start - float(np.mean(ratings[present]))
    ratings[~present] = start  # never played: no evidence either way
    return ratings


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """A contestant's pairwise and per-round record."""

    battles: int = 0  # pairwise outcomes it took part in
    wins: int = 0
    ties: int = 0
    losses: int = 0
    rounds: int = 0  # voted rounds it raced in, "all bad" included
    rounds_won: int = 0
    all_bad: int = 0

    @property
    def win_rate(self) -> float | None:
        """Pairwise, a draw counting half: 0.5 means as good as the field it met."""
        return (self.wins + 0.5 * self.ties) / self.battles if self.battles else None


def records_of(votes: Sequence[VotedRound]) -> dict[str, Record]:
    counts: dict[str, dict[str, int]] = {}

    def bump(name: str, field: str) -> None:
        c = counts.setdefault(name, {f: 0 for f in Record.__dataclass_fields__})
        c[field] += 1

    for v in votes:
        for name in set(v.contestants):
            bump(name, "rounds")
            if v.outcome == "all_bad":
                bump(name, "all_bad")
        if v.outcome == "win" and v.winner is not None:
            bump(v.contestants[v.winner], "rounds_won")
        for b in pairwise_outcomes(v):
            for name, score in ((b.a, b.score), (b.b, 1.0 - b.score)):
                bump(name, "battles")
                bump(name, "wins" if score == 1.0 else "ties" if score == 0.5 else "losses")
    return {n: Record(**c) for n, c in counts.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Rating:
    """One leaderboard line."""

    contestant: str
    bt: float | None
    bt_low: float | None
    bt_high: float | None
    elo: float | None
    elo_low: float | None
    elo_high: float | None
    record: Record
    ttft_p50_s: float | None = None
    tps_p50: float | None = None

    @property
    def win_rate(self) -> float | None:
        return self.record.win_rate

    def row(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "record"}
        d.update(asdict(self.record), win_rate=self.win_rate)
        return d


def leaderboard(votes: Sequence[VotedRound], *,
                speeds: Mapping[str, tuple[float | None, float | None]] | None = None,
                n_boot: int = N_BOOT, seed: int = 0, k: float = ELO_K,
                prior: float = BT_PRIOR) -> list[Rating]:
    """Ratings with bootstrap intervals for every contestant that received a vote, best first
    (by Bradley–Terry). `speeds` maps a contestant to its (median TTFT s, median tok/s).

    A contestant whose only votes are "all bad" is listed with no ratings."""
    votes = sorted(votes, key=lambda v: v.ts)
    records = records_of(votes)
    battles = battles_of(votes)
    elo = elo_ratings(battles, k=k)
    bt = bradley_terry(battles, prior=prior)
    samples = _bootstrap(votes, sorted(records), n_boot=n_boot, seed=seed, k=k, prior=prior) \
        if battles and prior > 0 else {}
    speeds = speeds or {}
    out = []
    for name, record in records.items():
        ttft, tps = speeds.get(name, (None, None))
        elo_s, bt_s = samples.get(name, ([], []))
        out.append(Rating(
            contestant=name, bt=bt.get(name), elo=elo.get(name), record=record,
            bt_low=percentile(bt_s, 2.5), bt_high=percentile(bt_s, 97.5),
            elo_low=percentile(elo_s, 2.5), elo_high=percentile(elo_s, 97.5),
            ttft_p50_s=ttft, tps_p50=tps,
        ))
    out.sort(key=lambda r: (r.bt is None, -(r.bt or 0.0), r.contestant))
    return out


def _bootstrap(votes: Sequence[VotedRound], names: Sequence[str], *, n_boot: int, seed: int,
               k: float, prior: float) -> dict[str, tuple[list[float], list[float]]]:
    """Elo and BT ratings of `n_boot` resamples of the rounds (with replacement; kept in time
    order for Elo). Returns name -> (Elo samples, BT samples); a contestant missing from a
    resample gets no sample from it."""
    index = {n: i for i, n in enumerate(names)}
    per_round = [[(index[b.a], index[b.b], b.score) for b in pairwise_outcomes(v)]
                 for v in votes]
    flat = [(r, a, b, s) for r, bs in enumerate(per_round) for a, b, s in bs]
    rnd_of = np.array([f[0] for f in flat])
    a_idx = np.array([f[1] for f in flat])
    b_idx = np.array([f[2] for f in flat])
    score = np.array([f[3] for f in flat], dtype=float)
    m = len(names)
    elo_s: list[list[float]] = [[] for _ in names]
    bt_s: list[list[float]] = [[] for _ in names]
    rng = random.Random(seed)
    full_wins = np.zeros((m, m))
    full_games = np.zeros((m, m))
    np.add.at(full_wins, (a_idx, b_idx), score)
    np.add.at(full_wins, (b_idx, a_idx), 1.0 - score)
    np.add.at(full_games, (a_idx, b_idx), 1.0)
    np.add.at(full_games, (b_idx, a_idx), 1.0)
    warm = _bt_strengths(full_wins, full_games, prior=prior)
    n = len(votes)
    for _ in range(n_boot):
        picks = sorted(rng.randrange(n) for _ in range(n))
        weight = np.bincount(picks, minlength=n)[rnd_of].astype(float)
        wins = np.zeros((m, m))
        games = np.zeros((m, m))
        np.add.at(wins, (a_idx, b_idx), weight * score)
        np.add.at(wins, (b_idx, a_idx), weight * (1.0 - score))
        np.add.at(games, (a_idx, b_idx), weight)
        np.add.at(games, (b_idx, a_idx), weight)
        present = games.sum(axis=1) > 0
        p = _bt_strengths(wins, games, prior=prior, tol=1e-8, p0=warm)
        ratings = _to_scale(p, present, scale=ELO_SCALE, start=ELO_START)
        r = [ELO_START] * m
        seen = [False] * m
        for pick in picks:
            for a, b, s in per_round[pick]:
                delta = k * (s - 1.0 / (1.0 + 10 ** ((r[b] - r[a]) / ELO_SCALE)))
                r[a] += delta
                r[b] -= delta
                seen[a] = seen[b] = True
        for i in range(m):
            if present[i]:
                bt_s[i].append(float(ratings[i]))
            if seen[i]:
                elo_s[i].append(r[i])
    return {n: (elo_s[i], bt_s[i]) for i, n in enumerate(names)}
