"""The sidebar says when ATOM talks to the bundled demo engine, and how to use LM Studio instead."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from streamlit.testing.v1 import AppTest

from tests.fixtures.apptest import BASE, new_app

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


def test_the_sidebar_says_it_is_a_tiny_base_model(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo_like(mock)
    monkeypatch.setenv("ATOM_DEMO_ENGINE", BASE)
    at = new_app().run()
    (notice,) = [i.value for i in at.sidebar.info]
    assert "tiny base model for trying ATOM, not a chat assistant" in notice


def test_models_shows_what_is_known_about_the_demo_model(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo_like(mock)
    monkeypatch.setenv("ATOM_DEMO_ENGINE", BASE)
    at = new_app().run()
    at.switch_page("pages/models.py").run()
    assert not at.exception
    (info,) = [i.value for i in at.info if "What ATOM can't do" in str(i.value)]
    assert "which are loaded" not in info.lower() and "lists only ids" not in info
    assert "Load, unload and download" in info
    (row,) = at.dataframe[0].value.to_dict("records")
    assert row["Loaded"] == "●" and row["Params"] == "270M" and row["Quantization"] == "Q4_K_M"
    assert row["Max context"] == 32768 and "ctx 8192" in row["Instances (live config)"]
    assert row.get("Publisher", "") == ""  # not llama.cpp's placeholder "me"


def test_an_ordinary_server_leaves_unknowns_blank(mock: respx.MockRouter) -> None:
    demo_like(mock)
    mock.get("/v1/models").respond(json={"object": "list", "data": [
        {"id": "llama-3.2-1b", "object": "model", "owned_by": "me", "permissions": []}]})
    at = new_app().run()
    at.switch_page("pages/models.py").run()
    (row,) = at.dataframe[0].value.to_dict("records")
    assert row["Loaded"] == "" and not row.get("Params")  # unknown: blank, not "?"


def test_ttl_goes_to_lm_studio_only(mock: respx.MockRouter) -> None:
    import json

    from atom_core.config import settings_from_env
    from atom_core.settings.store import open_settings
    from tests.fixtures.sse import SSE_HEADERS, sse_body

    open_settings(settings_from_env().data_dir).set_ttl(600)
    demo_like(mock)
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    at = new_app().run()
    at.chat_input[0].set_value("hi").run()
    assert not at.exception
    assert "ttl" not in json.loads(chat.calls.last.request.content)


# -- while `make run` still builds the engine ----------------------------------------------------


def building(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mock: respx.MockRouter) -> Path:
    """The app as `make run` starts it while llama.cpp compiles: its server is the demo engine,
    nothing answers there yet, and the launcher's status file says how far the build is."""
    import json

    log = tmp_path / "build.log"
    log.write_text("[97/193] Building CXX object ggml.o\n")
    status = tmp_path / "demo-status.json"
    status.write_text(json.dumps({"state": "building", "message": "", "ts": 0,
                                  "build_log": str(log)}))
    monkeypatch.setenv("ATOM_DEMO_ENGINE", BASE)
    monkeypatch.setenv("ATOM_DEMO_STATUS", str(status))
    mock.route().mock(side_effect=httpx.ConnectError("Connection refused"))
    return status


def no_lm_studio_advice(at: AppTest) -> None:
    for el in (*at.error, *at.info, *at.warning):
        assert "Is LM Studio running" not in str(el.value), el.value


@pytest.mark.parametrize("page", ["pages/arena.py", "pages/models.py"])
def test_arena_and_models_say_the_engine_is_building(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, page: str
) -> None:
    building(monkeypatch, tmp_path, mock)
    at = new_app().run()
    at.switch_page(page).run()
    assert not at.exception
    no_lm_studio_advice(at)
    said = [str(i.value) for i in at.main.info]
    assert any(s.startswith("Demo engine building: 50 % compiled") for s in said), said


def test_a_message_sent_while_the_engine_builds_is_answered_when_it_is_ready(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    isolated_env: Path,
) -> None:
    from atom_core.history import open_store
    from tests.fixtures.sse import SSE_HEADERS, sse_body

    status = building(monkeypatch, tmp_path, mock)
    at = new_app().run()
    at.chat_input[0].set_value("What is the capital of France?").run()
    assert not at.exception
    no_lm_studio_advice(at)
    assert any("Demo engine building" in str(i.value) for i in at.main.info)
    assert any("answered as soon as the model is ready" in str(c.value) for c in at.caption)
    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    (asked,) = store.messages(conv.id)  # the question is kept; no error reply is saved
    assert asked.role == "user" and asked.content == "What is the capital of France?"

    # The engine is ready: the sidebar's progress fragment reruns the app, which answers.
    status.unlink()
    mock.routes.clear()
    demo_like(mock)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                              content=sse_body("Paris."))
    at.run()
    assert not at.exception
    messages = store.messages(conv.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == "Paris." and messages[1].state == "complete"
