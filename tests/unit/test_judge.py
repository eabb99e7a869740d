"""The judge: blind prompts in both orders, verdict parsing, and what verdicts add up to."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import httpx
import pytest
import respx

from atom_core.arena import judge
from atom_core.arena.judge import (
    JudgeCall,
    JudgeVerdict,
    judge_answers,
    judge_messages,
    judge_orders,
    parse_verdict,
)
from atom_core.arena.judge_totals import (
    agreement_with_people,
    judge_summaries,
    judge_votes,
    wilson_interval,
)
from atom_core.arena.promptsets import PromptItem, PromptSetError, check_results, parse_prompt_set
from atom_core.arena.rounds import ArenaRound, SlotResult, Vote
from atom_core.history import open_store
from atom_core.server.client import LMStudioClient
from tests.fixtures.sse import SSE_HEADERS, sse_body

BASE = "http://judge.test:1234"
ANSWERS = ["Paris is the capital.", "It is Lyon.", "The capital of France is Paris."]


# -- prompts --------------------------------------------------------------------------------------


def test_orders_are_a_shuffle_and_its_reverse_so_every_pair_is_seen_both_ways() -> None:
    first, second = judge_orders(4, random.Random(3))
    assert sorted(first) == [0, 1, 2, 3] and second == tuple(reversed(first))
    for a, b in itertools.combinations(range(4), 2):
        assert (first.index(a) < first.index(b)) != (second.index(a) < second.index(b))
    shuffles = {judge_orders(4, random.Random(seed))[0] for seed in range(20)}
    assert len(shuffles) > 1  # really shuffled, not always the slot order


def test_judge_prompt_is_blind_numbered_in_order_and_carries_the_reference() -> None:
    (msg,) = judge_messages("Capital of France?", ANSWERS, (2, 0, 1), reference="Paris")
    text = msg.content
    assert msg.role == "user"
    assert text.index(ANSWERS[2]) < text.index(ANSWERS[0]) < text.index(ANSWERS[1])
    assert f"[Response 1]\n{ANSWERS[2]}\n[End of response 1]" in text
    assert f"[Response 3]\n{ANSWERS[1]}\n[End of response 3]" in text
    assert "[Reference answer]\nParis" in text and "Capital of France?" in text
    assert "Model A" not in text and "qwen" not in text  # nothing names a model
    (plain,) = judge_messages("Q", ANSWERS[:2], (0, 1))
    assert "Reference" not in plain.content and judge.DEFAULT_RUBRIC in plain.content


def verdict_sse(scores: list[int]) -> bytes:
    doc = {"scores": [{"response": i + 1, "score": s, "reason": f"r{i + 1}"}
                      for i, s in enumerate(scores)]}
    return sse_body(json.dumps(doc))


def test_judge_answers_asks_twice_with_a_schema_and_maps_positions_back() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/v1/chat/completions")
        # Both calls score by position: 9 for Response 1, 4 for Response 2.
        route.side_effect = [httpx.Response(200, headers=SSE_HEADERS, content=verdict_sse(s))
                             for s in ([9, 4], [9, 4])]
        with LMStudioClient(BASE) as client:
            store = open_store()
            calls = judge_answers(client=client, judge_model="judge-m", prompt="Q",
                                  answers=ANSWERS[:2], store=store, rng=random.Random(1),
                                  tags={"round_id": "r1"})
        bodies = [json.loads(c.request.content) for c in route.calls]
    assert [b["response_format"]["type"] for b in bodies] == ["json_schema", "json_schema"]
    users = [b["messages"][-1]["content"] for b in bodies]
    first_pos = [u.index(ANSWERS[0]) < u.index(ANSWERS[1]) for u in users]
    assert first_pos[0] != first_pos[1]  # the two requests show the answers in both orders
    a, b = calls
    assert a.order == tuple(reversed(b.order))
    # position 1 got 9 each time, so each answer got 9 once and 4 once
    assert sorted([a.scores[0], b.scores[0]]) == [4, 9]
    assert a.scores[a.order[0]] == 9 and a.reasons[a.order[0]] == "r1"
    runs = store.run_rows()
    assert [r["source"] for r in runs] == ["judge", "judge"]
    assert {r["round_id"] for r in runs} == {"r1"} and all(r["model"] == "judge-m" for r in runs)
    assert [c.run_id for c in calls] == [r["id"] for r in runs]


def test_a_server_that_rejects_the_schema_is_asked_again_without_it() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/v1/chat/completions")
        ok = httpx.Response(200, headers=SSE_HEADERS, content=verdict_sse([5, 6]))
        route.side_effect = [
            httpx.Response(400, json={"error": {"message": "response_format not supported",
                                                "param": "response_format"}}),
            ok, ok]
        with LMStudioClient(BASE) as client:
            calls = judge_answers(client=client, judge_model="j", prompt="Q",
                                  answers=ANSWERS[:2])
        bodies = [json.loads(c.request.content) for c in route.calls]
    assert "response_format" in bodies[0] and "response_format" not in bodies[1]
    assert all(c.status == "ok" for c in calls)


class TracedTransport(httpx.MockTransport):
    """A mock that calls the request's httpcore trace as a real connection does, so the
    stream sees its request go out (the moment TTFT starts; before it, the pool wait)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["trace"]("http11.send_request_body.started", {})
        return super().handle_request(request)


