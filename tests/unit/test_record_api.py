"""Rows cross the store as record types (issue 19): nothing outside atom_core/history calls the
row API (append / records / record / last_record / update_record), the HistoryStore protocol
no longer has it, and every table ATOM writes has a record type that reads its rows back,
skips junk, and checks an import strictly."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from atom_core import arena, chat
from atom_core.arena.classroom import ClassSession
from atom_core.arena.judge import JudgeCall, JudgeVerdict
from atom_core.arena.promptset_files import Check, PromptItem, PromptSet
from atom_core.arena.promptset_store import (
    PromptSetRunSpec,
    RunSettings,
    RunSlot,
    SavedPromptSet,
)
from atom_core.chat import ConversationRoute
from atom_core.history import HistoryStore
from atom_core.history.memory_store import MemoryHistoryStore
from atom_core.measure.hardware import GpuInfo, MachineInfo, StoredMachine
from atom_core.records import StoredRecord, record_types
from atom_core.server.admin import DownloadRecord
from atom_core.types import DownloadJob

ROOT = Path(__file__).resolve().parents[2]
ROW_API = {"append", "records", "record", "last_record", "update_record", "row_tables"}


def _row_calls(source: str, where: str) -> list[str]:
    """Calls of the row API in a module: `x.records(...)`, `x.record(...)`, `x.last_record(...)`,
    `x.update_record(...)`, `row_tables(...)`, and `x.append(TABLE, ...)` whose first argument
    names a table (a string, or a name ending in TABLE): a list's append takes one argument."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if not isinstance(node, ast.Call):
            continue
        name = (node.func.attr if isinstance(node.func, ast.Attribute)
                else node.func.id if isinstance(node.func, ast.Name) else "")
        if name not in ROW_API:
            continue
        if name == "append":
            first = node.args[0] if len(node.args) == 2 else None
            table = (isinstance(first, ast.Constant) and isinstance(first.value, str)) or (
                isinstance(first, ast.Name | ast.Attribute)
                and (first.id if isinstance(first, ast.Name) else first.attr).endswith("TABLE"))
            if not table:
                continue
        found.append(f"{where}:{node.lineno} {name}")
    return found


def test_nothing_outside_history_calls_the_row_api() -> None:
    files = [p for p in (ROOT / "atom_core").rglob("*.py")
             if "history" not in p.relative_to(ROOT / "atom_core").parts]
    files += [*(ROOT / "pages").rglob("*.py"), ROOT / "app.py", *(ROOT / "bench").rglob("*.py")]
    assert len(files) > 100
    assert [hit for p in files
            for hit in _row_calls(p.read_text(), str(p.relative_to(ROOT)))] == []


def test_the_scan_sees_a_row_call() -> None:
    source = ('store.records("x")\nstore.append(arena.ROUNDS_TABLE, {})\nparts.append(x)\n'
              'lines.append("text")\nrow_tables(store).tables()\nstore.read(ArenaRound)\n')
    assert [h.split()[-1] for h in _row_calls(source, "probe")] == [
        "records", "append", "row_tables"]


def test_the_protocol_speaks_in_record_types() -> None:
    for name in ROW_API | {"append_many", "tables"}:
        assert not hasattr(HistoryStore, name), name
    for name in ("add", "read", "get", "last", "update", "add_run", "run_rows"):
        assert hasattr(HistoryStore, name), name


# -- each table's record type ----------------------------------------------------------------------

SAMPLES: list[StoredRecord] = [
    ClassSession(id="c1", code="1234", secret="s" * 32, started=5.0, ended=9.0, live=True),
    JudgeVerdict(id="v1", ts=3.0, round_id="r1", judge_server="http://a", judge_model="j",
                 rubric="r", reference=None, slots=(0, 1), contestants=("a", "b"),
                 calls=(JudgeCall(order=(1, 0), status="ok", scores={0: 7, 1: 4},
                                  reasons={0: "x", 1: "y"}, raw="{}"),)),
    SavedPromptSet(prompt_set=PromptSet(name="n", items=(
        PromptItem(prompt="p", checks=(Check("json"),)),)), ts=4.0, id="s1"),
    PromptSetRunSpec(id="pr1", run_key="k", prompt_set=PromptSet(name="n", items=(
        PromptItem(prompt="p"),)), slots=(RunSlot(label="A", server="http://a", model="m",
                                                  target="m", contestant="m"),),
        settings=RunSettings(), created=6.0, machine_id="mach"),
    DownloadRecord(id="d1", server="http://a", model="m", quantization="Q4",
                   job=DownloadJob(status="downloading", job_id="j1", total_bytes=10)),
    ConversationRoute(id="conv1", route="responses", response_id="resp_1", reasoning="off"),
    StoredMachine(id="mach", machine=MachineInfo(
        cpu_model="cpu", cpu_cores=2, cpu_threads=4, ram_total_mb=1.0, os="L",
        gpus=(GpuInfo(name="g", vram_total_mb=2.0),))),
]
JUNK: dict[type[Any], dict[str, Any]] = {
    ClassSession: {"code": "1234"},
    JudgeVerdict: {"slots": [0]},
    SavedPromptSet: {"name": "n", "items": "not a list"},
    PromptSetRunSpec: {"set": "not a set", "slots": 3},
    DownloadRecord: {"id": 7, "server": "http://a"},
    ConversationRoute: {"id": "c", "route": "smoke-signals", "full_history": "yes"},
    StoredMachine: {"cpu_model": "no id"},
}


