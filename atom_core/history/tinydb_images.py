"""The TinyDB backend's images: files under images/<owner>/ (ImagesPart of TinyDBHistoryStore).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..files import (
    atomic_write_bytes,
    private_dir,
)
from .protocol import (
    StoredImage,
    check_image_ids,
    check_images,
)
from .tinydb_core import (
    EXT_IMAGE,
    IMAGE_EXT,
    StoreCore,
)

log = logging.getLogger(__name__)


class ImagesPart(StoreCore):
    """Images kept with a message (vision models)."""

    # -- images -------------------------------------------------------------------------------

    def _image_files(self, folder: Path, message_id: str) -> list[tuple[int, Path, str]]:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        prefix = f"{message_id}-"
        for name in names:
            if not name.startswith(prefix):
                continue
            index, _, ext = name[len(prefix):].partition(".")
            if index.isdigit() and ext in EXT_IMAGE:
                found.append((int(index), folder / name, EXT_IMAGE[ext]))
        return sorted(found)

    def save_images(self, owner_id: str, message_id: str, images: Sequence[StoredImage]) -> None:
        check_image_ids(owner_id, message_id)
        check_images(images)
        folder = self._images_dir / owner_id
        with self._writing():
            old = self._image_files(folder, message_id)
            if images:
                private_dir(folder)
            written = set()
            for n, image in enumerate(images):
                path = folder / f"{message_id}-{n}.{IMAGE_EXT[image.mime]}"
                atomic_write_bytes(path, image.data, durable=self._files.durable)
                written.add(path)
            for _, path, _ in old:
                if path not in written:
                    with contextlib.suppress(OSError):
                        path.unlink()

    def load_images(self, owner_id: str, message_id: str) -> list[StoredImage]:
        try:
            check_image_ids(owner_id, message_id)
        except ValueError:
            return []
        out = []
        for _, path, mime in self._image_files(self._images_dir / owner_id, message_id):
            try:
                out.append(StoredImage(mime, path.read_bytes()))
            except OSError:
                continue
        return out

    def delete_images(self, owner_id: str) -> None:
        try:
            check_image_ids(owner_id, "x")
        except ValueError:
            return
        with self._writing():
            shutil.rmtree(self._images_dir / owner_id, ignore_errors=True)

    def image_keys(self) -> list[tuple[str, str]]:
        keys = set()
        try:
            owners = os.listdir(self._images_dir)
        except FileNotFoundError:
            return []
        for owner in owners:
            try:
                names = os.listdir(self._images_dir / owner)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                stem, _, ext = name.rpartition(".")
                message, _, index = stem.rpartition("-")
                if ext in EXT_IMAGE and index.isdigit() and message:
                    keys.add((owner, message))
        return sorted(keys)

