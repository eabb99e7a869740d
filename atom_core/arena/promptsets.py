"""Prompt sets: many prompts, run unattended across the Arena's slots, with optional checks.

The facade of three rooms: promptset_files (a set from a paste or a file, its checks),
promptset_store (saved sets, runs and their records, the plan) and this module (running a set,
its summary and check tables).

A run (`PromptSetRun`) sends every (prompt, slot, repeat) once, keeping K requests in flight with
`loadrun.run_load`, in an order shuffled by the run's seed. Each finished request is saved at
once to the "promptset_records" table (and the runs table, source "promptset"); a stopped run is
resumed by running the same run id again, which skips every triple that already has a successful
record. Failed requests are retried on resume.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AtomError
from ..measure.loadrun import run_load
from ..metrics import (
    DECODE_P50,
    E2E_P50,
    FIRST_ANSWER_P50,
    THINKING_P50,
    TTFT_P50,
    format_duration,
)
from ..types import ChatMessage, SamplingOptions

if TYPE_CHECKING:
    from ..history import HistoryStore
    from ..server.client import LMStudioClient

from .promptset_files import (
    Check,
    CheckKind,
    Format,
    PromptItem,
    PromptSet,
    PromptSetError,
    check_results,
    detect_format,
    load_prompt_file,
    parse_prompt_set,
    reply_pattern,
)
from .promptset_store import (
    RECORDS_TABLE,
    RUNS_TABLE,
    SETS_TABLE,
    SLOT_LABELS,
    PromptSetRecord,
    PromptSetRunSpec,
    RunSettings,
    RunSlot,
    finished_keys,
    get_run,
    list_runs,
    loaded_slots,
    new_run,
    plan,
    retarget,
    run_records,
    run_setups,
    save_set,
    saved_sets,
)

__all__ = [
    "RECORDS_TABLE", "RUNS_TABLE", "SETS_TABLE", "SLOT_LABELS", "Check", "CheckKind",
    "ClientFor", "Format", "Progress", "PromptItem", "PromptSet", "PromptSetError",
    "PromptSetRecord", "PromptSetRun", "PromptSetRunSpec", "RunSettings", "RunSlot",
    "check_results", "check_rows", "detect_format", "finished_keys", "get_run", "list_runs",
    "load_prompt_file", "loaded_slots", "new_run", "parse_prompt_set", "plan", "reply_pattern",
    "retarget", "run_records", "run_setups", "save_set", "saved_sets", "summary_rows",
]




@dataclass(frozen=True, slots=True)
class Progress:
    done: int  # finished triples, this session and before
    total: int
    eta_s: float | None  # None until a request finished in this session

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def sentence(self) -> str:
        eta = f" · about {format_duration(self.eta_s)} left" if self.eta_s is not None and \
            self.done < self.total else ""
        return f"{self.done} of {self.total} done{eta}"



ClientFor = Callable[[str], "LMStudioClient"]


class PromptSetRun:
    """Runs (or resumes) a saved run on a background thread; the caller polls.

    Records are saved on that thread as they finish, so nothing finished is lost if the page
    stops polling. `stop()` ends the requests in flight; they are not saved, and a resume
    runs them again."""

    def __init__(self, store: HistoryStore, run: PromptSetRunSpec,
                 client_for: ClientFor) -> None:
        self.store = store
        self.run = run
        self._client_for = client_for
        self.total = run.total
        self.already = len(finished_keys(store, run.id))
        self.jobs = plan(run, finished_keys(store, run.id))
        self.cancel = threading.Event()
        self._queue: queue.Queue[PromptSetRecord | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.new_records: list[PromptSetRecord] = []
        self.finished = False
        self.warming = False
        self._t0 = 0.0
        self._t_first = 0.0  # when warm-up ended and timed requests began

    def start(self) -> PromptSetRun:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name="atom-promptset", daemon=True)
        self._thread.start()
        return self

    def _work(self) -> None:
        try:
            if self.run.settings.warmup and self.jobs:
                self.warming = True
                self._warm_up()
                self.warming = False
            self._t_first = time.perf_counter()
            concurrency = max(1, self.run.settings.concurrency)
            for record in run_load(self.jobs, client=self._client_for, concurrency=concurrency,
                                   cancel=self.cancel):
                if record.cancelled or (self.cancel.is_set() and not record.ok):
                    continue  # cut by Stop: not a result; a resume runs it again
                done = PromptSetRecord.measured(self.run, record)
                done = dataclasses.replace(done, id=self.store.add(done))
                self.store.add_run(record.as_run("promptset", promptset_run=self.run.id,
                                                  contestant=done.contestant))
                self._queue.put(done)
        finally:
            self.warming = False
            self._queue.put(None)

    def _warm_up(self) -> None:
        """One short untimed request per distinct model, so the first timed one does not pay
        for cold caches."""
        seen = set()
        for slot in self.run.slots:
            key = (slot.server, slot.target)
            if key in seen or self.cancel.is_set():
                continue
            seen.add(key)
            try:
                self._client_for(slot.server).chat(
                    slot.target, [ChatMessage("user", "Hello")],
                    options=SamplingOptions(max_tokens=8))
            except AtomError:
                pass  # the timed requests will show the error

    def poll(self, timeout: float = 0.1) -> list[PromptSetRecord]:
        """Records finished since the last poll (waits up to `timeout` for the first)."""
        out: list[PromptSetRecord] = []
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                if item is None:
                    self.finished = True
                else:
                    out.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        self.new_records.extend(out)
        return out

    def stop(self) -> None:
        self.cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def progress(self) -> Progress:
        done = self.already + len(self.new_records)  # failures count as done until a resume
        eta = None
        if self.new_records and self._t_first:
            per = (time.perf_counter() - self._t_first) / len(self.new_records)
            eta = per * max(0, len(self.jobs) - len(self.new_records))
        return Progress(done=done, total=self.total, eta_s=eta)


# -- results --------------------------------------------------------------------------------------


def summary_rows(run: PromptSetRunSpec,
                 records: Sequence[PromptSetRecord]) -> list[dict[str, Any]]:
    """One row per slot: requests, failures, median TTFT / tok/s / end-to-end, median first
    answer and thinking time (None where the slot never reasoned), checks passed."""
    out = []
    for s, slot in enumerate(run.slots):
        rs = [r for r in records if r.slot == s]
        good = [r.metrics for r in rs if r.ok and r.metrics is not None]
        checks = [c for r in rs for c in r.checks]
        out.append({
            "slot": f"Model {slot.label}", "contestant": slot.contestant,
            "requests": len(rs), "ok": len(good), "failed": len(rs) - len(good),
            "ttft_p50_s": TTFT_P50.over(good), "tps_p50": DECODE_P50.over(good),
            "e2e_p50_s": E2E_P50.over(good),
            # reasoning models: when the answer began, and how long they thought first
            "first_answer_p50_s": FIRST_ANSWER_P50.over(good),
            "thinking_p50_s": THINKING_P50.over(good),
            "checks_passed": sum(1 for c in checks if c["passed"]),
            "checks_total": len(checks),
        })
    return out


def check_rows(run: PromptSetRunSpec,
               records: Sequence[PromptSetRecord]) -> list[dict[str, Any]]:
    """Pass/fail per prompt, check and slot: one row per (prompt, check), a column per slot
    holding "passed/total" over the repeats."""
    rows = []
    for p, item in enumerate(run.prompt_set.items):
        for c in item.checks:
            row: dict[str, Any] = {"prompt": item.name or _clip(item.prompt), "check": c.label}
            for s, slot in enumerate(run.slots):
                results = [x["passed"] for r in records
                           if r.prompt_index == p and r.slot == s
                           for x in r.checks if x["check"] == c.label]
                row[f"Model {slot.label}"] = (f"{sum(results)}/{len(results)}"
                                                 if results else "–")
            rows.append(row)
    return rows


def _clip(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"
