"""ATOM's Streamlit settings (.streamlit/config.toml) that its speed depends on."""

from __future__ import annotations

import tomllib
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"


def test_no_full_garbage_collection_after_every_script_run() -> None:
    # Streamlit's default runs gc.collect(2) after each run, fragments too, before the run's
    # last messages reach the browser: 3/4 of a page switch's script time with pandas, pyarrow
    # and plotly loaded (docs/BENCHMARKS.md, page switches).
    runner = tomllib.loads(CONFIG.read_text())["runner"]
    assert runner["postScriptGC"] is False
