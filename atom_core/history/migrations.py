"""Schema versions of the on-disk history, and the forward-only migrations between them.

``<data_dir>/meta.json`` holds ``{"schema_version": N, ...}``. A store that finds an older
version runs MIGRATIONS[N - 1:] in order under its locks before its first write, recording the
new version after each step (a crash resumes at the next one); a newer version is read but never
written (SchemaTooNewError).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ..files import atomic_write_json

__all__ = ["META_FILE", "MIGRATIONS", "SCHEMA_VERSION", "Migration", "read_schema_version",
           "write_meta"]

META_FILE = "meta.json"

Migration = Callable[[Path], None]
"""Upgrades a data folder by one schema version, in place. It runs under the store's thread and
process locks, before any other write; the store records the new version in meta.json after it."""

# Forward-only: MIGRATIONS[i] upgrades schema version i + 1 to i + 2. Never edit or reorder a
# released entry; append a new one and SCHEMA_VERSION follows.
MIGRATIONS: tuple[Migration, ...] = ()
SCHEMA_VERSION: int = 1 + len(MIGRATIONS)


def read_schema_version(folder: Path) -> int | None:
    """The folder's schema version, None if it has no meta.json. Raises OSError, ValueError,
    TypeError or KeyError for a damaged one."""
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    version = meta["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"bad schema_version {version!r}")
    return version


def write_meta(folder: Path, version: int, *, durable: bool = True) -> None:
    meta = {
        "schema_version": version,
        "app": "ATOM",
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(folder / META_FILE, meta, durable=durable)
