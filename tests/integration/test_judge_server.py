"""The judge through `atom bench --judge`, against the real HTTP double."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from atom_core.cli import main
from atom_core.history import open_store
from atom_core.settings.store import open_settings
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
    sources = [r["source"] for r in open_store().run_rows()]
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


def test_the_judge_on_a_second_server_with_its_own_token(
        monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    contest = {"api_token": "contest-secret", "models": DOUBLE["models"][:2]}
    judging = {"api_token": "judge-secret", "models": DOUBLE["models"][2:3]}
    with serve(contest) as a, serve(judging) as j:
        monkeypatch.setenv("ATOM_SERVER_URL", a.url)
        monkeypatch.setenv("ATOM_API_TOKEN", "contest-secret")  # for ATOM_SERVER_URL only
        open_settings(isolated_env).save_profile("judge box", j.url, token="judge-secret")
        out, err = io.StringIO(), io.StringIO()
        code = main(["bench", "--models", "a,b", "--prompt", "Capital of France?", "--judge",
                     "fair-judge", "--judge-server", j.url, "--json"], out=out, err=err)
        contest_log, judge_log = a.log(wait=2), j.log(wait=2)
    assert code == 0, err.getvalue()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    records = [x for x in lines if x["type"] == "record"]
    assert len(records) == 2 and all(r["judge"]["calls"] == ["ok", "ok"] for r in records)
    (summary,) = [x for x in lines if x["type"] == "judge"]
    assert summary["judge_server"] == j.url and summary["verdicts"] == 1
    # each server saw only its own requests, every one accepted (a wrong token is a 401)
    assert sorted(e["model"] for e in contest_log) == ["a", "b"]
    assert [e["model"] for e in judge_log] == ["fair-judge", "fair-judge"]
    assert {e["status"] for e in contest_log + judge_log} == {200}
    judge_runs = [r for r in open_store().run_rows() if r["source"] == "judge"]
    assert {r["server"] for r in judge_runs} == {j.url}
