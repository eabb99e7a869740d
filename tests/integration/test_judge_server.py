"""The judge through `atom bench --judge`, against the real HTTP double."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from atom_core.cli import main
from atom_core.history import open_store
from tests.fixtures.lmstudio_double import serve

DOUBLE = {"models": [
    {"key": "a", "ttft_ms": 20, "token_gap_ms": 2, "reply": "Paris is the capital of France."},
    {"key": "b", "ttft_ms": 20, "token_gap_ms": 2, "reply": "I think it is Lyon, maybe."},
    {"key": "fair-judge", "ttft_ms": 20, "token_gap_ms": 1},
    {"key": "biased-judge", "ttft_ms": 20, "token_gap_ms": 1, "judge": "first"},
]}


def bench_with_judge(monkeypatch: pytest.MonkeyPatch, judge_key: str,
                     *extra: str) -> tuple[list[dict[str, Any]], Any]:
    with serve(DOUBLE) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out, err = io.StringIO(), io.StringIO()
        code = main(["bench", "--models", "a,b", "--prompt", "Capital of France?", "--repeat",
                     "2", "--judge", judge_key, "--json", *extra], out=out, err=err)
        log = double.log(wait=2)
    assert code == 0, err.getvalue()
    return [json.loads(line) for line in out.getvalue().splitlines()], log


def test_bench_judge_adds_a_judge_object_per_record_and_a_summary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines, log = bench_with_judge(monkeypatch, "fair-judge")
    records = [x for x in lines if x["type"] == "record"]
    assert len(records) == 4
    for r in records:
        j = r["judge"]
        assert 1 <= j["score"] <= 10 and j["agreed"] is True
        assert sorted(j["order"]) == [1, 2]  # first in one order, second in the other
        assert j["reason"].startswith("Response") and j["calls"] == ["ok", "ok"]
    (summary,) = [x for x in lines if x["type"] == "judge"]
    assert summary["judge_model"] == "fair-judge" and summary["verdicts"] == 2
    assert summary["disagreement_rate"] == 0.0
    judge_requests = [e for e in log if e["model"] == "fair-judge"]
    assert len(judge_requests) == 4  # 2 prompts (repeats) x 2 orders
    assert all(e["body"]["response_format"]["type"] == "json_schema" for e in judge_requests)
    sources = [r["source"] for r in open_store().runs()]
    assert sources.count("judge") == 4 and sources.count("cli") == 4


def test_a_position_biased_judge_disagrees_with_itself_and_its_wins_become_ties(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines, _ = bench_with_judge(monkeypatch, "biased-judge", "--no-record")
    records = [x for x in lines if x["type"] == "record"]
    assert all(r["judge"]["agreed"] is False for r in records)
    assert all(r["judge"]["score"] == 6.5 for r in records)  # 10 first, 3 second: mean 6.5
    (summary,) = [x for x in lines if x["type"] == "judge"]
    assert summary["disagreement_rate"] == 1.0
    assert {m["model"]: (m["wins"], m["ties"]) for m in summary["models"]} == {
        "a": (0, 2), "b": (0, 2)}
