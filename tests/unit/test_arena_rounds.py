"""Arena rounds as the Race view reads them: one round by id, or the newest, from one record
(current_round), never a copy of every round, and never a crash on an unreadable row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from atom_core import arena
from atom_core.arena.rounds import SlotResult, get_round
from atom_core.history import HistoryStore
from atom_core.history.memory_store import MemoryHistoryStore
from atom_core.history.tinydb_store import TinyDBHistoryStore


def round_record(prompt: str, ts: float, state: str = "done") -> dict[str, Any]:
    slot = SlotResult(label="A", server="s", model="m", target="m", contestant="m",
                      state="running" if state == "running" else "complete")
    rec = arena.ArenaRound(id="x", ts=ts, prompt=prompt, system_prompt="", slots=(slot,),
                           state=state).to_record()  # type: ignore[arg-type]
    del rec["id"]  # the store picks it
    return rec


@pytest.fixture(params=["tinydb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> HistoryStore:
    if request.param == "tinydb":
        return TinyDBHistoryStore(tmp_path / "data", shard_rows=2, durable=False)
    return MemoryHistoryStore()


class NoCopyOfEveryRound:
    """A store whose records() fails: current_round must not need it on a readable row."""

    def __init__(self, inner: HistoryStore) -> None:
        self.inner = inner

    def records(self, table: str) -> list[dict[str, Any]]:
        raise AssertionError("current_round read every round")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_current_round_is_the_wanted_one_else_the_newest(store: HistoryStore) -> None:
    assert arena.current_round(store, None) is None
    ids = [store.append(arena.ROUNDS_TABLE, round_record(f"p{i}", 1000.0 + i))
           for i in range(5)]
    lean: Any = NoCopyOfEveryRound(store)
    assert arena.current_round(lean, None).prompt == "p4"  # type: ignore[union-attr]
    assert arena.current_round(lean, ids[1]).prompt == "p1"  # type: ignore[union-attr]
    assert arena.current_round(lean, ids[1]).id == ids[1]  # type: ignore[union-attr]
    assert arena.current_round(lean, "000000-0123456789abcdef") is None  # wanted, gone
    assert get_round(lean, ids[3]).prompt == "p3"  # type: ignore[union-attr]


def test_current_round_settles_a_round_left_running(store: HistoryStore) -> None:
    rid = store.append(arena.ROUNDS_TABLE, round_record("died", 1000.0, state="running"))
    for shown in (arena.current_round(store, None), arena.current_round(store, rid)):
        assert shown is not None and shown.state == "done"
        assert [s.state for s in shown.slots] == ["interrupted"]


def test_an_unreadable_row_never_crashes_the_race_view(store: HistoryStore) -> None:
    good = store.append(arena.ROUNDS_TABLE, round_record("good", 1000.0))
    bad = store.append(arena.ROUNDS_TABLE, {"prompt": "no slots", "slots": "junk"})
    assert arena.current_round(store, bad) is None  # wanted but unreadable: nothing shown
    newest = arena.current_round(store, None)  # the newest is unreadable: the newest readable
    assert newest is not None and newest.id == good and newest.prompt == "good"
    assert arena.read_rounds(store)[1] == 1  # the board still counts it
    only_bad: HistoryStore = MemoryHistoryStore()
    only_bad.append(arena.ROUNDS_TABLE, {"slots": 3})
    assert arena.current_round(only_bad, None) is None
