"""What a prompt-set run keeps: the saved sets ("prompt_sets"), each run's set, slots and
settings (PromptSetRunSpec, "promptset_runs"), and one PromptSetRecord per finished request
("promptset_records"); and the plan of (prompt, slot, repeat) triples a run or its resume sends.
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..measure import hardware
from ..measure.loadrun import LoadJob, LoadRecord
from ..metrics import GenerationMetrics
from ..records import stored_record
from ..types import SamplingOptions

if TYPE_CHECKING:
    from ..history import HistoryStore
    from ..types import ModelList
    from .setup import Prepared, SlotSetup

from .promptset_files import (
    PromptSet,
    PromptSetError,
    check_results,
)

SETS_TABLE = "prompt_sets"
RUNS_TABLE = "promptset_runs"
RECORDS_TABLE = "promptset_records"
SLOT_LABELS = "ABCD"


# -- saved sets -----------------------------------------------------------------------------------


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class SavedPromptSet:
    """A prompt set saved for later, as the "prompt_sets" table keeps it: the set's own JSON
    (PromptSet.to_dict) with the row's id and time."""

    TABLE: ClassVar[str] = SETS_TABLE

    prompt_set: PromptSet
    ts: float = field(default_factory=time.time)
    id: str = ""  # the store's; "" before it is saved

    def to_record(self) -> dict[str, Any]:
        return {**self.prompt_set.to_dict(), "ts": self.ts, "id": self.id}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> SavedPromptSet:
        """Raises KeyError, TypeError or ValueError for a row that is not a set (an item
        without a prompt, items or checks that are not lists of objects)."""
        if not isinstance(row.get("items"), list) or not all(
                isinstance(i, Mapping) and isinstance(i.get("checks") or [], list)
                for i in row["items"]):
            raise ValueError("a saved prompt set's items are not a list of prompts")
        ts = row.get("ts")
        return cls(prompt_set=PromptSet.from_dict(dict(row)), id=str(row.get("id") or ""),
                   ts=float(ts) if isinstance(ts, int | float) else 0.0)

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        cls.from_record(row)


def save_set(store: HistoryStore, prompt_set: PromptSet) -> str:
    return store.add(SavedPromptSet(prompt_set=prompt_set))


def saved_sets(store: HistoryStore) -> list[tuple[str, PromptSet]]:
    """(id, set) for every saved set that reads as one, newest first."""
    saved = sorted(store.read(SavedPromptSet), key=lambda s: s.ts, reverse=True)
    return [(s.id, s.prompt_set) for s in saved]


# -- runs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    repeats: int = 1
    concurrency: int = 2
    seed: int = 42  # sent to the model and used to shuffle the order
    temperature: float | None = 0.0
    max_tokens: int | None = 512
    warmup: bool = True
    shuffle: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSlot:
    label: str
    server: str
    model: str
    target: str  # what is sent as `model`
    contestant: str
    options: Mapping[str, Any] = field(default_factory=dict)  # SamplingOptions.to_request()
    load_config: Mapping[str, Any] = field(default_factory=dict)  # LoadConfig.to_request()
    route: str = "completions"  # the chat route its requests take
    reasoning: str | None = None  # the slot's reasoning setting (None: the model's default)
    # What was loaded, as a round keeps it (rounds.SlotResult): the instance's config as the
    # server reported it ({} when it did not say: an OpenAI-compatible server), the model's
    # facts (rounds.model_facts: quantization, params, size...) and the explicit load's time.
    instance_config: Mapping[str, Any] = field(default_factory=dict)
    model_info: Mapping[str, Any] = field(default_factory=dict)
    load_s: float | None = None

    def sampling(self) -> SamplingOptions:
        options = dict(self.options)
        options["stop"] = tuple(options.get("stop") or ())
        return SamplingOptions(**options)

    def to_record(self) -> dict[str, Any]:
        return {"label": self.label, "server": self.server, "model": self.model,
                "target": self.target, "contestant": self.contestant,
                "options": dict(self.options), "load_config": dict(self.load_config),
                "route": self.route, "reasoning": self.reasoning,
                "instance_config": dict(self.instance_config),
                "model_info": dict(self.model_info), "load_s": self.load_s}

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> RunSlot:
        return cls(label=str(d["label"]), server=str(d["server"]), model=str(d["model"]),
                   target=str(d.get("target") or d["model"]),
                   contestant=str(d.get("contestant") or d["model"]),
                   options=dict(d.get("options") or {}),
                   load_config=dict(d.get("load_config") or {}),
                   route=str(d.get("route") or "completions"),
                   reasoning=d["reasoning"] if isinstance(d.get("reasoning"), str) else None,
                   instance_config=_mapping(d.get("instance_config")),
                   model_info=_mapping(d.get("model_info")),
                   load_s=float(d["load_s"]) if isinstance(d.get("load_s"), int | float)
                   and not isinstance(d.get("load_s"), bool) else None)


