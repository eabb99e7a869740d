"""Prompt set runs and `bench` with prompt files, against the real test server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atom_core.arena import promptsets as ps
from atom_core.arena.setup import SlotSetup
from atom_core.cli import main
from atom_core.history import open_store
from atom_core.server.client import LMStudioClient
from tests.fixtures.lmstudio_double import serve
from tests.fixtures.promptsets import SET, new_run


def test_a_run_saves_records_with_checks_and_summaries(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    with serve(MODELS) as double, LMStudioClient(double.url) as client:
        run = new_run(store, double.url, repeats=2, concurrency=2, warmup=True)
        runner = ps.PromptSetRun(store, run, lambda _u: client).start()
        drain(runner)
        log = [x for x in double.log(wait=2) if x["path"] == "/v1/chat/completions"]
    assert runner.finished and runner.progress.done == runner.progress.total == 12
    assert runner.progress.fraction == 1.0
    assert len(log) == 12 + 2  # one warm-up per model
    records = ps.run_records(store, run.id)
    assert len(records) == 12 and all(r.ok for r in records)
    first_b = next(r for r in records if r.prompt_index == 0 and r.label == "B")
    assert first_b.checks == ({"check": "contains “Paris”", "passed": True},)
    first_a = next(r for r in records if r.prompt_index == 0 and r.label == "A")
    assert first_a.checks == ({"check": "contains “Paris”", "passed": False},)
    summary = {s["slot"]: s for s in ps.summary_rows(run, records)}
    assert summary["Model A"]["checks_passed"] == 2 and summary["Model A"]["checks_total"] == 4
    assert summary["Model B"]["checks_passed"] == 4 and summary["Model B"]["ok"] == 6
    assert 0.02 <= summary["Model A"]["ttft_p50_s"] < 2  # 20 ms set: a floor, generous cap
    rows = ps.check_rows(run, records)
    assert rows[0] == {"prompt": "Capital of France?", "check": "contains “Paris”",
                       "Model A": "0/2", "Model B": "2/2"}
    assert {r["source"] for r in store.run_rows()} == {"promptset"} and len(store.run_rows()) == 12


def test_stop_keeps_finished_records_and_resume_runs_only_the_rest(isolated_env: Path) -> None:
    slow = {"models": [{"key": k, "loaded": True, "ttft_ms": 30, "token_gap_ms": 40,
                        "reply_tokens": 10} for k in ("a", "b")]}
    store = open_store(isolated_env)
    with serve(slow) as double, LMStudioClient(double.url) as client:
        run = new_run(store, double.url, repeats=2, concurrency=2, warmup=False)
        runner = ps.PromptSetRun(store, run, lambda _u: client).start()
        deadline = time.monotonic() + 10
        while len(runner.new_records) < 3 and time.monotonic() < deadline:
            runner.poll(0.05)
        runner.stop()
        runner.join(5)
        runner.poll(0)
        kept = ps.run_records(store, run.id)
        assert 3 <= len(kept) < 12 and all(r.ok for r in kept)
        cut = [x for x in double.log(wait=3) if x["closed_early"]]
        assert cut  # the requests in flight were ended, not left running

        double.reset()
        again = ps.PromptSetRun(store, run, lambda _u: client)
        assert again.already == len(kept) and len(again.jobs) == 12 - len(kept)
        again.start()
        drain(again)
        resent = [x for x in double.log(wait=2) if x["path"] == "/v1/chat/completions"]
    records = ps.run_records(store, run.id)
    assert len(records) == 12 and all(r.ok for r in records)
    assert len(resent) == 12 - len(kept)  # finished triples were not sent again
    assert again.progress.done == 12


def test_failed_requests_are_retried_on_resume(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    with serve({"models": [{"key": "a", "loaded": True, "ttft_ms": 5, "token_gap_ms": 1}]}) \
            as double, LMStudioClient(double.url) as client:
        run = new_run(store, double.url, warmup=False)  # slot B asks for "b": missing
        runner = ps.PromptSetRun(store, run, lambda _u: client).start()
        drain(runner)
        records = ps.run_records(store, run.id)
        assert sum(not r.ok for r in records) == 3
        assert "no model called “b”" in next(r for r in records if not r.ok).error
        assert len(ps.PromptSetRun(store, run, lambda _u: client).jobs) == 3


def test_bench_reads_csv_and_json_prompt_sets_with_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv_file = tmp_path / "set.csv"
    csv_file.write_text("prompt,contains\nCapital of France?,Paris\nSay hi,\n")
    json_file = tmp_path / "set.json"
    json_file.write_text(json.dumps([{"prompt": "Q", "regex": "^Paris", "system": "Terse."}]))
    with serve(MODELS) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out = io.StringIO()
        code = main(["bench", "--models", "a,b", "--prompts", str(csv_file), "--json",
                     "--no-record"], out=out, err=io.StringIO())
        assert code == 0
        lines = [json.loads(x) for x in out.getvalue().splitlines()]
        records = [x for x in lines if x["type"] == "record"]
        assert len(records) == 4
        checked = [r for r in records if r["prompt_index"] == 0]
        assert {r["model"]: r["checks"][0]["passed"] for r in checked} == {"a": False, "b": True}
        assert "checks" not in next(r for r in records if r["prompt_index"] == 1)
        checks = {x["model"]: x for x in lines if x["type"] == "checks"}
        assert checks["a"]["passed"] == 0 and checks["b"]["passed"] == 1
        assert [s["model"] for s in lines if s["type"] == "summary"] == ["a", "b"]

        out = io.StringIO()
        code = main(["bench", "--models", "b", "--prompts", str(json_file), "--no-record"],
                    out=out, err=io.StringIO())
        text = out.getvalue()
        sent = [x for x in double.log(wait=2) if x["path"] == "/v1/chat/completions"][-1]
    assert code == 0 and "pass matches /^Paris/" in text
    assert "-- checks b: 1/1 passed" in text
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Terse."}


def test_bench_plain_lines_still_work_and_bad_files_are_one_sentence(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = tmp_path / "p.txt"
    lines.write_text("one\ntwo\n")
    with serve(MODELS) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out = io.StringIO()
        assert main(["bench", "--models", "a", "--prompts", str(lines), "--json", "--no-record"],
                    out=out, err=io.StringIO()) == 0
        assert sum('"record"' in x for x in out.getvalue().splitlines()) == 2
        err = io.StringIO()
        empty = tmp_path / "empty.txt"
        empty.write_text("\n")
        assert main(["bench", "--models", "a", "--prompts", str(empty)], out=io.StringIO(),
                    err=err) == 2
        assert err.getvalue().startswith("error: No prompts found in empty.txt")
        err = io.StringIO()
        assert main(["bench", "--models", "a", "--prompts", str(tmp_path / "nope.csv")],
                    out=io.StringIO(), err=err) == 2
        assert "Can't read" in err.getvalue()


MODELS = {"models": [
    {"key": "a", "loaded": True, "ttft_ms": 20, "token_gap_ms": 10, "reply_tokens": 8},
    {"key": "b", "loaded": True, "ttft_ms": 20, "token_gap_ms": 10, "reply_tokens": 8,
     "reply": "Paris is nice"},
]}


def drain(runner: ps.PromptSetRun, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not runner.finished and time.monotonic() < deadline:
        runner.poll(0.05)


def test_each_slot_sends_its_reasoning_setting_and_the_thinking_is_reported(
        isolated_env: Path) -> None:
    thinker = {"key": "think", "loaded": True, "ttft_ms": 10, "token_gap_ms": 5,
               "reply": "Paris.", "reasoning": "France has a capital",
               "capabilities": {"reasoning": {"allowed_options": ["off", "on"],
                                              "default": "on"}}}
    store = open_store(isolated_env)
    with serve({"models": [thinker]}) as double, LMStudioClient(double.url) as client:
        setups = [SlotSetup(server=double.url, model="think", route="native", reasoning="off"),
                  SlotSetup(server=double.url, model="think", route="native", reasoning="on")]
        run = ps.new_run(store, SET, setups, ["think", "think"],
                         ps.RunSettings(warmup=False, concurrency=1))
        drain(ps.PromptSetRun(store, run, lambda _u: client).start())
        sent = [x["body"].get("reasoning") for x in double.log(wait=2)
                if x["path"] == "/api/v1/chat"]
    assert sorted(sent) == ["off"] * 3 + ["on"] * 3  # each slot's own setting, every request
    records = ps.run_records(store, run.id)
    assert len(records) == 6 and all(r.ok for r in records)
    assert {r.reasoning for r in records if r.label == "A"} == {""}
    assert {r.reasoning for r in records if r.label == "B"} == {"France has a capital"}
    off, on = ps.summary_rows(run, records)
    assert off["thinking_p50_s"] is None and on["thinking_p50_s"] is not None
    assert on["first_answer_p50_s"] > on["ttft_p50_s"]  # the answer began after the thinking
    settings = sorted((r["reasoning_setting"], r["route"]) for r in store.run_rows())
    assert settings == [("off", "native")] * 3 + [("on", "native")] * 3


HOSTILE_REGEX = r"^(\w+\s?)*;$"  # Python's re tries every way to split each word (issue 23 §2)


def test_bench_with_a_backtracking_regex_ends_and_a_refused_one_is_one_sentence(
        tmp_path: Path) -> None:
    """`bench --prompts` with a regex that makes `re` backtrack for ever on an ordinary reply
    finishes (a subprocess, so a hang is a timeout, not a frozen test run); a regex RE2 cannot
    run is refused with one sentence before anything is sent."""
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps([{"prompt": "Q", "regex": HOSTILE_REGEX}]))
    refused = tmp_path / "refused.json"
    refused.write_text(json.dumps([{"prompt": "Q", "regex": r"(\w+) \1"}]))
    sixty = {"models": [{"key": "a", "loaded": True, "ttft_ms": 5, "token_gap_ms": 1,
                         "reply": " ".join(["lorem", "ipsum", "dolor"] * 20)}]}
    root = Path(__file__).resolve().parents[2]
    with serve(sixty) as double:
        env = {**os.environ, "ATOM_SERVER_URL": double.url}
        cli = [sys.executable, "-m", "atom_core", "bench", "--models", "a", "--no-record",
               "--prompts"]
        try:
            done = subprocess.run([*cli, str(hostile)], env=env, cwd=root, capture_output=True,
                                  text=True, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("bench --prompts with a backtracking regex did not finish in 120 s")
        no = subprocess.run([*cli, str(refused)], env=env, cwd=root, capture_output=True,
                            text=True, timeout=120)
        sent = [x for x in double.log(wait=2) if x["path"] == "/v1/chat/completions"]
    assert done.returncode == 0, done.stderr
    assert f"checks a: 0/1 passed (matches /{HOSTILE_REGEX}/ 0/1)" in done.stdout
    assert no.returncode != 0 and "cannot run the regex" in no.stderr
    assert no.stderr.strip().count("\n") == 0  # one sentence, no traceback or engine log
    assert len(sent) == 1  # the refused set sent nothing
