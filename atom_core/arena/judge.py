"""A model as judge: blind scores for a round's answers, with position bias controlled.

How a round is judged (`judge_round`):

- **Blind.** The judge sees the prompt (and a reference answer, when the prompt set has one)
  and the answers as "Response 1…N" in a shuffled order, never the model names.
- **Both orders.** It is asked twice: once in a shuffled order, once in the reverse of it, so
  every pair of answers is seen in both orders (judges favour the first answer they read: the
  position bias described in the MT-Bench paper). For each pair, each call's verdict is the
  higher score (equal scores: a tie). A pair's verdict counts only when both calls agree; when
  they disagree it is a tie, and the disagreement is counted per judge.
- **Scores.** 1-10 and a short reason per answer, asked for as JSON with `response_format`
  (a JSON schema: LM Studio and llama.cpp servers follow it); a server that rejects the
  schema is asked again without it, and replies are parsed leniently (fences, prose around the
  JSON, "Response 2: 7/10" lines). A reply that can't be read is kept as "unparseable" (or
  "refused" when the judge declined), never an exception.
- **Apart from people.** Verdicts live in their own table ("judge_verdicts"); the judge's
  requests are runs with source "judge", so their speed shows in Stats without counting as a
  contestant's. What the verdicts add up to (a "by judge" leaderboard, agreement with people)
  is judge_totals.py.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import AtomError, BadRequest
from ..records import stored_record
from ..runs import RunRecord
from ..server.streaming import ReplyBuffer
from ..types import ChatMessage, SamplingOptions
from .judge_reply import CallStatus, parse_verdict

if TYPE_CHECKING:
    from ..history import HistoryStore
    from ..server.client import LMStudioClient
    from .promptsets import PromptSetRecord, PromptSetRunSpec
    from .rounds import ArenaRound

VERDICTS_TABLE = "judge_verdicts"
JUDGE_SOURCE = "judge"
MAX_RAW = 4000  # characters kept of a reply that could not be read

DEFAULT_RUBRIC = ("Judge each response on helpfulness (does it do what was asked), correctness "
                  "(are its facts and reasoning right) and clarity (is it easy to follow).")
REFERENCE_RUBRIC = ("Judge each response by how well it matches the reference answer below: "
                    "the same facts and conclusion score high, missing or contradicting it "
                    "scores low. Style matters little.")

SYSTEM_PROMPT = (
    "You are an impartial judge of answers written by AI assistants. Score every response from "
    "1 (useless) to 10 (excellent) by the rubric, and give a one-sentence reason for each. The "
    "order in which the responses appear says nothing about their quality, and neither does "
    "their length. Answer with JSON only, in this shape: "
    '{"scores": [{"response": 1, "score": 7, "reason": "..."}, ...]} with one entry per response.'
)

SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"scores": {"type": "array", "items": {
                "type": "object",
                "properties": {"response": {"type": "integer"},
                               "score": {"type": "integer", "minimum": 1, "maximum": 10},
                               "reason": {"type": "string"}},
                "required": ["response", "score", "reason"]}}},
            "required": ["scores"],
        },
    },
}

PairOutcome = Literal["a", "b", "tie"]


class JudgeError(AtomError):
    """A round that can't be judged (fewer than two answers)."""


# -- prompts --------------------------------------------------------------------------------------


def judge_orders(n: int, rng: random.Random | None = None) -> tuple[tuple[int, ...],
                                                                     tuple[int, ...]]:
    """Two display orders of n answers: a shuffle and its reverse, so every pair of answers is
    shown in both orders."""
    first = list(range(n))
    (rng or random.Random()).shuffle(first)
    return tuple(first), tuple(reversed(first))


