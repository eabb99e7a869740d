"""Moved to atom_core.files (a base module both stores use); this name stays for callers that
still import it from here (launch/demo.py)."""

from ..files import (
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    private_dir,
    process_lock,
    remove_temp_files,
    temp_file_pattern,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "private_dir",
    "process_lock",
    "remove_temp_files",
    "temp_file_pattern",
]
