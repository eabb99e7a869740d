"""A session's first page has the browser load Streamlit's plotly module in the background, so
a first visit to Stats draws its charts with the page (docs/BENCHMARKS.md, page switches)."""

from __future__ import annotations

import respx

from pages.parts import ui
from tests.fixtures.payloads import NATIVE_MODELS
from tests.ui.conftest import new_app


def warmers(at: object) -> list[str]:
    return [h.proto.body for h in at.sidebar.get("html")  # type: ignore[attr-defined]
            if "modulepreload" in h.proto.body]


def test_the_first_page_loads_the_chart_module_once(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    module = ui.plotly_module()
    assert module is not None and module.startswith("PlotlyChart.")  # Streamlit still has it
    at = new_app().run()
    assert not at.exception, at.exception
    (script,) = warmers(at)
    assert f'l.rel = "modulepreload";\nl.href = "./static/js/{module}"' in script
    at.switch_page("pages/settings.py").run()
    assert warmers(at) == []  # once a session
