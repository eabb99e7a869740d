"""The TinyDB backend's files: each parsed with plain `json` and cached by (mtime_ns, size,
inode) (JsonFiles), and the TinyDB storage that writes them atomically (AtomicJSONStorage).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from ..files import (
    atomic_write_json,
    private_dir,
)
from .protocol import StoreError

log = logging.getLogger(__name__)

Tables = dict[str, dict[str, Any]]  # one TinyDB file: {table: {doc_id: document}}
StatKey = tuple[int, int, int]
# Parsed shards kept in memory, in bytes of JSON on disk (the parse takes about 2-3 times that):
# without a bound, a long session held its whole history (about 35 KB a 4-model arena round), and
# the app grew with every round (docs/BENCHMARKS.md, memory over a long session).
KEPT_BYTES = 2 << 20
# --- files ------------------------------------------------------------------------------------


class CorruptFile(Exception):
    """A file that exists but does not hold a TinyDB JSON document."""


def stat_key(st: os.stat_result) -> StatKey:
    # The inode changes on every os.replace(), so two writes within one mtime tick that happen
    # to leave the same size are still told apart.
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def parse_tables(raw: bytes) -> Tables:
    if not raw.strip():
        return {}  # TinyDB's own convention: an empty file is an empty database
    try:
        data = json.loads(raw)
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise CorruptFile(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(table, dict) and all(isinstance(doc, dict) for doc in table.values())
        for table in data.values()
    ):
        raise CorruptFile("not a TinyDB document")
    return data


def doc_number(doc_id: str) -> int:
    """A TinyDB document id as a number (-1 for a key that is not one, in a damaged file)."""
    return int(doc_id) if doc_id.isdigit() else -1


class JsonFiles:
    """Reads TinyDB files with plain `json` and caches each parse by (mtime_ns, size, inode).

    Files for which `keep(path)` is true (shards) stay cached up to `kept_bytes` of file size,
    least recently used first out; others (conversation files) live in a small LRU. Cached data
    is shared: callers must copy before handing it out. Not
    thread-safe on its own: the store calls it under its lock.
    """

    def __init__(
        self,
        *,
        durable: bool = True,
        keep: Callable[[Path], bool] | None = None,
        on_corrupt: Callable[[Path, str], Tables | None] | None = None,
        recent_limit: int = 64,
        kept_bytes: int = KEPT_BYTES,
    ) -> None:
        self.durable = durable
        self._keep = keep
        self._on_corrupt = on_corrupt
        self._recent_limit = recent_limit
        self._kept_bytes = kept_bytes
        self._kept: OrderedDict[Path, tuple[StatKey, Tables]] = OrderedDict()
        self._recent: OrderedDict[Path, tuple[StatKey, Tables]] = OrderedDict()

    def load(self, path: Path, *, cache: bool = True) -> Tables | None:
        """The file's tables, or None if it does not exist. A damaged file goes to on_corrupt."""
        try:
            key = stat_key(os.stat(path))
        except FileNotFoundError:
            self.forget(path)
            return None
        hit = self._kept.get(path) or self._recent.get(path)
        if hit is not None and hit[0] == key:
            (self._recent if path in self._recent else self._kept).move_to_end(path)
            return hit[1]
        try:
            data = self.parse(path)
        except FileNotFoundError:
            self.forget(path)
            return None
        except CorruptFile as exc:
            self.forget(path)
            if self._on_corrupt is None:
                raise StoreError(f"{path} could not be read: {exc}.", detail=str(exc)) from exc
            return self._on_corrupt(path, str(exc))
        if cache:
            self._put(path, key, data)
        return data

    @staticmethod
    def parse(path: Path) -> Tables:
        """Parses the file now, without the cache; raises CorruptFile or FileNotFoundError."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise CorruptFile(f"unreadable: {exc.strerror or exc}") from exc
        return parse_tables(raw)

    def save(self, path: Path, data: Tables) -> None:
        """Writes atomically and caches what was written (the caller gives up `data`)."""
        private_dir(path.parent)
        try:
            atomic_write_json(path, data, durable=self.durable)
        except BaseException:
            self.forget(path)
            raise
        self._put(path, stat_key(os.stat(path)), data)

    def forget(self, path: Path) -> None:
        self._kept.pop(path, None)
        self._recent.pop(path, None)

    def clear(self) -> None:
        self._kept.clear()
        self._recent.clear()

    def _put(self, path: Path, key: StatKey, data: Tables) -> None:
        if self._keep is not None and self._keep(path):
            self._kept[path] = (key, data)
            self._kept.move_to_end(path)
            # Least recently used shards go past the budget (file sizes, about a third of what
            # the parse holds in memory); the one just used always stays.
            size = sum(k[1] for k, _ in self._kept.values())
            while size > self._kept_bytes and len(self._kept) > 1:
                _, (old_key, _) = self._kept.popitem(last=False)
                size -= old_key[1]
            return
        if self._recent_limit <= 0:
            return
        self._recent[path] = (key, data)
        self._recent.move_to_end(path)
        while len(self._recent) > self._recent_limit:
            self._recent.popitem(last=False)


class AtomicJSONStorage(Storage):
    """A TinyDB storage that never leaves half a file: temp file, fsync, os.replace().

    Reads go through a shared parse cache when the store passes one (`files`), so a write to a
    large shard does not parse it again. Use as ``TinyDB(path, storage=AtomicJSONStorage)``.
    """

    def __init__(self, path: str, *, files: JsonFiles | None = None, durable: bool = True) -> None:
        super().__init__()
        self._path = Path(path)
        self._files = files if files is not None else JsonFiles(durable=durable, recent_limit=0)

    def read(self) -> dict[str, dict[str, Any]] | None:
        data = self._files.load(self._path)
        # TinyDB assigns into the outer dict before writing: give it its own.
        return None if data is None else dict(data)

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self._files.save(self._path, data)


def sorted_docs(table: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return sorted(((int(k), v) for k, v in table.items()), key=lambda item: item[0])


def tinydb_file(tables: dict[str, Sequence[dict[str, Any]]]) -> Tables:
    """The on-disk form of a TinyDB file holding `tables` (documents numbered from 1). For bulk
    builders such as the benchmark, which write files directly in the store's layout."""
    return {name: {str(i): doc for i, doc in enumerate(docs, 1)} for name, docs in tables.items()}
