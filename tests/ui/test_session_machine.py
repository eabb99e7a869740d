"""The machine is recorded once per browser session as the app starts, and every run saved
from then on (Chat, Arena) names it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from atom_core import arena
from atom_core.arena import report
from atom_core.history import HistoryStore, open_store
from atom_core.measure import hardware
from tests.fixtures.apptest import new_app
from tests.fixtures.payloads import NATIVE_MODELS
from tests.fixtures.sse import SSE_HEADERS, sse_body


@pytest.fixture(autouse=True)
def fresh_process_machine() -> Iterator[None]:
    hardware.use_sampler(None)  # as a fresh process: no session machine yet
    yield
    hardware.use_sampler(None)


@pytest.fixture
def recordings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The machine ids written through record_machine, in order."""
    calls: list[str] = []
    real = hardware.record_machine

    def spy(store: HistoryStore, machine: hardware.MachineInfo) -> str:
        calls.append(machine.id)
        return real(store, machine)

    monkeypatch.setattr(hardware, "record_machine", spy)
    return calls


def test_app_start_records_the_machine_once_not_on_every_rerun(
        mock: respx.MockRouter, isolated_env: Path, recordings: list[str]) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    at = new_app().run()
    assert not at.exception
    here = hardware.this_machine()
    assert recordings == [here.id]
    assert [r["id"] for r in open_store(isolated_env).records(hardware.MACHINES_TABLE)] == [
        here.id]
    at.run()  # a rerun (any widget) ...
    at.switch_page("pages/stats.py").run()  # ... or another page is the same session
    assert not at.exception
    assert recordings == [here.id]
    new_app().run()  # a new browser session records again, and the table keeps one row
    assert recordings == [here.id, here.id]
    assert len(open_store(isolated_env).records(hardware.MACHINES_TABLE)) == 1


def test_a_chat_reply_saved_in_the_session_names_the_machine(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                              content=sse_body("Hi", " there."))
    at = new_app().run()
    at.chat_input[0].set_value("Hello").run()
    assert not at.exception
    store = open_store(isolated_env)
    (run,) = store.run_rows()
    assert run["source"] == "chat" and run["machine_id"] == hardware.this_machine().id
    assert run["machine_id"] in hardware.machines(store)


def test_an_arena_race_saves_runs_and_a_round_that_name_the_machine(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    both_loaded = copy.deepcopy(NATIVE_MODELS)
    qwen = both_loaded["models"][1]
    qwen["loaded_instances"] = [{"id": qwen["key"], "config": {"context_length": 4096}}]
    mock.get("/api/v1/models").respond(json=both_loaded)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                              content=sse_body("An", " answer."))
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    at.chat_input(key="arena_prompt").set_value("Race").run()
    assert not at.exception
    store = open_store(isolated_env)
    here = hardware.this_machine().id
    runs = store.run_rows()
    assert len(runs) == 2 and {r["source"] for r in runs} == {"arena"}
    assert {r["machine_id"] for r in runs} == {here}
    (rnd,) = arena.load_rounds(store)
    assert rnd.machine_id == here
    # the round's report names the machine the session recorded
    md = report.round_markdown(rnd, hardware.machines(store))
    assert f"| {here} | {hardware.this_machine().cpu_model}" in md
