"""The Settings page in AppTest: profiles and tokens, chat defaults, presets and templates used by
Chat, and the data tools."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from streamlit.testing.v1 import AppTest

from atom_core.history import open_store
from atom_core.measure import hardware
from atom_core.settings.store import make_preset, open_settings
from tests.fixtures.apptest import BASE, new_app, settings_tab
from tests.fixtures.payloads import NATIVE_MODELS
from tests.fixtures.sse import SSE_HEADERS, sse_body

TOKEN = "sk-lm-AbCd1234:ZyXwVuTsRqPoNmLkJiHg"
OTHER = "http://other.test:1234"


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def by_label(elements: Any, label: str) -> Any:
    found = [e for e in elements if e.label == label]
    assert found, f"no {label!r} in {[e.label for e in elements]}"
    return found[0]


def rendered(at: AppTest) -> str:
    """Everything the page sent to the browser, widget values included."""
    out: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    out += [str(t.value) for t in at.text_input]
    return "\n".join(out)


def settings_page(mock: respx.MockRouter | None = None, tab: str | None = None) -> AppTest:
    if mock is not None:
        mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    at = new_app().run()
    at.switch_page("pages/settings.py").run()
    if tab is not None:
        settings_tab(at, tab)
    assert not at.exception, at.exception
    return at


def save_profile(at: AppTest, name: str, url: str, token: str = "") -> None:
    by_label(at.text_input, "Name").set_value(name)
    by_label(at.text_input, "URL").set_value(url)
    by_label(at.text_input, "API token").set_value(token)
    by_label(at.form_submit_button, "Save server").click().run()
    assert not at.exception, at.exception


def token_checking_server(mock: respx.MockRouter, token: str) -> respx.Route:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            return httpx.Response(401, json={"error": {"type": "invalid_request",
                                                       "code": "invalid_api_key",
                                                       "message": "token needed"}})
        return httpx.Response(200, json=NATIVE_MODELS)

    return mock.get("/api/v1/models").mock(side_effect=answer)


def test_add_a_profile_with_a_token_test_it_and_never_show_the_token(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    route = token_checking_server(mock, TOKEN)
    at = settings_page()
    # Before: the current server wants a token ATOM does not have.
    assert any("requires an API token" in w for w in texts(at.sidebar.warning))
    save_profile(at, "Studio", BASE, TOKEN)
    assert "Saved “Studio”." in texts(at.success)
    assert TOKEN not in rendered(at) and "ZyXw" not in rendered(at)
    assert any("**Studio**" in m and "sk-lm-••••••••Hg" in m for m in texts(at.markdown))
    tokens = isolated_env / "tokens.json"
    assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600
    assert TOKEN not in (isolated_env / "settings.json").read_text()

    at.button(key="test-Studio").click().run()
    assert ("Reachable · token accepted · LM Studio 0.4+ (native API) · 3 models (2 LLMs, 1 "
            "loaded).") in texts(at.success)
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    # The sidebar's server (same URL) now uses the saved token too.
    assert at.button(key="use-Studio").disabled  # it is the current server already
    assert texts(at.sidebar.success) == ["LM Studio 0.4+ (native API) · 2 models, 1 loaded"]
    assert TOKEN not in rendered(at)


def test_a_refused_token_shows_the_auth_sentence(mock: respx.MockRouter) -> None:
    token_checking_server(mock, TOKEN)
    at = settings_page()
    save_profile(at, "Wrong", BASE, "sk-lm-wrongwrong:wrongwrongwrongwrong")
    at.button(key="test-Wrong").click().run()
    (error,) = [e for e in texts(at.main.error) if "refused the API token" in e]
    assert error.startswith("Reachable, but:")
    assert "wrongwrongwrong" not in rendered(at)


def test_an_unreachable_profile_says_so(mock: respx.MockRouter) -> None:
    mock.get(f"{OTHER}/api/v1/models").mock(side_effect=httpx.ConnectError("refused"))
    at = settings_page(mock)
    save_profile(at, "Elsewhere", OTHER)
    at.button(key="test-Elsewhere").click().run()
    assert any("Can't reach a model server at http://other.test:1234" in e
               for e in texts(at.main.error))


def test_a_bad_url_is_one_sentence_and_the_form_keeps_its_values(mock: respx.MockRouter) -> None:
    at = settings_page(mock)
    save_profile(at, "Bad", "http://has space")
    assert any("is not a server URL" in e for e in texts(at.main.error))
    assert by_label(at.text_input, "Name").value == "Bad"


def test_profiles_reach_the_server_list_and_the_default_starts_new_sessions(
    mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    mock.get(f"{OTHER}/api/v1/models").respond(json=NATIVE_MODELS)
    at = settings_page(mock)
    save_profile(at, "Other box", OTHER)
    at.switch_page("pages/models.py").run()
    server = at.selectbox(key="models-server")
    assert server.options == [f"Current server · {BASE}", f"Other box · {OTHER}"]
    # Without ATOM_SERVER_URL, a new session starts on the default profile.
    monkeypatch.delenv("ATOM_SERVER_URL")
    fresh = new_app().run()
    assert fresh.sidebar.text_input[0].value == OTHER


def test_only_the_open_tab_is_drawn_and_it_stays_open(mock: respx.MockRouter) -> None:
    """A Settings switch draws one tab, not four (docs/BENCHMARKS.md, page switches); a save
    in a tab reruns the page on that tab."""
    at = settings_page(mock)
    assert [t.label for t in at.tabs] == ["Servers", "Chat defaults", "Presets", "Data"]
    assert by_label(at.selectbox, "Add or edit")  # Servers, the first tab
    drawn = [e.label for e in (*at.number_input, *at.text_area, *at.form_submit_button)]
    assert drawn == ["Save server"], drawn
    settings_tab(at, "Chat defaults")
    assert not [e for e in at.selectbox if e.label == "Add or edit"]
    by_label(at.number_input, "Idle TTL (seconds)").set_value(900).run()
    assert "Saved the idle TTL." in texts(at.success)
    assert by_label(at.number_input, "Idle TTL (seconds)").value == 900  # still on that tab
    assert not [e for e in at.form_submit_button if e.label == "Save preset"]


def test_ttl_becomes_chats_default_and_is_sent(mock: respx.MockRouter) -> None:
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    at = settings_page(mock, tab="Chat defaults")
    by_label(at.number_input, "Idle TTL (seconds)").set_value(600).run()
    assert "Saved the idle TTL." in texts(at.success)
    assert any("just-in-time" in c and "Auto-Evict" in c for c in texts(at.caption))
    at.switch_page("pages/chat.py").run()
    assert at.number_input(key="ttl").value == 600
    at.chat_input[0].set_value("hi").run()
    assert json.loads(chat.calls.last.request.content)["ttl"] == 600


def test_a_preset_saved_here_is_picked_in_chat_and_sent(mock: respx.MockRouter) -> None:
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    at = settings_page(mock, tab="Presets")
    by_label(at.text_input, "Preset name").set_value("Precise")
    by_label(at.number_input, "Temperature").set_value(0.2)
    by_label(at.number_input, "Top k").set_value(20)
    by_label(at.form_submit_button, "Save preset").click().run()
    assert not at.exception
    assert at.table[0].value.to_dict("records") == [
        {"Preset": "Precise", "Settings": "temperature 0.2 · top K 20", "Used for": ""}]
    at.switch_page("pages/chat.py").run()
    assert at.number_input(key="temperature").value is None
    at.selectbox(key="chat-preset").set_value("Precise").run()
    assert at.number_input(key="temperature").value == 0.2
    assert at.number_input(key="top_k").value == 20
    at.number_input(key="top_k").set_value(40).run()  # still editable
    at.chat_input[0].set_value("hi").run()
    body = json.loads(chat.calls.last.request.content)
    assert body["temperature"] == 0.2 and body["top_k"] == 40


def test_a_per_model_preset_is_where_chat_starts(mock: respx.MockRouter) -> None:
    settings = open_settings(os.environ["ATOM_DATA_DIR"])
    settings.save_preset(make_preset("Creative", temperature=1.3))
    settings.save_preset(make_preset("Precise", temperature=0.1))
    at = settings_page(mock, tab="Presets")
    at.selectbox(key="override-model").set_value("qwen/qwen3-4b").run()
    at.selectbox(key="override-qwen/qwen3-4b").set_value("Creative").run()
    assert settings.load().model_presets == {"qwen/qwen3-4b": "Creative"}
    assert [r["Used for"] for r in at.table[0].value.to_dict("records")] == ["qwen/qwen3-4b", ""]
    at.switch_page("pages/chat.py").run()
    assert at.selectbox(key="chat-preset").value == ""  # the loaded gemma has no preset
    at.sidebar.selectbox(key="model").set_value("qwen/qwen3-4b").run()
    assert at.selectbox(key="chat-preset").value == "Creative"
    assert at.number_input(key="temperature").value == 1.3


def test_a_template_fills_chats_system_prompt(mock: respx.MockRouter) -> None:
    at = settings_page(mock, tab="Presets")
    by_label(at.text_input, "Template name").set_value("Pirate")
    by_label(at.text_area, "System prompt").set_value("Talk like a pirate.")
    by_label(at.form_submit_button, "Save template").click().run()
    assert "Saved “Pirate”." in texts(at.success)
    at.switch_page("pages/chat.py").run()
    at.selectbox(key="chat-template").set_value("Pirate").run()
    assert at.text_area(key="sys-new").value == "Talk like a pirate."
    assert at.selectbox(key="chat-template").value == ""


def test_data_tab_exports_imports_without_duplicates_and_deletes(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="Kept chat")
    store.add_message(conv.id, role="user", content="remember me")
    store.append("runs", {"model": "m"})
    at = settings_page(mock, tab="Data")
    assert any(str(isolated_env) in m and "1 conversations" in m for m in texts(at.markdown))
    assert by_label(at.download_button, "Export everything (JSON)")
    from atom_core.history.backup import export_json

    exported = export_json(store, open_settings(isolated_env)).encode()
    at.file_uploader(key="import-file").set_value(("atom-export.json", exported,
                                                   "application/json")).run()
    by_label(at.button, "Import").click().run()
    # skipped: the conversation, the run, and this machine (recorded as the app started)
    assert any("Imported 0 conversations" in s and "Skipped 3 already here" in s
               for s in texts(at.success))
    assert len(store.list_conversations()) == 1

    at.file_uploader(key="import-file").set_value(("x.json", b"{}", "application/json")).run()
    by_label(at.button, "Import").click().run()
    assert any("not an ATOM export" in e for e in texts(at.main.error))

    by_label(at.button, "Delete everything…").click().run()
    assert any("can't be undone" in w for w in texts(at.warning))
    by_label(at.button, "Yes, delete").click().run()
    assert "Deleted everything." in texts(at.success)
    assert store.list_conversations() == [] and store.run_rows() == []
    # the session goes on: its machine is recorded again, so the next runs can name it
    assert [r["id"] for r in store.records("machines")] == [hardware.this_machine().id]


def _keepalives_only() -> Any:
    import time

    for _ in range(400):  # 20 s of keep-alives and no token
        time.sleep(0.05)
        yield b": keep-alive\n\n"


def test_stream_limits_are_settings_and_chat_ends_a_keepalive_stream_by_them(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    """Issue 23 §3: the stall sentence says to raise the stall timeout in Settings: it is there
    (with the first-token and whole-request limits), saved, and Chat's requests keep to it,
    before the first token too."""
    mock.post("/v1/chat/completions").mock(side_effect=lambda request: httpx.Response(
        200, headers=SSE_HEADERS, content=_keepalives_only()))
    at = settings_page(mock, tab="Chat defaults")
    for label in ("Stall timeout (s)", "First-token limit (s)", "Whole-request limit (s)"):
        by_label(at.number_input, label)
    by_label(at.number_input, "Stall timeout (s)").set_value(1.0).run()
    assert "Saved the stall timeout." in texts(at.success)
    by_label(at.number_input, "Whole-request limit (s)").set_value(600.0).run()
    saved = open_settings(isolated_env).load()
    assert (saved.stall_timeout_s, saved.request_deadline_s) == (1.0, 600.0)
    at.switch_page("pages/chat.py").run()
    at.chat_input[0].set_value("hi").run(timeout=30)
    assert not at.exception, at.exception
    said = " ".join(texts(at.warning) + texts(at.error))
    assert "no new token for 1 s" in said and "Settings, Chat defaults" in said, said


def test_a_limit_set_in_the_environment_wins_and_says_so(
        mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_STALL_TIMEOUT_S", "5")
    at = settings_page(mock, tab="Chat defaults")
    stall = by_label(at.number_input, "Stall timeout (s)")
    assert stall.disabled and stall.value == 5.0
    assert "Set by ATOM_STALL_TIMEOUT_S for this run of ATOM." in texts(at.caption)
