"""Prompt sets: reading them, checking replies, running them unattended, stopping and resuming."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from atom_core.arena import promptsets as ps
from atom_core.arena.promptsets import Check, PromptSetError, parse_prompt_set
from atom_core.arena.race import SlotSetup
from atom_core.cli import main
from atom_core.history.tinydb_store import HistoryStore, open_store
from atom_core.server.client import LMStudioClient
from atom_core.types import SamplingOptions
from tests.fixtures.lmstudio_double import serve

# -- reading --------------------------------------------------------------------------------------


def test_plain_lines() -> None:
    s = parse_prompt_set("Why is the sky blue?\n\n  Name three rivers.  \n")
    assert [i.prompt for i in s.items] == ["Why is the sky blue?", "Name three rivers."]
    assert s.check_count == 0


def test_csv_with_checks() -> None:
    text = ("name,prompt,contains,regex,json,max_latency_s,system\n"
            "capital,What is the capital of France?,Paris,,,2.5,Be brief.\n"
            "digits,Give a number,,\\d+,,,\n"
            "obj,\"Reply with JSON, please\",,,yes,,\n")
    s = parse_prompt_set(text, filename="set.csv")
    assert [i.name for i in s.items] == ["capital", "digits", "obj"]
    assert s.items[0].checks == (Check("contains", "Paris"), Check("max_latency", 2.5))
    assert s.items[0].system == "Be brief."
    assert s.items[1].checks == (Check("regex", r"\d+"),)
    assert s.items[2].prompt == "Reply with JSON, please" and s.items[2].checks == (Check("json"),)
    assert s.name == "set"


def test_csv_is_recognised_without_a_file_name() -> None:
    assert ps.detect_format("prompt,contains\nHi,hello\n") == "csv"
    assert ps.detect_format("Hello, world\nAnother line") == "lines"
    assert ps.detect_format('  ["a"]') == "json"


def test_json_forms() -> None:
    assert [i.prompt for i in parse_prompt_set('["a", "b", ""]').items] == ["a", "b"]
    doc = {"name": "Geo", "prompts": [
        {"prompt": "Capital of Italy?", "checks": {"contains": ["Rome", "Italy"]}},
        {"prompt": "As JSON", "json": True, "max_latency_s": 3, "system": "JSON only"},
        "Plain one",
    ]}
    s = parse_prompt_set(json.dumps(doc))
    assert s.name == "Geo" and len(s.items) == 3
    assert s.items[0].checks == (Check("contains", "Rome"), Check("contains", "Italy"))
    assert s.items[1].checks == (Check("json"), Check("max_latency", 3.0))
    assert s.items[1].system == "JSON only"


@pytest.mark.parametrize(("text", "filename", "words"), [
    ("", None, "No prompts found"),
    ("name,contains\nx,y\n", "a.csv", "no “prompt” column"),
    ("{not json", "a.json", "not valid JSON"),
    ('[{"name": "x"}]', None, "needs a “prompt”"),
    ('[{"prompt": "x", "regex": "("}]', None, "regex /(/ is not valid"),
    ('[{"prompt": "x", "max_latency_s": "soon"}]', None, "not a number"),
])
def test_bad_sets_give_one_sentence(text: str, filename: str | None, words: str) -> None:
    with pytest.raises(PromptSetError) as e:
        parse_prompt_set(text, filename=filename)
    assert words in e.value.sentence


def test_checks() -> None:
    assert Check("contains", "paris").passes("It is Paris.", 1.0, True)
    assert not Check("contains", "paris").passes("It is Paris.", 1.0, False)  # failed request
    assert Check("regex", r"^\d+$").passes("42", None, True)
    assert Check("json").passes('```json\n{"a": 1}\n```', None, True)
    assert not Check("json").passes("{a: 1}", None, True)
    assert Check("max_latency", 2.0).passes("", 1.9, True)
    assert not Check("max_latency", 2.0).passes("", 2.1, True)
    assert Check("max_latency", 2.0).label == "latency ≤ 2 s"


def test_saved_sets_round_trip(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    s = parse_prompt_set('[{"prompt": "x", "contains": "y"}]', name="Mine")
    ps.save_set(store, s)
    ((_, back),) = ps.saved_sets(store)
    assert back == s


# -- running --------------------------------------------------------------------------------------

MODELS = {"models": [
    {"key": "a", "loaded": True, "ttft_ms": 20, "token_gap_ms": 10, "reply_tokens": 8},
    {"key": "b", "loaded": True, "ttft_ms": 20, "token_gap_ms": 10, "reply_tokens": 8,
     "reply": "Paris is nice"},
]}
SET = parse_prompt_set(json.dumps([
    {"prompt": "Capital of France?", "contains": "Paris"},
    {"prompt": "Say something", "max_latency_s": 10},
    {"prompt": "Third"},
]), name="Geo")


def new_run(store: HistoryStore, url: str, **settings: object) -> dict[str, object]:
    setups = [SlotSetup(server=url, model="a", options=SamplingOptions(top_p=0.9)),
              SlotSetup(server=url, model="b")]
    return ps.new_run(store, SET, setups, ["a", "b"], ps.RunSettings(**settings))  # type: ignore[arg-type]


def drain(runner: ps.PromptSetRun, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not runner.finished and time.monotonic() < deadline:
        runner.poll(0.05)


def test_plan_covers_every_triple_in_a_repeatable_shuffled_order(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    run = new_run(store, "http://x", repeats=2, seed=5)
    jobs = ps.plan(run)
    keys = [(j.tags["prompt_index"], j.tags["slot"], j.tags["repeat"]) for j in jobs]
    assert sorted(keys) == [(p, s, r) for p in range(3) for s in range(2) for r in range(2)]
    assert keys != sorted(keys)  # shuffled...
    assert keys == [(j.tags["prompt_index"], j.tags["slot"], j.tags["repeat"])
                    for j in ps.plan(run)]  # ...the same way every time
    assert jobs[0].options is not None and jobs[0].options.seed == 5
    assert jobs[0].options.temperature == 0.0 and jobs[0].options.max_tokens == 512
    a_job = next(j for j in jobs if j.tags["slot"] == 0)
    assert a_job.options is not None and a_job.options.top_p == 0.9  # the slot's own option
    rest = ps.plan(run, done={(0, 0, 0), (1, 1, 1)})
    assert len(rest) == 10


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
    records = ps.run_records(store, str(run["id"]))
    assert len(records) == 12 and all(r["ok"] for r in records)
    first_b = next(r for r in records if r["prompt_index"] == 0 and r["label"] == "B")
    assert first_b["checks"] == [{"check": "contains “Paris”", "passed": True}]
    first_a = next(r for r in records if r["prompt_index"] == 0 and r["label"] == "A")
    assert first_a["checks"] == [{"check": "contains “Paris”", "passed": False}]
    summary = {s["slot"]: s for s in ps.summary_rows(run, records)}
    assert summary["Model A"]["checks_passed"] == 2 and summary["Model A"]["checks_total"] == 4
    assert summary["Model B"]["checks_passed"] == 4 and summary["Model B"]["ok"] == 6
    assert 0.02 <= summary["Model A"]["ttft_p50_s"] < 2  # 20 ms set: a floor, generous cap
    rows = ps.check_rows(run, records)
    assert rows[0] == {"prompt": "Capital of France?", "check": "contains “Paris”",
                       "Model A": "0/2", "Model B": "2/2"}
    assert {r["source"] for r in store.runs()} == {"promptset"} and len(store.runs()) == 12


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
        kept = ps.run_records(store, str(run["id"]))
        assert 3 <= len(kept) < 12 and all(r["ok"] for r in kept)
        cut = [x for x in double.log(wait=3) if x["closed_early"]]
        assert cut  # the requests in flight were ended, not left running

        double.reset()
        again = ps.PromptSetRun(store, run, lambda _u: client)
        assert again.already == len(kept) and len(again.jobs) == 12 - len(kept)
        again.start()
        drain(again)
        resent = [x for x in double.log(wait=2) if x["path"] == "/v1/chat/completions"]
    records = ps.run_records(store, str(run["id"]))
    assert len(records) == 12 and all(r["ok"] for r in records)
    assert len(resent) == 12 - len(kept)  # finished triples were not sent again
    assert again.progress.done == 12


def test_failed_requests_are_retried_on_resume(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    with serve({"models": [{"key": "a", "loaded": True, "ttft_ms": 5, "token_gap_ms": 1}]}) \
            as double, LMStudioClient(double.url) as client:
        run = new_run(store, double.url, warmup=False)  # slot B asks for "b": missing
        runner = ps.PromptSetRun(store, run, lambda _u: client).start()
        drain(runner)
        records = ps.run_records(store, str(run["id"]))
        assert sum(not r["ok"] for r in records) == 3
        assert "no model called “b”" in next(r for r in records if not r["ok"])["error"]
        assert len(ps.PromptSetRun(store, run, lambda _u: client).jobs) == 3


def test_progress_sentence() -> None:
    sentence = ps.Progress(done=3, total=10, eta_s=75).sentence
    assert sentence == "3 of 10 done · about 1 min 15 s left"
    assert ps.Progress(done=10, total=10, eta_s=0).sentence == "10 of 10 done"
    assert ps.Progress(done=0, total=4, eta_s=None).sentence == "0 of 4 done"


# -- the command line -----------------------------------------------------------------------------


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
