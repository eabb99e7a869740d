"""A data folder written by ATOM's main before issue 19 reads back, with today's code, exactly
as main read it (tests/fixtures/main_data_dir.py says how the folder and read.json were made),
and reading it changes no file: the typed store needs no migration."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.fixtures.main_data_dir import read

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data_dir_main"


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock"}


def test_a_folder_main_wrote_reads_back_equal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "data", data)
    before = _files(data)
    expected = json.loads((FIXTURE / "read.json").read_text())

    got = json.loads(json.dumps(read(data), sort_keys=True))

    for part in expected:  # part by part, so a failure names what changed
        assert got[part] == expected[part], part
    assert got == expected
    assert _files(data) == before  # nothing rewritten: no migration


def test_the_fixture_holds_every_kind_of_row() -> None:
    expected = json.loads((FIXTURE / "read.json").read_text())
    messages = [m["message"] for c in expected["conversations"] for m in c["messages"]]
    assert any(m["reasoning"] and m["metrics"] for m in messages)
    assert any(c["messages"][0]["images"] for c in expected["conversations"])
    assert any(r["class_id"] and len(r["votes"]) == 2 for r in expected["rounds"])
    assert expected["rounds_unreadable"] == 1
    assert expected["promptset_records"][0] and expected["prompt_sets"]
    assert len(expected["runs"]) == 4 and expected["settings"]["presets"]
