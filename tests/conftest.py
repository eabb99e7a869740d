"""Shared fixtures. No test touches the user's real data or real server settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Points ATOM_DATA_DIR at a fresh temp folder and clears server/token settings."""
    data = tmp_path / "atom-data"
    monkeypatch.setenv("ATOM_DATA_DIR", str(data))
    for var in ("ATOM_SERVER_URL", "ATOM_API_TOKEN", "LM_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    yield data
