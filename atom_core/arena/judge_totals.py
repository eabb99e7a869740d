"""What a judge's verdicts add up to: votes for a "by judge" leaderboard (`judge_votes`), per
judge how often the two orders disagreed (`judge_summaries`), how often the judge picked what
people picked, with a 95 % Wilson interval (`agreement_with_people`), and per model its mean
score and agreed wins, ties and losses (`model_scores`). The verdicts are judge.py's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..words import plural
from .ratings import VotedRound

if TYPE_CHECKING:
    from .judge import JudgeVerdict
    from .rounds import ArenaRound


def judge_votes(verdicts: Sequence[JudgeVerdict], judge_model: str | None = None
                ) -> list[VotedRound]:
    """The judge's verdicts as pairwise votes for the ratings: an agreed win is a win, a
    disagreement or an equal score a tie; pairs without a verdict in both orders are left out.
    One vote per pair (a 4-answer round gives six)."""
    out = []
    for v in verdicts:
        if judge_model is not None and v.judge_model != judge_model:
            continue
        for p in v.pairs():
            if p.outcome is None:
                continue
            names = (v.contestants[p.a], v.contestants[p.b])
            if p.outcome == "tie":
                out.append(VotedRound(contestants=names, outcome="tie", ts=v.ts))
            else:
                out.append(VotedRound(contestants=names, outcome="win",
                                      winner=0 if p.outcome == "a" else 1, ts=v.ts))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class JudgeSummary:
    judge_model: str
    verdicts: int
    unreadable: int  # calls whose reply could not be read (or were refused, or failed)
    pairs: int  # pairs with a verdict in both orders
    disagreements: int

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.pairs if self.pairs else None


def judge_summaries(verdicts: Sequence[JudgeVerdict]) -> list[JudgeSummary]:
    """Per judge model: how many verdicts, unreadable replies and position disagreements."""
    by: dict[str, list[JudgeVerdict]] = {}
    for v in verdicts:
        by.setdefault(v.judge_model, []).append(v)
    out = []
    for model, vs in sorted(by.items()):
        dis = [v.disagreements for v in vs]
        out.append(JudgeSummary(
            judge_model=model, verdicts=len(vs),
            unreadable=sum(c.status != "ok" for v in vs for c in v.calls),
            pairs=sum(n for _, n in dis), disagreements=sum(d for d, _ in dis)))
    return out


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a proportion k/n (None for n = 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    agreed: int
    rounds: int  # rounds with both a people's vote (win or tie) and a judge verdict

    @property
    def rate(self) -> float | None:
        return self.agreed / self.rounds if self.rounds else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.agreed, self.rounds)


def agreement_with_people(rounds: Sequence[ArenaRound], verdicts: Sequence[JudgeVerdict],
                          judge_model: str | None = None) -> Agreement:
    """How often the judge picked what people picked, on rounds with both: the same winner, or
    a tie on both sides. "All bad" votes and verdicts without a reading in both orders are left
    out; a judge that judged only some of a round's answers is compared only if the people's
    winner was among them. The latest verdict of the judge on a round counts."""
    latest: dict[str, JudgeVerdict] = {}
    for verdict in verdicts:
        if judge_model is None or verdict.judge_model == judge_model:
            latest[verdict.round_id] = verdict
    agreed = total = 0
    for r in rounds:
        v = latest.get(r.id)
        if v is None or r.vote is None or r.vote.outcome == "all_bad":
            continue
        if any(p.outcome is None for p in v.pairs()) or not v.pairs():
            continue
        jw = v.winner()
        judge_pick = v.slots[jw] if jw is not None else None
        people_pick = r.vote.winner if r.vote.outcome == "win" else None
        if people_pick is not None and people_pick not in v.slots:
            continue
        total += 1
        agreed += judge_pick == people_pick
    return Agreement(agreed=agreed, rounds=total)


def summary_line(s: JudgeSummary) -> str:
    rate = s.disagreement_rate
    dis = f"{rate:.0%} of pairs disagreed between orders" if rate is not None else \
        "no pair judged in both orders"
    bad = f", {plural(s.unreadable, 'unreadable reply', 'unreadable replies')}" if s.unreadable \
        else ""
    return f"Judge {s.judge_model}: {plural(s.verdicts, 'verdict')}, {dis}{bad}."


def model_scores(verdicts: Sequence[JudgeVerdict]) -> list[dict[str, Any]]:
    """Per contestant over many verdicts: mean score and agreed pairwise wins/ties/losses."""
    scores: dict[str, list[float]] = {}
    wtl: dict[str, list[int]] = {}
    for v in verdicts:
        for a in v.per_answer():
            if a["score"] is not None:
                scores.setdefault(a["contestant"], []).append(a["score"])
            wtl.setdefault(a["contestant"], [0, 0, 0])
        for p in v.pairs():
            if p.outcome is None:
                continue
            x, y = v.contestants[p.a], v.contestants[p.b]
            if p.outcome == "tie":
                wtl[x][1] += 1
                wtl[y][1] += 1
            else:
                win, lose = (x, y) if p.outcome == "a" else (y, x)
                wtl[win][0] += 1
                wtl[lose][2] += 1
    return [{"model": name, "score_mean": round(sum(s) / len(s), 2) if (s := scores.get(name))
             else None, "wins": w, "ties": t, "losses": lo}
            for name, (w, t, lo) in sorted(wtl.items())]
