"""Files that never end up half written, folders only their owner can read, and one lock that
holds across processes. A base module: the history store and the settings store both write
through here (neither borrows the other's helper).

- `atomic_write_json`: a temp file beside the target (``.<name>.<random>.tmp``, mode 0600),
  flushed, fsynced, then ``os.replace()``d over the target: a crash leaves the old file or the
  new one, never half of one. A crash between the temp file and the rename leaves the temp file:
  `remove_temp_files` clears those at start-up.
- `private_dir`: makes a folder and every missing parent mode 0700 (``mkdir(parents=True)``
  gives the parents the umask's 0755), and tightens a folder an older ATOM made wider. Every
  folder ATOM makes goes through it.
- `process_lock`: an exclusive ``fcntl.flock`` on a lock file for the duration of a block, so
  the app, the command line and a second app process take turns. Closing the descriptor
  releases it, also when the process dies.
- `FolderLock`: what each store holds for a write: a thread lock plus `process_lock`,
  re-entrant within a thread (a write may call another write), with a hook that runs once the
  locks are taken at the outermost level (a schema check, a sweep of temp files).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the callers' thread locks still hold
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FolderLock",
    "atomic_write_json",
    "fsync_dir",
    "private_dir",
    "process_lock",
    "remove_temp_files",
    "temp_file_pattern",
]

_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


def temp_file_pattern() -> re.Pattern[str]:
    """Names atomic_write_json gives its temp files (``.<target name>.<random>.tmp``)."""
    return _TEMP_RE


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def private_dir(folder: Path) -> None:
    """Creates `folder` and any missing parent with mode 0700 (the umask cannot widen it). The
    one way ATOM makes a folder (a test holds every mkdir in atom_core to it).

    An existing `folder` that is wider (an older ATOM made images/ with the umask's 0755) is
    tightened to 0700, when it is the current user's and not a shared sticky folder like /tmp.
    Parents that already exist are left as they are: they are not ATOM's."""
    try:
        st = os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            if (st.st_mode & 0o077 and not st.st_mode & stat.S_ISVTX
                    and hasattr(os, "getuid") and st.st_uid == os.getuid()):
                os.chmod(folder, 0o700)
            return
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another thread or process made it meanwhile
        os.chmod(path, 0o700)


def atomic_write_json(path: Path, data: object, *, durable: bool = True) -> None:
    """Writes `data` as compact UTF-8 JSON, atomically (atomic_write_bytes)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Writes `data` to a temp file beside `path`, then renames it over `path`: a reader sees
    the old file or the new one, never half of one. The file ends up mode 0600 (mkstemp's),
    whatever the umask; `durable` fsyncs the file and its folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def process_lock(lock_file: Path) -> Iterator[None]:
    """Holds an exclusive lock on `lock_file` (created mode 0600) across processes for the
    block. Not re-entrant: a caller that nests must count its own depth."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


class FolderLock:
    """The thread lock and the cross-process lock on `folder / name`, for one write. Re-entrant
    in a thread: a nested `held()` only counts its depth (flock is not re-entrant: a second one
    would wait for itself). The outermost `held()` makes the folder (`private_dir`) and calls
    `on_enter` with both locks taken. `thread` alone serves readers that need no other process
    kept out."""

    def __init__(self, folder: Path, name: str,
                 on_enter: Callable[[], None] | None = None) -> None:
        self.folder = folder
        self.lock_file = folder / name
        self.thread = threading.RLock()
        self._on_enter = on_enter
        self._depth = 0

    @property
    def writing(self) -> bool:
        """A write of this thread holds the lock (only meaningful under `thread`)."""
        return self._depth > 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.thread:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            private_dir(self.folder)
            with process_lock(self.lock_file):
                self._depth = 1
                try:
                    if self._on_enter is not None:
                        self._on_enter()
                    yield
                finally:
                    self._depth = 0


def remove_temp_files(folder: Path, *, targets: frozenset[str] | None = None,
                      recursive: bool = True) -> int:
    """Deletes the temp files interrupted atomic writes left in `folder` (and below, if
    `recursive`); `targets` limits it to temp files of those file names. Call it holding the
    lock the writers of those files hold, so no write in flight loses its temp file. Returns
    how many were removed."""
    removed = 0
    walker = os.walk(folder) if recursive else [(str(folder), [], _names(folder))]
    for root, _dirs, names in walker:
        for name in names:
            match = _TEMP_RE.match(name)
            if match is None:
                continue
            if targets is not None and match.group("target") not in targets:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
