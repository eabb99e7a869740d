"""Whole-history export, import and delete (atom_core.history.backup): everything but tokens
goes out; an import is checked whole against the stored record types before anything is
written, and refused with one sentence per problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import atom_core.arena  # noqa: F401  (registers ArenaRound's import check, as the app does)
from atom_core.arena.rounds import ArenaRound
from atom_core.history.backup import (
    ImportRefused,
    delete_history,
    export_everything,
    export_json,
    import_everything,
)
from atom_core.history.memory_store import MemoryHistoryStore
from atom_core.history.tinydb_store import TinyDBHistoryStore
from atom_core.metrics import GenerationMetrics
from atom_core.settings.store import MAX_TTL_SECONDS, AppSettings, SettingsStore, make_preset
from tests.fixtures.bad_imports import REFUSED, ROUND, RUN, export_doc

TOKEN = "sk-lm-AbCd1234:ZyXwVuTsRqPoNmLkJiHg"


@pytest.fixture
def settings(tmp_path: Path) -> SettingsStore:
    return SettingsStore(tmp_path / "data")


@pytest.fixture
def store(tmp_path: Path) -> TinyDBHistoryStore:
    return TinyDBHistoryStore(tmp_path / "data", durable=False)


def fill(store: TinyDBHistoryStore) -> None:
    c = store.create_conversation(title="Sky", model="m", system_prompt="Be brief.")
    store.add_message(c.id, role="user", content="Why is the sky blue?")
    store.add_message(c.id, role="assistant", content="Rayleigh.", model="m",
                      metrics=GenerationMetrics.from_dict({"ttft_s": 0.1}), state="stopped")
    store.append("runs", {"model": "m", "ttft_s": 0.1})
    store.append("votes", {"winner": "m"})
    store.append("downloads", {"job_id": "job_1", "status": "downloading"})


def test_export_has_everything_but_tokens_and_local_state(
    store: TinyDBHistoryStore, settings: SettingsStore
) -> None:
    fill(store)
    settings.save_profile("Studio", "http://a:1", token=TOKEN)
    settings.save_preset(make_preset("P", temperature=0.5))
    text = export_json(store, settings)
    assert TOKEN not in text and "ZyXw" not in text
    doc = json.loads(text)
    assert doc["format"] == "atom-export"
    (conv,) = doc["conversations"]
    assert conv["title"] == "Sky" and [m["content"] for m in conv["messages"]] == [
        "Why is the sky blue?", "Rayleigh."]
    assert set(doc["tables"]) == {"runs", "votes"}  # downloads are this machine's live state
    assert doc["settings"]["profiles"] == [{"name": "Studio", "url": "http://a:1"}]


def test_import_into_an_empty_folder_then_again_adds_nothing(
    store: TinyDBHistoryStore, settings: SettingsStore, tmp_path: Path
) -> None:
    fill(store)
    settings.save_preset(make_preset("P", temperature=0.5))
    settings.save_profile("Studio", "http://a:1", token=TOKEN)
    doc = export_everything(store, settings)

    other = TinyDBHistoryStore(tmp_path / "other", durable=False)
    other_settings = SettingsStore(tmp_path / "other")
    report = import_everything(other, other_settings, json.dumps(doc))
    assert (report.conversations_added, report.records_added) == (1, 2)
    assert report.settings_added == 2 and not report.problems
    (conv,) = other.list_conversations()
    assert conv.system_prompt == "Be brief."
    msgs = other.messages(conv.id)
    assert [m.state for m in msgs] == ["complete", "stopped"] and msgs[1].metrics == (
        GenerationMetrics.from_dict({"ttft_s": 0.1}))
    assert other_settings.token("Studio") is None  # tokens never travel
    again = import_everything(other, other_settings, doc)
    assert (again.conversations_added, again.records_added, again.settings_added) == (0, 0, 0)
    assert again.conversations_skipped == 1 and again.records_skipped == 2
    assert "Skipped 3 already here" in again.sentence
    assert len(other.list_conversations()) == 1 and len(other.run_rows()) == 1

    # Merging: a new chat at home, exported again, adds just that one.
    c = store.create_conversation(title="New")
    store.add_message(c.id, role="user", content="hello")
    report = import_everything(other, other_settings, export_everything(store, settings))
    assert report.conversations_added == 1 and report.conversations_skipped == 1


def test_import_rejects_what_is_not_an_export(store: TinyDBHistoryStore) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        import_everything(store, None, "{nope")
    with pytest.raises(ValueError, match="not an ATOM export"):
        import_everything(store, None, {"conversations": []})
    with pytest.raises(ValueError, match="newer"):
        import_everything(store, None, {"format": "atom-export", "version": 99})


def test_a_file_with_any_bad_part_is_refused_whole(store: TinyDBHistoryStore) -> None:
    doc = {"format": "atom-export", "version": 1, "conversations": [
        {"title": "Good", "messages": [{"role": "user", "content": "hi"}]},
        {"title": "Bad", "messages": [{"role": "user", "content": "hi"},
                                      {"role": "wizard", "content": "x"}]},
    ], "tables": {"Bad Name": [{"id": "x"}], "downloads": [{"job": 1}],
                  "votes": [{"winner": "a"}]}}
    with pytest.raises(ImportRefused) as refused:
        import_everything(store, None, doc)
    problems = refused.value.problems
    assert len(problems) == 2, problems  # downloads are this machine's state: skipped quietly
    assert problems[0].startswith("Conversation 2:") and "role" in problems[0]
    assert "table's name" in problems[1]
    assert "2 problems" in str(refused.value)
    assert store.list_conversations() == [] and store.tables() == []  # nothing written


def test_delete_history_leaves_settings_and_the_store_keeps_working(
    store: TinyDBHistoryStore, settings: SettingsStore
) -> None:
    fill(store)
    settings.save_profile("Studio", "http://a:1", token=TOKEN)
    delete_history(store)
    assert store.list_conversations() == [] and store.run_rows() == []
    assert store.records("votes") == []
    assert settings.token("Studio") == TOKEN
    c = store.create_conversation(title="After")  # the store carries on
    store.add_message(c.id, role="user", content="still works")
    store.append("runs", {"model": "m"})
    assert len(store.list_conversations()) == 1 and len(store.run_rows()) == 1
    settings.forget_everything()
    assert settings.load() == AppSettings() and settings.token("Studio") is None




# -- what the audit imported (issue 14 §4): each refused whole, with a sentence --------------


@pytest.mark.parametrize("backend", ["tinydb", "memory"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_audit_imports_are_refused_whole(case: str, backend: str, tmp_path: Path) -> None:
    store = (TinyDBHistoryStore(tmp_path / "data", durable=False) if backend == "tinydb"
             else MemoryHistoryStore())
    settings = SettingsStore(tmp_path / "data")
    doc, word = REFUSED[case]
    with pytest.raises(ImportRefused) as refused:
        import_everything(store, settings, doc if isinstance(doc, str) else json.dumps(doc))
    assert refused.value.problems and any(word in p for p in refused.value.problems), (
        refused.value.problems)
    assert all(p.endswith(".") and "\n" not in p for p in refused.value.problems)
    assert store.list_conversations() == [] and store.tables() == []
    assert settings.load() == AppSettings()


def test_junk_runs_name_each_bad_record(store: TinyDBHistoryStore) -> None:
    doc, _ = REFUSED["junk runs"]
    with pytest.raises(ImportRefused) as refused:
        import_everything(store, None, doc)
    assert refused.value.problems == (
        "Record 2 of table “runs”: ok should be a valid boolean.",
        "Record 3 of table “runs”: ts should be a valid number.",
        "Record 4 of table “runs” is not a record.",
    )


def test_problems_are_capped(store: TinyDBHistoryStore) -> None:
    doc = export_doc(tables={"runs": [{**RUN, "id": f"r{i}", "ok": "no"} for i in range(50)]})
    with pytest.raises(ImportRefused) as refused:
        import_everything(store, None, doc)
    assert len(refused.value.problems) == 12
    assert refused.value.problems[-1] == "…and 39 more problems."


def test_a_clean_file_imports_with_times_kept(store: TinyDBHistoryStore,
                                              settings: SettingsStore) -> None:
    doc = export_doc(conversations=[{"title": "Old", "created": 1000.0, "messages": [
        {"role": "user", "content": "q", "created": 1001.0}]}],
        tables={"runs": [RUN], "arena_rounds": [ROUND]},
        settings={"ttl_seconds": MAX_TTL_SECONDS, "profiles": [{"name": "S",
                                                                "url": "http://s:1"}]})
    report = import_everything(store, settings, doc)
    assert (report.conversations_added, report.records_added, report.settings_added) == (1, 2, 1)
    (conv,) = store.list_conversations()
    assert (conv.created, conv.updated) == (1000.0, 1001.0)
    assert settings.load().ttl_seconds == MAX_TTL_SECONDS


def test_an_import_reads_partial_metrics_leniently(store: TinyDBHistoryStore) -> None:
    """Metrics that lack fields (another tool's export, an old ATOM) import as before issue
    19's typed metrics: missing fields None, odd ones None, never a refusal; same for a slot
    of an imported arena round. Only metrics that are not an object are refused."""
    partial = {"ttft_s": 0.25, "output_tokens": "12", "decode_tps": "fast"}
    doc = export_doc(conversations=[{"title": "Old", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "metrics": partial}]}],
        tables={"arena_rounds": [{**ROUND, "slots": [{**s, "metrics": partial}
                                                     for s in ROUND["slots"]]}]})
    report = import_everything(store, None, doc)
    assert (report.conversations_added, report.records_added) == (1, 1) and not report.problems
    (conv,) = store.list_conversations()
    m = store.messages(conv.id)[1].metrics
    assert m is not None and (m.ttft_s, m.output_tokens, m.decode_tps, m.e2e_s) == (
        0.25, 12, None, None)
    (rnd,) = store.read(ArenaRound)
    assert [s.metrics.ttft_s if s.metrics else None for s in rnd.slots] == [0.25, 0.25]
    with pytest.raises(ImportRefused, match="metrics"):
        import_everything(store, None, export_doc(conversations=[{"messages": [
            {"role": "assistant", "content": "a", "metrics": [0.25]}]}]))


def test_settings_read_defensively(settings: SettingsStore) -> None:
    """A settings file changed by hand (or by an older ATOM) cannot break a page."""
    settings.settings_path.parent.mkdir(parents=True, exist_ok=True)
    settings.settings_path.write_text(json.dumps({
        "profiles": [{"name": {"x": 1}, "url": "http://a:1"}, {"name": "ok", "url": "http://b:1"}],
        "ttl_seconds": 10**12, "default_profile": ["x"], "model_presets": {"m": {"p": 1}},
        "templates": [{"name": 5, "text": "t"}]}))
    loaded = settings.load()
    assert [p.name for p in loaded.profiles] == ["ok"]
    assert loaded.ttl_seconds == MAX_TTL_SECONDS  # clamped to what the page's input allows
    assert loaded.default_profile is None and dict(loaded.model_presets) == {}
    assert loaded.templates == ()


@pytest.mark.parametrize("backend", ["tinydb", "memory"])
def test_images_travel_with_the_export_and_come_back_on_import(backend: str,
                                                              tmp_path: Path) -> None:
    from atom_core.history.protocol import StoredImage

    def make(name: str) -> TinyDBHistoryStore | MemoryHistoryStore:
        return (TinyDBHistoryStore(tmp_path / name, durable=False) if backend == "tinydb"
                else MemoryHistoryStore(name))

    home = make("home")
    c = home.create_conversation(title="Pictures")
    user = home.add_message(c.id, role="user", content="What colour?")
    home.add_message(c.id, role="assistant", content="Red.")
    png = StoredImage("image/png", b"\x89PNG-red")
    home.save_images(c.id, user.id, [png, png])
    home.save_images("round-1", "prompt", [StoredImage("image/webp", b"RIFF-webp")])
    doc = json.loads(export_json(home))
    first, second = doc["conversations"][0]["messages"]
    assert first["images"] == ["data:image/png;base64,iVBORy1yZWQ="] * 2
    assert "images" not in second
    assert doc["images"] == [{"owner": "round-1", "message": "prompt",
                              "data_urls": ["data:image/webp;base64,UklGRi13ZWJw"]}]

    away = make("away")
    report = import_everything(away, None, doc)
    assert report.images_added == 3 and "with 3 images." in report.sentence
    (conv,) = away.list_conversations()
    got_user, got_reply = away.messages(conv.id)
    assert away.load_images(conv.id, got_user.id) == [png, png]
    assert away.load_images(conv.id, got_reply.id) == []
    assert [i.mime for i in away.load_images("round-1", "prompt")] == ["image/webp"]
    again = import_everything(away, None, doc)
    assert again.images_added == 0 and len(away.image_keys()) == 2

    bad = json.loads(json.dumps(doc))
    bad["conversations"][0]["messages"][0]["images"] = ["data:text/html;base64,PGI+"]
    bad["images"][0]["owner"] = "../../etc"
    with pytest.raises(ImportRefused) as refused:
        import_everything(make("bad"), None, bad)
    text = " ".join(refused.value.problems)
    assert "not a PNG, JPEG or WebP" in text and "ids are not usable" in text
    assert "etc" not in text  # the file's text is never repeated


def test_the_export_leaves_out_this_machines_name(store: TinyDBHistoryStore) -> None:
    """Issue 23: "Export everything" carried the machine's host name (cards and reports leave
    it out); the machine's other facts stay, so runs still say what they ran on."""
    from atom_core.measure.hardware import MACHINES_TABLE, MachineInfo

    machine = MachineInfo(cpu_model="Test CPU", cpu_cores=4, cpu_threads=8, ram_total_mb=8192,
                          os="Linux", hostname="alices-laptop.corp.example")
    store.append(MACHINES_TABLE, machine.to_record())
    text = export_json(store)
    assert "alices-laptop" not in text
    (row,) = json.loads(text)["tables"][MACHINES_TABLE]
    assert row["cpu_model"] == "Test CPU" and row["id"] == machine.id