def judge_messages(prompt: str, answers: Sequence[str], order: Sequence[int], *,
                   rubric: str = DEFAULT_RUBRIC, reference: str | None = None) -> list[ChatMessage]:
    """The judge's user message: the question, the reference (if any), the rubric and the
    answers as Response 1..N in `order` (indexes into `answers`). No model names anywhere."""
    parts = [f"Rubric: {rubric.strip()}", "", "[Question]", prompt.strip(), "[End of question]"]
    if reference and reference.strip():
        parts += ["", "[Reference answer]", reference.strip(), "[End of reference answer]"]
    for position, i in enumerate(order, start=1):
        parts += ["", f"[Response {position}]", answers[i].strip(), f"[End of response {position}]"]
    parts += ["", f"Score all {len(order)} responses. JSON only."]
    return [ChatMessage("user", "\n".join(parts))]


# -- verdicts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JudgeCall:
    """One judge request: the order it showed the answers in and what came back."""

    order: tuple[int, ...]  # display position -> index into the judged answers
    status: CallStatus
    scores: dict[int, int] = field(default_factory=dict)  # answer index -> score
    reasons: dict[int, str] = field(default_factory=dict)  # answer index -> reason
    raw: str = ""  # the reply, kept when it could not be read
    error: str = ""
    run_id: str = ""

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["order"] = list(self.order)
        d["scores"] = {str(k): v for k, v in self.scores.items()}
        d["reasons"] = {str(k): v for k, v in self.reasons.items()}
        return d

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> JudgeCall:
        return cls(order=tuple(int(i) for i in d.get("order") or ()),
                   status=d.get("status") or "unparseable",
                   scores={int(k): int(v) for k, v in (d.get("scores") or {}).items()},
                   reasons={int(k): str(v) for k, v in (d.get("reasons") or {}).items()},
                   raw=str(d.get("raw") or ""), error=str(d.get("error") or ""),
                   run_id=str(d.get("run_id") or ""))

    def pair(self, a: int, b: int) -> PairOutcome | None:
        """This call's verdict on answers a and b (None when it has no verdict)."""
        if self.status != "ok" or a not in self.scores or b not in self.scores:
            return None
        sa, sb = self.scores[a], self.scores[b]
        return "a" if sa > sb else "b" if sb > sa else "tie"


