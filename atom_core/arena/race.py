"""The Arena: one prompt to two to four models at the same moment, blind votes, a leaderboard.

A race goes: `plan_loads()` decides which models must be loaded first (LM Studio 0.4 only: with
Auto-Evict on, just-in-time loading would unload A while loading B), `start_load()` loads them
one at a time (their load time is kept apart, never counted in TTFT), then `ArenaRace` streams
every slot at once through `runner.FanOut`, saves the round as it goes (like `chat.ChatTurn`) and
on `finish()` writes the final `ArenaRound` to the "arena_rounds" table and one row per slot to the
runs table (source "arena"). Votes update the round's record; `leaderboard()` turns the votes into
ratings (rules in `atom_core.arena.ratings`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..errors import AtomError, ServerError
from ..measure import hardware
from ..measure.runner import FanOut, Slot
from ..metrics import GenerationMetrics, format_seconds, percentile
from ..runs import reply_state, run_record
from ..types import (
    ChatMessage,
    Dialect,
    LoadConfig,
    LoadResult,
    ModelInfo,
    ModelList,
    SamplingOptions,
)
from .ratings import Outcome, Rating, VotedRound
from .ratings import leaderboard as rate

if TYPE_CHECKING:
    from ..history.tinydb_store import HistoryStore
    from ..server.client import LMStudioClient

ROUNDS_TABLE = "arena_rounds"
SLOT_LABELS = "ABCD"
MIN_SLOTS, MAX_SLOTS = 2, 4

ClientFor = Callable[[str], "LMStudioClient"]

# One-line explanations, shared by the page's hover help and the reports.
HELP = {
    "ttft": "Time to first token: from sending the prompt to the first token of the reply. "
            "How long you wait before anything appears.",
    "tps": "Decode speed in tokens per second, once the reply has started (the first token's "
           "wait is TTFT, not decoding). A token is about ¾ of an English word.",
    "tokens": "How many tokens the reply had (the server's count, or counted chunks).",
    "e2e": "End-to-end: from sending the prompt to the last byte of the reply.",
    "stop": "Why the reply ended: stop = the model finished, length = it hit the token limit.",
    "context": "Context length: how many tokens (prompt plus reply) the model can keep in mind "
               "at once, as loaded.",
    "quantization": "Quantization: how compressed the weights are (Q4_K_M ≈ 4 bits per weight). "
                    "Fewer bits: smaller and faster, slightly less accurate.",
    "load": "Loading time, measured apart so it never counts in TTFT.",
    "params": "Parameters: the model's size in weights (7B = 7 billion). More usually means "
              "smarter and slower.",
    "size": "Size of the model file on disk (and roughly in memory).",
}


# -- slots ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotSetup:
    """What the user chose for one slot."""

    server: str  # base URL
    model: str  # model key
    options: SamplingOptions = field(default_factory=SamplingOptions)
    load_config: LoadConfig = field(default_factory=LoadConfig)  # empty: as loaded / default

    @property
    def contestant(self) -> str:
        return contestant_name(self.model, self.options, self.load_config)


_OPTION_WORDS = {"temperature": "temp", "top_p": "top-p", "top_k": "top-k",
                 "repeat_penalty": "repeat", "presence_penalty": "presence",
                 "frequency_penalty": "frequency"}
_LOAD_WORDS = {"context_length": "ctx", "eval_batch_size": "batch", "flash_attention": "flash",
               "num_experts": "experts", "offload_kv_cache_to_gpu": "kv-gpu"}


def contestant_name(model: str, options: SamplingOptions, load_config: LoadConfig) -> str:
    """The leaderboard's name for a model with its settings: "qwen3-4b (temp 0.2 · ctx 8192)".

    Only settings that change what the model says or how it runs are named; the seed, the token
    limit and stop strings are not (they are the test's settings, not the contestant's)."""
    parts = [f"{word} {_short(getattr(options, name))}" for name, word in _OPTION_WORDS.items()
             if getattr(options, name) is not None]
    parts += [f"{word} {_short(v)}" for name, word in _LOAD_WORDS.items()
              if (v := getattr(load_config, name)) is not None]
    return f"{model} ({' · '.join(parts)})" if parts else model


def _short(v: object) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def default_models(llms: Sequence[ModelInfo], n: int) -> list[str]:
    """Keys for n slots: different models where possible, loaded ones first."""
    ordered = [m.key for m in llms if m.is_loaded] + [m.key for m in llms if not m.is_loaded]
    if not ordered:
        return []
    return [ordered[i % len(ordered)] for i in range(n)]


def default_picks(servers: Sequence[Sequence[ModelInfo]], n: int) -> list[tuple[int, str]]:
    """(server index, model key) for n slots across several servers: every model of the first
    server (loaded first), then the next server's, and so on, before any pair repeats. With the
    bundled demo engine (one model per server, two servers) the two slots race both engines."""
    pairs = [(i, key) for i, llms in enumerate(servers)
             for key in default_models(llms, len(llms))]
    if not pairs:
        return []
    return [pairs[k % len(pairs)] for k in range(n)]


# -- loading before a race -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadStep:
    """One explicit load the race needs."""

    server: str
    model: str
    config: LoadConfig
    slots: tuple[int, ...]

    @property
    def label(self) -> str:
        extra = contestant_name("", SamplingOptions(), self.config).strip()
        return f"{self.model} {extra}".strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPlan:
    """What to send as `model` per slot, what to load first, and what to tell the user."""

    targets: tuple[str, ...]  # per slot: instance id or model key
    steps: tuple[LoadStep, ...] = ()
    notes: tuple[str, ...] = ()
    instance_configs: tuple[dict[str, Any], ...] = ()  # per slot, as loaded (if known)


def plan_loads(setups: Sequence[SlotSetup], listings: Mapping[str, ModelList | None]) -> LoadPlan:
    """Decides, per slot, which loaded instance answers and what must be loaded first.

    LM Studio 0.4: a model that is not loaded is loaded explicitly (once, even if two slots
    share it); a slot with a load config uses an instance loaded with that config, or loads a
    new one. Other servers cannot load over their API: the race goes ahead as they are, and a
    note says so."""
    targets: list[str] = []
    configs: list[dict[str, Any]] = []
    steps: dict[tuple[str, str, tuple[tuple[str, Any], ...]], list[int]] = {}
    notes: list[str] = []
    for i, s in enumerate(setups):
        listing = listings.get(s.server)
        info = listing.get(s.model) if listing is not None else None
        targets.append(s.model)
        configs.append({})
        if listing is None or info is None:
            continue  # unreachable server or unknown model: the race shows the error
        wanted = s.load_config.to_request()
        match = next((inst for inst in info.loaded_instances
                      if all(inst.config.get(k) == v for k, v in wanted.items())), None)
        if match is not None:
            targets[i], configs[i] = match.id, dict(match.config)
            continue
        if not listing.dialect.can_manage_models:
            note = _cannot_load_note(s.server, listing, wanted)
            if note and note not in notes and (not info.is_loaded or wanted
                                               or not info.load_state_known):
                notes.append(note)
            continue
        key = (s.server, s.model, tuple(sorted(wanted.items())))
        steps.setdefault(key, []).append(i)
    plan_steps = tuple(
        LoadStep(server=server, model=model, config=LoadConfig(**dict(cfg)), slots=tuple(slots))
        for (server, model, cfg), slots in steps.items()
    )
    return LoadPlan(targets=tuple(targets), steps=plan_steps, notes=tuple(notes),
                    instance_configs=tuple(configs))


def _cannot_load_note(server: str, listing: ModelList, wanted: dict[str, Any]) -> str:
    if listing.dialect is Dialect.OPENAI:
        return (f"{server} is an OpenAI-compatible server: ATOM can't see or load its models "
                "over the API, so the race runs as they are. A model that has to load first "
                "counts that time in its TTFT.")
    extra = " Load configs are ignored." if wanted else ""
    return (f"{server} runs LM Studio 0.3, which can't load models over its API: models not "
            "loaded yet load on first use and that time counts in their TTFT." + extra)


class PendingLoad:
    """One `client.load_model` call on a worker thread, so the page can show the time passing
    (and the user can still press Stop) while a big model loads."""

    def __init__(self, client: LMStudioClient, step: LoadStep) -> None:
        self.step = step
        self.result: LoadResult | None = None
        self.error: AtomError | None = None
        self.started = time.perf_counter()
        self.seconds: float | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(client,), name="atom-load", daemon=True).start()

    def _run(self, client: LMStudioClient) -> None:
        try:
            self.result = client.load_model(self.step.model, self.step.config)
        except AtomError as e:
            self.error = e
        except Exception as e:  # a bug must show as this slot's error, not a dead page
            self.error = ServerError(f"Unexpected error while loading: {e!r}", detail=repr(e))
        finally:
            self.seconds = time.perf_counter() - self.started
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        return self.seconds if self.seconds is not None else time.perf_counter() - self.started


def start_load(client: LMStudioClient, step: LoadStep) -> PendingLoad:
    return PendingLoad(client, step)


@dataclass(slots=True)
class Prepared:
    """Per slot, after loading: what to send as `model`, and what loading cost or broke."""

    targets: list[str]
    instance_configs: list[dict[str, Any]]
    load_s: list[float | None]
    errors: list[AtomError | None]
    notes: list[str]


def prepared_from(plan: LoadPlan, loads: Sequence[PendingLoad] = ()) -> Prepared:
    """Folds finished loads into the plan's per-slot targets."""
    n = len(plan.targets)
    out = Prepared(targets=list(plan.targets), instance_configs=list(plan.instance_configs or
                                                                     [{}] * n),
                   load_s=[None] * n, errors=[None] * n, notes=list(plan.notes))
    for load in loads:
        for i in load.step.slots:
            if load.error is not None:
                out.errors[i] = load.error
                continue
            assert load.result is not None
            out.targets[i] = load.result.instance_id
            out.load_s[i] = load.result.load_time_s if load.result.load_time_s is not None \
                else load.seconds
            out.instance_configs[i] = dict(load.result.applied_config or
                                           load.step.config.to_request())
            if load.result.rejected_keys:
                note = (f"{load.step.model}: the server refused "
                        f"{', '.join(load.result.rejected_keys)}; loaded without.")
                if note not in out.notes:
                    out.notes.append(note)
    return out


