"""Concurrency sweep: how many people can this machine serve with one model at once?

For each level K (default 1, 2, 4, 8) ATOM keeps K requests in flight (atom_core.measure.loadrun)
for a set number of requests, then compares per level:

- per-user speed: the median decode tok/s of one request (what each person sees),
- aggregate speed: every output token of the level over the level's wall time (what the
  machine delivers),
- TTFT p50/p90: how long people wait before anything appears.

In a run over several models each model gets its own K in flight (unless the caller shares
one pool: `shared=True`, like `bench --shared`), its aggregate speed is over its own active
window, and each gets its own verdict, which says when K was shared. The runs of a shared
sweep carry the tag `k_scope` = "shared" ("model" otherwise) so a sweep read back from history
says so too.
A level where any request waited on the client for a connection says so: that wait is ATOM's,
not the server's, and is kept out of TTFT.

The verdict is the largest level at which every level up to it meets a target such as
"at least 10 tok/s per user and TTFT p90 at most 2 s", with no failed request. Requiring the
levels below to pass too keeps one lucky high level from overstating capacity.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..metrics import E2E_P50, FIRST_ANSWER_P50, TTFT_P50, TTFT_P90, format_seconds
from ..types import ModelInfo, SamplingOptions
from .loadrun import (
    POOL_WAIT_NOTICE_S,
    ClientFor,
    LoadJob,
    LoadRecord,
    LoadSummary,
    run_load,
)

if TYPE_CHECKING:
    from ..server.client import LMStudioClient

DEFAULT_LEVELS = (1, 2, 4, 8)
MAX_LEVEL = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepTarget:
    """What "serves a person well" means for the verdict."""

    min_tps_per_user: float = 10.0  # median decode tok/s each request must still get
    max_ttft_p90_s: float = 2.0  # 9 in 10 people see a first token within this

    def describe(self) -> str:
        return (f"≥ {self.min_tps_per_user:g} tok/s per user and {TTFT_P90.label} ≤ "
                f"{format_seconds(self.max_ttft_p90_s)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LevelResult:
    """One concurrency level's figures."""

    concurrency: int
    requests: int
    ok: int
    errors: int
    tps_per_user_p50: float | None  # median per-request decode tok/s
    aggregate_tps: float | None  # all output tokens / wall time of the level
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    e2e_p50_s: float | None = None
    wall_s: float | None = None
    first_answer_p50_s: float | None = None  # reasoning models: when the answer begins
    pool_waited: int = 0  # requests that waited on the client for a connection
    pool_wait_max_s: float | None = None

    def note(self) -> str:
        """What a reader must know about this level's figures ("" when nothing)."""
        if not self.pool_waited:
            return ""
        most = format_seconds(self.pool_wait_max_s) if self.pool_wait_max_s else "?"
        return (f"{self.pool_waited} of {self.requests} requests at {self.concurrency} in flight "
                f"waited on ATOM's side before they were sent (for a connection, or a busy "
                f"client; up to {most}, not counted in TTFT)")

    def failures(self, target: SweepTarget) -> list[str]:
        """Why this level misses the target ([] when it meets it)."""
        why = []
        if self.errors:
            why.append(f"{self.errors} of {self.requests} requests failed")
        if self.tps_per_user_p50 is None or self.tps_per_user_p50 < target.min_tps_per_user:
            got = "no speed" if self.tps_per_user_p50 is None else (
                f"{self.tps_per_user_p50:.1f} tok/s per user")
            why.append(f"{got} (< {target.min_tps_per_user:g})")
        if self.ttft_p90_s is None or self.ttft_p90_s > target.max_ttft_p90_s:
            got = "no first token" if self.ttft_p90_s is None else (
                f"{TTFT_P90.label} {format_seconds(self.ttft_p90_s)}")
            why.append(f"{got} (> {format_seconds(target.max_ttft_p90_s)})")
        return why

    def meets(self, target: SweepTarget) -> bool:
        return not self.failures(target)

    @classmethod
    def from_summary(cls, concurrency: int, s: LoadSummary,
                     wall_s: float | None = None) -> LevelResult:
        """From the command line's per-model summary of one level."""
        return cls(concurrency=concurrency, requests=s.requests, ok=s.ok, errors=s.errors,
                   tps_per_user_p50=s.tokens_per_s_p50, aggregate_tps=s.aggregate_tokens_per_s,
                   ttft_p50_s=s.ttft_p50_s, ttft_p90_s=s.ttft_p90_s, e2e_p50_s=s.e2e_p50_s,
                   wall_s=s.active_s or wall_s, first_answer_p50_s=s.first_answer_p50_s,
                   pool_waited=s.pool_waited, pool_wait_max_s=s.pool_wait_max_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    target: SweepTarget
    best: int | None  # the largest level that meets the target (with every level below it)
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {"max_concurrency": self.best, "target": asdict(self.target),
                "sentence": self.sentence}


def verdict(levels: Sequence[LevelResult], target: SweepTarget,
            model: str | None = None, *, shared_by: int = 1) -> Verdict:
    """The largest level that meets `target`, every lower level meeting it too, in a sentence
    a person can act on. With `model`, the sentence names it (one verdict per model);
    `shared_by` > 1 says that each level's K in flight was shared by that many models, so
    this model had only part of it."""
    ordered = sorted(levels, key=lambda lv: lv.concurrency)
    if not ordered:
        return Verdict(target=target, best=None, sentence="No levels were run.")
    v = _verdict(ordered, target)
    if shared_by > 1:
        v = Verdict(target=target, best=v.best, sentence=(
            f"{v.sentence} (Each level's requests in flight were shared by {shared_by} "
            f"models, so this model had only part of them.)"))
    if model:
        v = Verdict(target=target, best=v.best, sentence=f"{model}: {v.sentence}")
    notes = [lv.note() for lv in ordered if lv.note()]
    if notes:
        v = Verdict(target=target, best=v.best,
                    sentence=v.sentence + " Note: " + "; ".join(notes) + ".")
    return v


def _verdict(ordered: Sequence[LevelResult], target: SweepTarget) -> Verdict:
    best: LevelResult | None = None
    first_miss: LevelResult | None = None
    for lv in ordered:
        if lv.meets(target):
            best = lv
            continue
        first_miss = lv
        break
    goal = target.describe()
    if best is None:
        assert first_miss is not None
        return Verdict(target=target, best=None, sentence=(
            f"Even one request at a time misses the target ({goal}): "
            f"{'; '.join(first_miss.failures(target))} at {first_miss.concurrency} in flight."))
    people = "1 person" if best.concurrency == 1 else f"{best.concurrency} people"
    speed = f"{best.tps_per_user_p50:.1f}" if best.tps_per_user_p50 is not None else "?"
    ttft = format_seconds(best.ttft_p90_s) if best.ttft_p90_s is not None else "?"
    sentence = (f"Serves {people} at once: at {best.concurrency} in flight each still gets "
                f"{speed} tok/s and {TTFT_P90.label} is {ttft} ({goal}).")
    if first_miss is not None:
        sentence += (f" At {first_miss.concurrency} it misses: "
                     f"{'; '.join(first_miss.failures(target))}.")
    elif best is ordered[-1] and len(ordered) > 0:
        sentence += " Every level tested passes: try higher levels to find the limit."
    return Verdict(target=target, best=best.concurrency, sentence=sentence)


def parse_levels(text: str) -> list[int]:
    """'1, 2,4,8' -> [1, 2, 4, 8] (sorted, without repeats). Raises ValueError with a sentence."""
    try:
        levels = sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise ValueError("Levels are whole numbers separated by commas, like 1,2,4,8.") from None
    if not levels:
        raise ValueError("Give at least one level, like 1,2,4,8.")
    if levels[0] < 1 or levels[-1] > MAX_LEVEL:
        raise ValueError(f"Levels must be between 1 and {MAX_LEVEL}.")
    return levels


def parallel_slots(model: ModelInfo | None) -> int | None:
    """How many requests the server runs at once for this model (LM Studio's `parallel` in
    `loaded_instances[].config`), when it says."""
    if model is None:
        return None
    for instance in model.loaded_instances:
        value = instance.config.get("parallel")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


K_SCOPES = ("model", "shared")  # the `k_scope` tag: K per model, or one K for all models


def sweep_jobs(*, model: str, prompt: str, level: int, requests: int, sweep_id: str,
               options: SamplingOptions | None = None, system_prompt: str | None = None,
               server: str = "", route: str = "completions",
               shared: bool = False) -> list[LoadJob]:
    """The jobs of one level; tags land on every run row (concurrency, sweep_id, request, the
    chat route each request takes, and k_scope: whether K was shared between models)."""
    return [LoadJob(model=model, prompt=prompt, system_prompt=system_prompt, options=options,
                    server=server, route=route,
                    tags={"concurrency": level, "sweep_id": sweep_id, "request": i,
                          "route": route, "k_scope": K_SCOPES[shared]})
            for i in range(requests)]


def run_sweep(
    client: LMStudioClient | ClientFor,
    *,
    model: str | Sequence[str],
    prompt: str,
    levels: Sequence[int] = DEFAULT_LEVELS,
    requests_per_level: int = 8,
    options: SamplingOptions | None = None,
    system_prompt: str | None = None,
    server: str = "",
    sweep_id: str | None = None,
    cancel: threading.Event | None = None,
    route: str = "completions",
    shared: bool = False,
) -> Iterator[LoadRecord]:
    """Runs every level in turn (lowest first), yielding each request's record as it finishes.
    Every request goes over `route` (server.routes.ROUTES). Record tags carry `concurrency`,
    `sweep_id`, `route` and `k_scope`; `LoadRecord.run_row("sweep")` stores them.

    `model` is one model or several: each makes `requests_per_level` requests per level, and
    each has its own K in flight, or with `shared=True` all of them share one K (only then
    does `k_scope` say "shared").

    Closing the iterator stops the sweep at once (requests in flight leave their streams);
    setting `cancel` stops it when the next request finishes."""
    if requests_per_level < 1:
        raise ValueError("requests per level must be at least 1")
    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    if not models:
        raise ValueError("a sweep needs at least one model")
    shared = shared and len(models) > 1
    sweep_id = sweep_id or new_sweep_id()
    cancel = cancel or threading.Event()
    for level in levels:
        if cancel.is_set():
            return
        per_model = [sweep_jobs(model=m, prompt=prompt, level=level,
                                requests=requests_per_level, sweep_id=sweep_id,
                                options=options, system_prompt=system_prompt, server=server,
                                route=route, shared=shared) for m in models]
        # interleaved, so a shared K takes the models' requests in turn
        jobs = [job for group in zip(*per_model, strict=True) for job in group]
        # run_load sets its event when the level ends: each level gets its own.
        level_cancel = threading.Event()
        records = run_load(jobs, client=client, concurrency=level, cancel=level_cancel,
                           shared=shared)
        assert isinstance(records, Generator)
        try:
            for record in records:
                yield record
                if cancel.is_set():
                    return
        finally:
            records.close()


# -- from stored runs ---------------------------------------------------------------------------


def levels_from_runs(df: pd.DataFrame) -> list[LevelResult]:
    """Per-level results of one sweep from its run rows (a runs frame, atom_core.stats).

    Aggregate tok/s is the level's completed output tokens over its wall time: from the first
    request's start (`ts`) to the last request's end (`ts + e2e_s`)."""
    from ..metrics import DECODE_P50, E2E_P50, FIRST_ANSWER_P50, TTFT_P50, TTFT_P90, Stat

    out = []
    rows = df[df["concurrency"].notna()]
    for level, part in rows.groupby("concurrency", sort=True):
        done = part[part["ok"]]
        # ts is when ATOM asked to send; e2e runs from the request sent, after any pool wait
        ends = part["ts"] + part["pool_wait_s"].fillna(0) + part["e2e_s"].fillna(0)
        wall = float(ends.max() - part["ts"].min()) if len(part) else None
        tokens = float(done["output_tokens"].fillna(0).sum())

        def of(stat: Stat, frame: pd.DataFrame = done) -> float | None:
            return stat.of(frame[stat.measure.name].tolist())

        out.append(LevelResult(
            concurrency=int(level), requests=len(part), ok=len(done),
            errors=len(part) - len(done),
            tps_per_user_p50=of(DECODE_P50),
            aggregate_tps=tokens / wall if wall and len(done) else None,
            ttft_p50_s=of(TTFT_P50), ttft_p90_s=of(TTFT_P90),
            e2e_p50_s=of(E2E_P50), wall_s=wall,
            first_answer_p50_s=of(FIRST_ANSWER_P50),
            pool_waited=int((part["pool_wait_s"].fillna(0) > POOL_WAIT_NOTICE_S).sum()),
            pool_wait_max_s=(float(part["pool_wait_s"].max())
                             if part["pool_wait_s"].notna().any() else None),
        ))
    return out


LEVEL_COLUMNS: dict[str, tuple[str, str]] = {
    "concurrency": ("In flight", "int"),
    "requests": ("Requests", "int"),
    "errors": ("Failed", "int"),
    "tps_per_user_p50": ("Per-user tok/s p50", "tps"),
    "aggregate_tps": ("Aggregate tok/s", "tps"),
    **{s.key: (s.header, "seconds") for s in (TTFT_P50, TTFT_P90, FIRST_ANSWER_P50, E2E_P50)},
    "pool_waited": ("Waited for a connection", "int"),
    "wall_s": ("Wall time (s)", "seconds"),
}


def levels_frame(levels: Sequence[LevelResult]) -> pd.DataFrame:
    """The per-level results as a table (one row per level), for charts and downloads."""
    cols = list(LevelResult.__dataclass_fields__)
    return pd.DataFrame([asdict(lv) for lv in levels], columns=cols)


def sweeps_in_history(df: pd.DataFrame) -> pd.DataFrame:
    """Sweeps found in a runs frame, newest first, one entry per model of a sweep: sweep_id,
    model, server, route, started (epoch s), levels (sorted tuple), requests, models (how many
    the sweep ran), shared_by (how many models shared each level's K: 1 unless the sweep
    shared it), label (for a picker;
    names the route unless it is chat completions, and a shared K). Sweep runs recorded
    without a sweep_id (older command-line sweeps) are grouped per model and server."""
    rows = df[(df["source"] == "sweep") & df["concurrency"].notna()]
    cols = ["sweep_id", "model", "server", "route", "started", "levels", "requests",
            "models", "shared_by", "label"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    key = rows["sweep_id"].where(rows["sweep_id"] != "",
                                 "untagged:" + rows["model"].astype(str) + "@"
                                 + rows["server"].astype(str))
    out = []
    for sweep_id, whole in rows.groupby(key, sort=False):
        shared = "k_scope" in whole and bool((whole["k_scope"] == "shared").any())
        n_models = whole["model"].astype(str).nunique()
        for model, part in whole.groupby(whole["model"].astype(str), sort=False):
            started = float(part["ts"].min())
            levels = tuple(sorted({int(x) for x in part["concurrency"]}))
            route = str(part["route"].iloc[0]) if "route" in part else "completions"
            via = "" if route == "completions" else f" via {route}"
            scope = f" · K shared by {n_models} models" if shared and n_models > 1 else ""
            out.append({
                "sweep_id": str(sweep_id), "model": str(model),
                "server": str(part["server"].iloc[0]), "route": route, "started": started,
                "levels": levels, "requests": len(part), "models": n_models,
                "shared_by": n_models if shared else 1,
                "label": f"{datetime.fromtimestamp(started):%Y-%m-%d %H:%M} · {model}{via} · "
                         f"levels {', '.join(map(str, levels))} · {len(part)} requests"
                         f"{scope}"})
    frame = pd.DataFrame(out, columns=cols)
    # newest sweep first; a sweep's models in the order they first ran
    newest = frame.groupby("sweep_id", sort=False)["started"].transform("min")
    order = sorted(range(len(frame)), key=lambda i: (-newest[i], i))
    return frame.iloc[order].reset_index(drop=True)


def sweep_runs(df: pd.DataFrame, sweep_id: str, model: str | None = None) -> pd.DataFrame:
    """The run rows of one sweep (as listed by sweeps_in_history); with `model`, that model's
    only."""
    rows = df[(df["source"] == "sweep") & df["concurrency"].notna()]
    if sweep_id.startswith("untagged:"):
        untagged, _, server = sweep_id[len("untagged:"):].partition("@")
        return rows[(rows["sweep_id"] == "") & (rows["model"] == untagged)
                    & (rows["server"] == server)]
    rows = rows[rows["sweep_id"] == sweep_id]
    return rows if model is None else rows[rows["model"] == model]


def level_rows(records: Sequence[LoadRecord]) -> list[Mapping[str, Any]]:
    """Run rows for records that are not (yet) stored: the live view of a running sweep."""
    return [r.run_row("sweep") for r in records]