def test_judge_runs_keep_the_wait_for_a_connection() -> None:
    """The judge takes its request's clock the way every stream does (ReplyBuffer.timed_by),
    pool wait included; its hand copy left it out."""
    transport = TracedTransport(lambda request: httpx.Response(
        200, headers=SSE_HEADERS, content=verdict_sse([7, 3])))
    with LMStudioClient(BASE, transport=transport) as client:
        store = open_store()
        judge_answers(client=client, judge_model="j", prompt="Q", answers=ANSWERS[:2],
                      store=store)
    runs = store.run_rows()
    assert len(runs) == 2 and all(r["pool_wait_s"] is not None for r in runs)


def test_judging_needs_two_answers() -> None:
    with pytest.raises(judge.JudgeError):
        judge_answers(client=None, judge_model="j", prompt="Q",  # type: ignore[arg-type]
                      answers=["only one"])


# -- parsing --------------------------------------------------------------------------------------


def test_parses_valid_json() -> None:
    v = parse_verdict('{"scores": [{"response": 1, "score": 8, "reason": "good"},'
                      ' {"response": 2, "score": 3, "reason": "wrong"}]}', 2)
    assert v.status == "ok" and v.scores == {1: 8, 2: 3} and v.reasons[2] == "wrong"


def test_parses_json_in_a_fence_with_prose_and_clamps_scores() -> None:
    text = ('Sure! Here is my verdict:\n```json\n{"scores": [{"response": "1", "score": 12},'
            ' {"response": 2, "score": "6/10", "reason": "ok"}]}\n```\nHope that helps.')
    v = parse_verdict(text, 2)
    assert v.status == "ok" and v.scores == {1: 10, 2: 6}


def test_parses_prose_score_lines_when_there_is_no_json() -> None:
    v = parse_verdict("Response 1: 7/10, clear.\nResponse 2 gets 4 out of 10.", 2)
    assert v.status == "ok" and v.scores == {1: 7, 2: 4}


@pytest.mark.parametrize("text", [
    '{"scores": [{"response": 1, "score": 8}]}',  # one of two responses
    '{"scores": [{"response": 1, "score": 8}, {"response": 2, "score": ',  # cut off
    "Both are fine.", "", '{"verdict": "A"}', '[{"response": 5, "score": 3}]',
])
def test_malformed_verdicts_are_unparseable_not_errors(text: str) -> None:
    v = parse_verdict(text, 2)
    assert v.status == "unparseable" and v.scores == {}


def test_a_refusal_is_recorded_as_refused() -> None:
    assert parse_verdict("I'm sorry, but I can't evaluate these responses.", 2).status == \
        "refused"


# -- agreement maths ------------------------------------------------------------------------------


