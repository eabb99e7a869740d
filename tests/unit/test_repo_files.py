"""What the repository tracks: nothing a machine makes for itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MADE_HERE = (".venv", ".venv-demo", ".atom-data", "test-output")


def test_no_virtualenv_or_local_data_is_tracked() -> None:
    """A worktree's link to a shared .venv was once committed: a fresh clone then had .venv
    pointing at itself and `make test` could not create its virtualenv."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to ask git")
    tracked = subprocess.run(["git", "ls-files", "--", *MADE_HERE], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert tracked == []
