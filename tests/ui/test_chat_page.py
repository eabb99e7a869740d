"""The Chat page in AppTest: send, stream, reload, Stop, and the errors a user can meet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from atom_core.history import open_store
from tests.fixtures.apptest import BASE, new_app, press_stop
from tests.fixtures.payloads import AUTH_BODY, NATIVE_MODELS
from tests.fixtures.sse import SSE_HEADERS, chunk, sse_body

LOADED_MODEL = "google/gemma-4-26b-a4b"


def texts(at_elements: object) -> list[str]:
    return [str(e.value) for e in at_elements]  # type: ignore[attr-defined]


def labels(buttons: object) -> list[str]:
    return [str(b.label) for b in buttons]  # type: ignore[attr-defined]


def test_first_visit_shows_server_and_picks_the_loaded_model(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    at = new_app().run()
    assert not at.exception
    assert texts(at.sidebar.success) == ["LM Studio 0.4+ (native API) · 2 models, 1 loaded"]
    picker = at.sidebar.selectbox(key="model")
    assert picker.value == LOADED_MODEL  # a loaded model answers at once
    assert picker.options == ["Gemma 4 26B A4B  (26B-A4B · Q4_K_M)",
                              "Qwen3 4B  (4B · 4bit)"]  # embeddings are not chat models
    assert "● Loaded" in texts(at.sidebar.caption)


def test_send_see_streamed_reply_then_reload_and_see_it_again(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("Paris", " is", " the", " capital.")
    )
    at = new_app().run()
    at.chat_input[0].set_value("What is the capital of France?").run()
    assert not at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    reply = at.chat_message[1]
    assert texts(reply.markdown) == ["Paris is the capital."]
    caption = texts(reply.caption)[0]
    assert caption.startswith(LOADED_MODEL) and "4 tokens" in caption and "stop" in caption
    body = json.loads(chat.calls.last.request.content)
    assert body["model"] == LOADED_MODEL and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]

    # A reload is a new session: the chat comes back from the history on disk.
    again = new_app().run()
    assert not again.exception
    assert [m.name for m in again.chat_message] == ["user", "assistant"]
    assert texts(again.chat_message[1].markdown) == ["Paris is the capital."]
    assert "What is the capital of France?" in labels(again.sidebar.button)

    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    assert conv.title == "What is the capital of France?"
    msgs = store.messages(conv.id)
    assert msgs[1].state == "complete" and msgs[1].metrics is not None
    runs = store.run_rows()
    assert len(runs) == 1 and runs[0]["source"] == "chat" and runs[0]["output_tokens"] == 4


def test_the_second_turn_sends_the_history_and_system_prompt(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("ok")
    )
    at = new_app().run()
    at.chat_input[0].set_value("one").run()
    at.text_area(key=f"sys-{at.session_state.conversation_id}").set_value("Be terse.").run()
    at.number_input(key="temperature").set_value(0.3).run()
    at.chat_input[0].set_value("two").run()
    body = json.loads(chat.calls.last.request.content)
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "two"},
    ]
    assert body["temperature"] == 0.3


class StoppedMidway(httpx.SyncByteStream):
    """Streams a few tokens, presses Stop (as the user would), then would go on for long."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield chunk("", role=True).encode()
        for i in range(200):
            if i == 3:
                press_stop()
            time.sleep(0.02)
            self.sent += 1
            yield chunk(f"w{i} ").encode()
        yield (chunk(finish="stop") + "data: [DONE]\n\n").encode()

    def close(self) -> None:
        self.closed = True


def test_stop_ends_the_request_and_keeps_the_partial_reply(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    stream = StoppedMidway()
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=stream)
    )
    at = new_app().run()
    at.chat_input[0].set_value("Tell me a long story").run()
    deadline = time.monotonic() + 5
    while not stream.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stream.closed and stream.sent < 200  # the upstream request really ended

    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    user, reply = store.messages(conv.id)
    assert user.content == "Tell me a long story"
    assert reply.state == "stopped" and reply.content.startswith("w0 w1 w2")
    assert store.run_rows()[0]["state"] == "stopped"

    shown = new_app().run()
    assert texts(shown.chat_message[1].warning) == ["Stopped"]
    assert texts(shown.chat_message[1].markdown)[0].startswith("w0 w1 w2")
    assert "Regenerate" in labels(shown.button)


