"""Data cannot break a page (issue 14 §4): every import the audit tried is refused through the
Settings page with its sentences, nothing is written, and Settings, Stats and the Arena
leaderboard still render; rows that reach the store some other way (a hand-edited or damaged
file) are left out with one warning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import respx
from streamlit.testing.v1 import AppTest

from atom_core.history import open_store
from atom_core.settings.store import MAX_TTL_SECONDS
from tests.fixtures.apptest import new_app, settings_tab
from tests.fixtures.bad_imports import REFUSED, ROUND, RUN
from tests.fixtures.payloads import NATIVE_MODELS


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def every_page_renders(at: AppTest) -> AppTest:
    at.switch_page("pages/settings.py").run()
    for tab in ("Chat defaults", "Presets", "Data", "Servers"):  # each tab is drawn alone
        settings_tab(at, tab)
        assert not at.exception, at.exception
    at.switch_page("pages/stats.py").run()
    assert not at.exception, at.exception
    at.switch_page("pages/arena.py").run()
    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_each_audit_import_is_refused_and_the_app_keeps_working(
        case: str, mock: respx.MockRouter, isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    doc, word = REFUSED[case]
    raw = doc.encode() if isinstance(doc, str) else json.dumps(doc).encode()
    at = new_app().run()
    at.switch_page("pages/settings.py").run()
    settings_tab(at, "Data")
    at.file_uploader(key="import-file").set_value(("bad.json", raw, "application/json")).run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception, at.exception
    shown = "\n".join(texts(at.main.error) + texts(at.main.markdown))
    assert word in shown, shown
    assert not [s for s in texts(at.success) if "Imported" in s]  # nothing imported
    store = open_store(isolated_env)
    # only what the app's start wrote: this machine, recorded once per session
    assert store.list_conversations() == [] and store.tables() == ["machines"]
    every_page_renders(at)


def test_junk_rows_in_the_store_are_left_out_with_one_warning(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    store = open_store(isolated_env)
    store.append_many("runs", [RUN, {**RUN, "id": "r2", "ok": "maybe"},
                               {**RUN, "id": "r3", "ts": "yesterday", "ttft_s": {"x": 1}},
                               {**RUN, "id": "r4", "model": ["m"]}])
    vote = {"outcome": "win", "winner": 0, "blind": False, "ts": 1.0}
    store.append_many("arena_rounds", [
        {**ROUND, "vote": vote}, {**ROUND, "id": "junk-1", "slots": "AB"},
        {**ROUND, "id": "junk-2", "vote": {"outcome": "win", "winner": 7}},
        {"id": "junk-3", "slots": [1, 2]}])
    at = new_app().run()
    at.switch_page("pages/stats.py").run()
    assert not at.exception, at.exception
    assert "Left out: 3 stored runs that could not be read." in texts(at.warning)
    at.switch_page("pages/arena.py").run()
    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    assert not at.exception, at.exception
    assert "Left out: 3 stored arena rounds that could not be read." in texts(at.warning)
    assert "1 vote over 1 round" in " ".join(texts(at.caption))


def test_a_huge_ttl_in_the_settings_file_is_clamped(mock: respx.MockRouter,
                                                    isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    isolated_env.mkdir(parents=True, exist_ok=True)
    (isolated_env / "settings.json").write_text(json.dumps({
        "ttl_seconds": 10**12, "profiles": [{"name": {"evil": 1}, "url": "http://a:1"}]}))
    at = every_page_renders(new_app().run())
    at.switch_page("pages/settings.py").run()
    settings_tab(at, "Chat defaults")
    assert not at.exception, at.exception
    (ttl,) = [n for n in at.number_input if n.label == "Idle TTL (seconds)"]
    assert ttl.value == MAX_TTL_SECONDS  # clamped on read: the input cannot show more
