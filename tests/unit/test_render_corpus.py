"""The render fuzzer's regression corpus and a short run of its grammar, at the Python level (no
browser): safe_markdown never fails and leaves nothing GFM would draw as an image. The browser
side of the same corpus is tests/e2e/test_render_fuzz_e2e.py; the long run bench/fuzz_render.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin

from atom_core.render import safe_markdown
from tests.fixtures.markdown_fuzz import documents, with_beacon

CORPUS = json.loads((Path(__file__).parents[1] / "fixtures" / "render_corpus.json").read_text())
BEACON = "http://127.0.0.1:9/b"


def drawn_images(text: str) -> list[str]:
    """Images as GFM reads `text` after Streamlit's own dedent and strip. (Raw HTML is not
    counted: ATOM never passes unsafe_allow_html, so Streamlit drops it; an indented `<img>`
    first in a text is a code block to markdown-it and, dedented, dropped HTML.)"""
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.use(footnote_plugin)
    found: list[str] = []

    def walk(tokens: list) -> None:  # type: ignore[type-arg]
        for t in tokens:
            if t.type == "image":
                found.append(str(t.attrGet("src")))
            walk(t.children or [])

    walk(md.parse(textwrap.dedent(text).strip()))
    return found


@pytest.mark.parametrize("case", CORPUS, ids=[c["why"][:60] for c in CORPUS])
def test_corpus_case_is_made_safe(case: dict[str, str]) -> None:
    out = safe_markdown(with_beacon(case["doc"], BEACON))
    assert drawn_images(out) == [], out


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(documents())
def test_generated_documents_are_made_safe(doc: str) -> None:
    out = safe_markdown(with_beacon(doc, BEACON))
    assert drawn_images(out) == [], (doc, out)