@dataclass(frozen=True, slots=True, kw_only=True)
class PairVerdict:
    a: int  # slot indexes
    b: int
    first: PairOutcome | None  # verdict of each order (None: that call had no verdict)
    second: PairOutcome | None

    @property
    def complete(self) -> bool:
        return self.first is not None and self.second is not None

    @property
    def agreed(self) -> bool:
        return self.complete and self.first == self.second

    @property
    def outcome(self) -> PairOutcome | None:
        """What counts: an agreed verdict; a disagreement is a tie; no verdict is None."""
        if not self.complete:
            return None
        return self.first if self.agreed else "tie"


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class JudgeVerdict:
    """A judge's verdict on one round (or one set of answers to a prompt), as the
    "judge_verdicts" table keeps it."""

    TABLE: ClassVar[str] = VERDICTS_TABLE

    id: str
    ts: float
    round_id: str
    judge_server: str
    judge_model: str
    rubric: str
    reference: str | None
    slots: tuple[int, ...]  # the slot indexes judged (answers that completed)
    contestants: tuple[str, ...]  # per judged slot
    calls: tuple[JudgeCall, ...]  # two: an order and its reverse

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "round_id": self.round_id,
                "judge_server": self.judge_server, "judge_model": self.judge_model,
                "rubric": self.rubric, "reference": self.reference, "slots": list(self.slots),
                "contestants": list(self.contestants),
                "calls": [c.to_record() for c in self.calls]}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> JudgeVerdict:
        """Reads a stored row leniently; raises ValueError (or TypeError) for one that is not
        a verdict (no round named, slots that are not numbers)."""
        if not isinstance(d.get("round_id"), str) or not d["round_id"]:
            raise ValueError("a verdict names the round it judged")
        return cls(id=str(d.get("id") or ""), ts=float(d.get("ts") or 0.0),
                   round_id=str(d.get("round_id") or ""),
                   judge_server=str(d.get("judge_server") or ""),
                   judge_model=str(d.get("judge_model") or ""), rubric=str(d.get("rubric") or ""),
                   reference=d.get("reference") if isinstance(d.get("reference"), str) else None,
                   slots=tuple(int(i) for i in d.get("slots") or ()),
                   contestants=tuple(str(c) for c in d.get("contestants") or ()),
                   calls=tuple(JudgeCall.from_record(c) for c in d.get("calls") or ()
                               if isinstance(c, Mapping)))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row does not read as a verdict (strict: its
        slots whole numbers, its contestants text, its calls objects)."""
        slots, names, calls = row.get("slots"), row.get("contestants"), row.get("calls")
        if not (isinstance(slots, list) and all(type(i) is int for i in slots)
                and isinstance(names, list) and all(isinstance(n, str) for n in names)
                and isinstance(calls, list) and all(isinstance(c, Mapping) for c in calls)):
            raise ValueError("a verdict's slots, contestants or calls are not as saved")
        try:
            cls.from_record(row)
        except TypeError as e:
            raise ValueError(str(e)) from e

    @property
    def ok(self) -> bool:
        return len(self.calls) == 2 and all(c.status == "ok" for c in self.calls)

    def pairs(self) -> list[PairVerdict]:
        """Every pair of judged answers (indexes into `slots`), with both orders' verdicts."""
        first = self.calls[0] if self.calls else None
        second = self.calls[1] if len(self.calls) > 1 else None
        out = []
        n = len(self.slots)
        for a in range(n):
            for b in range(a + 1, n):
                out.append(PairVerdict(a=a, b=b,
                                       first=first.pair(a, b) if first else None,
                                       second=second.pair(a, b) if second else None))
        return out

    @property
    def disagreements(self) -> tuple[int, int]:
        """(pairs where the two orders disagreed, pairs with a verdict in both orders)."""
        done = [p for p in self.pairs() if p.complete]
        return sum(not p.agreed for p in done), len(done)

    def winner(self) -> int | None:
        """The judged answer (index into `slots`) that won every pair it was in, agreed in
        both orders; None for a tie or no verdict."""
        pairs = self.pairs()
        if not pairs or any(p.outcome is None for p in pairs):
            return None
        for k in range(len(self.slots)):
            mine = [p for p in pairs if k in (p.a, p.b)]
            if all(p.outcome == ("a" if p.a == k else "b") for p in mine):
                return k
        return None

    def per_answer(self) -> list[dict[str, Any]]:
        """Per judged answer: mean score over the two orders, the first order's reason, the
        1-based position it had in each order, and whether every pair it was in agreed."""
        out = []
        pairs = self.pairs()
        for k in range(len(self.slots)):
            scores = [c.scores[k] for c in self.calls if c.status == "ok" and k in c.scores]
            reason = next((c.reasons.get(k, "") for c in self.calls
                           if c.status == "ok" and c.reasons.get(k)), "")
            mine = [p for p in pairs if k in (p.a, p.b)]
            out.append({
                "slot": self.slots[k], "contestant": self.contestants[k],
                "score": round(sum(scores) / len(scores), 2) if scores else None,
                "scores": scores, "reason": reason,
                "order": [c.order.index(k) + 1 for c in self.calls if k in c.order],
                "agreed": bool(mine) and all(p.agreed for p in mine),
            })
        return out


# -- running the judge ----------------------------------------------------------------------------


def ask_judge(client: LMStudioClient, model: str, messages: Sequence[ChatMessage], *,
              schema: bool = True,
              options: SamplingOptions | None = None) -> tuple[ReplyBuffer, AtomError | None,
                                                               bool]:
    """One judge request. Returns the reply, the error (if any) and whether the JSON schema
    was sent. A server that rejects `response_format` (HTTP 400) is asked again without it."""
    opts = options or SamplingOptions(temperature=0.0, max_tokens=1024)
    reply = ReplyBuffer()
    stream = client.stream_chat(model, messages, options=opts, system_prompt=SYSTEM_PROMPT,
                                response_format=SCHEMA if schema else None)
    try:
        with stream:
            for event in stream:
                reply.add(event)
    except BadRequest as e:
        if schema:
            return ask_judge(client, model, messages, schema=False, options=opts)
        error: AtomError | None = e
    except AtomError as e:
        error = e
    else:
        error = None
    reply.timed_by(stream)  # the request's clock, its wait for a connection too
    return reply, error, schema


