"""The LM Studio double understands images on /v1/responses (OpenAI `input_image` parts with a
data URL) and /v1/messages (Anthropic base64 `image` blocks): a vision model's reply names the
format, pixel size and byte count it decoded; bad parts and non-vision models get a 400."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fixtures.lmstudio_double import DoubleServer, image_format_and_size, serve

CONFIG = {"models": [
    {"key": "v/eyes", "capabilities": {"vision": True}, "ttft_ms": 5, "token_gap_ms": 1,
     "reply": "A small picture."},
    {"key": "t/blind", "ttft_ms": 5, "token_gap_ms": 1},
]}


def encoded(fmt: str, size: tuple[int, int], **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt, **save)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "save", "name"), [
    ("PNG", {}, "png"), ("JPEG", {}, "jpeg"), ("JPEG", {"progressive": True}, "jpeg"),
    ("GIF", {}, "gif"), ("WEBP", {"lossless": False}, "webp"),
    ("WEBP", {"lossless": True}, "webp")])
def test_the_double_reads_format_and_size_from_the_header(fmt: str, save: dict[str, Any],
                                                          name: str) -> None:
    assert image_format_and_size(encoded(fmt, (321, 123), **save)) == (name, 321, 123)


def test_the_double_reads_an_extended_webp_header() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (77, 55), (1, 2, 3, 100)).save(out, "WEBP", lossless=True, exif=b"Exif")
    assert out.getvalue()[12:16] == b"VP8X"
    assert image_format_and_size(out.getvalue()) == ("webp", 77, 55)
    assert image_format_and_size(b"not an image at all") is None


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleServer]:
    with serve(CONFIG) as server:
        yield server


@pytest.fixture
def http(double: DoubleServer) -> Iterator[httpx.Client]:
    double.reset()
    with httpx.Client(base_url=double.url, timeout=10) as c:
        yield c


PNG = encoded("PNG", (64, 48))
JPEG = encoded("JPEG", (40, 30))


def responses_body(model: str, *urls: str, **part: Any) -> dict[str, Any]:
    content = [{"type": "input_text", "text": "What is this?"}] + [
        {"type": "input_image", "image_url": u, **part} for u in urls]
    return {"model": model, "input": [{"role": "user", "content": content}]}


def messages_body(model: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"model": model, "max_tokens": 100, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, *blocks]}]}


def image_block(data: bytes, media_type: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": base64.b64encode(data).decode()}}


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_responses_a_vision_model_says_what_it_saw(http: httpx.Client,
                                                   double: DoubleServer) -> None:
    r = http.post("/v1/responses", json=responses_body(
        "v/eyes", data_url(PNG, "image/png"), data_url(JPEG, "image/jpeg"), detail="auto"))
    assert r.status_code == 200, r.text
    text = r.json()["output"][-1]["content"][0]["text"]
    assert text == (f"Saw 2 images: png 64x48 ({len(PNG)} bytes), jpeg 40x30 ({len(JPEG)} "
                    "bytes). A small picture.")
    (entry,) = double.log()
    assert [(i["format"], i["width"], i["bytes"]) for i in entry["images"]] == [
        ("png", 64, len(PNG)), ("jpeg", 40, len(JPEG))]


def test_messages_a_vision_model_says_what_it_saw(http: httpx.Client) -> None:
    r = http.post("/v1/messages", json=messages_body("v/eyes", image_block(PNG, "image/png")))
    assert r.status_code == 200, r.text
    assert r.json()["content"][-1]["text"].startswith(f"Saw 1 image: png 64x48 ({len(PNG)} "
                                                      "bytes).")


def test_a_model_without_vision_refuses_images_on_both_routes(http: httpx.Client) -> None:
    r = http.post("/v1/responses", json=responses_body("t/blind", data_url(PNG, "image/png")))
    assert r.status_code == 400 and "does not support image input" in r.json()["error"]["message"]
    r = http.post("/v1/messages", json=messages_body("t/blind", image_block(PNG, "image/png")))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # the same model answers text alone
    assert http.post("/v1/messages", json=messages_body("t/blind")).status_code == 200


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "input_image", "image_url": {"url": "data:image/png;base64,AAAA"}},
     "input[0].content[1].image_url"),  # the Chat Completions shape, not the Responses one
    ({"type": "input_image", "image_url": "https://example.test/cat.png"},
     "input[0].content[1].image_url"),  # a local server fetches nothing
    ({"type": "input_image", "image_url": "data:image/png;base64,@@@"},
     "input[0].content[1].image_url"),
    ({"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
     "input[0].content[1].type"),
])
def test_responses_rejects_image_parts_in_the_wrong_shape(http: httpx.Client,
                                                          part: dict[str, Any],
                                                          param: str) -> None:
    body = {"model": "v/eyes", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "x"}, part]}]}
    r = http.post("/v1/responses", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


@pytest.mark.parametrize(("block", "says"), [
    (image_block(PNG, "image/jpeg"), "does not match the provided media type image/jpeg"),
    (image_block(PNG, "image/bmp"), "media_type"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                  "data": "not base64!"}}, "Invalid base64"),
    ({"type": "image_url", "image_url": {"url": data_url(PNG, "image/png")}}, "type"),
])
def test_messages_rejects_image_blocks_in_the_wrong_shape(http: httpx.Client,
                                                          block: dict[str, Any],
                                                          says: str) -> None:
    r = http.post("/v1/messages", json=messages_body("v/eyes", block))
    assert r.status_code == 400 and says in r.json()["error"]["message"]


def test_chat_completions_and_native_see_images_too(http: httpx.Client) -> None:
    url = data_url(JPEG, "image/jpeg")
    completions = {"model": "v/eyes", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]}]}
    r = http.post("/v1/chat/completions", json=completions)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith(
        f"Saw 1 image: jpeg 40x30 ({len(JPEG)} bytes).")
    native = {"model": "v/eyes", "input": [{"type": "text", "content": "What is this?"},
                                           {"type": "image", "data_url": url}]}
    r = http.post("/api/v1/chat", json=native)
    assert r.status_code == 200, r.text
    assert f"Saw 1 image: jpeg 40x30 ({len(JPEG)} bytes)." in str(r.json()["output"])
    r = http.post("/v1/chat/completions", json={**completions, "model": "t/blind"})
    assert r.status_code == 400 and "does not support image input" in r.text
    r = http.post("/api/v1/chat", json={**native, "model": "t/blind"})
    assert r.status_code == 400 and "does not support image input" in r.text
