"""The render fuzzer in Chromium (issue 23): the regression corpus and a short, fixed-seed run of
the grammar, through safe_markdown into real st.markdown / caption / alert elements, one page
load for all of them; no request may leave the app and no element may load anything. The long
run is bench/fuzz_render.py (docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.markdown_fuzz import generate
from tests.fixtures.render_fuzz import render_fuzz

pytestmark = pytest.mark.e2e

CORPUS = json.loads((Path(__file__).parents[1] / "fixtures" / "render_corpus.json").read_text())



def test_the_corpus_and_a_fuzz_run_fetch_nothing(browser: Any, tmp_path: Path) -> None:
    corpus = [c["doc"] for c in CORPUS]
    with render_fuzz(browser, tmp_path / "fuzz") as fuzz:
        # Not blind: the same corpus drawn as it is (no safe_markdown) escapes.
        raw = fuzz.check(corpus, raw=True)
        assert raw, "the corpus drawn raw fetched nothing: the check cannot see an escape"
        escapes = fuzz.check(corpus + generate(300, 2023))
    assert escapes == [], "\n\n".join(f"{e.what}\n{e.doc!r}\n-> {e.shown!r}" for e in escapes)
