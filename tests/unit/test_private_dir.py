"""Folders ATOM makes are its owner's only (0700): one helper makes them all, whatever the
umask, and tightens one an older ATOM left wider."""

from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest

from atom_core.files import private_dir

ROOT = Path(__file__).resolve().parents[2]
MAKERS = {"mkdir", "makedirs", "mkdtemp"}


pytestmark = pytest.mark.usefixtures("umask_022")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_folder_atom_core_makes_goes_through_private_dir() -> None:
    """A plain mkdir gives the umask's 0755 (ATOM_DATA_DIR/images/ was made that way)."""
    helper = ROOT / "atom_core" / "files.py"
    found = []
    for path in sorted((ROOT / "atom_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in MAKERS and path != helper:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert found == []


def test_a_wider_folder_is_tightened_but_not_its_parents_or_a_shared_one(tmp_path: Path) -> None:
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)  # what an older ATOM did: 0755
    os.chmod(tmp_path / "data", 0o755)
    assert mode(images) == 0o755
    private_dir(images)
    assert mode(images) == 0o700
    assert mode(tmp_path / "data") == 0o755  # an existing parent is not ATOM's to change
    private_dir(images / "a" / "b")  # missing ones are made 0700
    assert mode(images / "a") == mode(images / "a" / "b") == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    private_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
