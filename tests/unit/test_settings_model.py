"""Settings are one model (issue 19): every saved scalar setting of AppSettings is saved,
checked, read back, exported, refused out of bounds on import and merged by the same code, found
from its field alone; so a new one is a field plus its widget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atom_core.settings.model import AppSettings, Saved
from atom_core.settings.store import SettingsStore

SAVED = {name: next(m for m in info.metadata if isinstance(m, Saved))
         for name, info in AppSettings.model_fields.items()
         if any(isinstance(m, Saved) for m in info.metadata)}


def _good(name: str) -> Any:
    saved = SAVED[name]
    annotation = AppSettings.model_fields[name].annotation
    if annotation is bool:
        return True
    if saved.high is not None:
        return saved.high if "int" in repr(annotation) else float(saved.high)
    return "Name"


def test_every_saved_setting_is_found_from_its_field() -> None:
    assert {"ttl_seconds", "auto_unload", "default_preset", "stall_timeout_s",
            "first_token_timeout_s", "request_deadline_s"} <= set(SAVED)


@pytest.mark.parametrize("name", sorted(SAVED))
def test_a_saved_setting_round_trips_through_store_export_and_import(
        name: str, tmp_path: Path) -> None:
    store = SettingsStore(tmp_path / "a")
    value = _good(name)
    store.update(**{name: value})
    assert getattr(store.load(), name) == value
    assert json.loads(store.settings_path.read_text())[name] == value  # the file's own shape
    doc = store.export_dict()
    assert doc[name] == value
    other = SettingsStore(tmp_path / "b")
    assert other.check_import(doc) == []
    other.merge(doc)
    assert getattr(other.load(), name) == (value if SAVED[name].imported else
                                           AppSettings.model_fields[name].default)
    store.update(**{name: None if name != "auto_unload" and name != "auto_unload_any" else False})
    assert getattr(store.load(), name) in (None, False)


@pytest.mark.parametrize("name", sorted(n for n, s in SAVED.items() if s.high is not None))
def test_a_bounded_setting_is_refused_out_of_bounds_with_its_sentence(
        name: str, tmp_path: Path) -> None:
    saved = SAVED[name]
    store = SettingsStore(tmp_path)
    assert saved.high is not None
    with pytest.raises(ValueError, match=f"The {saved.what} must be between"):
        store.update(**{name: saved.high + 1})
    assert store.check_import({name: saved.high + 1}) == [
        f"The settings' {saved.what} must be between "
        f"{saved.between or f'{saved.low:g} and {saved.high:g} seconds'}."]
    store.settings_path.write_text(json.dumps({name: "junk"}))
    assert getattr(store.load(), name) is None  # a hand-edited file: left out, never a crash


def test_a_name_that_is_not_a_saved_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        SettingsStore(tmp_path).update(profiles=[])
    with pytest.raises(ValueError, match="stall timeout"):
        SettingsStore(tmp_path).update(stall_timeout_s="soon")
