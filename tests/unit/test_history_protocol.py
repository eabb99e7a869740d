"""The HistoryStore protocol, run against every backend: what a caller may rely on whatever the
store keeps its data in. The memory backend passing the same suite as the TinyDB one is the
proof that callers need nothing beyond the protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from atom_core.history import (
    HistoryStore,
    NewConversation,
    NewMessage,
    memory_store,
    tinydb_core,
)
from atom_core.history.memory_store import MemoryHistoryStore
from atom_core.history.tinydb_store import TinyDBHistoryStore
from atom_core.metrics import GenerationMetrics


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture(params=["tinydb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[HistoryStore]:
    clock = FakeClock()
    monkeypatch.setattr(tinydb_core, "time", clock)
    monkeypatch.setattr(memory_store, "time", clock)
    if request.param == "tinydb":
        yield TinyDBHistoryStore(tmp_path / "data", shard_rows=3, index_shard_rows=2,
                                 durable=False)
    else:
        yield MemoryHistoryStore()


def test_is_a_history_store(store: HistoryStore) -> None:
    assert isinstance(store, HistoryStore)
    assert store.warnings == [] and isinstance(store.data_dir, Path)


def test_conversations(store: HistoryStore) -> None:
    a = store.create_conversation(title="Alpha", model="m1", system_prompt="Be brief.")
    b = store.create_conversation()
    assert b.title == "New chat" and a.message_count == 0 and a.created == a.updated
    assert store.get_conversation(a.id) == a and store.get_conversation("nope") is None
    assert [c.id for c in store.list_conversations()] == [b.id, a.id]
    renamed = store.update_conversation(a.id, title="Renamed")
    assert renamed.title == "Renamed" and renamed.model == "m1" and renamed.updated > a.updated
    assert [c.id for c in store.list_conversations()] == [a.id, b.id]
    assert store.update_conversation(a.id) == renamed  # nothing to change
    assert [c.id for c in store.list_conversations(limit=1)] == [a.id]
    assert store.list_conversations(limit=0) == []
    store.delete_conversation(b.id)
    assert [c.id for c in store.list_conversations()] == [a.id]
    with pytest.raises(KeyError):
        store.delete_conversation(b.id)
    with pytest.raises(KeyError):
        store.update_conversation("nope", title="x")
    with pytest.raises(TypeError):
        store.create_conversation(title=5)  # type: ignore[arg-type]


TTFT_ONLY = GenerationMetrics.from_dict({"ttft_s": 0.1})  # a partial dict, read leniently


def test_messages(store: HistoryStore) -> None:
    c = store.create_conversation(title="Chat")
    q = store.add_message(c.id, role="user", content="Why is the sky blue?")
    r = store.add_message(c.id, role="assistant", content="", model="m",
                          metrics=TTFT_ONLY, state="interrupted")
    assert [m.id for m in store.messages(c.id)] == [q.id, r.id]
    done = store.update_message(c.id, r.id, content="Rayleigh  scattering.", state="complete")
    assert done.content == "Rayleigh  scattering." and done.metrics == TTFT_ONLY
    conv = store.get_conversation(c.id)
    assert conv is not None and conv.message_count == 2
    assert conv.preview == "Rayleigh scattering."
    store.delete_message(c.id, q.id)
    assert [m.id for m in store.messages(c.id)] == [r.id]
    with pytest.raises(KeyError):
        store.delete_message(c.id, q.id)
    with pytest.raises(KeyError):
        store.messages("nope")
    with pytest.raises(ValueError):
        store.add_message(c.id, role="wizard", content="x")
    with pytest.raises(ValueError):
        store.update_message(c.id, r.id, state="done")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.add_message(c.id, role="user", content="x",
                          metrics={"t": 1})  # type: ignore[arg-type]


def test_search_by_title_and_content(store: HistoryStore) -> None:
    a = store.create_conversation(title="Weather")
    b = store.create_conversation(title="Code")
    store.add_message(b.id, role="user", content="What about a ZEPPELIN?")
    assert [c.id for c in store.list_conversations(query="weather")] == [a.id]
    assert [c.id for c in store.list_conversations(query="zeppelin")] == [b.id]
    assert store.list_conversations(query="nothing like it") == []


def test_import_conversations_keeps_times_and_checks_everything_first(
        store: HistoryStore) -> None:
    new = [NewConversation(title=f"Old {i}", model="m", system_prompt="s", created=1000.0 + i,
                           messages=(NewMessage(role="user", content=f"q{i}", created=1001.0 + i),
                                     NewMessage(role="assistant", content=f"a{i}", model="m",
                                                metrics=TTFT_ONLY, state="stopped",
                                                created=1002.0 + i)))
           for i in range(5)]
    made = store.import_conversations(new)
    assert [c.title for c in made] == [f"Old {i}" for i in range(5)]
    assert [c.title for c in store.list_conversations()] == [f"Old {i}" for i in range(4, -1, -1)]
    first = store.get_conversation(made[0].id)
    assert first is not None
    assert (first.created, first.updated, first.message_count, first.preview) == (
        1000.0, 1002.0, 2, "a0")
    msgs = store.messages(made[0].id)
    assert [(m.role, m.content, m.state, m.created) for m in msgs] == [
        ("user", "q0", "complete", 1001.0), ("assistant", "a0", "stopped", 1002.0)]
    assert msgs[1].metrics == TTFT_ONLY
    bad = [NewConversation(title="fine"),
           NewConversation(title="bad", messages=(NewMessage(role="wizard", content="x"),))]
    with pytest.raises(ValueError):
        store.import_conversations(bad)
    assert len(store.list_conversations()) == 5  # nothing of the refused batch was written
    store.add_message(made[0].id, role="user", content="and on")  # an imported one carries on
    assert store.messages(made[0].id)[-1].content == "and on"


def test_records_and_tables(store: HistoryStore) -> None:
    assert store.tables() == [] and store.records("votes") == []
    ids = [store.append("votes", {"winner": "a", "n": i}) for i in range(7)]
    own = store.append("votes", {"id": "vote-x", "winner": "b", "ts": 5.0})
    assert own == "vote-x" and store.records("votes")[-1] == {"id": "vote-x", "winner": "b",
                                                              "ts": 5.0}
    more = store.append_many("arena_rounds", [{"prompt": "hi"}, {"prompt": "ho"}])
    assert len(set(more)) == 2 and [r["prompt"] for r in store.records("arena_rounds")] == [
        "hi", "ho"]
    assert store.tables() == ["arena_rounds", "votes"]
    updated = store.update_record("votes", ids[4], {"winner": "tie"})
    assert updated["winner"] == "tie" and updated["n"] == 4 and updated["id"] == ids[4]
    assert store.records("votes")[4] == updated
    store.records("votes")[0]["winner"] = "changed"
    assert store.records("votes")[0]["winner"] == "a"
    with pytest.raises(KeyError):
        store.update_record("votes", "no-such-id", {"winner": "c"})
    with pytest.raises(ValueError):
        store.update_record("votes", ids[0], {"id": "other"})
    with pytest.raises(ValueError):
        store.append("../escape", {})
    with pytest.raises(ValueError):
        store.append("votes", {"id": 7})
    with pytest.raises(TypeError):
        store.append_many("votes", [{"ok": 1}, {"when": object()}])
    assert len(store.records("votes")) == 8  # the refused batch wrote nothing


def test_one_record_by_id_and_the_last_appended(store: HistoryStore) -> None:
    assert store.record("votes", "no-such-id") is None and store.last_record("votes") is None
    ids = [store.append("votes", {"n": i}) for i in range(7)]  # several shards in TinyDB
    assert [store.record("votes", i)["n"] for i in ids] == list(range(7))  # type: ignore[index]
    assert store.last_record("votes") == store.records("votes")[-1] and store.last_record(
        "votes")["n"] == 6  # type: ignore[index]
    own = store.append("votes", {"id": "vote-x", "n": 7, "ts": 5.0})  # an older ts, appended last
    assert store.record("votes", own) == {"id": "vote-x", "n": 7, "ts": 5.0}
    assert store.last_record("votes") == store.records("votes")[-1] == store.record("votes", own)
    store.update_record("votes", ids[2], {"n": "changed"})
    assert store.record("votes", ids[2])["n"] == "changed"  # type: ignore[index]
    store.record("votes", ids[0])["n"] = "mutated"  # type: ignore[index]
    store.last_record("votes")["n"] = "mutated"  # type: ignore[index]
    assert store.record("votes", ids[0])["n"] == 0 and store.last_record("votes")["n"] == 7  # type: ignore[index]
    assert store.record("votes", "") is None and store.record("runs", ids[0]) is None
    with pytest.raises(ValueError):
        store.record("../escape", ids[0])
    with pytest.raises(ValueError):
        store.last_record("../escape")
    store.delete_all()
    assert store.record("votes", ids[0]) is None and store.last_record("votes") is None


def _replay(store: HistoryStore, token: Any, held: list[dict[str, Any]]) -> tuple[Any, int]:
    delta = store.runs_since(token)
    assert 0 <= delta.start <= len(held)
    held[delta.start:] = delta.rows
    assert [r["id"] for r in held] == [r["id"] for r in store.run_rows()]
    return delta.token, len(delta.rows)


def test_runs_since_follows_appends_updates_and_deletes(store: HistoryStore) -> None:
    held: list[dict[str, Any]] = []
    token, read = _replay(store, None, held)
    assert read == 0
    for i in range(7):
        store.append("runs", {"model": "m", "n": i})
    token, read = _replay(store, token, held)
    assert read == 7
    token, read = _replay(store, token, held)
    assert read == 0  # nothing changed: nothing read
    store.append("runs", {"model": "m", "n": 7})
    token, read = _replay(store, token, held)
    assert 1 <= read <= 3  # the new run, and at most the rest of its shard
    store.update_record("runs", held[1]["id"], {"model": "changed"})
    token, _ = _replay(store, token, held)
    assert held[1]["model"] == "changed"
    store.delete_all()
    token, _ = _replay(store, token, held)
    assert held == []
    store.append("runs", {"model": "after"})
    token, _ = _replay(store, token, held)
    assert [r["model"] for r in held] == ["after"]
    assert _replay(store, ("a token", "from elsewhere"), held)[1] == 1  # unknown: from 0


def test_delete_all_then_the_store_carries_on(store: HistoryStore) -> None:
    c = store.create_conversation(title="Gone")
    store.add_message(c.id, role="user", content="bye")
    store.append("runs", {"model": "m"})
    store.append("votes", {"winner": "a"})
    assert store.size_bytes() > 0
    store.delete_all()
    assert store.list_conversations() == [] and store.run_rows() == [] and store.tables() == []
    assert store.get_conversation(c.id) is None
    c2 = store.create_conversation(title="After")
    store.add_message(c2.id, role="user", content="still works")
    store.append("runs", {"model": "m"})
    assert len(store.list_conversations()) == 1 and len(store.run_rows()) == 1


def test_nothing_outside_history_knows_its_files_shards_or_locks() -> None:
    import re

    root = Path(__file__).resolve().parents[2]
    leaks = re.compile(r"fcntl|flock|shard|tinydb_store|TinyDBHistoryStore|store\.lock|"
                       r"\"tables\"|_STORES")
    files = [p for p in (root / "atom_core").rglob("*.py")
             if "history" not in p.parts and p != root / "atom_core" / "files.py"]
    files += [*(root / "pages").rglob("*.py"), root / "app.py"]
    found = [f"{p.relative_to(root)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1) if leaks.search(line)]
    assert not found, "\n".join(found)


def test_images_are_kept_per_message_replaced_listed_and_deleted(store: HistoryStore) -> None:
    from atom_core.history.protocol import StoredImage

    c = store.create_conversation(title="Pictures")
    m = store.add_message(c.id, role="user", content="What colour?")
    png, jpg = StoredImage("image/png", b"\x89PNG-1"), StoredImage("image/jpeg", b"\xff\xd8-2")
    assert store.load_images(c.id, m.id) == [] and store.image_keys() == []
    store.save_images(c.id, m.id, [png, jpg])
    store.save_images("round-1", "prompt", [jpg])
    assert store.load_images(c.id, m.id) == [png, jpg]
    assert store.image_keys() == sorted([(c.id, m.id), ("round-1", "prompt")])
    store.save_images(c.id, m.id, [jpg])  # replaces, never appends
    assert store.load_images(c.id, m.id) == [jpg]
    assert store.size_bytes() > 0
    for bad in ("../x", "..", "", "a/b"):
        with pytest.raises(ValueError):
            store.save_images(bad, "m", [png])
        assert store.load_images(bad, "m") == []
    with pytest.raises(ValueError):
        store.save_images(c.id, m.id, [StoredImage("image/gif", b"GIF")])
    store.delete_conversation(c.id)  # takes its images with it
    assert store.load_images(c.id, m.id) == [] and store.image_keys() == [("round-1", "prompt")]
    store.delete_images("round-1")
    assert store.image_keys() == []
    store.save_images("round-2", "prompt", [png])
    store.delete_all()
    assert store.image_keys() == [] and store.load_images("round-2", "prompt") == []


@dataclass(frozen=True, slots=True, kw_only=True)
class _Note:
    """A record type as atom_core.records describes one."""

    TABLE: ClassVar[str] = "test_notes"
    text: str
    id: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"text": self.text}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> _Note:
        if not isinstance(row["text"], str):
            raise TypeError("text is not text")
        return cls(text=row["text"], id=str(row["id"]))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        cls.from_record(row)


def test_the_store_takes_and_returns_typed_records(store: HistoryStore) -> None:
    first = store.add(_Note(text="hello"))
    store.append(_Note.TABLE, {"text": 3})  # junk: skipped and counted
    store.append(_Note.TABLE, {"nothing": True})
    second = store.add(_Note(text="again"))
    notes = store.read(_Note)
    assert list(notes) == [_Note(text="hello", id=first), _Note(text="again", id=second)]
    assert notes.skipped == 2
    assert store.get(_Note, second) == _Note(text="again", id=second)
    assert store.get(_Note, "no-such-id") is None
    assert store.records(_Note.TABLE)[0] == {"text": "hello", "id": first,
                                             "ts": store.records(_Note.TABLE)[0]["ts"]}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Card:
    """A record type with several fields, every one in its row (as atom_core.records asks)."""

    TABLE: ClassVar[str] = "test_cards"
    title: str
    votes: tuple[str, ...] = ()
    note: str | None = None
    id: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "votes": list(self.votes), "note": self.note}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> _Card:
        return cls(id=str(row["id"]), title=str(row["title"]), votes=tuple(row.get("votes") or ()),
                   note=row.get("note"))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        cls.from_record(row)


def test_a_typed_update_writes_only_the_columns_it_changes(store: HistoryStore) -> None:
    card_id = store.add(_Card(title="first", note="kept"))
    held = store.get(_Card, card_id)  # a page holds the card...
    store.update_record(_Card.TABLE, card_id, {"extra": "a newer ATOM's"})
    store.update(_Card, card_id, title="renamed")  # ...another browser renames it meanwhile
    assert held is not None
    now = store.update(_Card, card_id, votes=(*held.votes, "mine"))  # the page votes
    assert now == _Card(id=card_id, title="renamed", votes=("mine",), note="kept")
    assert store.get(_Card, card_id) == now
    row = store.record(_Card.TABLE, card_id)
    assert row is not None and row["extra"] == "a newer ATOM's"  # a column it does not know stays
    assert store.update(_Card, card_id, note=None).note is None  # a field set back to None
    assert store.get(_Card, card_id) == _Card(id=card_id, title="renamed", votes=("mine",))
    with pytest.raises(KeyError):
        store.update(_Card, "no-such-id", title="x")
    with pytest.raises(TypeError):
        store.update(_Card, card_id, colour="red")
    assert store.record(_Card.TABLE, card_id) == row | {"note": None}


def test_the_last_record_reads_typed(store: HistoryStore) -> None:
    assert store.last(_Card) is None
    store.add(_Card(title="old"))
    newest = store.add(_Card(title="new"))
    assert store.last(_Card) == _Card(id=newest, title="new")
    store.append(_Card.TABLE, {"no": "title"})  # the newest does not read: None, never a crash
    assert store.last(_Card) is None


def test_a_run_goes_in_and_comes_out_as_a_run_record(store: HistoryStore) -> None:
    from atom_core.runs import RunRecord

    run = RunRecord(ts=1_700_000_000.0, source="chat", server="http://a:1", model="m",
                    ttft_s=0.25, output_tokens=12, tags={"round_id": "r1"})
    run_id = store.add(run)
    assert store.run_rows()[-1]["id"] == run_id and store.run_rows()[-1]["round_id"] == "r1"
    (back,) = store.read(RunRecord)
    assert back == run.replace(id=run_id)


def test_add_run_takes_a_run_record_and_nothing_else(store: HistoryStore) -> None:
    from atom_core.runs import RunRecord

    run = RunRecord(ts=1_700_000_000.0, source="cli", server="http://a:1", model="m",
                    decode_tps=31.5, tags={"sweep_id": "s1"})
    run_id = store.add_run(run)
    assert store.get(RunRecord, run_id) == run.replace(id=run_id)
    assert store.run_rows()[-1] == {**run.to_record(), "id": run_id}  # the row keeps its shape
    with pytest.raises(TypeError, match="RunRecord"):
        store.add_run({"model": "m"})  # type: ignore[arg-type]
    assert len(store.run_rows()) == 1
