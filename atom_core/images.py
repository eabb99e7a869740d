"""Images for vision models: checked, resized, stored beside the conversation, sent as data URLs.

- `prepare_image()` reads a PNG, JPEG or WebP (nothing else), applies its EXIF rotation, shrinks
  it so its longest side is at most `longest_side` pixels (default 1,024: what vision models
  tile or downscale to anyway; a phone photo drops from megabytes to a few hundred KB) and
  re-encodes it in its own format. Pillow comes with Streamlit.
- `vision_refusal()` is the one sentence for a model whose capabilities don't say "vision":
  the request is never sent.
- They are kept in the history beside the message they came with, keyed by conversation (or
  arena round) id and message id, through the HistoryStore protocol (`save_images()`,
  `load_images()`); the message itself keeps no copy, so the history's records stay small.
  `json_export()` puts them into a conversation's JSON export as data URLs; the whole-history
  export (history.backup) carries them too.
- `ChatMessage(images=...)` sends them as OpenAI `image_url` content parts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import AtomError
from .history.protocol import StoredImage
from .types import ChatMessage, ModelInfo

if TYPE_CHECKING:
    from .history import Conversation, HistoryStore, Message

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


# -- kept with the conversation (through the HistoryStore) ---------------------------------------


def save_images(store: HistoryStore, owner_id: str, message_id: str,
                attachments: Sequence[ImageAttachment]) -> int:
    """Keeps the images of one message (of a conversation or arena round) in the history;
    returns how many. Bad ids raise ValueError."""
    if not attachments:
        return 0
    store.save_images(owner_id, message_id, [StoredImage(a.mime, a.data) for a in attachments])
    return len(attachments)


def load_images(store: HistoryStore, owner_id: str, message_id: str) -> list[ImageAttachment]:
    """The images saved with a message, in the order they were attached ([] for none)."""
    out = []
    for n, image in enumerate(store.load_images(owner_id, message_id)):
        ext = next((e for mime, e in FORMATS.values() if mime == image.mime), "img")
        out.append(ImageAttachment(mime=image.mime, data=image.data, width=0, height=0,
                                   name=f"{message_id}-{n}.{ext}"))
    return out


def delete_images(store: HistoryStore, owner_id: str) -> None:
    """Removes every image of a conversation (or round)."""
    store.delete_images(owner_id)


def images_loader(store: HistoryStore, owner_id: str) -> Callable[[Message], tuple[str, ...]]:
    """For chat.history_for_request: a stored message -> the data URLs of its images."""
    def load(m: Message) -> tuple[str, ...]:
        return tuple(a.data_url for a in load_images(store, owner_id, m.id))
    return load


def json_export(conversation: Conversation, messages: Sequence[Message],
                store: HistoryStore) -> str:
    """The conversation's JSON export with each message's images as data URLs
    (`"images": [{"name", "mime", "data_url"}]`)."""
    from .history.export import to_json

    doc: dict[str, Any] = json.loads(to_json(conversation, messages))
    for entry, m in zip(doc.get("messages", []), messages, strict=False):
        pictures = load_images(store, conversation.id, m.id)
        if pictures:
            entry["images"] = [{"name": a.name, "mime": a.mime, "data_url": a.data_url}
                               for a in pictures]
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
