"""The history store: CRUD, sharding, caching, atomic files, damaged files, schema, locking."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from atom_core.history import tinydb_core
from atom_core.history import tinydb_store as store_mod
from atom_core.history.tinydb_store import (
    SCHEMA_VERSION,
    AtomicJSONStorage,
    Conversation,
    HistoryStore,
    Message,
    SchemaTooNewError,
    StoreError,
    TinyDBHistoryStore,
    default_data_dir,
    open_store,
)
from atom_core.metrics import GenerationMetrics

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Stands in for `time` inside atom_core.history.tinydb_core: each call is a second later."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(tinydb_core, "time", fake)
    return fake


@pytest.fixture
def store(tmp_path: Path) -> TinyDBHistoryStore:
    return TinyDBHistoryStore(tmp_path / "data")


def small_store(folder: Path, **kwargs: Any) -> TinyDBHistoryStore:
    return TinyDBHistoryStore(folder, shard_rows=3, index_shard_rows=2, **kwargs)


def files_named(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.rglob(pattern))


# --- conversations ----------------------------------------------------------------------------


def test_store_satisfies_protocol(store: TinyDBHistoryStore) -> None:
    as_protocol: HistoryStore = store  # mypy checks the shape; this checks it at runtime
    assert as_protocol.warnings == []


def test_create_and_get_conversation(store: TinyDBHistoryStore, clock: FakeClock) -> None:
    conv = store.create_conversation(title="Cats", model="qwen3-4b", system_prompt="Be brief.")
    assert isinstance(conv, Conversation)
    assert conv.title == "Cats"
    assert conv.model == "qwen3-4b"
    assert conv.system_prompt == "Be brief."
    assert conv.created == conv.updated
    assert conv.message_count == 0
    assert conv.preview == ""
    assert store.get_conversation(conv.id) == conv
    assert store.get_conversation("000000-0000000000000000") is None
    assert store.get_conversation("../../etc/passwd") is None


def test_defaults_and_type_checks(store: TinyDBHistoryStore) -> None:
    conv = store.create_conversation()
    assert (conv.title, conv.model, conv.system_prompt) == ("New chat", "", "")
    with pytest.raises(TypeError, match="title"):
        store.create_conversation(title=3)  # type: ignore[arg-type]


def test_list_is_most_recently_updated_first(store: TinyDBHistoryStore, clock: FakeClock) -> None:
    first = store.create_conversation(title="first")
    second = store.create_conversation(title="second")
    third = store.create_conversation(title="third")
    assert [c.id for c in store.list_conversations()] == [third.id, second.id, first.id]
    store.add_message(first.id, role="user", content="hello again")
    assert [c.id for c in store.list_conversations()] == [first.id, third.id, second.id]
    assert [c.id for c in store.list_conversations(limit=2)] == [first.id, third.id]
    assert store.list_conversations(limit=0) == []


def test_update_conversation(store: TinyDBHistoryStore, clock: FakeClock) -> None:
    conv = store.create_conversation(title="old")
    renamed = store.update_conversation(conv.id, title="new", system_prompt="Speak French.")
    assert renamed.title == "new"
    assert renamed.system_prompt == "Speak French."
    assert renamed.model == ""
    assert renamed.updated > conv.updated
    assert store.get_conversation(conv.id) == renamed
    assert store.update_conversation(conv.id, model="gemma-3") == store.get_conversation(conv.id)
    unchanged = store.update_conversation(conv.id)
    assert unchanged == store.get_conversation(conv.id)
    with pytest.raises(KeyError, match="No conversation"):
        store.update_conversation("000000-ffffffffffffffff", title="x")


def test_delete_conversation(store: TinyDBHistoryStore) -> None:
    keep = store.create_conversation(title="keep")
    gone = store.create_conversation(title="gone")
    store.add_message(gone.id, role="user", content="bye")
    store.delete_conversation(gone.id)
    assert store.get_conversation(gone.id) is None
    assert [c.id for c in store.list_conversations()] == [keep.id]
    assert not (store.data_dir / "conversations" / f"{gone.id}.json").exists()
    with pytest.raises(KeyError):
        store.messages(gone.id)
    with pytest.raises(KeyError, match="No conversation"):
        store.delete_conversation(gone.id)


def test_index_shards_are_bounded_and_updates_touch_one(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    convs = [s.create_conversation(title=f"c{i}") for i in range(5)]
    index = sorted(p.name for p in (s.data_dir / "index").iterdir())
    assert index == ["000000.json", "000001.json", "000002.json"]
    assert [c.id[:6] for c in convs] == ["000000", "000000", "000001", "000001", "000002"]
    before = {p: os.stat(p).st_ino for p in (s.data_dir / "index").iterdir()}
    s.update_conversation(convs[2].id, title="renamed")
    after = {p: os.stat(p).st_ino for p in (s.data_dir / "index").iterdir()}
    changed = [p.name for p in before if before[p] != after[p]]
    assert changed == ["000001.json"]
    assert len(s.list_conversations()) == 5


# --- messages ---------------------------------------------------------------------------------


def test_messages_in_order_with_count_and_preview(
    store: TinyDBHistoryStore, clock: FakeClock
) -> None:
    conv = store.create_conversation()
    user = store.add_message(conv.id, role="user", content="What is   2+2?")
    reply = store.add_message(
        conv.id,
        role="assistant",
        content="4",
        reasoning="Adding.",
        model="qwen3-4b",
        metrics=GenerationMetrics.from_dict({"ttft_s": 0.2}),
    )
    assert isinstance(user, Message)
    assert user.conversation_id == conv.id
    assert user.state == "complete" and user.error == ""
    got = store.messages(conv.id)
    assert got == [user, reply]
    assert got[1].metrics == GenerationMetrics.from_dict({"ttft_s": 0.2})
    after = store.get_conversation(conv.id)
    assert after is not None
    assert after.message_count == 2
    assert after.preview == "4"
    assert after.updated == reply.created


def test_preview_is_short_and_single_line(store: TinyDBHistoryStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, role="user", content="line one\n\nline two " + "x" * 500)
    found = store.get_conversation(conv.id)
    assert found is not None
    assert found.preview.startswith("line one line two x")
    assert len(found.preview) <= 120


def test_metrics_come_back_typed_and_are_kept_as_a_dict(store: TinyDBHistoryStore) -> None:
    conv = store.create_conversation()
    metrics = GenerationMetrics.from_dict(
        {"ttft_s": 0.1, "output_tokens": 3, "token_offsets_ms": [100, 120.5]})
    msg = store.add_message(conv.id, role="assistant", content="hi", metrics=metrics)
    assert msg.metrics == metrics
    loaded = store.messages(conv.id)[0].metrics
    assert loaded == metrics and loaded.token_offsets_ms == (100.0, 120.5)
    docs = [json.loads(p.read_text()) for p in store.data_dir.rglob("*.json")]
    rows = [m for d in docs for m in d.get("messages", {}).values()]
    assert rows[0]["metrics"] == metrics.to_dict() | {"token_offsets_ms": [100.0, 120.5]}


def test_update_message_states(store: TinyDBHistoryStore) -> None:
    conv = store.create_conversation()
    store.add_message(conv.id, role="user", content="tell me a story")
    draft = store.add_message(conv.id, role="assistant", content="", state="interrupted")
    partial = store.update_message(conv.id, draft.id, content="Once upon")
    assert partial.state == "interrupted"
    assert partial.content == "Once upon"
    assert store.get_conversation(conv.id).preview == "Once upon"  # type: ignore[union-attr]
    done = store.update_message(
        conv.id, draft.id, content="Once upon a time.", state="stopped",
        metrics=GenerationMetrics.from_dict({"e2e_s": 1.5})
    )
    assert (done.state, done.created) == ("stopped", draft.created) and done.metrics
    assert done.metrics.e2e_s == 1.5 and done.metrics.output_tokens is None
    failed = store.update_message(conv.id, draft.id, state="error", error="Server went away.")
    assert failed.error == "Server went away."
    assert failed.content == "Once upon a time."  # fields not given stay as they were
    assert store.messages(conv.id)[1] == failed
    with pytest.raises(ValueError, match="state"):
        store.update_message(conv.id, draft.id, state="done")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="No message"):
        store.update_message(conv.id, "nope", content="x")
    with pytest.raises(KeyError, match="No conversation"):
        store.update_message("000000-0123456789abcdef", draft.id, content="x")


def test_delete_message(store: TinyDBHistoryStore) -> None:
    conv = store.create_conversation()
    first = store.add_message(conv.id, role="user", content="first")
    second = store.add_message(conv.id, role="assistant", content="second")
    store.delete_message(conv.id, second.id)
    assert store.messages(conv.id) == [first]
    after = store.get_conversation(conv.id)
    assert after is not None and (after.message_count, after.preview) == (1, "first")
    with pytest.raises(KeyError):
        store.delete_message(conv.id, second.id)


def test_bad_message_arguments(store: TinyDBHistoryStore) -> None:
    conv = store.create_conversation()
    with pytest.raises(ValueError, match="role"):
        store.add_message(conv.id, role="robot", content="x")
    with pytest.raises(TypeError, match="GenerationMetrics"):
        store.add_message(conv.id, role="assistant", content="x",
                          metrics={"ttft_s": 0.1})  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.add_message("000000-0123456789abcdef", role="user", content="x")
    assert store.messages(conv.id) == []


def test_search_by_title_and_content(store: TinyDBHistoryStore, clock: FakeClock) -> None:
    cats = store.create_conversation(title="All about CATS")
    dogs = store.create_conversation(title="Dogs")
    store.add_message(dogs.id, role="user", content="Do dogs like Cats?")
    other = store.create_conversation(title="Weather")
    store.add_message(other.id, role="assistant", content="Sunny", reasoning="cats everywhere")
    assert [c.id for c in store.list_conversations(query="cats")] == [dogs.id, cats.id]
    assert [c.id for c in store.list_conversations(query="  SUNNY ")] == [other.id]
    assert store.list_conversations(query="cats", limit=1)[0].id == dogs.id
    assert store.list_conversations(query="zebra") == []
    # the search cache notices new messages
    store.add_message(other.id, role="user", content="any zebras?")
    assert [c.id for c in store.list_conversations(query="zebra")] == [other.id]


# --- runs and records -------------------------------------------------------------------------


def test_runs_across_shards(tmp_path: Path, clock: FakeClock) -> None:
    s = small_store(tmp_path / "data")
    ids = [s.append("runs", {"model": f"m{i % 2}", "ok": True, "n": i}) for i in range(10)]
    shards = sorted(p.name for p in (s.data_dir / "tables" / "runs").iterdir())
    assert shards == ["000000.json", "000001.json", "000002.json", "000003.json"]
    assert [i[:6] for i in ids] == ["000000"] * 3 + ["000001"] * 3 + ["000002"] * 3 + ["000003"]
    runs = s.run_rows()
    assert [r["n"] for r in runs] == list(range(10))
    assert [r["id"] for r in runs] == ids
    assert all(isinstance(r["ts"], float) for r in runs)
    own = s.append("runs", {"id": "my-run", "ts": 5.0})
    assert own == "my-run"
    assert s.run_rows()[-1] == {"id": "my-run", "ts": 5.0}


def test_runs_rows_are_copies(store: TinyDBHistoryStore) -> None:
    store.append("runs", {"model": "a"})
    store.run_rows()[0]["model"] = "changed"
    assert store.run_rows()[0]["model"] == "a"


def test_generic_tables(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    ids = [s.append("votes", {"winner": "a", "round": i}) for i in range(7)]
    s.append("arena-rounds", {"prompt": "hi"})
    assert [r["round"] for r in s.records("votes")] == list(range(7))
    assert len(s.records("arena-rounds")) == 1
    assert s.records("never-written") == []
    updated = s.update_record("votes", ids[4], {"winner": "b", "note": "changed my mind"})
    assert updated["winner"] == "b" and updated["round"] == 4 and updated["id"] == ids[4]
    assert s.records("votes")[4] == updated
    foreign = s.append("votes", {"id": "vote-xyz", "winner": "a"})
    assert s.update_record("votes", foreign, {"winner": "tie"})["winner"] == "tie"
    with pytest.raises(KeyError, match="No record"):
        s.update_record("votes", "000000-0000000000000000", {"winner": "c"})
    with pytest.raises(ValueError, match="id"):
        s.update_record("votes", ids[0], {"id": "other"})
    with pytest.raises(ValueError, match="Table name"):
        s.append("../escape", {})
    with pytest.raises(ValueError, match="id"):
        s.append("votes", {"id": 7})
    with pytest.raises(TypeError, match="JSON"):
        s.append("votes", {"when": object()})
    assert len(s.records("votes")) == 8


def test_record_and_last_record_read_one_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the Arena's Race view relies on, every rerun: one record costs one shard file,
    whatever the table's size (a cold store: another process, nothing cached)."""
    folder = tmp_path / "data"
    ids = small_store(folder).append_many("arena_rounds", ({"n": i} for i in range(10)))
    shards = sorted(p.name for p in (folder / "tables" / "arena_rounds").glob("0*.json"))
    assert shards == ["000000.json", "000001.json", "000002.json", "000003.json"]
    read: list[str] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        read.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    s = small_store(folder)
    assert s.record("arena_rounds", ids[4])["n"] == 4  # type: ignore[index]
    assert read == ["000001.json"]
    read.clear()
    assert small_store(folder).last_record("arena_rounds")["n"] == 9  # type: ignore[index]
    assert read == ["000003.json"]
    read.clear()
    assert s.record("arena_rounds", ids[4])["n"] == 4  # type: ignore[index]
    assert read == []  # unchanged since: from the parse cache