def _mapping(v: Any) -> dict[str, Any]:
    """A stored object field; anything else (a run saved before it existed, junk) is {}."""
    return dict(v) if isinstance(v, Mapping) else {}


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSetRunSpec:
    """A saved prompt-set run: the set, the slots it races and its settings, as stored in the
    "promptset_runs" table (``to_record()`` keeps the row's shape; ``from_record()`` reads it)."""

    TABLE: ClassVar[str] = RUNS_TABLE

    id: str
    run_key: str
    prompt_set: PromptSet
    slots: tuple[RunSlot, ...]
    settings: RunSettings
    created: float
    machine_id: str | None = None  # the machine the run started on (None: not recorded)

    @property
    def total(self) -> int:
        """Requests in the whole run: prompts x slots x repeats."""
        return len(self.prompt_set.items) * len(self.slots) * self.settings.repeats

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "run_key": self.run_key, "set": self.prompt_set.to_dict(),
                "slots": [s.to_record() for s in self.slots],
                "settings": {f: getattr(self.settings, f)
                             for f in RunSettings.__dataclass_fields__},
                "created": self.created, "machine_id": self.machine_id}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> PromptSetRunSpec:
        """Raises PromptSetError when the row is not a run this version can read."""
        try:
            known = RunSettings.__dataclass_fields__
            settings = RunSettings(**{k: v for k, v in dict(row.get("settings") or {}).items()
                                      if k in known})
            return cls(id=str(row["id"]), run_key=str(row.get("run_key") or ""),
                       prompt_set=PromptSet.from_dict(row["set"]),
                       slots=tuple(RunSlot.from_record(s) for s in row["slots"]),
                       settings=settings,
                       created=float(row.get("created") or row.get("ts") or 0.0),
                       machine_id=row["machine_id"] if isinstance(row.get("machine_id"), str)
                       else None)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PromptSetError(f"A saved prompt-set run could not be read ({e!r}).") from e

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row does not read as a run (strict: its set,
        slots and settings as JSON objects and lists)."""
        if not (isinstance(row.get("set"), Mapping) and isinstance(row.get("slots"), list)
                and isinstance(row.get("settings") or {}, Mapping)):
            raise ValueError("a prompt-set run needs its set, slots and settings")
        SavedPromptSet.from_record(row["set"])
        try:
            cls.from_record(row)
        except PromptSetError as e:
            raise ValueError(e.sentence) from e


def new_run(store: HistoryStore, prompt_set: PromptSet, setups: Sequence[SlotSetup],
            targets: Sequence[str], settings: RunSettings, *, prepared: Prepared | None = None,
            listings: Mapping[str, ModelList | None] | None = None) -> PromptSetRunSpec:
    """Saves a new run (its set, slots and settings) and returns it. `prepared` (what
    setup.prepare loaded) and `listings` (each server's models) give every slot what was loaded:
    the instance's config, the model's quantization, parameters and size, the load time; the
    reports print them."""
    loaded = loaded_slots(setups, prepared, listings)
    slots = tuple(
        RunSlot(label=SLOT_LABELS[i], server=s.server, model=s.model, target=targets[i],
                contestant=s.contestant, options=_run_options(s.options, settings).to_request(),
                load_config=s.load_config.to_request(), route=s.route, reasoning=s.reasoning,
                **loaded[i])
        for i, s in enumerate(setups))
    spec = PromptSetRunSpec(id="", run_key=uuid.uuid4().hex[:12], prompt_set=prompt_set,
                            slots=slots, settings=settings, created=time.time(),
                            machine_id=hardware.session_machine_id())
    return dataclasses.replace(spec, id=store.add(spec))


def loaded_slots(setups: Sequence[SlotSetup], prepared: Prepared | None,
                 listings: Mapping[str, ModelList | None] | None) -> list[dict[str, Any]]:
    """Per slot, what was loaded (RunSlot's instance_config, model_info and load_s)."""
    from .rounds import model_facts

    out = []
    for i, s in enumerate(setups):
        listing = (listings or {}).get(s.server)
        out.append({
            "instance_config": dict(prepared.instance_configs[i]) if prepared else {},
            "model_info": model_facts(listing.get(s.model) if listing is not None else None),
            "load_s": prepared.load_s[i] if prepared else None})
    return out


def _run_options(base: SamplingOptions, settings: RunSettings) -> SamplingOptions:
    """The slot's own options, with the run's fixed seed, temperature and token limit."""
    d = base.to_request()
    d["seed"] = settings.seed
    if settings.temperature is not None:
        d["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        d["max_tokens"] = settings.max_tokens
    d["stop"] = tuple(d.get("stop") or ())
    return SamplingOptions(**d)


def run_setups(run: PromptSetRunSpec) -> list[SlotSetup]:
    """The slots of a saved run, to load their models again before a resume."""
    from ..types import LoadConfig
    from .setup import SlotSetup

    return [SlotSetup(server=slot.server, model=slot.model, options=slot.sampling(),
                      load_config=LoadConfig(**slot.load_config), route=slot.route,
                      reasoning=slot.reasoning)
            for slot in run.slots]


def retarget(store: HistoryStore, run: PromptSetRunSpec, targets: Sequence[str], *,
             prepared: Prepared | None = None,
             listings: Mapping[str, ModelList | None] | None = None) -> PromptSetRunSpec:
    """Points a run's slots at the instances loaded for its resume. A slot that does not know
    what was loaded yet (a run saved before runs kept it) learns it from `prepared` and
    `listings`, as new_run does; one that knows keeps what its first requests ran on."""
    loaded = loaded_slots(run_setups(run), prepared, listings)
    slots = tuple(dataclasses.replace(slot, target=t, **({} if slot.model_info else new))
                  for slot, t, new in zip(run.slots, targets, loaded, strict=True))
    if slots != run.slots:
        store.update(PromptSetRunSpec, run.id, slots=slots)
    return dataclasses.replace(run, slots=slots)


def get_run(store: HistoryStore, run_id: str) -> PromptSetRunSpec | None:
    return next((r for r in list_runs(store) if r.id == run_id), None)


def list_runs(store: HistoryStore) -> list[PromptSetRunSpec]:
    """Every saved run that can be read, newest first (an unreadable row is skipped)."""
    return sorted(store.read(PromptSetRunSpec), key=lambda r: r.created, reverse=True)


def run_records(store: HistoryStore, run_id: str) -> list[PromptSetRecord]:
    """The latest record of every (prompt, slot, repeat) of a run, in plan order (a row that
    does not read as a record is skipped)."""
    latest: dict[tuple[int, int, int], PromptSetRecord] = {}
    for r in sorted(store.read(PromptSetRecord), key=lambda r: r.ts):
        if r.run_id == run_id:
            latest[r.key] = r
    return [latest[k] for k in sorted(latest)]


def plan(run: PromptSetRunSpec, done: Iterable[tuple[int, int, int]] = ()) -> list[LoadJob]:
    """Every (prompt, slot, repeat) not in `done`, in the run's shuffled order (the same order
    on every resume)."""
    items = run.prompt_set.items
    keys = [(p, s, r) for p in range(len(items)) for r in range(run.settings.repeats)
            for s in range(len(run.slots))]
    if run.settings.shuffle:
        random.Random(run.settings.seed or 0).shuffle(keys)
    finished = set(done)
    jobs = []
    for p, s, r in keys:
        if (p, s, r) in finished:
            continue
        slot = run.slots[s]
        jobs.append(LoadJob(
            model=slot.target, prompt=items[p].prompt, system_prompt=items[p].system,
            options=slot.sampling(), server=slot.server, route=slot.route,
            reasoning=slot.reasoning,
            tags={"run_id": run.id, "prompt_index": p, "slot": s, "repeat": r,
                  "label": slot.label, "route": slot.route,
                  "reasoning_setting": slot.reasoning},
        ))
    return jobs


def finished_keys(store: HistoryStore, run_id: str) -> set[tuple[int, int, int]]:
    return {r.key for r in run_records(store, run_id) if r.ok}


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSetRecord:
    """One finished request of a prompt-set run, as the "promptset_records" table keeps it."""

    TABLE: ClassVar[str] = RECORDS_TABLE

    run_id: str
    prompt_index: int
    slot: int  # index into the run's slots
    repeat: int
    label: str = ""
    model: str = ""
    contestant: str = ""
    server: str = ""
    content: str = ""
    reasoning: str = ""
    ok: bool = False
    error: str = ""  # the sentence shown for a failed request
    metrics: GenerationMetrics | None = None  # without its token timeline
    checks: tuple[Mapping[str, Any], ...] = ()  # check_results(): {"check", "passed"}
    ts: float = 0.0  # when the request went out
    machine_id: str | None = None  # a resume may run on another machine
    id: str = ""  # the store's; "" before it is saved

    @property
    def key(self) -> tuple[int, int, int]:
        return self.prompt_index, self.slot, self.repeat

    @classmethod
    def measured(cls, run: PromptSetRunSpec, record: LoadRecord) -> PromptSetRecord:
        """The record of one request the load runner finished."""
        tags = record.job.tags
        item = run.prompt_set.items[int(tags["prompt_index"])]
        slot = run.slots[int(tags["slot"])]
        return cls(
            run_id=run.id, prompt_index=tags["prompt_index"], slot=tags["slot"],
            repeat=tags["repeat"], label=slot.label, model=slot.model,
            contestant=slot.contestant, server=record.server, content=record.content,
            reasoning=record.reasoning, ok=record.ok,
            error=record.error.sentence if record.error else "",
            metrics=dataclasses.replace(record.metrics, token_offsets_ms=()),
            checks=tuple(check_results(item, record.content, record.metrics.e2e_s, record.ok)),
            ts=record.started_at or time.time(),
            machine_id=hardware.session_machine_id())

    def to_record(self) -> dict[str, Any]:
        metrics = None
        if self.metrics is not None:
            metrics = self.metrics.to_dict()
            metrics.pop("token_offsets_ms", None)
        row = {"run_id": self.run_id, "prompt_index": self.prompt_index, "slot": self.slot,
               "repeat": self.repeat, "label": self.label, "model": self.model,
               "contestant": self.contestant, "server": self.server, "content": self.content,
               "reasoning": self.reasoning, "ok": self.ok, "error": self.error,
               "metrics": metrics, "checks": [dict(c) for c in self.checks], "ts": self.ts,
               "machine_id": self.machine_id}
        if self.id:
            row["id"] = self.id
        return row

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> PromptSetRecord:
        """Reads a stored row; raises KeyError, TypeError or ValueError for one that is not a
        record (its run, prompt, slot or repeat missing or not whole numbers)."""
        m = row.get("metrics")
        checks = row.get("checks")
        machine = row.get("machine_id")
        return cls(
            run_id=str(row["run_id"]), prompt_index=_whole(row["prompt_index"]),
            slot=_whole(row["slot"]), repeat=_whole(row["repeat"]),
            label=str(row.get("label") or ""), model=str(row.get("model") or ""),
            contestant=str(row.get("contestant") or row.get("model") or ""),
            server=str(row.get("server") or ""), content=str(row.get("content") or ""),
            reasoning=str(row.get("reasoning") or ""), ok=row.get("ok") is True,
            error=str(row.get("error") or ""),
            metrics=GenerationMetrics.read(m),
            checks=tuple(c for c in checks if isinstance(c, Mapping))
            if isinstance(checks, list) else (),
            ts=float(row.get("ts") or 0.0),
            machine_id=machine if isinstance(machine, str) else None,
            id=str(row.get("id") or ""))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        cls.from_record(row)


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"not a whole number: {value!r}")
    return int(value)
