"""Settings in the data folder: profiles and their tokens (0600, masked, never exported), TTL,
presets, templates, per-model presets; export / import / delete of the whole history."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from atom_core.history.tinydb_store import TinyDBHistoryStore
from atom_core.settings.store import (
    AppSettings,
    SettingsStore,
    delete_history,
    export_everything,
    export_json,
    import_everything,
    initial_server_url,
    make_preset,
    mask_token,
    open_settings,
)
from atom_core.types import SamplingOptions

TOKEN = "sk-lm-AbCd1234:ZyXwVuTsRqPoNmLkJiHg"


@pytest.fixture
def settings(tmp_path: Path) -> SettingsStore:
    return SettingsStore(tmp_path / "data")


@pytest.fixture
def store(tmp_path: Path) -> TinyDBHistoryStore:
    return TinyDBHistoryStore(tmp_path / "data", durable=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- profiles and tokens ------------------------------------------------------------------------


def test_a_fresh_folder_has_default_settings_and_writes_nothing(settings: SettingsStore) -> None:
    assert settings.load() == AppSettings()
    assert not settings.data_dir.exists()


def test_profile_with_token_files_are_private_and_token_kept_apart(
    settings: SettingsStore,
) -> None:
    profile = settings.save_profile("Studio", "localhost:1234/v1/", token=TOKEN)
    assert profile.url == "http://localhost:1234" and profile.has_token
    assert mode(settings.settings_path) == 0o600
    assert mode(settings.tokens_path) == 0o600
    assert mode(settings.data_dir) == 0o700
    assert TOKEN not in settings.settings_path.read_text()
    assert settings.token("Studio") == TOKEN
    assert settings.token_for_url("http://localhost:1234/v1") == TOKEN
    loaded = settings.load()
    assert loaded.default_profile == "Studio"  # the first profile becomes the default
    assert TOKEN not in repr(loaded) and TOKEN not in repr(settings)


def test_token_none_keeps_it_clear_token_removes_it_rename_moves_it(
    settings: SettingsStore,
) -> None:
    settings.save_profile("A", "http://a:1", token=TOKEN)
    settings.save_profile("A", "http://a:1")  # no token given: keep it
    assert settings.token("A") == TOKEN
    settings.save_profile("A", "http://a:2")  # another server: the token stays behind
    assert settings.token("A") is None and settings.token_for_url("http://a:1") is None
    settings.save_profile("A", "http://a:2", token=TOKEN)
    settings.save_profile("B", "http://a:2", replaces="A")
    assert settings.token("B") == TOKEN and settings.token("A") is None
    assert settings.load().default_profile == "B"
    settings.save_profile("B", "http://a:2", clear_token=True)
    assert settings.token("B") is None and not settings.load().profiles[0].has_token


def test_profiles_are_checked(settings: SettingsStore) -> None:
    with pytest.raises(ValueError, match="name"):
        settings.save_profile("  ", "http://a:1")
    with pytest.raises(ValueError, match="URL"):
        settings.save_profile("X", "")
    with pytest.raises(ValueError, match="not a server URL"):
        settings.save_profile("X", "http://has space")
    settings.save_profile("X", "http://a:1")
    settings.save_profile("Y", "http://b:1")
    with pytest.raises(ValueError, match="already"):
        settings.save_profile("X", "http://b:1", replaces="Y")
    with pytest.raises(ValueError, match="no server"):
        settings.set_default_profile("nope")


def test_delete_profile_moves_default_and_drops_token(settings: SettingsStore) -> None:
    settings.save_profile("A", "http://a:1", token=TOKEN)
    settings.save_profile("B", "http://b:1")
    settings.delete_profile("A")
    assert [p.name for p in settings.load().profiles] == ["B"]
    assert settings.load().default_profile == "B"
    assert settings.token("A") is None and TOKEN not in settings.tokens_path.read_text()


def test_mask_token_shows_at_most_two_characters() -> None:
    masked = mask_token(TOKEN)
    assert masked == "sk-lm-••••••••Hg"
    assert "AbCd" not in masked and mask_token("short") == "••••••••"
    assert mask_token(None) == ""


def test_initial_server_url_env_wins_then_default_profile(settings: SettingsStore) -> None:
    settings.save_profile("Box", "http://box:1234")
    s = settings.load()
    assert initial_server_url({}, s, "http://localhost:1234") == "http://box:1234"
    assert initial_server_url({"ATOM_SERVER_URL": "http://env:9/v1"}, s,
                              "http://localhost:1234") == "http://env:9"
    assert initial_server_url({}, AppSettings(), "localhost:1234") == "http://localhost:1234"


def test_damaged_settings_file_is_moved_aside_with_a_warning(settings: SettingsStore) -> None:
    settings.save_profile("A", "http://a:1")
    settings.settings_path.write_text("{not json")
    assert settings.load().profiles == ()
    assert settings.warnings and "moved aside" in settings.warnings[0]
    assert list(settings.data_dir.glob("settings.json.corrupt-*"))


def test_open_settings_is_one_per_folder(tmp_path: Path) -> None:
    assert open_settings(tmp_path) is open_settings(tmp_path / ".")


def test_two_stores_on_one_folder_see_each_others_changes(tmp_path: Path) -> None:
    a, b = SettingsStore(tmp_path), SettingsStore(tmp_path)
    a.set_ttl(600)
    b.save_profile("B", "http://b:1")
    assert a.load().ttl_seconds == 600 and [p.name for p in a.load().profiles] == ["B"]


# -- chat defaults, presets, templates ---------------------------------------------------------


def test_ttl_and_auto_unload(settings: SettingsStore) -> None:
    settings.set_ttl(300)
    assert settings.load().ttl_seconds == 300
    settings.set_ttl(None)
    assert settings.load().ttl_seconds is None
    with pytest.raises(ValueError):
        settings.set_ttl(0)
    settings.set_auto_unload(True, any_instance=True)
    assert settings.load().auto_unload and settings.load().auto_unload_any
    settings.set_auto_unload(False, any_instance=True)  # "any" means nothing when off
    assert not settings.load().auto_unload_any


def test_presets_checked_saved_renamed_and_used_per_model(settings: SettingsStore) -> None:
    with pytest.raises(ValueError, match="between"):
        make_preset("hot", temperature=3.0)
    with pytest.raises(ValueError, match="whole"):
        make_preset("k", top_k=2.5)
    precise = make_preset("Precise", temperature=0.2, top_k=20, seed=7)
    assert precise.options() == SamplingOptions(temperature=0.2, top_k=20, seed=7)
    assert precise.summary() == "temperature 0.2 · top K 20 · seed 7"
    settings.save_preset(precise)
    settings.save_preset(make_preset("Creative", temperature=1.2, max_tokens=512))
    settings.set_default_preset("Creative")
    settings.set_model_preset("test/alpha", "Precise")
    s = settings.load()
    assert s.preset_for("test/alpha") == precise
    assert s.preset_for("test/beta") is not None and s.preset_for("test/beta").name == "Creative"
    assert s.preset_uses("Creative") == "every model (default)"
    assert s.preset_uses("Precise") == "test/alpha"
    settings.save_preset(make_preset("Exact", temperature=0.0), replaces="Precise")
    s = settings.load()
    assert s.model_presets == {"test/alpha": "Exact"} and s.preset("Precise") is None
    settings.delete_preset("Creative")
    assert settings.load().default_preset is None


def test_templates(settings: SettingsStore) -> None:
    settings.save_template("Pirate", "Talk like a pirate.")
    settings.save_template("Terse", "Answer in one line.")
    with pytest.raises(ValueError, match="text"):
        settings.save_template("Empty", "  ")
    settings.save_template("Brief", "One line only.", replaces="Terse")
    assert [(t.name, t.text) for t in settings.load().templates] == [
        ("Pirate", "Talk like a pirate."), ("Brief", "One line only.")]
    settings.delete_template("Pirate")
    assert [t.name for t in settings.load().templates] == ["Brief"]


def test_instances_atom_loaded_are_tracked_per_server(settings: SettingsStore) -> None:
    settings.note_loaded("http://a:1/v1", "m")
    settings.note_loaded("http://a:1", "m:2")
    settings.note_unloaded("http://a:1", "m")
    assert settings.loaded_by_atom("http://a:1") == {"m:2"}
    assert settings.loaded_by_atom("http://b:1") == set()


# -- export / import / delete -----------------------------------------------------------------


def fill(store: TinyDBHistoryStore) -> None:
    c = store.create_conversation(title="Sky", model="m", system_prompt="Be brief.")
    store.add_message(c.id, role="user", content="Why is the sky blue?")
    store.add_message(c.id, role="assistant", content="Rayleigh.", model="m",
                      metrics={"ttft_s": 0.1}, state="stopped")
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
    assert [m.state for m in msgs] == ["complete", "stopped"] and msgs[1].metrics == {
        "ttft_s": 0.1}
    assert other_settings.token("Studio") is None  # tokens never travel
    again = import_everything(other, other_settings, doc)
    assert (again.conversations_added, again.records_added, again.settings_added) == (0, 0, 0)
    assert again.conversations_skipped == 1 and again.records_skipped == 2
    assert "Skipped 3 already here" in again.sentence
    assert len(other.list_conversations()) == 1 and len(other.runs()) == 1

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


def test_a_bad_conversation_is_left_out_whole(store: TinyDBHistoryStore) -> None:
    doc = {"format": "atom-export", "version": 1, "conversations": [
        {"title": "Bad", "messages": [{"role": "user", "content": "hi"},
                                      {"role": "wizard", "content": "x"}]},
        {"title": "Good", "messages": [{"role": "user", "content": "hi"}]},
    ], "tables": {"Bad Name": [{"id": "x"}], "downloads": []}}
    report = import_everything(store, None, doc)
    assert report.conversations_added == 1 and len(report.problems) == 3
    assert [c.title for c in store.list_conversations()] == ["Good"]


def test_delete_history_leaves_settings_and_the_store_keeps_working(
    store: TinyDBHistoryStore, settings: SettingsStore
) -> None:
    fill(store)
    settings.save_profile("Studio", "http://a:1", token=TOKEN)
    delete_history(store)
    assert store.list_conversations() == [] and store.runs() == []
    assert store.records("votes") == []
    assert settings.token("Studio") == TOKEN
    c = store.create_conversation(title="After")  # the store carries on
    store.add_message(c.id, role="user", content="still works")
    store.append("runs", {"model": "m"})
    assert len(store.list_conversations()) == 1 and len(store.runs()) == 1
    settings.forget_everything()
    assert settings.load() == AppSettings() and settings.token("Studio") is None
