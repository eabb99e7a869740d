"""Images for vision models: prepared, refused for other models, sent, stored and exported."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import respx
from PIL import Image

from atom_core import images
from atom_core.chat import history_for_request
from atom_core.history import open_store
from atom_core.images import ImageError, prepare_image, vision_refusal
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage, ModelInfo
from tests.fixtures.sse import SSE_HEADERS, sse_body

BASE = "http://vision.test:1234"


def picture(fmt: str = "PNG", size: tuple[int, int] = (3000, 1500)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                       ("WEBP", "image/webp")])
def test_images_are_shrunk_to_the_longest_side_in_their_own_format(fmt: str, mime: str) -> None:
    att = prepare_image(picture(fmt), name="photo")
    assert (att.width, att.height) == (1024, 512) and att.mime == mime
    with Image.open(io.BytesIO(att.data)) as back:
        assert back.size == (1024, 512) and back.format == fmt
    assert att.data_url.startswith(f"data:{mime};base64,")
    assert base64.b64decode(att.data_url.split(",", 1)[1]) == att.data
    small = prepare_image(picture(fmt, (300, 200)), longest_side=1024)
    assert (small.width, small.height) == (300, 200)  # never enlarged


@pytest.mark.parametrize("raw", [picture("GIF", (10, 10)), b"not an image", b""])
def test_other_files_are_one_sentence(raw: bytes) -> None:
    with pytest.raises(ImageError) as e:
        prepare_image(raw, name="x.gif")
    assert "PNG, JPEG or WebP" in e.value.sentence


def test_only_models_whose_capabilities_say_vision_accept_images() -> None:
    vision = ModelInfo(key="qwen2-vl", capabilities=("vision",))
    assert vision_refusal("qwen2-vl", vision) is None
    assert vision_refusal("llava", ModelInfo(key="llava", type="vlm")) is None
    text = ModelInfo(key="qwen3-4b", capabilities=("tools",))
    sentence = vision_refusal("qwen3-4b", text)
    assert sentence is not None and sentence.count(". ") == 0 and "qwen3-4b" in sentence
    assert "can't tell" in (vision_refusal("ghost", None) or "")


def test_the_request_body_carries_the_image_part() -> None:
    att = prepare_image(picture())
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/v1/chat/completions").respond(
            200, headers=SSE_HEADERS, content=sse_body("A", " red", " square."))
        with LMStudioClient(BASE) as client:
            reply = client.chat("vlm", [ChatMessage("user", "What is this?",
                                                    images=(att.data_url,))])
        body = json.loads(route.calls[0].request.content)
    assert reply.content == "A red square."
    (msg,) = body["messages"]
    assert msg["content"][0] == {"type": "text", "text": "What is this?"}
    assert msg["content"][1] == {"type": "image_url", "image_url": {"url": att.data_url}}
    plain = ChatMessage("user", "hi").to_request()
    assert plain == {"role": "user", "content": "hi"}  # no images: the plain shape
    assert images.request_bytes([ChatMessage("user", "hi", images=(att.data_url,))]) > len(
        att.data) * 4 // 3


def test_images_are_stored_beside_the_conversation_sent_again_and_exported(
        isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="Pictures")
    user = store.add_message(conv.id, role="user", content="What colour?")
    att = prepare_image(picture(), name="red.png")
    assert images.save_images(store, conv.id, user.id, [att, att]) == 2
    kept = images.load_images(store, conv.id, user.id)
    assert [a.data for a in kept] == [att.data, att.data]
    assert [a.name for a in kept] == [f"{user.id}-0.png", f"{user.id}-1.png"]
    store.add_message(conv.id, role="assistant", content="Red.")
    history = history_for_request(store.messages(conv.id),
                                  images_for=images.images_loader(store, conv.id))
    assert history[0].images == (att.data_url, att.data_url) and history[1].images == ()
    doc = json.loads(images.json_export(conv, store.messages(conv.id), store))
    first, second = doc["messages"]
    assert [i["data_url"] for i in first["images"]] == [att.data_url, att.data_url]
    assert first["images"][0]["mime"] == "image/png" and "images" not in second
    images.delete_images(store, conv.id)
    assert images.load_images(store, conv.id, user.id) == []


def test_unsafe_ids_never_become_paths(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    with pytest.raises(ValueError):
        images.save_images(store, "../x", "m", [prepare_image(picture())])
    assert images.load_images(store, "..", "m") == []
    assert not (isolated_env.parent / "x").exists()