def verdict(scores1: dict[int, int], scores2: dict[int, int], *, n: int = 2,
            round_id: str = "r", model: str = "j", status2: str = "ok") -> JudgeVerdict:
    order = tuple(range(n))
    return JudgeVerdict(
        id="v", ts=1.0, round_id=round_id, judge_server=BASE, judge_model=model, rubric="",
        reference=None, slots=tuple(range(n)), contestants=tuple(f"m{i}" for i in range(n)),
        calls=(JudgeCall(order=order, status="ok", scores=scores1),
               JudgeCall(order=tuple(reversed(order)), status=status2,  # type: ignore[arg-type]
                         scores=scores2 if status2 == "ok" else {})))


def test_agreeing_orders_count_and_disagreeing_orders_are_ties() -> None:
    agree = verdict({0: 8, 1: 3}, {0: 7, 1: 2})
    (p,) = agree.pairs()
    assert p.agreed and p.outcome == "a" and agree.winner() == 0
    biased = verdict({0: 8, 1: 3}, {0: 3, 1: 8})  # each order preferred what it showed first
    (p,) = biased.pairs()
    assert not p.agreed and p.outcome == "tie" and biased.winner() is None
    assert biased.disagreements == (1, 1)
    unread = verdict({0: 8, 1: 3}, {}, status2="unparseable")
    assert unread.pairs()[0].outcome is None and unread.disagreements == (0, 0)
    answers = agree.per_answer()
    assert answers[0]["score"] == 7.5 and answers[0]["order"] == [1, 2] and answers[0]["agreed"]
    assert answers[1]["order"] == [2, 1]


def test_three_answers_give_three_pairs_and_a_winner_only_if_it_wins_every_pair() -> None:
    v = verdict({0: 9, 1: 5, 2: 5}, {0: 8, 1: 4, 2: 6}, n=3)
    outcomes = {(p.a, p.b): p.outcome for p in v.pairs()}
    assert outcomes == {(0, 1): "a", (0, 2): "a", (1, 2): "tie"}  # 1-2 disagreed: b vs tie
    assert v.winner() == 0 and v.disagreements == (1, 3)
    votes = judge_votes([v])
    assert len(votes) == 3
    assert [(x.outcome, x.winner) for x in votes] == [("win", 0), ("win", 0), ("tie", None)]


def test_judge_summaries_count_disagreements_per_judge() -> None:
    vs = [verdict({0: 8, 1: 3}, {0: 7, 1: 2}, model="fair"),
          verdict({0: 8, 1: 3}, {0: 3, 1: 8}, model="biased"),
          verdict({0: 8, 1: 3}, {0: 3, 1: 8}, model="biased"),
          verdict({0: 9, 1: 1}, {}, model="biased", status2="refused")]
    by = {s.judge_model: s for s in judge_summaries(vs)}
    assert by["fair"].disagreement_rate == 0.0
    assert by["biased"].disagreement_rate == 1.0 and by["biased"].pairs == 2
    assert by["biased"].unreadable == 1 and by["biased"].verdicts == 3


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(8, 10)  # type: ignore[misc]
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 5)  # type: ignore[misc]
    assert low == 0.0 and high == pytest.approx(0.4345, abs=1e-3)


def rnd(round_id: str, vote: Vote | None, n: int = 2) -> ArenaRound:
    slots = tuple(SlotResult(label="ABCD"[i], server=BASE, model=f"m{i}", target=f"m{i}",
                             contestant=f"m{i}", content="x", state="complete")
                  for i in range(n))
    return ArenaRound(id=round_id, ts=1.0, prompt="Q", system_prompt="", slots=slots, vote=vote)