def test_append_many_fills_the_open_shard_first(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    s.append("runs", {"n": 0})
    ids = s.append_many("runs", ({"n": i} for i in range(1, 8)))
    assert [i[:6] for i in ids] == ["000000"] * 2 + ["000001"] * 3 + ["000002"] * 2
    assert [r["n"] for r in s.run_rows()] == list(range(8))
    s.append("runs", {"n": 8})
    assert s.run_rows()[-1]["id"].startswith("000002-")


def test_shard_closes_at_byte_limit(tmp_path: Path) -> None:
    s = TinyDBHistoryStore(tmp_path / "data", shard_rows=1000, shard_bytes=200)
    ids = [s.append("runs", {"text": "x" * 150}) for _ in range(3)]
    assert [i[:6] for i in ids] == ["000000", "000001", "000002"]


def test_cache_returns_fresh_data_after_writes(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    a = small_store(folder)
    b = small_store(folder)  # stands in for another process: its own cache, same files
    rid = a.append("runs", {"model": "aaaa"})
    assert [r["model"] for r in a.run_rows()] == ["aaaa"]
    a.append("runs", {"model": "bbbb"})
    assert [r["model"] for r in a.run_rows()] == ["aaaa", "bbbb"]
    b.update_record("runs", rid, {"model": "cccc"})  # same size, maybe the same mtime tick
    assert [r["model"] for r in a.run_rows()] == ["cccc", "bbbb"]
    b.append("runs", {"model": "dddd"})
    assert [r["model"] for r in a.run_rows()] == ["cccc", "bbbb", "dddd"]
    conv = a.create_conversation(title="from a")
    b.update_conversation(conv.id, title="from b")
    assert [c.title for c in a.list_conversations()] == ["from b"]


# --- files ------------------------------------------------------------------------------------


def test_folder_created_private_on_first_write_only(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "data"
    s = TinyDBHistoryStore(folder)
    assert s.list_conversations() == [] and s.run_rows() == [] and s.size_bytes() == 0
    assert not folder.exists()
    s.append("runs", {"ok": True})
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert s.size_bytes() > 0


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    conv = s.create_conversation()
    for i in range(5):
        s.add_message(conv.id, role="user", content=str(i))
        s.append("runs", {"i": i})
    assert files_named(s.data_dir, "*.tmp") == []
    assert files_named(s.data_dir, ".*") == []


def test_every_folder_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = TinyDBHistoryStore(tmp_path / "deep" / "data")
        conv = s.create_conversation()
        s.add_message(conv.id, role="user", content="hi")
        s.append("runs", {"ok": True})
        s.append("votes", {"winner": "a"})
    finally:
        os.umask(old)
    folders = [s.data_dir, *(p for p in s.data_dir.rglob("*") if p.is_dir())]
    assert {p.name for p in folders} >= {"data", "tables", "runs", "votes", "index",
                                         "conversations"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folders} == {
        p.name: 0o700 for p in folders}  # tables/ was 0755 (mkdir parents=True)


def test_temp_files_of_killed_writes_are_removed_when_the_folder_opens(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    conv = s.create_conversation()
    s.add_message(conv.id, role="user", content="kept")
    s.append("runs", {"n": 1})
    # What a kill -9 between mkstemp and os.replace leaves, up to 300 KB each in the audit.
    left = [s.data_dir / "tables" / "runs" / ".000000.json.k3j_x9a1.tmp",
            s.data_dir / "conversations" / f".{conv.id}.json.abcd1234.tmp",
            s.data_dir / "index" / ".000000.json.q1w2e3r4.tmp",
            s.data_dir / ".meta.json.zz99yy88.tmp"]
    for path in left:
        path.write_bytes(b'{"half": "writ' * 1000)
    others = [s.data_dir / ".settings.json.a1b2c3d4.tmp",  # the settings store's own: not ours
              s.data_dir / "tables" / "runs" / "notes.tmp"]  # not a name atomic writes use
    for path in others:
        path.write_text("x")
    store_mod.reset_for_tests()
    opened = open_store(s.data_dir)
    assert [p for p in left if p.exists()] == []
    assert all(p.exists() for p in others)
    assert [m.content for m in opened.messages(conv.id)] == ["kept"]
    assert [r["n"] for r in opened.run_rows()] == [1]
    store_mod.reset_for_tests()


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = TinyDBHistoryStore(tmp_path / "data")
    s.append("runs", {"n": 1})
    shard = s.data_dir / "tables" / "runs" / "000000.json"
    before = shard.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        s.append("runs", {"n": 2})
    monkeypatch.undo()
    assert shard.read_bytes() == before
    assert files_named(s.data_dir, "*.tmp") == []
    assert [r["n"] for r in s.run_rows()] == [1]  # the cache did not keep the failed write
    s.append("runs", {"n": 3})
    assert [r["n"] for r in s.run_rows()] == [1, 3]


def test_atomic_storage_works_as_a_plain_tinydb_storage(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    with TinyDB(str(path), storage=AtomicJSONStorage) as db:
        db.insert({"a": 1})
        db.insert({"a": 2})
    assert json.loads(path.read_text()) == {"_default": {"1": {"a": 1}, "2": {"a": 2}}}
    with TinyDB(str(path), storage=AtomicJSONStorage) as db:
        assert [d["a"] for d in db.all()] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["plain.json"]


# --- damaged files ----------------------------------------------------------------------------


def test_damaged_run_shard_is_moved_aside(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    for i in range(9):
        s.append("runs", {"n": i})
    damaged = s.data_dir / "tables" / "runs" / "000001.json"
    original = damaged.read_bytes()
    damaged.write_bytes(original[: len(original) // 2])  # truncated
    fresh = small_store(s.data_dir)  # e.g. the next start of the app
    assert [r["n"] for r in fresh.run_rows()] == [0, 1, 2, 6, 7, 8]
    (aside,) = damaged.parent.glob("000001.json.corrupt-*")
    assert aside.read_bytes() == original[: len(original) // 2]
    (warning,) = fresh.warnings
    assert str(damaged) in warning and str(aside) in warning
    fresh.append("runs", {"n": 9})
    assert [r["n"] for r in fresh.run_rows()] == [0, 1, 2, 6, 7, 8, 9]
    assert len(fresh.warnings) == 1


def test_damaged_conversation_file_only_loses_that_conversation(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    good = s.create_conversation(title="good")
    s.add_message(good.id, role="user", content="safe")
    bad = s.create_conversation(title="bad")
    s.add_message(bad.id, role="user", content="lost")
    bad_file = s.data_dir / "conversations" / f"{bad.id}.json"
    bad_file.write_text('{"messages": {"1": {"content": "lo')
    fresh = small_store(s.data_dir)
    assert fresh.messages(bad.id) == []
    assert [m.content for m in fresh.messages(good.id)] == ["safe"]
    assert {c.title for c in fresh.list_conversations()} == {"good", "bad"}
    assert len(list(bad_file.parent.glob(f"{bad.id}.json.corrupt-*"))) == 1
    assert len(fresh.warnings) == 1 and str(bad_file) in fresh.warnings[0]
    fresh.add_message(bad.id, role="user", content="again")
    assert [m.content for m in fresh.messages(bad.id)] == ["again"]


def test_damaged_index_shard_is_rebuilt_from_conversation_files(tmp_path: Path) -> None:
    s = small_store(tmp_path / "data")
    a = s.create_conversation(title="alpha", model="m1")
    s.add_message(a.id, role="user", content="hello")
    b = s.create_conversation(title="beta")
    s.update_conversation(b.id, title="beta renamed")
    c = s.create_conversation(title="gamma")  # in the next index shard
    (s.data_dir / "index" / "000000.json").write_bytes(b"\x00\xff garbage")
    fresh = small_store(s.data_dir)
    listed = {conv.title: conv for conv in fresh.list_conversations()}
    assert set(listed) == {"alpha", "beta renamed", "gamma"}
    assert listed["alpha"].message_count == 1 and listed["alpha"].preview == "hello"
    assert listed["alpha"].model == "m1" and listed["gamma"].id == c.id
    assert "recovered" in fresh.warnings[0]
    fresh.add_message(b.id, role="user", content="still works")
    assert fresh.get_conversation(b.id).message_count == 1  # type: ignore[union-attr]


def test_damaged_file_that_cannot_be_moved_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = small_store(tmp_path / "data")
    for i in range(4):
        s.append("runs", {"n": i})
    shards = s.data_dir / "tables" / "runs"
    (shards / "000000.json").write_text("[1, 2")
    (shards / "000001.json").write_text("{")

    def cannot_move(path: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(TinyDBHistoryStore, "_move_aside", staticmethod(cannot_move))
    fresh = small_store(s.data_dir)
    assert fresh.run_rows() == []  # a read carries on without the files, and says so
    assert len(fresh.warnings) == 2 and "by hand" in fresh.warnings[0]
    with pytest.raises(StoreError, match="by hand"):  # a write must not overwrite them
        fresh.append("runs", {"n": 4})
    assert (shards / "000001.json").read_text() == "{"


def test_damaged_meta_is_moved_aside(tmp_path: Path) -> None:
    s = TinyDBHistoryStore(tmp_path / "data")
    s.append("runs", {"n": 1})
    (s.data_dir / "meta.json").write_text("{not json")
    fresh = TinyDBHistoryStore(s.data_dir)
    fresh.append("runs", {"n": 2})
    assert [r["n"] for r in fresh.run_rows()] == [1, 2]
    assert len(list(s.data_dir.glob("meta.json.corrupt-*"))) == 1
    assert "meta.json" in fresh.warnings[0]
    assert json.loads((s.data_dir / "meta.json").read_text())["schema_version"] == SCHEMA_VERSION


# --- schema -----------------------------------------------------------------------------------


def test_meta_written_on_first_write(store: TinyDBHistoryStore) -> None:
    store.create_conversation()
    meta = json.loads((store.data_dir / "meta.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION == store.schema_version


def test_migrations_run_once_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    v1 = TinyDBHistoryStore(folder)
    v1.append("runs", {"model": "Old-Name"})
    calls: list[str] = []

    def to_v2(data_dir: Path) -> None:
        calls.append("to_v2")
        shard = data_dir / "tables" / "runs" / "000000.json"
        tables = json.loads(shard.read_text())
        for doc in tables["records"].values():
            doc["model"] = doc["model"].lower()
        shard.write_text(json.dumps(tables))

    def to_v3(data_dir: Path) -> None:
        calls.append("to_v3")

    v3 = TinyDBHistoryStore(folder, migrations=[to_v2, to_v3])
    assert v3.run_rows()[0]["model"] == "Old-Name"  # reads do not migrate
    v3.append("runs", {"model": "new"})
    assert calls == ["to_v2", "to_v3"]
    assert [r["model"] for r in v3.run_rows()] == ["old-name", "new"]
    assert json.loads((folder / "meta.json").read_text())["schema_version"] == 3
    TinyDBHistoryStore(folder, migrations=[to_v2, to_v3]).append("runs", {"model": "again"})
    assert calls == ["to_v2", "to_v3"]


def test_newer_schema_is_read_but_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    TinyDBHistoryStore(folder).append("runs", {"n": 1})
    (folder / "meta.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    old = TinyDBHistoryStore(folder)
    assert [r["n"] for r in old.run_rows()] == [1]
    with pytest.raises(SchemaTooNewError, match="newer version of ATOM") as err:
        old.append("runs", {"n": 2})
    assert str(folder) in err.value.sentence
    with pytest.raises(SchemaTooNewError):
        old.create_conversation()
    assert [r["n"] for r in old.run_rows()] == [1]


# --- concurrency ------------------------------------------------------------------------------


def test_four_threads_lose_nothing(tmp_path: Path) -> None:
    s = TinyDBHistoryStore(tmp_path / "data", shard_rows=40, index_shard_rows=3)
    convs = [s.create_conversation(title=f"t{i}") for i in range(4)]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(150):
                if i % 3 == 0:
                    s.add_message(convs[t].id, role="user", content=f"{t}:{i}")
                else:
                    s.append("runs", {"thread": t, "i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    runs = s.run_rows()
    assert len(runs) == 4 * 100
    assert len({r["id"] for r in runs}) == 400
    for t in range(4):
        assert [r["i"] for r in runs if r["thread"] == t] == [i for i in range(150) if i % 3]
        assert len(s.messages(convs[t].id)) == 50
    reread = TinyDBHistoryStore(s.data_dir)
    assert len(reread.run_rows()) == 400


def test_two_processes_lose_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    script = (
        "import sys; from atom_core.history.tinydb_store import TinyDBHistoryStore\n"
        "s = TinyDBHistoryStore(sys.argv[1], shard_rows=25)\n"
        "for i in range(100): s.append('runs', {'who': 'child', 'i': i})\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=REPO)
    s = TinyDBHistoryStore(folder, shard_rows=25)
    for i in range(100):
        s.append("runs", {"who": "parent", "i": i})
    assert child.wait(timeout=60) == 0
    runs = s.run_rows()
    assert len(runs) == 200
    for who in ("child", "parent"):
        assert [r["i"] for r in runs if r["who"] == who] == list(range(100))


# --- one store per folder ---------------------------------------------------------------------


def test_open_store_is_one_instance_per_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = open_store(tmp_path / "one")
    monkeypatch.chdir(tmp_path)
    assert open_store("one") is a
    assert open_store(str(tmp_path / "x" / ".." / "one")) is a
    assert open_store(tmp_path / "two") is not a


def test_atom_data_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_DATA_DIR", str(tmp_path / "from-env"))
    assert default_data_dir() == tmp_path / "from-env"
    s = open_store()
    assert s.data_dir == (tmp_path / "from-env").resolve()
    monkeypatch.setenv("ATOM_DATA_DIR", "  ")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".atom"


def test_parsed_shards_kept_in_memory_are_bounded(tmp_path: Path) -> None:
    """A long session must not hold its whole history: the parse cache keeps at most
    KEPT_BYTES of shard files (plus the one in use), whatever the history's size."""
    import gc
    import tracemalloc

    s = TinyDBHistoryStore(tmp_path / "data", shard_rows=10, durable=False)
    text = "x" * 40_000
    s.append_many("soak", [{"text": text, "n": i} for i in range(250)])  # 25 shards, ~10 MB
    on_disk = sum(p.stat().st_size for p in (tmp_path / "data").rglob("*.json"))
    assert on_disk > 9_000_000

    fresh = TinyDBHistoryStore(tmp_path / "data", durable=False)
    tracemalloc.start()
    try:
        rows = fresh.records("soak")
        assert [r["n"] for r in rows] == list(range(250))
        del rows
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # An unbounded cache holds all ~10 MB of text here; the bound holds ~2 MB and one shard.
    assert held < 5_000_000
    assert fresh.records("soak")[-1]["n"] == 249  # evicted shards are read again from disk
