"""The sidebar says when ATOM talks to the bundled demo engine, and how to use LM Studio instead."""

from __future__ import annotations

import pytest
import respx

from tests.ui.conftest import BASE, new_app

OPENAI_LIST = {"object": "list", "data": [
    {"id": "gemma-3-270m-a", "object": "model", "owned_by": "me", "permissions": []}]}


def demo_like(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(404, json={"detail": "Not Found"})
    mock.get("/api/v0/models").respond(404, json={"detail": "Not Found"})
    mock.get("/v1/models").respond(json=OPENAI_LIST)


def test_the_demo_engine_is_named_in_the_sidebar(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo_like(mock)
    monkeypatch.setenv("ATOM_DEMO_ENGINE", f"{BASE},http://127.0.0.1:5002")
    at = new_app().run()
    assert not at.exception
    assert [s.value for s in at.sidebar.success] == ["OpenAI-compatible server · 1 model"]
    (notice,) = [i.value for i in at.sidebar.info]
    assert notice.startswith("Bundled demo engine (Gemma 3 270M on CPU)")
    assert "`lms server start`" in notice and "Server box" in notice
    assert at.sidebar.selectbox(key="model").value == "gemma-3-270m-a"

    # Pointing the Server box at another server (LM Studio) drops the notice.
    mock.get("http://lms.other:1234/api/v1/models").respond(json={"models": []})
    at.sidebar.text_input[0].set_value("http://lms.other:1234").run()
    assert not at.exception
    assert not [i.value for i in at.sidebar.info if "demo engine" in str(i.value)]


def test_no_notice_for_an_ordinary_server(mock: respx.MockRouter) -> None:
    demo_like(mock)
    at = new_app().run()
    assert not at.exception
    assert not [i.value for i in at.sidebar.info if "demo engine" in str(i.value)]
