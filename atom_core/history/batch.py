"""RunBatch: runs written in batches (a sweep's thousands), not one history write per run.

    with RunBatch(store) as batch:
        for record in records:
            batch.add(record.as_run("sweep"))

Each `add` keeps the run; the batch goes to the store (`add_runs`: one shard write per shard
it fills, one archive part for the shards it closes) once it holds `max_runs` runs or its
oldest run has waited `max_wait_s`, and whatever is left when the block ends, however it
ends (an exception, a Stop). A process killed mid-sweep loses at most the runs of the last
`max_wait_s`: the price of not rewriting a shard per run.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from ..runs import RunRecord

if TYPE_CHECKING:
    from .protocol import HistoryStore

__all__ = ["RunBatch"]


class RunBatch:
    def __init__(self, store: HistoryStore, *, max_runs: int = 500,
                 max_wait_s: float = 1.0) -> None:
        self.store = store
        self.max_runs = max_runs
        self.max_wait_s = max_wait_s
        self._runs: list[RunRecord] = []
        self._since = 0.0
        self.written = 0  # runs handed to the store so far

    def add(self, run: RunRecord) -> None:
        if not isinstance(run, RunRecord):
            raise TypeError(f"RunBatch.add takes a RunRecord, not {type(run).__name__}")
        if not self._runs:
            self._since = time.monotonic()
        self._runs.append(run)
        if len(self._runs) >= self.max_runs or time.monotonic() - self._since >= self.max_wait_s:
            self.flush()

    def flush(self) -> None:
        runs, self._runs = self._runs, []
        if runs:
            self.store.add_runs(runs)
            self.written += len(runs)

    def __enter__(self) -> RunBatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.flush()
