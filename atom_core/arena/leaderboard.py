"""From rounds to the leaderboard: voted rounds -> pairs -> ratings (rules in arena.ratings),
with each contestant's typical speed beside its rating."""

from __future__ import annotations

from collections.abc import Sequence

from ..metrics import DECODE_P50, TTFT_P50
from .ratings import Rating, VotedRound
from .ratings import leaderboard as rate
from .rounds import ArenaRound


def voted_rounds(rounds: Sequence[ArenaRound]) -> list[VotedRound]:
    """The votes, reduced to what the ratings need."""
    return [VotedRound(contestants=tuple(s.contestant for s in r.slots), outcome=r.vote.outcome,
                       winner=r.vote.winner, ts=r.vote.ts or r.ts)
            for r in rounds if r.vote is not None]


def contestant_speeds(rounds: Sequence[ArenaRound]) -> dict[str, tuple[float | None,
                                                                        float | None]]:
    """Median TTFT (s) and median decode tok/s of each contestant over all its complete
    replies, voted or not."""
    ttft: dict[str, list[float]] = {}
    tps: dict[str, list[float]] = {}
    for r in rounds:
        for s in r.slots:
            m = s.metrics
            if s.state != "complete" or m is None:
                continue
            if m.ttft_s is not None:
                ttft.setdefault(s.contestant, []).append(m.ttft_s)
            if m.decode_tps is not None:
                tps.setdefault(s.contestant, []).append(m.decode_tps)
    names = set(ttft) | set(tps)
    return {n: (TTFT_P50.of(ttft.get(n, [])), DECODE_P50.of(tps.get(n, []))) for n in names}


def leaderboard(rounds: Sequence[ArenaRound], *, n_boot: int = 500,
                seed: int = 0) -> list[Rating]:
    """Ratings from every vote, next to each contestant's median speed."""
    return rate(voted_rounds(rounds), speeds=contestant_speeds(rounds), n_boot=n_boot,
                seed=seed)


def vote_signature(rounds: Sequence[ArenaRound]) -> str:
    """Changes whenever a vote (or a round's speed) does: a cache key for the leaderboard."""
    return "|".join(f"{r.id}:{r.vote.outcome}:{r.vote.winner}:{r.state}" for r in rounds
                    if r.vote is not None) + f"#{len(rounds)}"
