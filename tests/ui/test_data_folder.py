"""Every folder ATOM makes in ATOM_DATA_DIR is its owner's only (0700), and every file 0600, after
what a user does in the app: a chat with an image, its export, a backup taken and restored, and
an arena race with an image. With the common umask 022 a plain mkdir would give 0755."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import respx
from PIL import Image

from atom_core import arena
from atom_core.history import open_store
from atom_core.history.backup import export_json
from atom_core.settings.store import open_settings
from tests.fixtures.apptest import new_app, settings_tab
from tests.fixtures.payloads import NATIVE_MODELS
from tests.fixtures.sse import SSE_HEADERS, sse_body


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def modes(root: Path) -> dict[str, str]:
    """Every folder (root included) and file below root with its permission bits."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def labelled(elements: Any, label: str) -> Any:
    (found,) = [e for e in elements if e.label == label]
    return found


def test_every_folder_atom_makes_is_0700_and_every_file_0600(
    mock: respx.MockRouter, isolated_env: Path, umask_022: None
) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)  # a vision model first
    mock.post("/v1/chat/completions").mock(side_effect=lambda request: httpx.Response(
        200, headers=SSE_HEADERS, content=sse_body("A", " blue", " box.")))
    at = new_app().run()
    # a chat with an image
    at.file_uploader(key="chat_images_0").set_value(("shot.png", png(), "image/png")).run()
    at.chat_input[0].set_value("What is this?").run()
    assert not at.exception
    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    # its export (the Export popover's buttons are built with the page)
    assert labelled(at.get("download_button"), "JSON") is not None
    # an arena race with an image
    at.switch_page("pages/arena.py").run()
    at.file_uploader(key="arena_images_0").set_value(("dot.png", png(), "image/png")).run()
    at.chat_input(key="arena_prompt").set_value("What shape?").run()
    assert not at.exception
    (rnd,) = arena.load_rounds(store)
    # a backup: exported, everything deleted, then restored from it
    backup = export_json(store, open_settings(isolated_env)).encode()
    at.switch_page("pages/settings.py").run()
    settings_tab(at, "Data")
    assert labelled(at.download_button, "Export everything (JSON)") is not None
    labelled(at.button, "Delete everything…").click().run()
    labelled(at.button, "Yes, delete").click().run()
    assert store.list_conversations() == []
    at.file_uploader(key="import-file").set_value(("atom-export.json", backup,
                                                   "application/json")).run()
    labelled(at.button, "Import").click().run()
    assert not at.exception
    assert [c.title for c in store.list_conversations()] == [conv.title]  # under a new id

    found = modes(isolated_env)
    # what the test covers: the images of the restored chat and of the race
    owners = {p.name for p in (isolated_env / "images").iterdir()}
    assert len(owners) == 2 and rnd.id in owners and conv.id not in owners
    folders = {p: m for p, m in found.items() if (isolated_env / p).is_dir()}
    files = {p: m for p, m in found.items() if p not in folders}
    assert {p: m for p, m in folders.items() if m != "0o700"} == {}
    assert {p: m for p, m in files.items() if m != "0o600"} == {}
    assert len(folders) >= 4 and len(files) >= 4
