"""Images for vision models: checked, resized, stored beside the conversation, sent as data URLs.

- `prepare_image()` reads a PNG, JPEG or WebP (nothing else), applies its EXIF rotation, shrinks
  it so its longest side is at most `longest_side` pixels (default 1,024: what vision models
  tile or downscale to anyway; a phone photo drops from megabytes to a few hundred KB) and
  re-encodes it in its own format. Pillow comes with Streamlit.
- `vision_refusal()` is the one sentence for a model whose capabilities don't say "vision":
  the request is never sent.
- Files live in the data folder, `images/<conversation or round id>/<message id>-<n>.<ext>`
  (`save_images()`, `load_images()`); the message keeps no copy, so the history files stay
  small. `json_export()` puts them into a conversation's JSON export as data URLs.
- `ChatMessage(images=...)` sends them as OpenAI `image_url` content parts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AtomError
from .types import ChatMessage, ModelInfo

if TYPE_CHECKING:
    from .history.tinydb_store import Conversation, Message

DEFAULT_LONGEST_SIDE = 1024
MAX_INPUT_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 100_000_000  # refuse decompression bombs before decoding
FORMATS = {"PNG": ("image/png", "png"), "JPEG": ("image/jpeg", "jpg"),
           "WEBP": ("image/webp", "webp")}
FILE_TYPES = ["png", "jpg", "jpeg", "webp"]  # for upload widgets
FOLDER = "images"
_EXT_MIME = {ext: mime for mime, ext in FORMATS.values()}
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class ImageError(AtomError):
    """An image that can't be used (not PNG/JPEG/WebP, damaged, too big)."""


class VisionRefused(AtomError):
    """The model can't read images: the request is not sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageAttachment:
    """One image ready to send: encoded bytes and what they are."""

    mime: str
    data: bytes
    width: int
    height: int
    name: str = ""  # the file name the user gave (shown, never used as a path)

    @property
    def ext(self) -> str:
        return next(ext for mime, ext in FORMATS.values() if mime == self.mime)

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


def prepare_image(raw: bytes, *, name: str = "",
                  longest_side: int = DEFAULT_LONGEST_SIDE) -> ImageAttachment:
    """Checks, rotates and shrinks an image. Raises ImageError with one sentence."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    label = f"“{name}”" if name else "That file"
    if len(raw) > MAX_INPUT_BYTES:
        raise ImageError(f"{label} is over {MAX_INPUT_BYTES // (1024 * 1024)} MB: too big to "
                         "send to a model.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(raw))
            fmt = img.format or ""
            if fmt not in FORMATS:
                raise ImageError(f"{label} is not a PNG, JPEG or WebP image.")
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{label} has too many pixels to be read safely.")
            img.load()
            img = ImageOps.exif_transpose(img)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        raise ImageError(f"{label} is not a PNG, JPEG or WebP image that can be read.") from None
    if max(img.size) > longest_side > 0:
        img.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    mime, _ = FORMATS[fmt]
    out = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(out, "JPEG", quality=90)
    elif fmt == "WEBP":
        img.save(out, "WEBP", quality=90)
    else:
        img.save(out, "PNG", optimize=True)
    return ImageAttachment(mime=mime, data=out.getvalue(), width=img.width, height=img.height,
                           name=name[:200])


def accepts_images(info: ModelInfo | None) -> bool:
    """True when the server says the model reads images (capability "vision", or LM Studio
    0.3's model type "vlm")."""
    return info is not None and ("vision" in info.capabilities or info.type == "vlm")


def vision_refusal(model: str, info: ModelInfo | None) -> str | None:
    """The sentence to show instead of sending images to a model that can't read them; None
    when it can."""
    if accepts_images(info):
        return None
    if info is None:
        return (f"ATOM can't find {model} in the server's model list, so it can't tell whether "
                "it reads images: the images were not sent.")
    return (f"{model} can't read images (the server doesn't list vision among its "
            "capabilities): pick a vision model, or send the text alone.")


def vision_errors(models: Mapping[int, ModelInfo | None],
                  names: Mapping[int, str]) -> dict[int, VisionRefused]:
    """Per race slot whose model can't read images: the error it ends with, unsent."""
    out = {}
    for i, name in names.items():
        sentence = vision_refusal(name, models.get(i))
        if sentence is not None:
            out[i] = VisionRefused(sentence)
    return out


def request_bytes(messages: Sequence[ChatMessage]) -> int:
    """How many bytes the messages add to a request body (images as data URLs included)."""
    return len(json.dumps([m.to_request() for m in messages]).encode())


# -- stored beside the conversation ---------------------------------------------------------------


def _folder(data_dir: Path, owner_id: str) -> Path:
    if not _SAFE_ID.match(owner_id) or owner_id in (".", ".."):
        raise ValueError(f"not a usable id for a folder: {owner_id!r}")
    return Path(data_dir) / FOLDER / owner_id


def save_images(data_dir: Path, owner_id: str, message_id: str,
                attachments: Sequence[ImageAttachment]) -> list[str]:
    """Writes the images of one message; returns their file names."""
    if not attachments:
        return []
    folder = _folder(data_dir, owner_id)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n, att in enumerate(attachments):
        name = f"{message_id}-{n}.{att.ext}"
        if not _SAFE_ID.match(name):
            raise ValueError(f"not a usable message id: {message_id!r}")
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(att.data)
        tmp.replace(folder / name)
        names.append(name)
    return names


def load_images(data_dir: Path, owner_id: str, message_id: str) -> list[ImageAttachment]:
    """The images saved with a message, in the order they were attached ([] for none)."""
    try:
        folder = _folder(data_dir, owner_id)
    except ValueError:
        return []
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob(f"{glob_escape(message_id)}-*"):
        stem, _, ext = path.name.rpartition(".")
        index = stem.rpartition("-")[2]
        if ext in _EXT_MIME and index.isdigit():
            found.append((int(index), path, _EXT_MIME[ext]))
    out = []
    for _, path, mime in sorted(found):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        out.append(ImageAttachment(mime=mime, data=data, width=0, height=0, name=path.name))
    return out


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def delete_images(data_dir: Path, owner_id: str) -> None:
    """Removes every image of a conversation (or round)."""
    try:
        folder = _folder(data_dir, owner_id)
    except ValueError:
        return
    shutil.rmtree(folder, ignore_errors=True)


def images_loader(data_dir: Path, owner_id: str) -> Callable[[Message], tuple[str, ...]]:
    """For chat.history_for_request: a stored message -> the data URLs of its images."""
    def load(m: Message) -> tuple[str, ...]:
        return tuple(a.data_url for a in load_images(data_dir, owner_id, m.id))
    return load


def json_export(conversation: Conversation, messages: Sequence[Message], data_dir: Path) -> str:
    """The conversation's JSON export with each message's images as data URLs
    (`"images": [{"name", "mime", "data_url"}]`)."""
    from .history.export import to_json

    doc: dict[str, Any] = json.loads(to_json(conversation, messages))
    for entry, m in zip(doc.get("messages", []), messages, strict=False):
        pictures = load_images(data_dir, conversation.id, m.id)
        if pictures:
            entry["images"] = [{"name": a.name, "mime": a.mime, "data_url": a.data_url}
                               for a in pictures]
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
