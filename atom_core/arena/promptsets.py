"""Prompt sets: many prompts, run unattended across the Arena's slots, with optional checks.

A prompt set comes from a paste or a file, in one of three forms (`parse_prompt_set`):

- plain lines: one prompt per non-empty line;
- CSV with a header row: a `prompt` column, and optionally `name`, `system`, `contains`,
  `regex`, `json` (true/yes/1), `max_latency_s`, `reference` (an answer for the judge to
  compare against) and `judge` (the lowest judge score, 1-10, that passes);
- JSON: a list of strings or of objects, or `{"name": ..., "prompts": [...]}`. An object has
  `prompt` and optionally `name`, `system` and checks, either flat or under `"checks"`:
  `{"contains": "Paris" | [...], "regex": "..." | [...], "json": true, "max_latency_s": 2.5,
  "judge": 7}`, and `reference` beside `prompt`.

A run (`PromptSetRun`) sends every (prompt, slot, repeat) once, keeping K requests in flight with
`loadrun.run_load`, in an order shuffled by the run's seed. Each finished request is saved at
once to the "promptset_records" table (and the runs table, source "promptset"); a stopped run is
resumed by running the same run id again, which skips every triple that already has a successful
record. Failed requests are retried on resume.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import re2

from ..errors import AtomError
from ..measure import hardware
from ..measure.loadrun import LoadJob, LoadRecord, run_load
from ..metrics import (
    DECODE_P50,
    E2E_P50,
    FIRST_ANSWER_P50,
    THINKING_P50,
    TTFT_P50,
    GenerationMetrics,
    format_duration,
)
from ..types import ChatMessage, SamplingOptions

if TYPE_CHECKING:
    from ..history import HistoryStore
    from ..server.client import LMStudioClient
    from ..types import ModelList
    from .setup import Prepared, SlotSetup

SETS_TABLE = "prompt_sets"
RUNS_TABLE = "promptset_runs"
RECORDS_TABLE = "promptset_records"
SLOT_LABELS = "ABCD"

CheckKind = Literal["contains", "regex", "json", "max_latency", "judge"]


class PromptSetError(AtomError):
    """A prompt set that cannot be read; the sentence says where and why."""


# -- checks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One pass/fail test of a reply."""

    kind: CheckKind
    value: str | float | bool = True

    @property
    def label(self) -> str:
        if self.kind == "contains":
            return f"contains “{self.value}”"
        if self.kind == "regex":
            return f"matches /{self.value}/"
        if self.kind == "json":
            return "valid JSON"
        if self.kind == "judge":
            return f"judge score ≥ {self.value:g}" if isinstance(self.value, float) else \
                f"judge score ≥ {self.value}"
        return f"latency ≤ {self.value:g} s" if isinstance(self.value, float) else \
            f"latency ≤ {self.value} s"

    def passes(self, content: str, e2e_s: float | None, ok: bool,
               judge_score: float | None = None) -> bool:
        """A failed or cut request fails every check; a judge check fails without a score."""
        if not ok:
            return False
        if self.kind == "judge":
            return judge_score is not None and judge_score >= float(self.value)
        if self.kind == "contains":
            return str(self.value).casefold() in content.casefold()
        if self.kind == "regex":
            found = reply_pattern(str(self.value))
            return found is not None and found.search(content) is not None
        if self.kind == "json":
            return _is_json(content)
        return e2e_s is not None and e2e_s <= float(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(kind=d["kind"], value=d.get("value", True))


@functools.lru_cache(maxsize=256)
def reply_pattern(pattern: str) -> Any:
    """`pattern` compiled by RE2 (linear time in the reply), or None if RE2 cannot take it.

    A prompt set's regex is written by someone else and runs on every reply: with Python's
    backtracking `re`, `^(\\w+\\s?)*;$` on a 60-word reply never finished and froze the app
    (issue 23; bench/bench_regex.py). RE2 never backtracks, so it has no backreferences or
    lookaround, and its `\\w`, `\\d` and `\\b` are ASCII."""
    options = re2.Options()
    options.log_errors = False  # a refused pattern is our sentence, not a line on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error:
        return None


def _is_json(text: str) -> bool:
    """Valid JSON, also when the model wrapped it in a ```json fence."""
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


# -- prompt sets ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptItem:
    prompt: str
    name: str = ""
    system: str | None = None
    checks: tuple[Check, ...] = ()
    reference: str | None = None  # an answer for the judge to compare against (optional)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "name": self.name, "system": self.system,
                "checks": [c.to_dict() for c in self.checks], "reference": self.reference}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptItem:
        return cls(prompt=str(d["prompt"]), name=str(d.get("name") or ""),
                   system=d.get("system") or None,
                   checks=tuple(Check.from_dict(c) for c in d.get("checks") or []),
                   reference=d.get("reference") or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSet:
    name: str
    items: tuple[PromptItem, ...]

    @property
    def check_count(self) -> int:
        return sum(len(i.checks) for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "items": [i.to_dict() for i in self.items]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptSet:
        return cls(name=str(d.get("name") or ""),
                   items=tuple(PromptItem.from_dict(i) for i in d.get("items") or []))


Format = Literal["lines", "csv", "json"]


def detect_format(text: str, filename: str | None = None) -> Format:
    """By file extension, else by content: JSON if it starts with [ or {, CSV if the first line
    is a header naming a `prompt` column, else plain lines."""
    ext = Path(filename).suffix.lower() if filename else ""
    if ext == ".json":
        return "json"
    if ext == ".csv":
        return "csv"
    if ext in (".txt", ".md"):
        return "lines"
    head = text.lstrip()
    if head[:1] in ("[", "{"):
        return "json"
    first = head.splitlines()[0] if head else ""
    try:
        cells = next(csv.reader([first]))
    except (csv.Error, StopIteration):
        cells = []
    if len(cells) > 1 and "prompt" in (c.strip().lower() for c in cells):
        return "csv"
    return "lines"


def parse_prompt_set(text: str, *, filename: str | None = None, name: str = "",
                     fmt: Format | None = None) -> PromptSet:
    """Reads a prompt set (formats in the module docstring). Raises PromptSetError."""
    fmt = fmt or detect_format(text, filename)
    label = filename or "the pasted text"
    default_name = name or (Path(filename).stem if filename else "")
    if fmt == "lines":
        items = [PromptItem(prompt=line.strip()) for line in text.splitlines() if line.strip()]
        set_name = default_name
    elif fmt == "csv":
        items, set_name = _from_csv(text, label), default_name
    else:
        items, set_name = _from_json(text, label, default_name)
    if not items:
        raise PromptSetError(f"No prompts found in {label}.")
    return PromptSet(name=set_name or "Prompt set", items=tuple(items))


def load_prompt_file(path: str | Path) -> PromptSet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise PromptSetError(f"Can't read {p}: {e.strerror or e}.") from e
    return parse_prompt_set(text, filename=p.name)


_TRUE = {"1", "true", "yes", "y", "on"}


def _from_csv(text: str, label: str) -> list[PromptItem]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if "prompt" not in columns:
        raise PromptSetError(f"{label} has no “prompt” column in its header row.")
    items = []
    for line, row in enumerate(reader, start=2):
        def cell(key: str, row: dict[str, Any] = row) -> str:
            raw = row.get(columns[key]) if key in columns else None
            return str(raw or "").strip()

        prompt = cell("prompt")
        if not prompt:
            continue
        checks: list[Check] = []
        if cell("contains"):
            checks.append(Check("contains", cell("contains")))
        if cell("regex"):
            checks.append(Check("regex", _regex(cell("regex"), label, line)))
        if cell("json").lower() in _TRUE:
            checks.append(Check("json"))
        if cell("max_latency_s"):
            checks.append(Check("max_latency", _seconds(cell("max_latency_s"), label, line)))
        if cell("judge"):
            checks.append(Check("judge", _judge_score(cell("judge"), label, line)))
        items.append(PromptItem(prompt=prompt, name=cell("name"), system=cell("system") or None,
                                checks=tuple(checks), reference=cell("reference") or None))
    return items


def _from_json(text: str, label: str, default_name: str) -> tuple[list[PromptItem], str]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise PromptSetError(f"{label} is not valid JSON ({e}).") from e
    name = default_name
    if isinstance(doc, dict):
        name = str(doc.get("name") or name)
        doc = doc.get("prompts", doc.get("items"))
    if not isinstance(doc, list):
        raise PromptSetError(f"{label}: expected a list of prompts, or an object with "
                             "“prompts”.")
    items = []
    for n, entry in enumerate(doc, start=1):
        if isinstance(entry, str):
            if entry.strip():
                items.append(PromptItem(prompt=entry.strip()))
            continue
        if not isinstance(entry, dict) or not str(entry.get("prompt") or "").strip():
            raise PromptSetError(f"{label}: prompt {n} needs a “prompt” text.")
        spec = {**entry, **(entry.get("checks") or {})}
        checks: list[Check] = []
        for value in _as_list(spec.get("contains")):
            checks.append(Check("contains", str(value)))
        for value in _as_list(spec.get("regex")):
            checks.append(Check("regex", _regex(str(value), label, n)))
        if spec.get("json") is True or str(spec.get("json")).lower() in _TRUE:
            checks.append(Check("json"))
        latency = spec.get("max_latency_s", spec.get("max_latency"))
        if latency is not None:
            checks.append(Check("max_latency", _seconds(str(latency), label, n)))
        if spec.get("judge") not in (None, "", False):
            checks.append(Check("judge", _judge_score(str(spec["judge"]), label, n)))
        reference = entry.get("reference")
        items.append(PromptItem(prompt=str(entry["prompt"]).strip(),
                                name=str(entry.get("name") or entry.get("id") or ""),
                                system=entry.get("system") or None, checks=tuple(checks),
                                reference=str(reference).strip() or None
                                if reference is not None else None))
    return items, name


def _as_list(v: Any) -> list[Any]:
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


def _regex(pattern: str, label: str, where: int) -> str:
    try:
        re.compile(pattern)
    except re.error as e:
        raise PromptSetError(f"{label}, prompt {where}: the regex /{pattern}/ is not valid "
                             f"({e}).") from e
    if reply_pattern(pattern) is None:
        raise PromptSetError(
            f"{label}, prompt {where}: ATOM cannot run the regex /{pattern}/: checks use a "
            "regex engine that cannot freeze on a long reply (RE2), and it has no "
            "backreferences (\\1), lookarounds ((?=…), (?<!…)) or patterns this large; "
            "rewrite it without them.")
    return pattern


def _seconds(raw: str, label: str, where: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise PromptSetError(f"{label}, prompt {where}: max latency “{raw}” is not a number of "
                             "seconds.") from None
    if value <= 0:
        raise PromptSetError(f"{label}, prompt {where}: max latency must be above 0 s.")
    return value


def _judge_score(raw: str, label: str, where: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise PromptSetError(f"{label}, prompt {where}: the judge check “{raw}” is not a score "
                             "from 1 to 10.") from None
    if not 1 <= value <= 10:
        raise PromptSetError(f"{label}, prompt {where}: the judge check needs a score from 1 "
                             "to 10.")
    return value


def check_results(item: PromptItem, content: str, e2e_s: float | None,
                  ok: bool, judge_score: float | None = None) -> list[dict[str, Any]]:
    """Pass/fail of each check. Judge checks are left out when no judge scored the reply."""
    return [{"check": c.label, "passed": c.passes(content, e2e_s, ok, judge_score)}
            for c in item.checks if c.kind != "judge" or judge_score is not None]


# -- saved sets -----------------------------------------------------------------------------------


def save_set(store: HistoryStore, prompt_set: PromptSet) -> str:
    return store.append(SETS_TABLE, prompt_set.to_dict())


def saved_sets(store: HistoryStore) -> list[tuple[str, PromptSet]]:
    """(id, set) for every saved set, newest first."""
    rows = sorted(store.records(SETS_TABLE), key=lambda r: r.get("ts", 0), reverse=True)
    return [(str(r["id"]), PromptSet.from_dict(r)) for r in rows]


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


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptSetRunSpec:
    """A saved prompt-set run: the set, the slots it races and its settings, as stored in the
    "promptset_runs" table (``to_record()`` keeps the row's shape; ``from_record()`` reads it)."""

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
    record = spec.to_record()
    record.pop("id")
    return dataclasses.replace(spec, id=store.append(RUNS_TABLE, record))


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
        store.update_record(RUNS_TABLE, run.id, {"slots": [s.to_record() for s in slots]})
    return dataclasses.replace(run, slots=slots)


def get_run(store: HistoryStore, run_id: str) -> PromptSetRunSpec | None:
    return next((r for r in list_runs(store) if r.id == run_id), None)


def list_runs(store: HistoryStore) -> list[PromptSetRunSpec]:
    """Every saved run that can be read, newest first (an unreadable row is skipped)."""
    runs = []
    for row in store.records(RUNS_TABLE):
        try:
            runs.append(PromptSetRunSpec.from_record(row))
        except PromptSetError:
            continue
    return sorted(runs, key=lambda r: r.created, reverse=True)


def run_records(store: HistoryStore, run_id: str) -> list[dict[str, Any]]:
    """The latest record of every (prompt, slot, repeat) of a run, in plan order."""
    latest: dict[tuple[int, int, int], dict[str, Any]] = {}
    for r in sorted(store.records(RECORDS_TABLE), key=lambda r: r.get("ts", 0)):
        if r.get("run_id") == run_id:
            latest[_key(r)] = r
    return [latest[k] for k in sorted(latest)]


def _key(r: dict[str, Any]) -> tuple[int, int, int]:
    return int(r["prompt_index"]), int(r["slot"]), int(r["repeat"])


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
    return {_key(r) for r in run_records(store, run_id) if r.get("ok")}


def _record_doc(run: PromptSetRunSpec, record: LoadRecord) -> dict[str, Any]:
    tags = record.job.tags
    item = run.prompt_set.items[int(tags["prompt_index"])]
    slot = run.slots[int(tags["slot"])]
    m = record.metrics.to_dict()
    m.pop("token_offsets_ms", None)
    return {
        "run_id": run.id, "prompt_index": tags["prompt_index"], "slot": tags["slot"],
        "repeat": tags["repeat"], "label": slot.label, "model": slot.model,
        "contestant": slot.contestant, "server": record.server, "content": record.content,
        "reasoning": record.reasoning, "ok": record.ok,
        "error": record.error.sentence if record.error else "", "metrics": m,
        "checks": check_results(item, record.content, record.metrics.e2e_s, record.ok),
        "ts": record.started_at or time.time(),
        "machine_id": hardware.session_machine_id(),  # a resume may run on another machine
    }


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
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.new_records: list[dict[str, Any]] = []
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
                doc = _record_doc(self.run, record)
                doc["id"] = self.store.append(RECORDS_TABLE, doc)
                self.store.add_run(record.run_row("promptset", promptset_run=self.run.id,
                                                  contestant=doc["contestant"]))
                self._queue.put(doc)
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

    def poll(self, timeout: float = 0.1) -> list[dict[str, Any]]:
        """Records finished since the last poll (waits up to `timeout` for the first)."""
        out: list[dict[str, Any]] = []
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
                 records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per slot: requests, failures, median TTFT / tok/s / end-to-end, median first
    answer and thinking time (None where the slot never reasoned), checks passed."""
    out = []
    for s, slot in enumerate(run.slots):
        rs = [r for r in records if int(r["slot"]) == s]
        good = [GenerationMetrics.from_dict(r["metrics"]) for r in rs if r["ok"]]
        checks = [c for r in rs for c in r.get("checks") or []]
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
               records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pass/fail per prompt, check and slot: one row per (prompt, check), a column per slot
    holding "passed/total" over the repeats."""
    rows = []
    for p, item in enumerate(run.prompt_set.items):
        for c in item.checks:
            row: dict[str, Any] = {"prompt": item.name or _clip(item.prompt), "check": c.label}
            for s, slot in enumerate(run.slots):
                results = [x["passed"] for r in records
                           if int(r["prompt_index"]) == p and int(r["slot"]) == s
                           for x in r.get("checks") or [] if x["check"] == c.label]
                row[f"Model {slot.label}"] = (f"{sum(results)}/{len(results)}"
                                                 if results else "–")
            rows.append(row)
    return rows


def _clip(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 1] + "…"
