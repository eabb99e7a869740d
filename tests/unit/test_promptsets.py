"""Prompt sets: reading them, checking replies, running them unattended, stopping and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atom_core.arena import promptsets as ps
from atom_core.arena.promptsets import Check, PromptSetError, parse_prompt_set
from atom_core.arena.setup import SlotSetup
from atom_core.history import open_store
from tests.fixtures.promptsets import SET, new_run

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
    ('[{"prompt": "x", "regex": "(a)\\\\1"}]', None, "cannot run the regex /(a)\\1/"),
    ('[{"prompt": "x", "regex": "(?<!a)b"}]', None, "cannot run the regex /(?<!a)b/"),
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
    assert not Check("regex", r"(a)\1").passes("aa", None, True)  # RE2 can't: never passes
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








def test_progress_sentence() -> None:
    sentence = ps.Progress(done=3, total=10, eta_s=75).sentence
    assert sentence == "3 of 10 done · about 1 min 15 s left"
    assert ps.Progress(done=10, total=10, eta_s=0).sentence == "10 of 10 done"
    assert ps.Progress(done=0, total=4, eta_s=None).sentence == "0 of 4 done"


# -- the command line -----------------------------------------------------------------------------






def test_a_saved_run_reads_back_as_the_same_spec_and_junk_rows_are_skipped(
        isolated_env: Path) -> None:
    store = open_store(isolated_env)
    run = new_run(store, "http://x", repeats=2, seed=5)
    assert run.total == 3 * 2 * 2
    assert ps.get_run(store, run.id) == run
    row = store.records(ps.RUNS_TABLE)[0]
    assert set(row) >= {"id", "run_key", "set", "slots", "settings", "created"}
    assert ps.PromptSetRunSpec.from_record(row) == run
    store.append(ps.RUNS_TABLE, {"set": "not a set", "slots": 3})
    assert [r.id for r in ps.list_runs(store)] == [run.id]
    with pytest.raises(ps.PromptSetError):
        ps.PromptSetRunSpec.from_record({"id": "x"})


def test_a_slots_reasoning_setting_is_kept_sent_and_restored(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    setups = [SlotSetup(server="http://x", model="a", route="native", reasoning="off"),
              SlotSetup(server="http://x", model="b", route="responses", reasoning="high"),
              SlotSetup(server="http://x", model="c")]
    run = ps.new_run(store, SET, setups, ["a", "b", "c"], ps.RunSettings())
    assert [s.reasoning for s in run.slots] == ["off", "high", None]
    assert ps.get_run(store, run.id) == run  # stored and read back with the setting
    assert store.records(ps.RUNS_TABLE)[0]["slots"][0]["reasoning"] == "off"
    by_slot = {j.tags["slot"]: j for j in ps.plan(run)}
    assert [(by_slot[i].reasoning, by_slot[i].tags["reasoning_setting"]) for i in range(3)] == [
        ("off", "off"), ("high", "high"), (None, None)]
    assert [s.reasoning for s in ps.run_setups(run)] == ["off", "high", None]  # a resume
    assert ps.RunSlot.from_record({"label": "A", "server": "s", "model": "m"}).reasoning is None


def test_summary_rows_give_first_answer_and_thinking_medians() -> None:
    run = ps.PromptSetRunSpec.from_record({
        "id": "r", "set": SET.to_dict(), "created": 1.0,
        "slots": [{"label": "A", "server": "s", "model": "think"},
                  {"label": "B", "server": "s", "model": "plain"}]})

    def record(slot: int, ttft: float, answer: float | None, thinking: float | None
               ) -> ps.PromptSetRecord:
        return ps.PromptSetRecord.from_record({
            "run_id": "r", "prompt_index": 0, "repeat": 0,
            "slot": slot, "ok": True, "checks": [], "metrics": {
            "ttft_s": ttft, "first_answer_s": answer, "thinking_s": thinking, "e2e_s": 2.0,
            "decode_tps": 30.0, "itl_p50_s": None, "itl_p95_s": None, "output_tokens": 10,
            "tokens_source": "usage"}})

    records = [record(0, 0.1, 0.5, 0.4), record(0, 0.2, 0.9, 0.7), record(0, 0.1, 0.7, 0.6),
               record(1, 0.3, 0.3, None)]
    a, b = ps.summary_rows(run, records)
    assert a["first_answer_p50_s"] == 0.7 and a["thinking_p50_s"] == 0.6
    assert b["first_answer_p50_s"] == 0.3 and b["thinking_p50_s"] is None
