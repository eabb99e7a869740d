"""Chat and Arena: image attachments for vision models (a sidebar uploader), thumbnails, the
refusal sentence for other models, and the JSON export with images. Drawing and session state
only; the logic is in atom_core.images."""

from collections.abc import Callable, Sequence

import streamlit as st

from atom_core import images
from atom_core.history import Message
from atom_core.images import ImageAttachment
from atom_core.render import safe_markdown
from atom_core.types import ChatMessage
from atom_core.words import plural
from pages.parts import ui


def picker(scope: str) -> list[ImageAttachment]:
    """The sidebar's "Attach images" box for `scope` ("chat" or "arena"): the images, prepared
    (shrunk), each unusable file said in one sentence."""
    n = st.session_state.setdefault(f"{scope}_images_n", 0)
    out = []
    with st.sidebar.expander("Attach images", icon=":material/image:"):
        files = st.file_uploader(
            "Images for a vision model", type=images.FILE_TYPES, accept_multiple_files=True,
            key=f"{scope}_images_{n}", help="PNG, JPEG or WebP. Sent with your next message "
            "to models that can read images.")
        side = st.number_input("Longest side (px)", 256, 4096, images.DEFAULT_LONGEST_SIDE,
                               step=128, key="image_longest_side",
                               help="Images are shrunk to this before sending.")
        for f in files or []:
            try:
                out.append(images.prepare_image(f.getvalue(), name=f.name,
                                                longest_side=int(side)))
            except images.ImageError as e:
                st.error(safe_markdown(e.sentence), icon=":material/broken_image:")
        if out:
            size = images.request_bytes([ChatMessage("user", "", images=tuple(
                a.data_url for a in out))])
            st.image([a.data for a in out], width=64)
            st.caption(f"{plural(len(out), 'image')} · {size / 1024:,.0f} KB added to the request")
    return out


def clear(scope: str) -> None:
    """Empties the uploader (a new key) once its images went out with a message."""
    st.session_state[f"{scope}_images_n"] = st.session_state.get(f"{scope}_images_n", 0) + 1


def keep(conversation_id: str, message_id: str, pictures: Sequence[ImageAttachment]) -> None:
    """Saves a message's images beside the conversation and empties the uploader."""
    if pictures:
        images.save_images(ui.store(), conversation_id, message_id, pictures)
        clear("chat")


def refusal(model: str, history: Sequence[ChatMessage]) -> str | None:
    """The sentence for sending images to a model that can't read them (None: fine)."""
    if not any(m.images for m in history):
        return None
    listing = ui.server_status().models
    return images.vision_refusal(model, listing.get(model) if listing is not None else None)


def thumbnails(m: Message) -> None:
    if m.role != "user":
        return
    pictures = images.load_images(ui.store(), m.conversation_id, m.id)
    if pictures:
        st.image([p.data for p in pictures], width=120)


def loader(conversation_id: str) -> Callable[[Message], tuple[str, ...]]:
    return images.images_loader(ui.store(), conversation_id)


def forget(conversation_id: str) -> None:
    images.delete_images(ui.store(), conversation_id)


def keep_round(round_id: str, pictures: Sequence[ImageAttachment]) -> None:
    """Saves an arena prompt's images beside its round and empties the uploader."""
    if pictures:
        images.save_images(ui.store(), round_id, "prompt", pictures)
        clear("arena")


def round_thumbnails(round_id: str) -> None:
    pictures = images.load_images(ui.store(), round_id, "prompt")
    if pictures:
        st.image([p.data for p in pictures], width=120)
