"""Chat with images in AppTest: attached in the sidebar, sent to a vision model as image parts,
shown as thumbnails, refused for other models before sending, and exported."""

from __future__ import annotations

import io
import json
from pathlib import Path

import respx
from PIL import Image

from atom_core import images
from atom_core.history import open_store
from tests.fixtures.apptest import new_app
from tests.fixtures.payloads import NATIVE_MODELS
from tests.fixtures.sse import SSE_HEADERS, sse_body

VISION_MODEL = "google/gemma-4-26b-a4b"  # capabilities.vision in the payload
TEXT_MODEL = "qwen/qwen3-4b"


def png(size: tuple[int, int] = (2048, 1024)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def test_an_image_goes_to_a_vision_model_and_stays_with_the_chat(mock: respx.MockRouter,
                                                                 isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("A", " blue", " rectangle."))
    at = new_app().run()
    at.file_uploader(key="chat_images_0").set_value(("shot.png", png(), "image/png")).run()
    assert not at.exception
    assert any("1 image ·" in str(c.value) for c in at.sidebar.caption)
    at.chat_input[0].set_value("What is in this picture?").run()
    assert not at.exception
    body = json.loads(chat.calls.last.request.content)
    parts = body["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "What is in this picture?"}
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = images.prepare_image(png())
    assert url == sent.data_url  # shrunk to 1,024 px before sending

    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    user = store.messages(conv.id)[0]
    (saved,) = images.load_images(open_store(isolated_env), conv.id, user.id)
    assert saved.data == sent.data
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert len(at.chat_message[0].get("image")) == 1  # the thumbnail
    assert at.file_uploader(key="chat_images_1").value in (None, [])  # emptied after sending

    export = next(b for b in at.get("download_button") if b.proto.label == "JSON")
    assert export is not None
    doc = json.loads(images.json_export(conv, store.messages(conv.id), store))
    assert doc["messages"][0]["images"][0]["data_url"] == url


def test_a_model_without_vision_refuses_before_sending(mock: respx.MockRouter,
                                                       isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    chat = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("never"))
    at = new_app().run()
    at.sidebar.selectbox(key="model").set_value(TEXT_MODEL).run()
    at.file_uploader(key="chat_images_0").set_value(("shot.png", png(), "image/png")).run()
    at.chat_input[0].set_value("What is in this picture?").run()
    assert not at.exception
    assert not chat.called  # nothing was sent
    errors = [str(e.value) for e in at.error]
    assert any(f"{TEXT_MODEL} can't read images" in e for e in errors)
    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    user, reply = store.messages(conv.id)
    assert user.content == "What is in this picture?"  # what was typed is kept
    assert len(images.load_images(open_store(isolated_env), conv.id, user.id)) == 1  # and the image
    assert reply.state == "error"