def judge_answers(
    *, client: LMStudioClient, judge_model: str, prompt: str, answers: Sequence[str],
    store: HistoryStore | None = None, rubric: str = DEFAULT_RUBRIC,
    reference: str | None = None, rng: random.Random | None = None,
    tags: Mapping[str, Any] | None = None,
) -> list[JudgeCall]:
    """Judges `answers` to `prompt` in a shuffled order and its reverse. Each request is saved
    as a run (source "judge") when a store is given. Never raises for a bad judge reply."""
    if len(answers) < 2:
        raise JudgeError("The judge needs at least two complete answers to compare.")
    calls = []
    for order in judge_orders(len(answers), rng):
        messages = judge_messages(prompt, answers, order, rubric=rubric, reference=reference)
        reply, error, _ = ask_judge(client, judge_model, messages)
        run_id = ""
        if store is not None and reply.t_request_ns:
            run_id = store.add_run(RunRecord.measured(
                source=JUDGE_SOURCE, server=client.base_url, model=judge_model,
                metrics=reply.metrics(), error=error, **dict(tags or {})))
        if error is not None:
            calls.append(JudgeCall(order=order, status="error", error=error.sentence,
                                   raw=reply.content[:MAX_RAW], run_id=run_id))
            continue
        parsed = parse_verdict(reply.content, len(order))
        calls.append(JudgeCall(
            order=order, status=parsed.status,
            scores={order[p - 1]: s for p, s in parsed.scores.items()},
            reasons={order[p - 1]: r for p, r in parsed.reasons.items()},
            raw="" if parsed.status == "ok" else reply.content[:MAX_RAW], run_id=run_id))
    return calls


def judge_round(store: HistoryStore, client: LMStudioClient, judge_model: str,
                rnd: ArenaRound, *, rubric: str = DEFAULT_RUBRIC,
                reference: str | None = None, rng: random.Random | None = None) -> JudgeVerdict:
    """Judges a finished round's complete answers, saves and returns the verdict."""
    judged = [i for i, s in enumerate(rnd.slots) if s.state == "complete" and s.content.strip()]
    calls = judge_answers(client=client, judge_model=judge_model, prompt=rnd.prompt,
                          answers=[rnd.slots[i].content for i in judged], store=store,
                          rubric=rubric, reference=reference, rng=rng,
                          tags={"round_id": rnd.id})
    verdict = JudgeVerdict(id="", ts=time.time(), round_id=rnd.id,
                           judge_server=client.base_url, judge_model=judge_model, rubric=rubric,
                           reference=reference, slots=tuple(judged),
                           contestants=tuple(rnd.slots[i].contestant for i in judged),
                           calls=tuple(calls))
    return replace(verdict, id=store.add(verdict))


def load_verdicts(store: HistoryStore) -> list[JudgeVerdict]:
    """Every saved verdict that reads as one, oldest first."""
    return sorted(store.read(JudgeVerdict), key=lambda v: v.ts)


def verdicts_for(store: HistoryStore, round_id: str) -> list[JudgeVerdict]:
    return [v for v in load_verdicts(store) if v.round_id == round_id]


# -- judging answers that are not a round (the command line's bench) -------------------------------


def judge_named(*, client: LMStudioClient, judge_model: str, prompt: str,
                answers: Mapping[str, str], store: HistoryStore | None = None,
                rubric: str = DEFAULT_RUBRIC, reference: str | None = None,
                rng: random.Random | None = None, tags: Mapping[str, Any] | None = None
                ) -> tuple[JudgeVerdict, dict[str, dict[str, Any]]]:
    """Judges answers keyed by contestant name; returns the verdict and, per name, the
    `judge` object a bench record carries: score (mean over both orders), reason, order (its
    1-based position in each order), agreed (every pair it was in agreed) and the two calls'
    statuses."""
    names = list(answers)
    calls = judge_answers(client=client, judge_model=judge_model, prompt=prompt,
                          answers=[answers[k] for k in names], store=store, rubric=rubric,
                          reference=reference, rng=rng, tags=tags)
    verdict = JudgeVerdict(id="", ts=time.time(), round_id="", judge_server=client.base_url,
                           judge_model=judge_model, rubric=rubric, reference=reference,
                           slots=tuple(range(len(names))), contestants=tuple(names),
                           calls=tuple(calls))
    per = {}
    for a in verdict.per_answer():
        per[names[a["slot"]]] = {"score": a["score"], "reason": a["reason"], "order": a["order"],
                                 "agreed": a["agreed"], "calls": [c.status for c in calls]}
    return verdict, per


