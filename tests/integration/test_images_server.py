"""Images for vision models through the command line, against the real HTTP double."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from atom_core.cli import main
from tests.fixtures.lmstudio_double import serve


def picture(fmt: str = "PNG", size: tuple[int, int] = (3000, 1500)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


CONFIG = {"models": [
    {"key": "vlm", "capabilities": {"vision": True}, "ttft_ms": 10, "token_gap_ms": 1,
     "reply": "A red square."},
    {"key": "text-only", "ttft_ms": 10, "token_gap_ms": 1},
]}


def test_cli_chat_sends_images_to_a_vision_model_and_refuses_others(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Integration (the real HTTP double)."""
    path = tmp_path / "red.jpg"
    path.write_bytes(picture("JPEG"))
    with serve(CONFIG) as double:
        monkeypatch.setenv("ATOM_SERVER_URL", double.url)
        out, err = io.StringIO(), io.StringIO()
        code = main(["chat", "--model", "vlm", "--image", str(path), "--image", str(path),
                     "--no-record", "What is this?"], out=out, err=err)
        assert code == 0, err.getvalue()
        refused_err = io.StringIO()
        refused = main(["chat", "--model", "text-only", "--image", str(path), "--no-record",
                        "What is this?"], out=io.StringIO(), err=refused_err)
        log = [r for r in double.log(wait=2) if r["path"] == "/v1/chat/completions"]
    assert "A red square." in out.getvalue()
    (sent,) = log  # the text-only model was never asked
    parts = sent["body"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert refused == 2 and "text-only can't read images" in refused_err.getvalue()
    bad = io.StringIO()
    assert main(["chat", "--model", "vlm", "--image", str(tmp_path / "missing.png"),
                 "--no-record", "x"], out=io.StringIO(), err=bad) == 2
    assert "can't read" in bad.getvalue()