def load_all(plan: LoadPlan, client_for: ClientFor) -> Prepared:
    """Loads every step in order (command line, bench and tests; the page polls instead)."""
    loads = []
    for step in plan.steps:
        load = start_load(client_for(step.server), step)
        load.wait(timeout=24 * 3600)
        loads.append(load)
    return prepared_from(plan, loads)


# -- rounds ---------------------------------------------------------------------------------------


SlotState = Literal["running", "complete", "stopped", "interrupted", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotResult:
    """One slot of a round: who raced, with what, and what came back."""

    label: str  # "A".."D"
    server: str
    model: str  # model key
    target: str  # what was sent as `model` (an instance id when the arena loaded one)
    contestant: str
    options: dict[str, Any] = field(default_factory=dict)
    load_config: dict[str, Any] = field(default_factory=dict)  # what the user asked for
    instance_config: dict[str, Any] = field(default_factory=dict)  # what it was loaded with
    model_info: dict[str, Any] = field(default_factory=dict)  # quantization, params, size...
    load_s: float | None = None  # explicit load before the race; never part of TTFT
    content: str = ""
    reasoning: str = ""
    metrics: dict[str, Any] | None = None  # GenerationMetrics.to_dict(), without the timeline
    state: SlotState = "running"
    error: str = ""
    run_id: str = ""

    @property
    def metric(self) -> GenerationMetrics | None:
        return GenerationMetrics.from_dict(self.metrics) if self.metrics else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote:
    outcome: Outcome
    winner: int | None = None  # slot index
    blind: bool = True  # cast before the names were shown
    ts: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ArenaRound:
    """One prompt raced by 2-4 slots, as stored in the "arena_rounds" table."""

    id: str
    ts: float
    prompt: str
    system_prompt: str
    slots: tuple[SlotResult, ...]
    blind: bool = False
    order: tuple[int, ...] = ()  # display position -> slot index (shuffled when blind)
    notes: tuple[str, ...] = ()
    state: Literal["running", "done"] = "done"
    vote: Vote | None = None
    revealed: bool = False

    @property
    def hidden(self) -> bool:
        """Names stay hidden: a blind round nobody has voted on or revealed yet."""
        return self.blind and self.vote is None and not self.revealed

    @property
    def positions(self) -> tuple[int, ...]:
        return self.order or tuple(range(len(self.slots)))

    def title_at(self, position: int) -> str:
        """The column title at a display position: "Response 2" when blind, else "Model A"."""
        if self.blind:
            return f"Response {position + 1}"
        return f"Model {self.slots[self.positions[position]].label}"

    def subtitle_at(self, position: int) -> str:
        """Who wrote it, once that may be shown: "qwen3-4b", or "Model A · qwen3-4b" in a
        revealed blind round; "" while hidden."""
        if self.hidden:
            return ""
        slot = self.slots[self.positions[position]]
        name = slot.contestant
        return f"Model {slot.label} · {name}" if self.blind else name

    def short_label(self, slot_index: int) -> str:
        """How a vote button names a slot: by position when hidden."""
        if self.hidden:
            return f"Response {self.positions.index(slot_index) + 1}"
        return f"Model {self.slots[slot_index].label}"

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["slots"] = [asdict(s) for s in self.slots]
        d["order"] = list(self.order)
        d["notes"] = list(self.notes)
        d["vote"] = asdict(self.vote) if self.vote else None
        return d

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> ArenaRound:
        slots = tuple(SlotResult(**{k: v for k, v in s.items()
                                    if k in SlotResult.__dataclass_fields__})
                      for s in d.get("slots") or [])
        vote = d.get("vote")
        return cls(
            id=str(d.get("id") or ""), ts=float(d.get("ts") or 0.0),
            prompt=str(d.get("prompt") or ""), system_prompt=str(d.get("system_prompt") or ""),
            slots=slots, blind=bool(d.get("blind")), order=tuple(d.get("order") or ()),
            notes=tuple(d.get("notes") or ()), state=d.get("state") or "done",
            vote=Vote(**vote) if isinstance(vote, dict) else None,
            revealed=bool(d.get("revealed")),
        )

    @property
    def vote_sentence(self) -> str:
        v = self.vote
        if v is None:
            return ""
        if v.outcome == "tie":
            return "Tie"
        if v.outcome == "all_bad":
            return "All bad"
        assert v.winner is not None
        s = self.slots[v.winner]
        return f"Model {s.label} ({s.model}) wins"


def blind_order(n: int, rng: random.Random | None = None) -> tuple[int, ...]:
    """A shuffled display order for a blind round."""
    order = list(range(n))
    (rng or random.Random()).shuffle(order)
    return tuple(order)


def model_facts(info: ModelInfo | None) -> dict[str, Any]:
    """The model metadata a round keeps (and a report prints)."""
    if info is None:
        return {}
    return {"display_name": info.display_name, "publisher": info.publisher,
            "architecture": info.architecture, "quantization": info.quantization,
            "bits_per_weight": info.bits_per_weight, "params": info.params,
            "size_bytes": info.size_bytes, "max_context": info.max_context,
            "format": info.format}


def _metrics_record(m: GenerationMetrics) -> dict[str, Any]:
    d = m.to_dict()
    # Kept for the Stats page's token timeline; 0.1 ms is finer than any token gap and keeps a
    # 4-slot round of 256-token replies near 10 KB.
    d["token_offsets_ms"] = [round(t, 1) for t in m.token_offsets_ms]
    return d


class ArenaRace:
    """One race, from start to saved round. Mirrors `chat.ChatTurn`:

    `start()` saves the round (state "running") and starts every slot at the same moment;
    `poll()` collects what arrived and saves progress every `save_every_s`; `stop()` ends every
    upstream request; `finish()` (call it in `finally:`) writes the final round and one runs row
    per slot whose request went out. Slots whose load failed start with that error."""

    def __init__(self, *, store: HistoryStore, client_for: ClientFor, prompt: str,
                 system_prompt: str, setups: Sequence[SlotSetup], prepared: Prepared,
                 models: Mapping[int, ModelInfo | None] | None = None, blind: bool = False,
                 order: Sequence[int] | None = None, save_every_s: float = 1.0,
                 images: Sequence[str] = ()) -> None:
        if not MIN_SLOTS <= len(setups) <= MAX_SLOTS:
            raise ValueError(f"a race needs {MIN_SLOTS} to {MAX_SLOTS} slots")
        self.store = store
        self._client_for = client_for
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.setups = list(setups)
        self.prepared = prepared
        self._models = models or {}
        self.blind = blind
        self.images = tuple(images)  # data URLs sent with the prompt (vision models)
        self.order = tuple(order) if order else (blind_order(len(setups)) if blind
                                                 else tuple(range(len(setups))))
        self._save_every_ns = int(save_every_s * 1e9)
        self._last_save_ns = 0
        self._run: FanOut | None = None
        self.round_id = ""
        self.ts = time.time()
        self.finished = False
        self.result: ArenaRound | None = None

    @property
    def slots(self) -> list[Slot]:
        assert self._run is not None, "start() first"
        return self._run.slots

    @property
    def done(self) -> bool:
        return self._run is not None and self._run.all_done

    def _factory(self, i: int) -> Callable[[], Any]:
        error = self.prepared.errors[i]
        setup = self.setups[i]
        target = self.prepared.targets[i]

        def make() -> Any:
            if error is not None:
                raise error
            return self._client_for(setup.server).stream_chat(
                target, [ChatMessage("user", self.prompt, images=self.images)],
                options=setup.options,
                system_prompt=self.system_prompt or None)
        return make

    def start(self) -> ArenaRace:
        record = self.snapshot("running").to_record()
        record.pop("id")  # the store assigns it
        self.round_id = self.store.append(ROUNDS_TABLE, record)
        self._last_save_ns = time.perf_counter_ns()
        self._run = FanOut([self._factory(i) for i in range(len(self.setups))]).start()
        return self

    def poll(self, timeout: float = 0.05) -> set[int]:
        """Applies what arrived (waiting up to `timeout`); returns the slots that changed."""
        assert self._run is not None, "start() first"
        changed = self._run.poll(timeout)
        now = time.perf_counter_ns()
        if changed and now - self._last_save_ns >= self._save_every_ns:
            self.store.update_record(ROUNDS_TABLE, self.round_id,
                                     {"slots": self.snapshot("running").to_record()["slots"]})
            self._last_save_ns = now
        return changed

    def stop(self) -> None:
        if self._run is not None:
            self._run.cancel()

    def snapshot(self, state: Literal["running", "done"] = "running",
                 run_ids: Sequence[str] = ()) -> ArenaRound:
        """The round as it stands (every slot's text and metrics so far)."""
        results = []
        for i, s in enumerate(self.setups):
            slot = self._run.slots[i] if self._run is not None else None
            reply = slot.reply if slot is not None else None
            metrics = None
            if reply is not None and reply.t_request_ns:
                metrics = _metrics_record(reply.metrics())
            if slot is None or not slot.done:
                slot_state: SlotState = "running"
            else:
                slot_state = reply_state(slot.error, slot.cancelled)
            results.append(SlotResult(
                label=SLOT_LABELS[i], server=s.server, model=s.model,
                target=self.prepared.targets[i], contestant=s.contestant,
                options=s.options.to_request(), load_config=s.load_config.to_request(),
                instance_config=self.prepared.instance_configs[i],
                model_info=model_facts(self._models.get(i)), load_s=self.prepared.load_s[i],
                content=reply.content if reply else "", reasoning=reply.reasoning if reply else "",
                metrics=metrics, state=slot_state,
                error=slot.error.sentence if slot is not None and slot.error else "",
                run_id=run_ids[i] if i < len(run_ids) else "",
            ))
        return ArenaRound(id=self.round_id, ts=self.ts, prompt=self.prompt,
                          system_prompt=self.system_prompt, slots=tuple(results),
                          blind=self.blind, order=self.order,
                          notes=tuple(self.prepared.notes), state=state)

    def finish(self) -> ArenaRound | None:
        """Ends the race (cancelling what still runs) and saves it. Idempotent."""
        if self.finished or self._run is None:
            return self.result
        self.finished = True
        if not self._run.all_done:
            self._run.cancel()
        run_ids = []
        for i, slot in enumerate(self._run.slots):
            reply = slot.reply
            if not reply.t_request_ns:  # no request went out (load failed): not a run
                run_ids.append("")
                continue
            run_ids.append(self.store.add_run(run_record(
                source="arena", server=self.setups[i].server, model=self.setups[i].model,
                metrics=reply.metrics(), error=slot.error, cancelled=slot.cancelled,
                round_id=self.round_id, slot=SLOT_LABELS[i],
                contestant=self.setups[i].contestant,
                # its own window: a slot that ended early is recorded when the last one ends
                **hardware.window_fields(reply.t_request_ns, reply.t_end_ns))))
        final = self.snapshot("done", run_ids)
        record = final.to_record()
        record.pop("id")
        self.store.update_record(ROUNDS_TABLE, self.round_id, record)
        self.result = final
        return final


def load_rounds(store: HistoryStore) -> list[ArenaRound]:
    """Every saved round, oldest first. A round left "running" by a process that died reads as
    done, its unfinished slots as interrupted."""
    out = []
    for d in store.records(ROUNDS_TABLE):
        r = ArenaRound.from_record(d)
        if r.state == "running":
            r = replace(r, state="done", slots=tuple(
                replace(s, state="interrupted") if s.state == "running" else s for s in r.slots))
        out.append(r)
    out.sort(key=lambda r: r.ts)
    return out


def get_round(store: HistoryStore, round_id: str) -> ArenaRound | None:
    return next((r for r in load_rounds(store) if r.id == round_id), None)


def record_vote(store: HistoryStore, rnd: ArenaRound, outcome: Outcome,
                winner: int | None = None) -> ArenaRound:
    """Saves a vote on a round (replacing an earlier one) and reveals the names."""
    if outcome == "win" and (winner is None or not 0 <= winner < len(rnd.slots)):
        raise ValueError("a win needs the winning slot's index")
    vote = Vote(outcome=outcome, winner=winner if outcome == "win" else None,
                blind=rnd.hidden, ts=time.time())
    store.update_record(ROUNDS_TABLE, rnd.id, {"vote": asdict(vote), "revealed": True})
    return replace(rnd, vote=vote, revealed=True)


def reveal(store: HistoryStore, rnd: ArenaRound) -> ArenaRound:
    store.update_record(ROUNDS_TABLE, rnd.id, {"revealed": True})
    return replace(rnd, revealed=True)


# -- results, side by side -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StatRow:
    """One row of the results table: a measure, one cell per slot, which cells are best."""

    key: str  # ttft | tps | tokens | e2e | stop | load
    name: str
    cells: tuple[str, ...]
    best: frozenset[int] = frozenset()  # slot indexes holding the best value


def stat_rows(rnd: ArenaRound) -> list[StatRow]:
    """TTFT, decode tok/s, tokens, end-to-end, stop reason (and load time, when the arena
    loaded a model). The fastest value of TTFT, tok/s and end-to-end is marked best, among slots
    that completed (a stopped reply's short end-to-end time is not a win)."""
    ms = [s.metric for s in rnd.slots]
    finished = [i for i, s in enumerate(rnd.slots) if s.state == "complete" and ms[i]]

    def best(values: Sequence[float | None], lowest: bool) -> frozenset[int]:
        known = [(v, i) for i, v in enumerate(values) if v is not None and i in finished]
        if len(known) < 2:
            return frozenset()
        target = min(known)[0] if lowest else max(known)[0]
        return frozenset(i for v, i in known if v == target)

    ttft = [m.ttft_s if m else None for m in ms]
    tps = [m.decode_tps if m else None for m in ms]
    e2e = [m.e2e_s if m else None for m in ms]
    rows = [
        StatRow(key="ttft", name="TTFT", cells=tuple(_sec(v) for v in ttft),
                best=best(ttft, lowest=True)),
        StatRow(key="tps", name="Decode tok/s",
                cells=tuple(f"{v:.1f}" if v is not None else "–" for v in tps),
                best=best(tps, lowest=False)),
        StatRow(key="tokens", name="Tokens", cells=tuple(
            (f"{m.output_tokens}" + ("" if m.tokens_source == "usage" else " (counted)"))
            if m else "–" for m in ms)),
        StatRow(key="e2e", name="End-to-end", cells=tuple(_sec(v) for v in e2e),
                best=best(e2e, lowest=True)),
        StatRow(key="stop", name="Stop reason", cells=tuple(
            (m.finish_reason if m and m.finish_reason else s.state if s.state != "complete"
             else "–") for m, s in zip(ms, rnd.slots, strict=True))),
    ]
    if any(s.load_s is not None for s in rnd.slots):
        rows.append(StatRow(key="load", name="Load (before the race)",
                            cells=tuple(_sec(s.load_s) for s in rnd.slots)))
    return rows


def fact_rows(rnd: ArenaRound) -> list[StatRow]:
    """What each model is: parameters, quantization, context length as loaded, size on disk.
    (A page shows these only once names are revealed: they would give a blind round away.)"""
    def ctx(s: SlotResult) -> str:
        loaded = s.instance_config.get("context_length")
        if loaded:
            return f"{loaded:,}"
        top = s.model_info.get("max_context")
        return f"up to {top:,}" if top else "–"

    def size(s: SlotResult) -> str:
        n = s.model_info.get("size_bytes")
        return f"{n / 1e9:.1f} GB" if n else "–"

    return [
        StatRow(key="params", name="Parameters",
                cells=tuple(s.model_info.get("params") or "–" for s in rnd.slots)),
        StatRow(key="quantization", name="Quantization",
                cells=tuple(s.model_info.get("quantization") or "–" for s in rnd.slots)),
        StatRow(key="context", name="Context length", cells=tuple(ctx(s) for s in rnd.slots)),
        StatRow(key="size", name="Size", cells=tuple(size(s) for s in rnd.slots)),
    ]


def _sec(v: float | None) -> str:
    return format_seconds(v) if v is not None else "–"


def live_line(slot: Slot, now_ns: int | None = None) -> str:
    """The caption over a column while it streams."""
    now_ns = now_ns or time.perf_counter_ns()
    reply = slot.reply
    if slot.error is not None:
        return "failed"
    if not reply.token_times_ns:
        if slot.done:
            return "no reply"
        return f"waiting for the first token… {(now_ns - slot.t_start_ns) / 1e9:.1f} s"
    tps = reply.live_tps(None if slot.done else now_ns)
    speed = f" · {tps:.1f} tok/s" if tps else ""
    return f"{reply.tokens} tokens{speed}" + (" · done" if slot.done else "")


# -- the leaderboard -------------------------------------------------------------------------------


def voted_rounds(rounds: Sequence[ArenaRound]) -> list[VotedRound]:
    """The votes, reduced to what the ratings need."""
    return [VotedRound(contestants=tuple(s.contestant for s in r.slots), outcome=r.vote.outcome,
                       winner=r.vote.winner, ts=r.vote.ts or r.ts)
            for r in rounds if r.vote is not None]


def contestant_speeds(rounds: Sequence[ArenaRound]) -> dict[str, tuple[float | None,
                                                                        float | None]]:
    """Median TTFT (s) and median decode tok/s of each contestant over all its complete
    replies, voted or not."""
    ttft: dict[str, list[float]] = {}
    tps: dict[str, list[float]] = {}
    for r in rounds:
        for s in r.slots:
            m = s.metric
            if s.state != "complete" or m is None:
                continue
            if m.ttft_s is not None:
                ttft.setdefault(s.contestant, []).append(m.ttft_s)
            if m.decode_tps is not None:
                tps.setdefault(s.contestant, []).append(m.decode_tps)
    names = set(ttft) | set(tps)
    return {n: (percentile(ttft.get(n, []), 50), percentile(tps.get(n, []), 50)) for n in names}


def leaderboard(rounds: Sequence[ArenaRound], *, n_boot: int = 500,
                seed: int = 0) -> list[Rating]:
    """Ratings from every vote, next to each contestant's median speed."""
    return rate(voted_rounds(rounds), speeds=contestant_speeds(rounds), n_boot=n_boot,
                seed=seed)


def vote_signature(rounds: Sequence[ArenaRound]) -> str:
    """Changes whenever a vote (or a round's speed) does: a cache key for the leaderboard."""
    return "|".join(f"{r.id}:{r.vote.outcome}:{r.vote.winner}:{r.state}" for r in rounds
                    if r.vote is not None) + f"#{len(rounds)}"
