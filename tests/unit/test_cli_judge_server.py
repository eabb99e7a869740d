"""`bench --judge KEY --judge-server URL`: the judge on another server, with that server's own
token; contestants' requests and tokens stay on theirs."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from atom_core.cli import main
from atom_core.history import open_store
from atom_core.settings.store import open_settings
from tests.fixtures.sse import SSE_HEADERS, sse_body

CONTEST = "http://contest.test:1234"
JUDGE = "http://judge.test:5678"
REPLIES = {"a": "Paris is the capital.", "b": "Lyon, I believe."}


def verdict(request: httpx.Request) -> httpx.Response:
    # Scores by content, not position: an unbiased judge that prefers the Paris answer.
    user = json.loads(request.content)["messages"][-1]["content"]
    first_is_a = user.index(REPLIES["a"]) < user.index(REPLIES["b"])
    scores = [9, 3] if first_is_a else [3, 9]
    doc = {"scores": [{"response": i + 1, "score": s, "reason": f"reason {i + 1}"}
                      for i, s in enumerate(scores)]}
    return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(json.dumps(doc)))


def contestant(request: httpx.Request) -> httpx.Response:
    model = json.loads(request.content)["model"]
    if model not in REPLIES:  # the judge, asked on the contest server (no --judge-server)
        return verdict(request)
    return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(REPLIES[model]))


def run_bench(monkeypatch: pytest.MonkeyPatch, *extra: str
              ) -> tuple[int, list[dict[str, Any]], str, respx.Route, respx.Route]:
    monkeypatch.setenv("ATOM_SERVER_URL", CONTEST)
    monkeypatch.setenv("ATOM_API_TOKEN", "contest-token")
    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=CONTEST).respond(404)
        mock.get(url__startswith=JUDGE).respond(404)
        contest = mock.post(f"{CONTEST}/v1/chat/completions").mock(side_effect=contestant)
        judged = mock.post(f"{JUDGE}/v1/chat/completions").mock(side_effect=verdict)
        out, err = io.StringIO(), io.StringIO()
        code = main(["bench", "--models", "a,b", "--prompt", "Capital of France?",
                     "--judge", "the-judge", "--json", *extra], out=out, err=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return code, lines, err.getvalue(), contest, judged


def test_the_judge_runs_on_its_own_server_with_its_own_token(
        monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    open_settings(isolated_env).save_profile("judge box", JUDGE, token="judge-token")
    code, lines, err, contest, judged = run_bench(monkeypatch, "--judge-server", JUDGE)
    assert code == 0, err
    assert sorted(json.loads(c.request.content)["model"] for c in contest.calls) == ["a", "b"]
    assert [json.loads(c.request.content)["model"] for c in judged.calls] == ["the-judge"] * 2
    # Each token goes to its own server, and only there.
    assert {c.request.headers.get("authorization") for c in contest.calls} == {
        "Bearer contest-token"}
    assert {c.request.headers.get("authorization") for c in judged.calls} == {
        "Bearer judge-token"}
    records = {r["model"]: r for r in lines if r["type"] == "record"}
    assert records["a"]["judge"]["score"] == 9 and records["b"]["judge"]["score"] == 3
    assert records["a"]["judge"]["agreed"] is True
    (summary,) = [r for r in lines if r["type"] == "judge"]
    assert summary["judge_server"] == JUDGE and summary["verdicts"] == 1
    judge_runs = [r for r in open_store().run_rows() if r["source"] == "judge"]
    assert len(judge_runs) == 2 and {r["server"] for r in judge_runs} == {JUDGE}


def test_a_judge_server_without_a_saved_token_gets_none_not_the_contest_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err, _, judged = run_bench(monkeypatch, "--judge-server", JUDGE)
    assert code == 0, err
    assert judged.calls and all("authorization" not in c.request.headers
                                for c in judged.calls)


def test_without_judge_server_the_judge_shares_the_contest_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, lines, err, contest, judged = run_bench(monkeypatch)
    assert code == 0, err
    assert not judged.calls
    assert [json.loads(c.request.content)["model"] for c in contest.calls].count("the-judge") == 2
    (summary,) = [r for r in lines if r["type"] == "judge"]
    assert summary["judge_server"] == CONTEST


def test_judge_server_needs_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", CONTEST)
    err = io.StringIO()
    code = main(["bench", "--models", "a,b", "--prompt", "P", "--judge-server", JUDGE],
                out=io.StringIO(), err=err)
    assert code == 2 and "--judge-server needs --judge" in err.getvalue()