def test_unreachable_server_shows_the_sentence_and_keeps_the_message(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    mock.route().mock(side_effect=httpx.ConnectError("Connection refused"))
    at = new_app().run()
    assert not at.exception
    (sentence,) = texts(at.sidebar.error)
    assert "Can't reach a model server at http://lms.test:1234" in sentence
    assert "lms server start" in sentence

    at.chat_input[0].set_value("Are you there?").run()
    assert not at.exception
    assert texts(at.chat_message[0].markdown) == ["Are you there?"]
    assert texts(at.chat_message[1].error) == [sentence]
    (conv,) = open_store(isolated_env).list_conversations()
    assert open_store(isolated_env).messages(conv.id)[0].content == "Are you there?"


def test_server_dropping_mid_reply_is_saved_as_interrupted(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    class Crash(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield (chunk("The first", role=True) + chunk(" half")).encode()
            raise httpx.RemoteProtocolError("peer closed connection without response")

    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=Crash())
    )
    at = new_app().run()
    at.chat_input[0].set_value("hello").run()
    assert not at.exception
    reply = at.chat_message[1]
    assert texts(reply.markdown) == ["The first half"]
    (warning,) = texts(reply.warning)
    assert warning.startswith("Interrupted") and "connection broke" in warning


def test_auth_required_and_unknown_model_are_sentences(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(401, json=AUTH_BODY)
    at = new_app().run()
    assert not at.exception
    (warning,) = texts(at.sidebar.warning)
    assert "requires an API token" in warning and "ATOM_API_TOKEN" in warning

    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").respond(
        404, json={"error": {"message": "Model not found", "code": "model_not_found"}}
    )
    at = new_app().run()
    at.chat_input[0].set_value("hi").run()
    assert not at.exception
    (error,) = texts(at.chat_message[1].error)
    assert f"no model called “{LOADED_MODEL}”" in error


def test_regenerate_replaces_the_last_reply(mock: respx.MockRouter, isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions")
    chat.side_effect = [
        httpx.Response(200, headers=SSE_HEADERS, content=sse_body("First")),
        httpx.Response(200, headers=SSE_HEADERS, content=sse_body("Second")),
    ]
    at = new_app().run()
    at.chat_input[0].set_value("q").run()
    next(b for b in at.button if b.label == "Regenerate").click().run()
    assert not at.exception
    assert [texts(m.markdown) for m in at.chat_message] == [["q"], ["Second"]]
    body = json.loads(chat.calls.last.request.content)
    assert body["messages"] == [{"role": "user", "content": "q"}]


def test_conversations_new_switch_rename_search_delete(mock: respx.MockRouter,
                                                        isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=sse_body("ok"))
    at = new_app().run()
    at.chat_input[0].set_value("about apples").run()
    next(b for b in at.sidebar.button if b.label == "New chat").click().run()
    assert len(at.chat_message) == 0
    at.chat_input[0].set_value("about bananas").run()
    store = open_store(isolated_env)
    assert [c.title for c in store.list_conversations()] == ["about bananas", "about apples"]

    # switch
    next(b for b in at.sidebar.button if b.label == "about apples").click().run()
    assert texts(at.chat_message[0].markdown) == ["about apples"]
    # rename
    apples = store.list_conversations(query="apples")[0]
    at.text_input(key=f"title-{apples.id}").set_value("Fruit talk").run()
    assert store.get_conversation(apples.id).title == "Fruit talk"  # type: ignore[union-attr]
    # search by content
    at.text_input(key="chat_search").set_value("apples").run()
    assert "Fruit talk" in labels(at.sidebar.button)
    assert "about bananas" not in labels(at.sidebar.button)
    # delete needs a confirmation
    next(b for b in at.button if b.label == "Delete chat").click().run()
    assert store.get_conversation(apples.id) is not None
    next(b for b in at.button if b.label == "Yes, delete").click().run()
    assert store.get_conversation(apples.id) is None
    assert [c.title for c in store.list_conversations()] == ["about bananas"]


def test_export_buttons_offer_three_formats(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=sse_body("ok"))
    at = new_app().run()
    at.chat_input[0].set_value("export me").run()
    labels = [e.proto.label for e in at.get("download_button")]
    assert labels == ["Markdown", "JSON", "Plain text"]


def test_exports_are_made_on_the_click_from_the_chat_as_it_is_then(
        mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Chat run builds no export file (the JSON carries every image of the chat): each is
    made when its button is clicked, from the messages saved by then."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    from atom_core.history import export

    made: list[str] = []
    real = export.to_markdown
    monkeypatch.setattr(export, "to_markdown", lambda c, ms: made.append(c.id) or real(c, ms))
    on_click: dict[str, object] = {}  # the file each download button makes when clicked
    add = MediaFileManager.add_deferred

    def keep(self: MediaFileManager, data: object, *args: object, **kw: object) -> str:
        file_id = add(self, data, *args, **kw)  # type: ignore[arg-type]
        on_click[file_id] = data
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=sse_body("ok"))
    at = new_app().run()
    at.chat_input[0].set_value("export me").run()
    at.chat_input[0].set_value("and me").run()
    assert made == []  # the page ran three times (and twice more after each reply): no file
    files = {b.proto.label: on_click[b.proto.deferred_file_id]
             for b in at.get("download_button")}
    assert list(files) == ["Markdown", "JSON", "Plain text"]
    markdown = files["Markdown"]()  # type: ignore[operator]
    assert len(made) == 1
    assert "export me" in markdown and "and me" in markdown, markdown
    doc = json.loads(files["JSON"]())  # type: ignore[operator]
    assert [m["content"] for m in doc["messages"]] == ["export me", "ok", "and me", "ok"]


def test_system_prompt_typed_before_the_first_message_is_kept(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    at = new_app().run()
    at.text_area(key="sys-new").set_value("You are a pirate.").run()
    at.chat_input[0].set_value("hello").run()
    body = json.loads(chat.calls.last.request.content)
    assert body["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert at.text_area(key=f"sys-{at.session_state.conversation_id}").value == "You are a pirate."


def test_a_damaged_history_file_is_announced_not_hidden(mock: respx.MockRouter,
                                                        isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    store = open_store(isolated_env)
    good = store.create_conversation(title="good chat")
    store.add_message(good.id, role="user", content="kept")
    bad = store.create_conversation(title="bad chat")
    store.add_message(bad.id, role="user", content="lost?")
    bad_file = isolated_env / "conversations" / f"{bad.id}.json"
    bad_file.write_text('{"truncated": ')
    from atom_core.history import reset_for_tests

    reset_for_tests()  # a fresh start of the app on this folder

    at = new_app().run()
    at.switch_page("pages/chat.py")
    next(b for b in at.sidebar.button if b.label == "bad chat").click().run()
    assert not at.exception
    (warning,) = [w for w in texts(at.warning) if "was damaged" in w]
    assert str(bad_file) in warning and ".corrupt-" in warning
    assert list(bad_file.parent.glob(f"{bad.id}.json.corrupt-*"))  # moved aside, not deleted
    next(b for b in at.sidebar.button if b.label == "good chat").click().run()
    assert texts(at.chat_message[0].markdown) == ["kept"]


def test_labels_follow_a_model_the_server_just_loaded_for_a_chat(mock: respx.MockRouter
                                                                ) -> None:
    """JIT: the first message to a model that is not loaded loads it. Right after the reply,
    the sidebar says so (no "Check again", no waiting for the status to age)."""
    import copy

    loaded_after = copy.deepcopy(NATIVE_MODELS)
    for m in loaded_after["models"]:
        if m["key"] != LOADED_MODEL and m["type"] == "llm":
            m["loaded_instances"] = [{"id": m["key"], "config": {"context_length": 4096}}]
    listing = mock.get("/api/v1/models")
    listing.respond(json=NATIVE_MODELS)
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=sse_body("hi"))
    at = new_app().run()
    picker = at.sidebar.selectbox(key="model")
    unloaded = next(m["key"] for m in NATIVE_MODELS["models"]
                    if m["type"] == "llm" and m["key"] != LOADED_MODEL)
    picker.set_value(unloaded).run()
    assert "○ Not loaded: the server loads it on the first message" in texts(at.sidebar.caption)
    listing.respond(json=loaded_after)  # the chat request below JIT-loads it
    at.chat_input[0].set_value("hello").run()
    assert not at.exception
    assert texts(at.sidebar.success) == ["LM Studio 0.4+ (native API) · 2 models, 2 loaded"]
    assert "● Loaded" in texts(at.sidebar.caption)


def test_a_blank_message_is_not_sent_and_makes_no_chat(
    mock: respx.MockRouter, isolated_env: Path
) -> None:
    """Issue 23: a message of only spaces and line breaks went to the model (and made a chat)."""
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    at = new_app().run()
    at.chat_input[0].set_value("  \n\t ").run()
    assert not at.exception
    assert chat.call_count == 0 and not at.chat_message
    assert "Type a message first" in " ".join(str(t.value) for t in at.toast)
    assert open_store(isolated_env).list_conversations() == []


def test_a_message_sent_with_a_pick_that_auto_unloads_is_sent(mock: respx.MockRouter,
                                                              isolated_env: Path) -> None:
    """Auto-unload on (Settings): a pick and a message that reach the app in one run (the user
    picked and sent while the machine was busy). The pick unloads the previous model and the
    message still goes to the new pick: the run that unloads does not restart itself and drop
    the message (issue 18)."""
    import copy

    from atom_core.settings.store import open_settings

    listing = copy.deepcopy(NATIVE_MODELS)
    qwen = next(m for m in listing["models"] if m["key"] == "qwen/qwen3-4b")
    qwen["loaded_instances"] = [{"id": "qwen/qwen3-4b", "config": {}}]
    mock.get("/api/v1/models").respond(json=listing)
    unload = mock.post("/api/v1/models/unload").respond(json={"instance_id": "qwen/qwen3-4b"})
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    settings = open_settings(isolated_env)
    settings.set_auto_unload(True)
    settings.note_loaded(BASE, "qwen/qwen3-4b")
    at = new_app().run()
    at.sidebar.selectbox(key="model").set_value("qwen/qwen3-4b").run()
    at.sidebar.selectbox(key="model").set_value(LOADED_MODEL)
    at.chat_input[0].set_value("still there?").run()
    assert not at.exception
    assert [json.loads(c.request.content) for c in unload.calls] == [
        {"instance_id": "qwen/qwen3-4b"}]
    assert chat.call_count == 1, "the message was dropped"
    assert json.loads(chat.calls.last.request.content)["model"] == LOADED_MODEL
    assert texts(at.chat_message[1].markdown) == ["ok"]


def test_a_pick_outlives_one_failed_listing(mock: respx.MockRouter) -> None:
    """A busy server fails one listing: the sidebar cannot draw the picker in that run. The pick
    is not forgotten: the next message goes to it, not to the first loaded model."""
    listing = mock.get("/api/v1/models")
    listing.respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                     content=sse_body("ok"))
    at = new_app().run()
    at.sidebar.selectbox(key="model").set_value("qwen/qwen3-4b").run()

    def check_again() -> None:
        next(b for b in at.sidebar.button if b.label == "Check again").click().run()

    listing.respond(500, json={"error": "busy"})
    check_again()
    assert texts(at.sidebar.warning) == ["The server failed (HTTP 500): busy"]
    assert not at.sidebar.selectbox
    listing.respond(json=NATIVE_MODELS)
    check_again()
    assert at.sidebar.selectbox(key="model").value == "qwen/qwen3-4b"
    at.chat_input[0].set_value("hello").run()
    assert json.loads(chat.calls.last.request.content)["model"] == "qwen/qwen3-4b"
