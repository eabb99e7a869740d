"""Arena slots and the load plan: what each slot races (server, model, sampling, load config,
route), and which models must be loaded, one at a time, before a race starts.

LM Studio 0.4 only: with Auto-Evict on, just-in-time loading would unload A while loading B, so
`plan_loads()` decides what to load and `start_load()` loads it; load time is kept apart and
never counted in TTFT."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..server.client import LMStudioClient

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import AtomError, ServerError
from ..server.routes import REASONING_LEVELS, ROUTES, STATEFUL_ROUTES
from ..types import (
    Dialect,
    LoadConfig,
    LoadResult,
    ModelInfo,
    ModelList,
    SamplingOptions,
)

SLOT_LABELS = "ABCD"


ClientFor = Callable[[str], "LMStudioClient"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotSetup:
    """What the user chose for one slot."""

    server: str  # base URL
    model: str  # model key
    options: SamplingOptions = field(default_factory=SamplingOptions)
    load_config: LoadConfig = field(default_factory=LoadConfig)  # empty: as loaded / default
    route: str = "completions"  # the chat route this slot talks over (server.routes.ROUTES)
    # off/on/low/medium/high (server.routes.REASONING_LEVELS) on a route that takes it, where
    # the model lists the option; None: the model's default
    reasoning: str | None = None

    def __post_init__(self) -> None:
        if self.reasoning is None:
            return
        if self.reasoning not in REASONING_LEVELS:
            raise ValueError(f"unknown reasoning setting {self.reasoning!r}; one of "
                             f"{', '.join(REASONING_LEVELS)}")
        if self.route not in STATEFUL_ROUTES:  # the routes whose requests carry it
            raise ValueError(f"the {self.route} route takes no reasoning setting")

    @property
    def contestant(self) -> str:
        return contestant_name(self.model, self.options, self.load_config, self.route,
                               self.reasoning)


_OPTION_WORDS = {"temperature": "temp", "top_p": "top-p", "top_k": "top-k",
                 "repeat_penalty": "repeat", "presence_penalty": "presence",
                 "frequency_penalty": "frequency"}


_LOAD_WORDS = {"context_length": "ctx", "eval_batch_size": "batch", "flash_attention": "flash",
               "num_experts": "experts", "offload_kv_cache_to_gpu": "kv-gpu"}


def contestant_name(model: str, options: SamplingOptions, load_config: LoadConfig,
                    route: str = "completions", reasoning: str | None = None) -> str:
    """The leaderboard's name for a model with its settings: "qwen3-4b (temp 0.2 · ctx 8192)".

    Only settings that change what the model says or how it runs are named; the seed, the token
    limit and stop strings are not (they are the test's settings, not the contestant's)."""
    parts = [f"{word} {_short(getattr(options, name))}" for name, word in _OPTION_WORDS.items()
             if getattr(options, name) is not None]
    parts += [f"{word} {_short(v)}" for name, word in _LOAD_WORDS.items()
              if (v := getattr(load_config, name)) is not None]
    if route != "completions":  # the same model over two routes: two contestants
        parts.append(f"via {route}")
    if reasoning is not None:  # reasoning off vs high changes what the model says
        parts.append(f"reasoning {reasoning}")
    return f"{model} ({' · '.join(parts)})" if parts else model


def _short(v: object) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


FLASH_CHOICES = ("as loaded", "on", "off")  # a slot's flash attention field


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotFields:
    """What a slot's Settings fields hold (None: the field was never set). The page reads them
    the same way whether it drew the fields in this run or kept them folded away."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    context_length: int | None = None
    flash: str | None = None  # FLASH_CHOICES
    route: str | None = None  # server.routes.ROUTES
    reasoning: str | None = None  # "default" or one of the model's reasoning options

    def choices(self, *, can_manage_models: bool, reasoning_options: Sequence[str] = ()
                ) -> tuple[SamplingOptions, LoadConfig, str, str | None]:
        """(sampling, load config, route, reasoning) as the fields' own defaults give them: the
        first route, no load config on a server that cannot load models, and reasoning only on
        a route that carries it for a model that lists that level."""
        options = SamplingOptions(temperature=self.temperature, top_p=self.top_p,
                                  max_tokens=self.max_tokens, seed=self.seed)
        load = LoadConfig()
        if can_manage_models:
            flash = self.flash if self.flash in FLASH_CHOICES else FLASH_CHOICES[0]
            load = LoadConfig(context_length=self.context_length,
                              flash_attention=None if flash == "as loaded" else flash == "on")
        route = self.route if self.route in ROUTES else ROUTES[0]
        reasoning = self.reasoning if (route in STATEFUL_ROUTES
                                       and self.reasoning in reasoning_options) else None
        return options, load, route, reasoning


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
