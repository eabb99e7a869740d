"""Memory probe for bench/bench_soak.py --probe: loaded into `streamlit run` through PYTHONPATH.

On SIGUSR1 the app process writes one JSON line to $ATOM_SOAK_PROBE: RSS, glibc malloc's own
figures (mallinfo2), pyarrow's memory pool and the sizes of Streamlit's per-process stores
(media files, deferred downloads, dataframe sources, sessions) and, with ATOM_SOAK_PROBE_TRACE=N
(frames), tracing from the first row on and a tracemalloc snapshot with each later row; on
SIGUSR2 the same after malloc_trim(0) and pyarrow's release_unused().
Bench-only: nothing in the app imports this, and without the env variable it does nothing.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo() -> dict[str, float]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    mb = 1 << 20
    return {"malloc_arena_mb": round(m.arena / mb, 1), "malloc_mmap_mb": round(m.hblkhd / mb, 1),
            "malloc_used_mb": round(m.uordblks / mb, 1),
            "malloc_free_mb": round(m.fordblks / mb, 1)}


def _status() -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                  .splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "threads": int(fields["Threads"])}


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator (its own 1 MiB arenas, outside malloc's figures)."""
    import re
    import tempfile
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    found = {k: int(v.replace(",", "")) for k, v in re.findall(
        r"^# (arenas allocated current|bytes in allocated blocks|bytes in available blocks)"
        r"\s*=\s*([\d,]+)", text, re.M)}
    mb = 1 << 20
    return {"pymalloc_arenas": found.get("arenas allocated current", -1),
            "pymalloc_used_mb": round(found.get("bytes in allocated blocks", 0) / mb, 1),
            "pymalloc_free_mb": round(found.get("bytes in available blocks", 0) / mb, 1)}


def _smaps() -> dict[str, float]:
    """Resident memory by kind of mapping: malloc's main heap, anonymous (thread arenas,
    pymalloc arenas, mimalloc, thread stacks), files (libraries)."""
    rss = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:  # a mapping's first line
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "file" if name.startswith("/") else "anon"
        elif head and head[0] == "Rss:":
            rss[kind] += int(head[1])
    return {f"rss_{k}_mb": round(v / 1024, 1) for k, v in rss.items()}


def _arrow() -> dict[str, Any]:
    pa = sys.modules.get("pyarrow")
    if pa is None:
        return {"arrow": "not loaded"}
    pool = pa.default_memory_pool()
    return {"arrow_backend": pool.backend_name,
            "arrow_allocated_mb": round(pool.bytes_allocated() / (1 << 20), 2),
            "arrow_max_mb": round(pool.max_memory() / (1 << 20), 2)}


def _streamlit() -> dict[str, Any]:
    try:
        from streamlit.runtime import Runtime
        rt = Runtime.instance()
    except Exception:  # noqa: BLE001 - not started yet
        return {}
    out: dict[str, Any] = {}
    mfm = rt.media_file_mgr
    out["media_files"] = len(getattr(mfm, "_file_metadata", {}))
    out["deferred_downloads"] = len(getattr(mfm, "_deferred_callables", {}))
    storage = getattr(mfm, "_storage", None)
    files = getattr(storage, "_files_by_id", {})
    out["media_bytes_kb"] = round(sum(len(getattr(f, "content", b"")) for f in files.values())
                                  / 1024, 1)
    dsm = rt.dataframe_source_mgr
    out["df_sources"] = sum(len(v) for v in vars(dsm).values() if isinstance(v, dict))
    sessions = rt._session_mgr.list_sessions()
    out["sessions"] = len(sessions)
    sizes = []
    for info in sessions:
        state = info.session.session_state
        sizes.append(len(list(state.filtered_state.keys())) if hasattr(state, "filtered_state")
                     else -1)
    out["session_state_keys"] = sizes
    return out


def _dump(*_: Any) -> None:
    threading.Thread(target=_write, daemon=True).start()  # off the signal frame


def _trim_and_dump(*_: Any) -> None:
    threading.Thread(target=_write, args=(True,), daemon=True).start()


def _write(trim: bool = False) -> None:
    if trim:  # how much of the RSS is memory freed but kept by an allocator
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        if (pa := sys.modules.get("pyarrow")) is not None:
            pa.default_memory_pool().release_unused()
    row: dict[str, Any] = {"t": time.time(), "trimmed": trim, **_status(), **_mallinfo(),
                           **_pymalloc(), **_smaps(), **_arrow()}
    try:
        row.update(_streamlit())
    except Exception as e:  # noqa: BLE001 - a probe never breaks the app
        row["streamlit_error"] = repr(e)
    if os.environ.get("ATOM_SOAK_PROBE_OBJECTS"):
        row["py_objects"] = len(gc.get_objects())
    frames = int(os.environ.get("ATOM_SOAK_PROBE_TRACE") or 0)
    if frames and not tracemalloc.is_tracing():  # from the first row on: what stays after it
        tracemalloc.start(frames)
    elif frames:  # a snapshot beside the row
        gc.collect()
        row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / (1 << 20), 2)
        row["snapshot"] = f"{os.environ['ATOM_SOAK_PROBE']}.{time.time():.0f}.snap"
        tracemalloc.take_snapshot().dump(row["snapshot"])
    with open(os.environ["ATOM_SOAK_PROBE"], "a") as f:
        f.write(json.dumps(row) + "\n")


if os.environ.get("ATOM_SOAK_PROBE"):
    signal.signal(signal.SIGUSR1, _dump)
    signal.signal(signal.SIGUSR2, _trim_and_dump)