def test_agreement_with_people_on_rounds_with_both() -> None:
    rounds = [rnd("r1", Vote(outcome="win", winner=0)),  # judge picks 0: agree
              rnd("r2", Vote(outcome="win", winner=1)),  # judge picks 0: disagree
              rnd("r3", Vote(outcome="tie")),  # judge: tie (orders disagree): agree
              rnd("r4", Vote(outcome="all_bad")),  # left out
              rnd("r5", None)]  # no people vote: left out
    vs = [verdict({0: 8, 1: 3}, {0: 7, 1: 2}, round_id="r1"),
          verdict({0: 8, 1: 3}, {0: 7, 1: 2}, round_id="r2"),
          verdict({0: 8, 1: 3}, {0: 3, 1: 8}, round_id="r3"),
          verdict({0: 8, 1: 3}, {0: 7, 1: 2}, round_id="r4"),
          verdict({0: 8, 1: 3}, {0: 7, 1: 2}, round_id="r5")]
    a = agreement_with_people(rounds, vs)
    assert (a.agreed, a.rounds) == (2, 3) and a.rate == pytest.approx(2 / 3)
    assert a.interval == wilson_interval(2, 3)
    assert agreement_with_people(rounds, vs, judge_model="other").rounds == 0


def test_verdicts_round_trip_through_the_store() -> None:
    store = open_store()
    v = verdict({0: 8, 1: 3}, {0: 7, 1: 2}, round_id="r9")
    rec: dict[str, Any] = v.to_record()
    rec.pop("id")
    vid = store.append(judge.VERDICTS_TABLE, rec)
    (back,) = judge.verdicts_for(store, "r9")
    assert back.id == vid and back.calls == v.calls and back.winner() == 0


# -- the command line (integration: the real HTTP double) -----------------------------------------









# -- prompt sets: a reference answer and a judge check --------------------------------------------


def test_prompt_sets_read_a_reference_answer_and_a_judge_check() -> None:
    csv_set = parse_prompt_set("prompt,reference,judge\nCapital of France?,Paris,7\n")
    (item,) = csv_set.items
    assert item.reference == "Paris"
    (check,) = item.checks
    assert check.kind == "judge" and check.label == "judge score ≥ 7"
    assert check.passes("x", 1.0, True, judge_score=7.5)
    assert not check.passes("x", 1.0, True, judge_score=6.0)
    assert not check.passes("x", 1.0, True)  # no judge: no pass
    json_set = parse_prompt_set('[{"prompt": "Q", "reference": "A", "checks": {"judge": 8}}]')
    assert json_set.items[0].reference == "A" and json_set.items[0].checks[0].value == 8.0
    assert PromptItem.from_dict(item.to_dict()) == item
    assert check_results(item, "x", 1.0, True) == []  # unjudged: the judge check is left out
    with pytest.raises(PromptSetError):
        parse_prompt_set("prompt,judge\nQ,eleven\n")


def test_a_prompt_set_run_is_judged_from_its_typed_records() -> None:
    from atom_core.arena import promptsets as ps

    store = open_store()
    pset = parse_prompt_set('["Capital of France?"]', name="Geo")
    slots = tuple(ps.RunSlot(label=label, server=BASE, model=m, target=m, contestant=m)
                  for label, m in (("A", "a"), ("B", "b")))
    run = ps.PromptSetRunSpec(id="run-1", run_key="k", prompt_set=pset, slots=slots,
                              settings=ps.RunSettings(), created=0.0)
    records = [ps.PromptSetRecord(run_id="run-1", prompt_index=0, slot=s, repeat=0, ok=True,
                                  content=ANSWERS[s]) for s in (0, 1)]
    records.append(ps.PromptSetRecord(run_id="run-1", prompt_index=0, slot=1, repeat=1,
                                      ok=True, content="alone"))  # one answer: not judged
    with respx.mock(base_url=BASE) as mock:
        mock.post("/v1/chat/completions").side_effect = [
            httpx.Response(200, headers=SSE_HEADERS, content=verdict_sse(s))
            for s in ([9, 4], [4, 9])]
        with LMStudioClient(BASE) as client:
            (verdict,) = judge.judge_promptset_run(store, client, "judge-m", run, records,
                                                   rng=random.Random(1))
    assert verdict.round_id == judge.promptset_round_id("run-1", 0, 0)
    assert verdict.contestants == ("a", "b")
