"""The Stats page's runs frame kept between reruns: RunsCache asks the store only for what
changed (HistoryStore.runs_since) and rebuilds only that part of the frame."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from threading import Lock
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ..history import HistoryStore

from .frame import CATEGORY_COLUMNS, typed_runs

__all__ = ["RunsCache"]


@dataclass(slots=True)
class _Cached:
    token: Hashable
    version: int
    raw: pd.DataFrame  # one row per run, in the store's order (not sorted by time)
    unreadable: np.ndarray  # per row of `raw`: left out of `frame` (see runs_frame)
    frame: pd.DataFrame  # `raw` oldest first: what snapshot() hands out


class RunsCache:
    """Keeps the last runs frame per store and rebuilds only what changed.

    Each look asks the store for `runs_since(token)`: the runs that changed since the last
    look, as "keep the first `start` rows, then these". The TinyDB store answers with a
    directory scan when nothing changed and with the newest file's rows while runs are being
    recorded, so a live panel can refresh every few seconds at any history size; a backend that
    cannot tell answers with every row (start 0), which is a full rebuild. Each rebuild gets a
    new `version`, a cheap key for caching what is computed from the frame. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = Lock()
        self._cached: dict[str, _Cached] = {}
        self._versions = 0
        self.full_builds = 0  # how often the whole history was read (for tests and benches)

    def snapshot(self, store: HistoryStore) -> tuple[int, pd.DataFrame]:
        """(version, frame) of the store's runs now."""
        key = f"{type(store).__name__}:{store.data_dir}"
        with self._lock:
            hit = self._cached.get(key)
        delta = store.runs_since(hit.token if hit is not None else None)
        if hit is not None and delta.start > len(hit.raw):  # not what we hold: start over
            hit, delta = None, store.runs_since(None)
        if hit is not None and delta.start == len(hit.raw) and not delta.rows:
            with self._lock:
                hit.token = delta.token
                return hit.version, hit.frame
        added, bad = typed_runs(delta.rows)
        if hit is None or delta.start == 0:
            raw, unreadable = added, bad
            self.full_builds += 1
        else:
            kept = hit.raw if delta.start == len(hit.raw) else hit.raw.iloc[:delta.start]
            raw = _concat(kept, added, sort=False)
            unreadable = np.concatenate([hit.unreadable[:delta.start], bad])
        frame = raw[~unreadable].reset_index(drop=True) if unreadable.any() else raw
        if len(frame) and not frame["ts"].is_monotonic_increasing:
            frame = frame.sort_values("ts", kind="stable", ignore_index=True)
        frame.attrs["unreadable"] = int(unreadable.sum())
        with self._lock:
            self._versions += 1
            entry = _Cached(token=delta.token, version=self._versions, raw=raw,
                            unreadable=unreadable, frame=frame)
            self._cached[key] = entry
            return entry.version, entry.frame

    def frame(self, store: HistoryStore) -> pd.DataFrame:
        return self.snapshot(store)[1]

    def clear(self) -> None:
        with self._lock:
            self._cached.clear()


def _concat(a: pd.DataFrame, b: pd.DataFrame, *, sort: bool = True) -> pd.DataFrame:
    """Two runs frames as one, categoricals kept categorical (oldest first if `sort`)."""
    if b.empty:
        return a
    if a.empty:
        return b
    out = pd.concat([a, b], ignore_index=True)
    for col in (*CATEGORY_COLUMNS, "prompt_band"):
        if out[col].dtype != "category":
            out[col] = out[col].astype("category")
    if sort and not out["ts"].is_monotonic_increasing:
        out = out.sort_values("ts", kind="stable", ignore_index=True)
    return out


