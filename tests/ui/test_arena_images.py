"""An Arena race with an image in AppTest: the vision model gets it as an image part, the other
slot says in one sentence that its model can't read images, and sends nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import respx
from PIL import Image

from atom_core import arena, images
from atom_core.history import open_store
from tests.fixtures.apptest import new_app
from tests.fixtures.sse import SSE_HEADERS, sse_body


def model(key: str, vision: bool) -> dict[str, Any]:
    return {"type": "llm", "publisher": "test", "key": key, "display_name": key,
            "architecture": "llama", "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
            "size_bytes": 1_500_000_000, "params_string": "1B", "max_context_length": 32768,
            "format": "gguf", "capabilities": {"vision": vision, "trained_for_tool_use": False},
            "loaded_instances": [{"id": key, "config": {"context_length": 4096}}]}


MODELS = {"models": [model("t/eyes", True), model("t/text", False)]}


def test_a_race_with_an_image(mock: respx.MockRouter, isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=MODELS)
    bodies: list[dict[str, Any]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, headers=SSE_HEADERS, content=sse_body("A", " circle."))

    mock.post("/v1/chat/completions").mock(side_effect=reply)
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 200, 0)).save(picture, "WEBP")
    at.file_uploader(key="arena_images_0").set_value(
        ("dot.webp", picture.getvalue(), "image/webp")).run()
    at.chat_input(key="arena_prompt").set_value("What shape?").run()
    assert not at.exception
    (body,) = bodies  # only the vision model was asked
    assert body["model"] == "t/eyes"
    parts = body["messages"][-1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/webp;base64,")
    rnd = arena.load_rounds(open_store(isolated_env))[0]
    eyes, text = rnd.slots
    assert eyes.state == "complete" and eyes.content == "A circle."
    assert text.state == "error" and "t/text can't read images" in text.error
    assert any("t/text can't read images" in str(e.value) for e in at.error)
    assert len(images.load_images(open_store(isolated_env), rnd.id, "prompt")) == 1
    assert len(at.chat_message[0].get("image")) == 1  # the prompt's thumbnail
