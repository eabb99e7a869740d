"""The Arena's core against the real HTTP double: loads first, races in parallel, saves rounds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atom_core import arena
from atom_core.arena.race import ArenaRace
from atom_core.arena.setup import SlotSetup
from atom_core.history import HistoryStore, open_store
from atom_core.server.client import LMStudioClient
from atom_core.types import LoadConfig, SamplingOptions
from tests.fixtures.lmstudio_double import DoubleServer, serve

THREE = {"models": [
    {"key": "m/a", "loaded": True, "ttft_ms": 100, "token_gap_ms": 30, "reply_tokens": 20},
    {"key": "m/b", "loaded": True, "ttft_ms": 200, "token_gap_ms": 20, "reply_tokens": 20},
    {"key": "m/c", "loaded": False, "load_time_ms": 500, "ttft_ms": 60, "token_gap_ms": 25,
     "reply_tokens": 20},
]}


@pytest.fixture
def double() -> Iterator[DoubleServer]:
    with serve(THREE) as d:
        yield d


@pytest.fixture
def client(double: DoubleServer) -> Iterator[LMStudioClient]:
    with LMStudioClient(double.url) as c:
        yield c


@pytest.fixture
def store(isolated_env: Path) -> HistoryStore:
    return open_store(isolated_env)


def race(client: LMStudioClient, store: HistoryStore, setups: list[SlotSetup],
         prompt: str = "Hello", **kw: Any) -> ArenaRace:
    listing = client.list_models()
    plan = arena.plan_loads(setups, {client.base_url: listing})
    prepared = arena.load_all(plan, lambda _url: client)
    return ArenaRace(store=store, client_for=lambda _url: client, prompt=prompt,
                     system_prompt=kw.pop("system_prompt", ""), setups=setups,
                     prepared=prepared,
                     models={i: listing.get(s.model) for i, s in enumerate(setups)}, **kw)


def run_to_end(r: ArenaRace, timeout: float = 10) -> arena.ArenaRound:
    r.start()
    deadline = time.monotonic() + timeout
    while not r.done and time.monotonic() < deadline:
        r.poll(0.05)
    result = r.finish()
    assert result is not None
    return result


def chats(double: DoubleServer) -> list[dict[str, Any]]:
    return [x for x in double.log(wait=5) if x["path"] == "/v1/chat/completions"]


def test_unloaded_models_are_loaded_first_and_load_time_stays_out_of_ttft(
        double: DoubleServer, client: LMStudioClient, store: HistoryStore) -> None:
    setups = [SlotSetup(server=double.url, model=m) for m in ("m/a", "m/b", "m/c")]
    plan = arena.plan_loads(setups, {double.url: client.list_models()})
    assert [s.model for s in plan.steps] == ["m/c"] and plan.steps[0].slots == (2,)
    assert plan.targets == ("m/a", "m/b", "m/c") and not plan.notes

    rnd = run_to_end(race(client, store, setups))
    loads = [x for x in double.log() if x["path"] == "/api/v1/models/load"]
    assert [x["body"]["model"] for x in loads] == ["m/c"]
    c = rnd.slots[2]
    # the double sleeps 0.5 s to load (a floor, and a ceiling load cannot reach)
    assert c.state == "complete" and c.load_s is not None and 0.5 <= c.load_s < 5
    assert c.metrics is not None and c.metrics.ttft_s is not None
    # the load is not in TTFT: the chat request went out only after the load had ended
    (chat_c,) = [x for x in chats(double) if x["model"] == "m/c"]
    assert chat_c["received_at"] >= loads[0]["ended_at"]
    assert c.instance_config["context_length"] == 4096


def test_three_slots_stream_at_the_same_time(double: DoubleServer, client: LMStudioClient,
                                             store: HistoryStore) -> None:
    setups = [SlotSetup(server=double.url, model=m) for m in ("m/a", "m/b", "m/c")]
    r = race(client, store, setups)
    rnd = run_to_end(r)
    log = chats(double)
    assert len(log) == 3
    # All three were in flight together: each started before any ended (no wall-clock bound,
    # issue 10: the overlap is the proof of parallelism).
    assert max(x["received_at"] for x in log) < min(x["ended_at"] for x in log)
    # and each was read to its end: the server wrote every token (none cut off by the others)
    assert sorted((x["model"], x["completed"], x["closed_early"]) for x in log) == [
        ("m/a", True, False), ("m/b", True, False), ("m/c", True, False)]
    assert [s.content.split(":")[0] for s in rnd.slots] == [
        "Reply from m/a", "Reply from m/b", "Reply from m/c"]
    assert all(s.state == "complete" for s in rnd.slots)


def test_one_failing_slot_does_not_stop_the_others(double: DoubleServer,
                                                   store: HistoryStore) -> None:
    double.set_config({"models": [
        {"key": "ok", "loaded": True, "ttft_ms": 50, "token_gap_ms": 10},
        {"key": "cut", "loaded": True, "ttft_ms": 50, "token_gap_ms": 10,
         "fail_mode": "cut_after:5"},
        {"key": "boom", "loaded": True, "fail_mode": "error_before_stream"},
    ]})
    with LMStudioClient(double.url) as client:
        setups = [SlotSetup(server=double.url, model=m) for m in ("ok", "cut", "boom", "nope")]
        rnd = run_to_end(race(client, store, setups))
    ok, cut, boom, missing = rnd.slots
    assert ok.state == "complete" and ok.content.startswith("Reply from ok")
    assert cut.state == "interrupted" and cut.content and "part-way" in cut.error
    assert boom.state == "error" and "crashed" in boom.error
    assert missing.state == "error" and "no model called “nope”" in missing.error
    best = {row.key: row.best for row in arena.stat_rows(rnd)}
    assert best["ttft"] == frozenset()  # only one reply completed: nothing to compare


def test_a_failed_load_fails_its_slot_only(double: DoubleServer, store: HistoryStore) -> None:
    double.set_config({"models": [
        {"key": "ok", "loaded": True, "ttft_ms": 20, "token_gap_ms": 5},
        {"key": "gone", "loaded": False},
    ]})
    with LMStudioClient(double.url) as client:
        setups = [SlotSetup(server=double.url, model="ok"),
                  SlotSetup(server=double.url, model="gone")]
        listing = client.list_models()
        plan = arena.plan_loads(setups, {double.url: listing})
        double.set_config({"models": [{"key": "ok", "loaded": True}]})  # deleted meanwhile
        prepared = arena.load_all(plan, lambda _u: client)
        r = ArenaRace(store=store, client_for=lambda _u: client, prompt="hi", system_prompt="",
                      setups=setups, prepared=prepared)
        rnd = run_to_end(r)
    assert rnd.slots[0].state == "complete"
    assert rnd.slots[1].state == "error" and rnd.slots[1].error
    assert rnd.slots[1].metrics is None and rnd.slots[1].run_id == ""  # never sent
    assert len(store.run_rows()) == 1


def test_config_arena_same_model_two_load_configs(double: DoubleServer, client: LMStudioClient,
                                                  store: HistoryStore) -> None:
    setups = [SlotSetup(server=double.url, model="m/a"),
              SlotSetup(server=double.url, model="m/a",
                        load_config=LoadConfig(context_length=8192),
                        options=SamplingOptions(temperature=0.2))]
    plan = arena.plan_loads(setups, {double.url: client.list_models()})
    assert plan.targets[0] == "m/a" and len(plan.steps) == 1
    assert plan.steps[0].config == LoadConfig(context_length=8192)
    rnd = run_to_end(race(client, store, setups))
    assert [s.target for s in rnd.slots] == ["m/a", "m/a:2"]
    assert rnd.slots[1].instance_config["context_length"] == 8192
    assert [s.contestant for s in rnd.slots] == ["m/a", "m/a (temp 0.2 · ctx 8192)"]
    sent = {x["body"]["model"]: x["body"] for x in chats(double)}
    assert sent["m/a:2"]["temperature"] == 0.2 and "temperature" not in sent["m/a"]
    # A second race reuses the instance loaded with that config instead of loading again.
    again = arena.plan_loads(setups, {double.url: client.list_models()})
    assert again.steps == () and again.targets == ("m/a", "m/a:2")


def test_two_slots_sharing_an_unloaded_model_load_it_once(double: DoubleServer,
                                                          client: LMStudioClient) -> None:
    setups = [SlotSetup(server=double.url, model="m/c"),
              SlotSetup(server=double.url, model="m/c", options=SamplingOptions(seed=3))]
    plan = arena.plan_loads(setups, {double.url: client.list_models()})
    assert len(plan.steps) == 1 and plan.steps[0].slots == (0, 1)


def test_openai_server_cannot_load_so_the_note_says_so_and_the_race_runs(
        store: HistoryStore) -> None:
    with serve({**THREE, "dialect": "openai"}) as double, LMStudioClient(double.url) as client:
        setups = [SlotSetup(server=double.url, model=m) for m in ("m/a", "m/c")]
        listing = client.list_models()
        plan = arena.plan_loads(setups, {double.url: listing})
        assert plan.steps == ()
        assert len(plan.notes) == 1 and "OpenAI-compatible" in plan.notes[0]
        rnd = run_to_end(race(client, store, setups))
        assert not [x for x in double.log() if "load" in x["path"]]
    assert all(s.state == "complete" for s in rnd.slots)
    assert rnd.notes == plan.notes


def test_stop_ends_every_upstream_request(store: HistoryStore) -> None:
    slow = {"models": [{"key": k, "loaded": True, "ttft_ms": 50, "token_gap_ms": 50,
                        "reply_tokens": 200} for k in ("x", "y", "z")]}
    with serve(slow) as double, LMStudioClient(double.url) as client:
        r = race(client, store, [SlotSetup(server=double.url, model=k) for k in "xyz"])
        r.start()
        deadline = time.monotonic() + 5
        while min(s.reply.tokens for s in r.slots) < 3 and time.monotonic() < deadline:
            r.poll(0.05)
        rnd = r.finish()  # what the page does in `finally:` when Stop is pressed
        log = chats(double)
    assert rnd is not None and all(s.state == "stopped" for s in rnd.slots)
    assert all(s.content.startswith("Reply from") for s in rnd.slots)
    assert len(log) == 3 and all(x["closed_early"] and not x["completed"] for x in log)
    assert all(x["tokens_sent"] < 50 for x in log)
    assert {run["state"] for run in store.run_rows()} == {"stopped"}


def test_the_round_is_saved_with_runs_votes_and_reveal(double: DoubleServer,
                                                       client: LMStudioClient,
                                                       store: HistoryStore) -> None:
    setups = [SlotSetup(server=double.url, model=m) for m in ("m/a", "m/b")]
    rnd = run_to_end(race(client, store, setups, prompt="Which?", system_prompt="Be brief.",
                          blind=True))
    assert rnd.hidden and sorted(rnd.order) == [0, 1]
    assert rnd.title_at(0) == "Response 1" and rnd.subtitle_at(1) == ""
    (saved,) = arena.load_rounds(store)
    assert saved == rnd
    assert saved.prompt == "Which?" and saved.system_prompt == "Be brief."
    assert saved.slots[0].model_info["quantization"] == "Q4_K_M"
    runs = store.run_rows()
    assert sorted(r["slot"] for r in runs) == ["A", "B"]
    assert {r["source"] for r in runs} == {"arena"} and {r["round_id"] for r in runs} == {rnd.id}
    assert [s.run_id for s in saved.slots] == [r["id"] for r in sorted(runs,
                                                                        key=lambda r: r["slot"])]

    voted = arena.record_vote(store, saved, "win", winner=1)
    assert voted.vote is not None and voted.vote.blind and not voted.hidden
    (reloaded,) = arena.load_rounds(store)
    assert reloaded.vote == voted.vote and reloaded.vote_sentence == "Model B (m/b) wins"
    assert reloaded.subtitle_at(reloaded.positions.index(1)) == "Model B · m/b"
    board = arena.leaderboard([reloaded], n_boot=10)
    assert [(r.contestant, r.record.wins, r.record.losses) for r in board] == [
        ("m/b", 1, 0), ("m/a", 0, 1)]
    # A later vote replaces the first; a vote after revealing is not blind.
    again = arena.record_vote(store, reloaded, "tie")
    assert again.vote is not None and not again.vote.blind
    assert arena.load_rounds(store)[0].vote_sentence == "Tie"


def test_a_round_left_running_reads_as_interrupted(store: HistoryStore) -> None:
    rid = store.append(arena.ROUNDS_TABLE, {
        "prompt": "p", "system_prompt": "", "state": "running", "ts": 1.0,
        "slots": [{"label": "A", "server": "s", "model": "m", "target": "m", "contestant": "m",
                   "content": "half a rep", "state": "running"}]})
    (rnd,) = arena.load_rounds(store)
    assert rnd.id == rid and rnd.state == "done" and rnd.slots[0].state == "interrupted"
    assert rnd.slots[0].content == "half a rep"


def test_progress_is_saved_while_streaming(store: HistoryStore) -> None:
    slow = {"models": [{"key": k, "loaded": True, "ttft_ms": 20, "token_gap_ms": 40,
                        "reply_tokens": 40} for k in ("x", "y")]}
    with serve(slow) as double, LMStudioClient(double.url) as client:
        r = race(client, store, [SlotSetup(server=double.url, model=k) for k in "xy"],
                 save_every_s=0.2)
        r.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            r.poll(0.05)
        (mid,) = store.records(arena.ROUNDS_TABLE)
        assert mid["state"] == "running" and mid["slots"][0]["content"].startswith("Reply")
        r.finish()


def test_another_browser_sees_the_race_live_and_its_reveal_survives_the_end(
        store: HistoryStore) -> None:
    slow = {"models": [{"key": k, "loaded": True, "ttft_ms": 20, "token_gap_ms": 40,
                        "reply_tokens": 30} for k in ("x", "y")]}
    with serve(slow) as double, LMStudioClient(double.url) as client:
        r = race(client, store, [SlotSetup(server=double.url, model=k) for k in "xy"],
                 blind=True, save_every_s=0.2)
        r.start()
        try:
            while not store.record(arena.ROUNDS_TABLE, r.round_id)["slots"][0]["content"]:
                r.poll(0.05)  # until some of the reply is saved
            seen = arena.current_round(store, None)  # what a second browser reads
            assert seen is not None and seen.state == "running"  # not "interrupted"
            assert seen.slots[0].state == "running" and seen.slots[0].content
            arena.reveal(store, seen)  # pressed there while the race runs here
            deadline = time.monotonic() + 10
            while not r.done and time.monotonic() < deadline:
                r.poll(0.05)
        finally:
            final = r.finish()
    assert final is not None and final.revealed and final.state == "done"
    (saved,) = arena.load_rounds(store)
    assert saved.revealed and not saved.hidden and saved.slots[0].state == "complete"


def test_contestant_names_and_default_models() -> None:
    assert arena.contestant_name("m", SamplingOptions(seed=1, max_tokens=9), LoadConfig()) == "m"
    name = arena.contestant_name("m", SamplingOptions(top_p=0.9),
                                 LoadConfig(flash_attention=False))
    assert name == "m (top-p 0.9 · flash off)"
    from atom_core.types import LoadedInstance, ModelInfo
    llms = [ModelInfo(key="cold"), ModelInfo(key="warm", loaded_instances=(
        LoadedInstance(id="warm"),))]
    assert arena.default_models(llms, 3) == ["warm", "cold", "warm"]
    assert arena.default_models([], 2) == []


def test_a_race_needs_two_to_four_slots(store: HistoryStore) -> None:
    prepared = arena.Prepared(targets=["a"], instance_configs=[{}], load_s=[None],
                              errors=[None], notes=[])
    with pytest.raises(ValueError):
        ArenaRace(store=store, client_for=lambda _u: None,  # type: ignore[arg-type,return-value]
                  prompt="x", system_prompt="", setups=[SlotSetup(server="s", model="a")],
                  prepared=prepared)


def test_a_finished_round_keeps_token_timelines_for_the_stats_page(
        double: DoubleServer, client: LMStudioClient, store: HistoryStore) -> None:
    from atom_core import stats

    setups = [SlotSetup(server=double.url, model=m) for m in ("m/a", "m/b")]
    rnd = run_to_end(race(client, store, setups, prompt="Timeline?"))
    ((label, timelines),) = stats.arena_timelines(arena.load_rounds(store))
    assert "Timeline?" in label
    assert [t.label for t in timelines] == ["A: m/a", "B: m/b"]
    for t, slot in zip(timelines, rnd.slots, strict=True):
        assert len(t.offsets_ms) == 20  # one arrival per token
        assert slot.metrics is not None and slot.metrics.ttft_s is not None
        assert t.offsets_ms[0] == pytest.approx(slot.metrics.ttft_s * 1000, abs=0.1)


def test_default_picks_spread_slots_over_servers_before_repeating() -> None:
    from atom_core.types import LoadedInstance, ModelInfo

    loaded = (LoadedInstance(id="x"),)
    one = [ModelInfo(key="gemma-a")]
    other = [ModelInfo(key="gemma-b")]
    assert arena.default_picks([one, other], 2) == [(0, "gemma-a"), (1, "gemma-b")]
    three = [ModelInfo(key="p"), ModelInfo(key="q", loaded_instances=loaded), ModelInfo(key="r")]
    assert arena.default_picks([three], 4) == [(0, "q"), (0, "p"), (0, "r"), (0, "q")]
    assert arena.default_picks([three, other], 4)[3] == (1, "gemma-b")
    assert arena.default_picks([[], []], 2) == []


def test_results_grid_gives_the_quickest_start_to_the_first_answer_when_a_model_reasons() -> None:
    from atom_core.arena.race import ArenaRound, SlotResult
    from atom_core.metrics import compute_metrics

    ms = 1_000_000
    # A reasons: first token at 35 ms, answer at 435 ms. B answers at once, at 200 ms.
    thinker = compute_metrics(t_request_ns=0, token_times_ns=[35 * ms, 435 * ms, 535 * ms],
                              t_end_ns=600 * ms, first_answer_ns=435 * ms, reasoning_chunks=1)
    plain = compute_metrics(t_request_ns=0, token_times_ns=[200 * ms, 300 * ms],
                            t_end_ns=350 * ms)
    slots = tuple(SlotResult(label=label, server="s", model=label, target=label,
                             contestant=label, metrics=m, state="complete")
                  for label, m in (("A", thinker), ("B", plain)))
    rnd = ArenaRound(id="r", ts=0.0, prompt="p", system_prompt="", slots=slots)
    rows = {row.key: row for row in arena.stat_rows(rnd)}
    assert rows["ttft"].cells == ("35 ms", "200 ms")
    assert rows["ttft"].best == frozenset()  # a first reasoning token wins nothing
    assert rows["first_answer"].name == "First answer"
    assert rows["first_answer"].cells == ("435 ms (thought 400 ms)", "200 ms")
    assert rows["first_answer"].best == frozenset({1})
    # without reasoning there is no extra row and TTFT keeps its mark
    plain_round = ArenaRound(id="r2", ts=0.0, prompt="p", system_prompt="",
                             slots=(slots[1], slots[1]))
    keys = [row.key for row in arena.stat_rows(plain_round)]
    assert "first_answer" not in keys
    assert {row.key: row.best for row in arena.stat_rows(plain_round)}["ttft"] == {0, 1}
