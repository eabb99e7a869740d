"""A Chat turn with an image over each chat route, against the real test server: the vision
model's reply names the very image ATOM prepared (format, pixel size, byte count, as the server
decoded it), and a model without vision is refused before anything is sent."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from atom_core import images
from atom_core.history.tinydb_store import open_store
from tests.fixtures.apptest import new_app
from tests.fixtures.lmstudio_double import DoubleServer, serve

pytestmark = pytest.mark.integration

CONFIG = {"models": [
    {"key": "v/eyes", "capabilities": {"vision": True}, "ttft_ms": 5, "token_gap_ms": 2,
     "reply": "A blue rectangle."},
    {"key": "t/blind", "ttft_ms": 5, "token_gap_ms": 2, "reply": "never"},
]}
PATHS = {"completions": "/v1/chat/completions", "native": "/api/v1/chat",
         "responses": "/v1/responses", "messages": "/v1/messages"}


def png(size: tuple[int, int] = (2048, 1024)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleServer]:
    with serve(CONFIG) as server:
        yield server


def chat_with_image(double: DoubleServer, monkeypatch: pytest.MonkeyPatch, model: str,
                    route: str) -> AppTest:
    double.reset()
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    at = new_app().run()
    at.sidebar.selectbox(key="model").set_value(model).run()
    at.selectbox(key="route-new").set_value(route).run()
    at.file_uploader(key="chat_images_0").set_value(("shot.png", png(), "image/png")).run()
    at.chat_input[0].set_value("What is in this picture?").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("route", ["responses", "messages", "completions", "native"])
def test_a_vision_model_sees_the_image_sent_over_each_route(
        route: str, double: DoubleServer, monkeypatch: pytest.MonkeyPatch,
        isolated_env: Path) -> None:
    at = chat_with_image(double, monkeypatch, "v/eyes", route)
    sent = images.prepare_image(png())  # what ATOM sends: shrunk to 1,024 px, still a PNG
    reply = [str(m.value) for m in at.chat_message[1].markdown]
    assert reply == [f"Saw 1 image: png 1024x512 ({len(sent.data)} bytes). A blue rectangle."]
    (request,) = [r for r in double.log(wait=2) if r["path"] == PATHS[route]]
    assert request["status"] == 200
    assert request["images"] == [{"media_type": "image/png", "format": "png", "width": 1024,
                                  "height": 512, "bytes": len(sent.data)}]
    (run,) = open_store(isolated_env).run_rows()
    assert run["route"] == route and run["ok"] is True


@pytest.mark.parametrize("route", ["responses", "messages"])
def test_a_model_without_vision_is_refused_before_sending(
        route: str, double: DoubleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    at = chat_with_image(double, monkeypatch, "t/blind", route)
    assert any("t/blind can't read images" in str(e.value) for e in at.error)
    assert [r for r in double.log(wait=1) if r["path"] in PATHS.values()] == []