# -- judging a prompt set's run --------------------------------------------------------------------


def promptset_round_id(run_id: str, prompt_index: int, repeat: int) -> str:
    return f"promptset:{run_id}:{prompt_index}:{repeat}"


def judge_promptset_run(store: HistoryStore, client: LMStudioClient, judge_model: str,
                        run: PromptSetRunSpec, records: Sequence[PromptSetRecord], *,
                        rubric: str | None = None, rng: random.Random | None = None
                        ) -> list[JudgeVerdict]:
    """Judges every (prompt, repeat) of a prompt set run that has two or more complete
    answers, blind and in both orders like a round; a prompt's reference answer, when it has
    one, goes to the judge (with the reference rubric unless `rubric` is given). Verdicts are
    saved (round id "promptset:<run>:<prompt>:<repeat>") and returned."""
    items = run.prompt_set.items
    slots = run.slots
    groups: dict[tuple[int, int], dict[int, str]] = {}
    for r in records:
        if r.ok and r.content.strip():
            groups.setdefault((r.prompt_index, r.repeat), {})[r.slot] = r.content
    out = []
    for (p, rep), answers in sorted(groups.items()):
        if len(answers) < 2 or p >= len(items):
            continue
        reference = items[p].reference
        chosen = rubric or (REFERENCE_RUBRIC if reference else DEFAULT_RUBRIC)
        judged = sorted(answers)
        rid = promptset_round_id(run.id, p, rep)
        calls = judge_answers(client=client, judge_model=judge_model, prompt=items[p].prompt,
                              answers=[answers[s] for s in judged], store=store, rubric=chosen,
                              reference=reference, rng=rng,
                              tags={"promptset_run": run.id, "prompt_index": p,
                                    "repeat": rep})
        verdict = JudgeVerdict(id="", ts=time.time(), round_id=rid,
                               judge_server=client.base_url, judge_model=judge_model,
                               rubric=chosen, reference=reference, slots=tuple(judged),
                               contestants=tuple(slots[s].contestant for s in judged),
                               calls=tuple(calls))
        out.append(replace(verdict, id=store.add(verdict)))
    return out


def promptset_verdicts(store: HistoryStore, run_id: str) -> list[JudgeVerdict]:
    prefix = f"promptset:{run_id}:"
    return [v for v in load_verdicts(store) if v.round_id.startswith(prefix)]


def judge_check_rows(run: PromptSetRunSpec, verdicts: Sequence[JudgeVerdict]
                     ) -> list[dict[str, Any]]:
    """The prompt set's judge checks against the judge's mean scores: one row per prompt
    with a judge check, a "passed/total" cell per slot label over the repeats judged."""
    items = run.prompt_set.items
    labels = [s.label for s in run.slots]
    by_prompt: dict[int, list[JudgeVerdict]] = {}
    for v in verdicts:
        parts = v.round_id.split(":")
        if len(parts) == 4 and parts[2].isdigit():
            by_prompt.setdefault(int(parts[2]), []).append(v)
    rows = []
    for p, item in enumerate(items):
        for check in (c for c in item.checks if c.kind == "judge"):
            row: dict[str, Any] = {"prompt": item.name or item.prompt[:60], "check": check.label}
            for s, label in enumerate(labels):
                scores = [a["score"] for v in by_prompt.get(p, []) for a in v.per_answer()
                          if a["slot"] == s]
                passed = sum(1 for x in scores if check.passes("", None, True, x))
                row[f"Model {label}"] = f"{passed}/{len(scores)}" if scores else "–"
            rows.append(row)
    return rows
