"""Arena rounds as the Race view reads them: one round by id, or the newest, from one record
(current_round), never a copy of every round, and never a crash on an unreadable row."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from atom_core import arena
from atom_core.arena.rounds import SlotResult, get_round, racing
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


def test_the_store_reads_rounds_as_the_board_does(store: HistoryStore) -> None:
    """store.read(ArenaRound) / store.get are the readers (read_rounds is a sort over them):
    a row that fails the round's checks is skipped and counted, a round left running is
    settled, and a slot's metrics come back typed, partial ones leniently."""
    late = store.append(arena.ROUNDS_TABLE, round_record("late", 2000.0, state="running"))
    rec = round_record("early", 1000.0)
    rec["slots"][0]["metrics"] = {"ttft_s": 0.3, "token_offsets_ms": [300.0, 320.0]}
    early = store.append(arena.ROUNDS_TABLE, rec)
    bad = store.append(arena.ROUNDS_TABLE, {**round_record("bad", 1500.0), "order": [5, 6]})
    rounds = store.read(arena.ArenaRound)
    assert [r.prompt for r in rounds] == ["late", "early"] and rounds.skipped == 1
    settled = store.get(arena.ArenaRound, late)
    assert settled is not None and settled.state == "done"
    assert [s.state for s in settled.slots] == ["interrupted"]
    assert store.get(arena.ArenaRound, bad) is None
    got = store.get(arena.ArenaRound, early)
    m = got.slots[0].metrics if got is not None else None
    assert m is not None and (m.ttft_s, m.e2e_s, m.token_offsets_ms) == (0.3, None, (300.0, 320.0))
    assert arena.read_rounds(store) == ([got, settled], 1)  # oldest first


# -- several browsers on one round (issue 18) ----------------------------------------------------

def blind_round(store: HistoryStore) -> arena.ArenaRound:
    rec = round_record("blind", 1000.0)
    rec.update(blind=True, order=[0, 1], slots=rec["slots"] * 2)
    rec["slots"][1] = {**rec["slots"][1], "label": "B", "model": "n", "contestant": "n"}
    rid = store.append(arena.ROUNDS_TABLE, rec)
    shown = get_round(store, rid)
    assert shown is not None
    return shown


def test_each_browser_session_votes_for_itself_and_the_first_vote_counts(
        store: HistoryStore) -> None:
    rnd = blind_round(store)
    mine = arena.record_vote(store, rnd, "win", 1, voter="second")
    assert mine.vote is not None and mine.vote.voter == "second" and mine.vote.blind
    assert not mine.hidden  # names shown to the one who voted
    saved = get_round(store, rnd.id)
    assert saved is not None and not saved.revealed
    assert saved.seen_by("presenter").hidden  # ...and to no one else
    assert saved.seen_by("presenter").vote is None and saved.others_votes("presenter")

    arena.record_vote(store, rnd, "tie", voter="presenter")
    arena.record_vote(store, rnd, "win", 0, voter="second")  # a change replaces its own vote
    saved = get_round(store, rnd.id)
    assert saved is not None
    assert [(v.voter, v.outcome, v.winner) for v in saved.votes] == [
        ("second", "win", 0), ("presenter", "tie", None)]
    assert saved.vote is not None and (saved.vote.voter, saved.vote.winner) == ("second", 0)
    assert saved.counts("second") and not saved.counts("presenter")
    assert saved.seen_by("presenter").vote_sentence == "Tie"
    assert not saved.seen_by("second").vote.blind  # type: ignore[union-attr]  # names seen


def test_a_round_voted_before_votes_were_attributed_reads_as_one_vote() -> None:
    rec = round_record("old", 1000.0)
    rec["vote"] = {"outcome": "tie", "winner": None, "blind": False, "ts": 5.0}
    old = arena.ArenaRound.from_record({**rec, "id": "r"})
    assert old.vote is not None and old.votes == (old.vote,) and old.vote.voter == ""
    assert old.seen_by("someone").vote is None


class ReadsMeet:
    """A store where two readers of a record wait for each other after reading: two votes at
    once then both read before either writes, unless record_vote holds a lock from its read to
    its write (then the first reader's wait times out, and the second reads after the write)."""

    def __init__(self, inner: HistoryStore) -> None:
        self.inner = inner
        self.meet = threading.Barrier(2, timeout=1.0)

    def record(self, table: str, record_id: str) -> dict[str, Any] | None:
        found = self.inner.record(table, record_id)
        with contextlib.suppress(threading.BrokenBarrierError):
            self.meet.wait()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_two_browsers_voting_at_once_both_keep_their_vote(store: HistoryStore) -> None:
    rnd = blind_round(store)
    slow: Any = ReadsMeet(store)
    voters = [threading.Thread(target=arena.record_vote, args=(slow, rnd, "win", i),
                               kwargs={"voter": f"browser-{i}"}) for i in range(2)]
    for t in voters:
        t.start()
    for t in voters:
        t.join()
    saved = get_round(store, rnd.id)
    assert saved is not None
    assert sorted(v.voter for v in saved.votes) == ["browser-0", "browser-1"]
    assert saved.vote is not None and saved.vote.voter == saved.votes[0].voter


def test_state_key_changes_with_what_any_browser_shows(store: HistoryStore) -> None:
    rnd = blind_round(store)
    keys = [arena.state_key(rnd)]
    arena.record_vote(store, rnd, "win", 0, voter="a")
    keys.append(arena.state_key(get_round(store, rnd.id)))
    arena.record_vote(store, rnd, "win", 1, voter="a")  # the same browser changes its vote
    keys.append(arena.state_key(get_round(store, rnd.id)))
    arena.reveal(store, rnd)
    keys.append(arena.state_key(get_round(store, rnd.id)))
    keys.append(arena.state_key(replace(rnd, state="running")))  # racing, then done
    assert len(set(keys)) == len(keys)
    assert arena.state_key(get_round(store, rnd.id)) == keys[3]  # unchanged: same key
    grown = replace(rnd, slots=(replace(rnd.slots[0], content="more"), rnd.slots[1]))
    assert arena.state_key(grown) == arena.state_key(rnd)  # no redraw per saved chunk
    assert arena.state_key(None) == ""


def test_a_round_raced_in_this_process_reads_as_running(store: HistoryStore) -> None:
    rid = store.append(arena.ROUNDS_TABLE, round_record("live", 1000.0, state="running"))
    racing(rid, True)
    try:
        shown = arena.current_round(store, None)
        assert shown is not None and shown.state == "running"  # another browser: live
        assert [s.state for s in shown.slots] == ["running"]
    finally:
        racing(rid, False)
    shown = arena.current_round(store, None)  # the race is over here: left behind
    assert shown is not None and shown.state == "done"