def test_every_table_atom_writes_has_a_record_type() -> None:
    assert {type(s).TABLE for s in SAMPLES} | {"runs", "arena_rounds", "promptset_records"} \
        == set(record_types())
    assert [type(s) for s in SAMPLES] == list(JUNK)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_a_record_reads_back_as_written_and_imports(sample: StoredRecord) -> None:
    kind = type(sample)
    row = sample.to_record()
    assert kind.from_record(row) == sample
    kind.check_import({**row, "ts": 1.0})
    with pytest.raises(ValueError):
        kind.check_import(JUNK[kind])


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: type(s).__name__)
def test_the_store_adds_reads_and_updates_each_type(sample: StoredRecord) -> None:
    kind = type(sample)
    store = MemoryHistoryStore()
    unsaved = sample if kind in (ConversationRoute, StoredMachine) else dataclasses.replace(
        sample, id="")  # type: ignore[type-var]
    new_id = store.add(unsaved)
    got = store.get(kind, new_id)
    assert got == dataclasses.replace(unsaved, id=new_id)  # type: ignore[type-var]
    assert store.last(kind) == got
    if kind in (DownloadRecord, ConversationRoute, StoredMachine):
        return  # every row the store holds reads as one of these (odd fields as unknown)
    store.append(kind.TABLE, JUNK[kind])  # junk: skipped and counted
    read = store.read(kind)
    assert list(read) == [got] and read.skipped == 1


UPDATES: list[tuple[StoredRecord, dict[str, Any]]] = [
    (SAMPLES[0], {"live": False, "ended": None}),
    (SAMPLES[3], {"slots": ()}),
    (SAMPLES[4], {"job": DownloadJob(status="failed", job_id="j1")}),
    (SAMPLES[5], {"reasoning": None, "full_history": True}),
]


@pytest.mark.parametrize(("sample", "fields"), UPDATES, ids=[type(u[0]).__name__ for u in UPDATES])
def test_an_update_changes_the_named_fields(sample: StoredRecord, fields: dict[str, Any]) -> None:
    kind = type(sample)
    store = MemoryHistoryStore()
    rid = store.add(sample)
    updated = store.update(kind, rid, **fields)
    assert updated == dataclasses.replace(sample, **fields) != sample  # type: ignore[type-var]
    assert store.get(kind, rid) == updated


def test_a_conversations_route_goes_back_to_the_default_reasoning() -> None:
    store = MemoryHistoryStore()
    chat.set_conversation_route(store, "conv1", route="responses", reasoning="off")
    assert chat.conversation_route(store, "conv1").reasoning == "off"
    back = chat.set_conversation_route(store, "conv1", default_reasoning=True)
    assert back.reasoning is None and chat.conversation_route(store, "conv1") == back
    assert chat.conversation_route(store, "conv1").route == "responses"


def test_two_browsers_voting_on_a_round_keep_both_votes() -> None:
    """Two sessions vote at once (threads); both votes are kept and the first counts."""
    import threading

    from tests.fixtures.records import arena_record

    store = MemoryHistoryStore()
    rnd = store.get(arena.ArenaRound, store.append(arena.ROUNDS_TABLE, arena_record()))
    assert rnd is not None
    start = threading.Barrier(2)

    def vote(voter: str, winner: int) -> None:
        start.wait()
        arena.record_vote(store, rnd, "win", winner, voter=voter)

    threads = [threading.Thread(target=vote, args=(f"s{i}", i)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = store.get(arena.ArenaRound, rnd.id)
    assert stored is not None and sorted(v.voter for v in stored.votes) == ["s0", "s1"]
    assert stored.vote is not None and stored.vote == stored.votes[0]
