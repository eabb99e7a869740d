"""glibc malloc settings for the long-running app process (the 500-race soak, docs/BENCHMARKS.md).

glibc raises its mmap threshold each time a large block that came from mmap is freed (up to
32 MB), after which large short-lived buffers (Streamlit's serialized messages, each redraw of a
live race) are carved out of the heap instead. Their holes are left between small long-lived
objects and can't be given back: in the soak, malloc's free-but-kept memory grew from 7 to 47 MB
over 90 races (RSS +0.5 MB a race) while the memory in use stayed at 52 MB. Setting the
threshold explicitly to glibc's own starting value (128 KiB) turns that adjustment off: large
buffers go to mmap and back to the system when freed, and RSS stays flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Mapping

from ..config import process_environ

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's default starting value, here fixed
ENV_NAMES = ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")  # the user's own choice wins


@functools.cache  # find_library runs `ldconfig -p`: once per process, not per rerun
def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None elsewhere (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def fix_mmap_threshold(environ: Mapping[str, str] | None = None,
                       mallopt: Callable[[int, int], int] | None = None) -> bool:
    """Fixes glibc's mmap threshold at 128 KiB for this process (idempotent and cheap: app.py
    calls it on every run). False when not applied: not glibc, or the environment already tunes
    malloc (MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES)."""
    env = process_environ() if environ is None else environ
    if any(env.get(n) for n in ENV_NAMES):
        return False
    call = mallopt or _glibc_mallopt()
    return call is not None and call(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
