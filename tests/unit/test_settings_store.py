"""Settings in the data folder: profiles and their tokens (0600, masked, never exported), TTL,
presets, templates, per-model presets; two processes editing at once."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from atom_core.config import settings_from_env
from atom_core.settings.store import (
    AppSettings,
    SettingsStore,
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
    assert initial_server_url(settings_from_env({}), s) == "http://box:1234"
    env = settings_from_env({"ATOM_SERVER_URL": "http://env:9/v1"})
    assert initial_server_url(env, s) == "http://env:9"
    assert initial_server_url(settings_from_env({}), AppSettings()) == "http://localhost:1234"


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


# -- two writers ----------------------------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from atom_core.settings.store import SettingsStore

folder, tag, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not go.exists():  # both processes start editing at the same moment
    time.sleep(0.01)
s = SettingsStore(folder)
for i in range(40):
    s.save_template(f"{tag}-t{i}", f"text {i}")
    s.save_profile(f"{tag}-p{i}", f"http://{tag}{i}.test:1234", token=f"sk-{tag}-{i:04d}-secret")
"""


def test_two_processes_editing_at_once_keep_every_edit(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder, go = tmp_path / "data", tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), tag, str(go)],
                              cwd=root, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    s = SettingsStore(folder)
    loaded = s.load()
    for tag in ("a", "b"):
        assert {f"{tag}-t{i}" for i in range(40)} <= {t.name for t in loaded.templates}
        assert {f"{tag}-p{i}" for i in range(40)} <= {p.name for p in loaded.profiles}
        assert all(s.token(f"{tag}-p{i}") == f"sk-{tag}-{i:04d}-secret" for i in range(40))
    assert (len(loaded.templates), len(loaded.profiles)) == (80, 80)
    assert not list(folder.glob(".*.tmp"))  # no temp file left behind


def test_settings_temp_files_of_killed_writes_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    SettingsStore(folder).save_template("T", "text")
    left = folder / ".settings.json.k3j_x9a1.tmp"
    left.write_text('{"half')
    history_temp = folder / ".meta.json.q1w2e3r4.tmp"  # the history store's: not touched here
    history_temp.write_text("x")
    again = SettingsStore(folder)  # a new process
    again.save_template("U", "text")
    assert not left.exists() and history_temp.exists()
    assert {t.name for t in again.load().templates} == {"T", "U"}


def test_stream_limits_are_saved_checked_exported_and_the_environment_wins(
        tmp_path: Path) -> None:
    from atom_core.settings.store import stream_limits

    s = open_settings(tmp_path)
    s.set_stream_limits(stall_timeout_s=7, first_token_timeout_s=120.5)
    saved = s.load()
    assert (saved.stall_timeout_s, saved.first_token_timeout_s, saved.request_deadline_s) == (
        7.0, 120.5, None)
    with pytest.raises(ValueError, match="stall timeout must be between 1 and 3600 seconds"):
        s.set_stream_limits(stall_timeout_s=0)
    plain = stream_limits(settings_from_env({}), saved)
    assert (plain.stall_timeout_s, plain.first_token_timeout_s, plain.request_deadline_s) == (
        7.0, 120.5, 1800.0)  # saved, saved, the default
    env = stream_limits(settings_from_env({"ATOM_STALL_TIMEOUT_S": "5"}), saved)
    assert (env.stall_timeout_s, env.first_token_timeout_s) == (5.0, 120.5)
    doc = s.export_dict()
    assert doc["stall_timeout_s"] == 7.0 and doc["request_deadline_s"] is None
    other = open_settings(tmp_path / "other")
    assert other.check_import({**doc, "stall_timeout_s": 0}) == [
        "The settings' stall timeout must be between 1 and 3600 seconds."]
    other.merge(doc)
    assert other.load().stall_timeout_s == 7.0
    (tmp_path / "settings.json").write_text(json.dumps({"stall_timeout_s": "soon",
                                                        "request_deadline_s": True}))
    junk = open_settings(tmp_path).load()  # a hand-edited file: ignored, never a crash
    assert (junk.stall_timeout_s, junk.request_deadline_s) == (None, None)
