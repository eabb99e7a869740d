"""A real HTTP server that behaves like LM Studio 0.4 (or 0.3, or a plain OpenAI server), for tests.

Standard library only. Every connection gets its own thread (ThreadingHTTPServer), so a test can
race several streams against it and they really run in parallel. Response shapes are copied from
/work/shared/reference/lmstudio-api.md; where that reference says a shape is UNCONFIRMED, the
double picks one plausible shape and says so in a comment ("double's choice").

In-process use::

    from tests.lmstudio_double import serve

    with serve() as double:                 # default config: test/alpha, test/beta, test/gamma
        httpx.get(f"{double.url}/api/v1/models")
        double.log()                        # one dict per request (see RequestRecord keys below)

Subprocess use (prints ``READY http://127.0.0.1:P`` once listening)::

    python tests/lmstudio_double.py --port 0 [--config FILE.json] [--dialect openai] [--token T]

Streaming timing follows a schedule computed from the moment the request was received:
token ``i`` (reasoning and content tokens counted together) is written at
``start + ttft_ms + i * token_gap_ms``, so delays never accumulate drift. ``start`` is the moment
the request arrived, or the moment a just-in-time model load finished.

Request log records (``DoubleServer.log()`` / ``GET /__double/log``) have the keys: ``id``,
``method``, ``path``, ``model``, ``body``, ``received_at``, ``first_token_at``, ``ended_at``,
``tokens_sent``, ``completed``, ``closed_early``, ``status``, plus ``stream``, ``instance_id``,
``finish_reason`` and ``fault`` (which ``fail_mode`` fired, if any). Times are ``time.time()``.
Control routes (``/__double/*``) are never logged and never need auth.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import secrets
import signal
import socket
import socketserver
import string
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DIALECTS = ("lmstudio-0.4", "lmstudio-0.3", "openai")
USAGE_MODES = ("separate", "on_finish", "none")
REASONING_FIELDS = ("reasoning_content", "reasoning", "think_inline")
MODEL_TYPES = ("llm", "embedding")
# The only keys POST /api/v1/models/load accepts (reference §5); anything else is a 400.
LOAD_KEYS = (
    "model",
    "context_length",
    "eval_batch_size",
    "flash_attention",
    "num_experts",
    "offload_kv_cache_to_gpu",
    "echo_load_config",
)
NATIVE_REASONING_VALUES = ("off", "low", "medium", "high", "on")

# Exact body LM Studio 0.4.18 returns when auth is on and no token is sent (reference §1.1).
AUTH_REQUIRED_BODY: dict[str, Any] = {
    "error": {
        "type": "invalid_request",
        "code": "invalid_api_key",
        "message": (
            "An LM Studio API token is required to make requests to this server, but none was "
            "provided using the Authorization header using the 'Bearer' scheme (i.e., "
            "'Authorization: Bearer $LM_API_TOKEN'). Learn more at: "
            "https://lmstudio.ai/docs/developer/core/authentication."
        ),
    }
}
# Double's choice: the body for a wrong-but-present token is UNCONFIRMED; same type and code.
AUTH_INVALID_BODY: dict[str, Any] = {
    "error": {
        "type": "invalid_request",
        "code": "invalid_api_key",
        "message": "The provided LM Studio API token is invalid.",
    }
}
# llama.cpp server's bodies, used by the "openai" dialect.
OPENAI_AUTH_BODY: dict[str, Any] = {
    "error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}
}
OPENAI_NOT_FOUND_BODY: dict[str, Any] = {
    "error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}
}

_FAIL_MODE_RE = re.compile(r"^(cut_after|error_in_stream):(\d+)$|^error_before_stream$")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """One downloaded model as the double presents it, plus how it behaves when asked to chat.

    Listing fields mirror GET /api/v1/models. Behaviour fields:

    - ``loaded``: start with one loaded instance (id = key). Default True, so a hand-written
      config does not pay a just-in-time load on its first request.
    - ``ttft_ms``: request received (or JIT load finished) -> first token written.
    - ``token_gap_ms``: time between consecutive tokens.
    - ``reply``: answer text; default ``"Reply from <key>: one two three ..."`` with
      ``reply_tokens`` tokens in total. Tokens are words with their leading space.
    - ``reasoning``: optional thinking text, streamed before the answer.
    - ``reasoning_field``: ``"reasoning_content"`` (delta.reasoning_content), ``"reasoning"``
      (delta.reasoning, gpt-oss style) or ``"think_inline"`` (inside content as
      ``<think>...</think>``, with both tags split across chunks: ``"<thi"`` + ``"nk>"``).
    - ``load_time_ms``: duration of an explicit or just-in-time load.
    - ``fail_mode``: ``"cut_after:N"``, ``"error_before_stream"`` or ``"error_in_stream:N"``.
    """

    key: str
    type: str = "llm"
    display_name: str | None = None
    publisher: str | None = None
    architecture: str | None = None
    quantization: dict[str, Any] | None = field(
        default_factory=lambda: {"name": "Q4_K_M", "bits_per_weight": 4}
    )
    size_bytes: int = 2_000_000_000
    params_string: str | None = None
    max_context_length: int = 32768
    format: str | None = "gguf"
    capabilities: dict[str, Any] | None = None
    description: str | None = None
    variants: list[str] | None = None
    loaded: bool = True
    context_length: int = 4096
    ttft_ms: float = 100.0
    token_gap_ms: float = 20.0
    reply: str | None = None
    reply_tokens: int = 20
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"
    load_time_ms: float = 300.0
    fail_mode: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("model 'key' must be a non-empty string")
        if self.type not in MODEL_TYPES:
            raise ValueError(f"model {self.key!r}: type must be one of {MODEL_TYPES}")
        if self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(
                f"model {self.key!r}: reasoning_field must be one of {REASONING_FIELDS}"
            )
        if self.fail_mode is not None and not _FAIL_MODE_RE.match(self.fail_mode):
            raise ValueError(
                f"model {self.key!r}: fail_mode must be 'cut_after:N', 'error_before_stream' "
                f"or 'error_in_stream:N', not {self.fail_mode!r}"
            )
        if self.publisher is None:
            self.publisher = self.key.split("/", 1)[0] if "/" in self.key else "local"
        if self.display_name is None:
            self.display_name = self.key.rsplit("/", 1)[-1].replace("-", " ").title()
        if self.type == "llm":
            if self.architecture is None:
                self.architecture = "llama"
            if self.capabilities is None:
                self.capabilities = {"vision": False, "trained_for_tool_use": False}
        self.context_length = min(self.context_length, self.max_context_length)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Build from a JSON-style dict; unknown keys raise ValueError (catches typos in tests)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model field(s): {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:  # e.g. missing 'key'
            raise ValueError(str(exc)) from exc

    def fault(self) -> tuple[str | None, int]:
        """Parsed ``fail_mode``: (kind or None, N)."""
        if not self.fail_mode:
            return None, 0
        kind, _, n = self.fail_mode.partition(":")
        return kind, int(n or 0)

    def reply_text(self) -> str:
        """The answer text this model streams (configured or the deterministic default)."""
        if self.reply is not None:
            return self.reply
        words = ["Reply", "from", f"{self.key}:"]
        words += [_number_words(i) for i in range(1, max(0, self.reply_tokens - 3) + 1)]
        return " ".join(words[: self.reply_tokens])

    def default_instance_config(self) -> dict[str, Any]:
        """The ``loaded_instances[].config`` of an instance loaded without options."""
        if self.type == "embedding":
            return {"context_length": self.context_length}
        return {
            "context_length": self.context_length,
            "eval_batch_size": 512,
            "parallel": 4,  # API/JIT loads use 4 parallel slots (reference §11)
            "flash_attention": True,
            "num_experts": 0,
            "offload_kv_cache_to_gpu": True,
        }


def _default_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            key="test/alpha",
            display_name="Test Alpha 1B",
            architecture="llama",
            params_string="1B",
            size_bytes=812_345_678,
            max_context_length=32768,
            capabilities={"vision": False, "trained_for_tool_use": True},
            loaded=True,
            ttft_ms=120,
            token_gap_ms=20,
        ),
        ModelSpec(
            key="test/beta",
            display_name="Test Beta 4B",
            architecture="qwen3",
            quantization={"name": "Q8_0", "bits_per_weight": 8},
            params_string="4B",
            size_bytes=4_280_000_000,
            max_context_length=131072,
            capabilities={
                "vision": True,
                "trained_for_tool_use": True,
                "reasoning": {"allowed_options": ["off", "on"], "default": "on"},
            },
            loaded=True,
            ttft_ms=250,
            token_gap_ms=40,
            reasoning="Let me think about this for a moment.",
        ),
        ModelSpec(
            key="test/gamma",
            display_name="Test Gamma 270M",
            architecture="gemma3",
            params_string="270M",
            size_bytes=253_000_000,
            max_context_length=8192,
            format="mlx",
            quantization={"name": "4bit", "bits_per_weight": 4},
            loaded=False,
            load_time_ms=600,
            ttft_ms=80,
            token_gap_ms=10,
        ),
        ModelSpec(
            key="test/embed",
            type="embedding",
            display_name="Test Embed Small",
            publisher="test",
            quantization={"name": "F16", "bits_per_weight": 16},
            size_bytes=274_290_560,
            max_context_length=2048,
            context_length=2048,
            loaded=False,
            load_time_ms=100,
        ),
    ]


@dataclass
class DoubleConfig:
    """Whole-server configuration.

    - ``dialect``: ``"lmstudio-0.4"`` (native /api/v1 + /api/v0 + OpenAI-compatible),
      ``"lmstudio-0.3"`` (/api/v0 + OpenAI-compatible; /api/v1/* is an unknown route) or
      ``"openai"`` (only /v1/models and /v1/chat/completions; everything else 404, llama.cpp style).
    - ``api_token``: when set, every non-control route needs ``Authorization: Bearer <token>``.
    - ``usage_mode``: where streamed usage goes when the request sets
      ``stream_options.include_usage``: ``"separate"`` chunk with ``choices: []``,
      ``"on_finish"`` chunk, or ``"none"`` (never; non-streaming replies then omit usage too).
    - ``download_ms``: how long a download job takes to complete.
    - ``jit_loading``: LM Studio's JIT setting (default on). Off: /v1/models lists only loaded
      instances and /v1/chat/completions refuses unloaded models with 404 instead of loading.
    """

    dialect: str = "lmstudio-0.4"
    api_token: str | None = None
    usage_mode: str = "separate"
    download_ms: float = 1500.0
    jit_loading: bool = True
    models: list[ModelSpec] = field(default_factory=_default_models)

    def __post_init__(self) -> None:
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, not {self.dialect!r}")
        if self.usage_mode not in USAGE_MODES:
            raise ValueError(f"usage_mode must be one of {USAGE_MODES}, not {self.usage_mode!r}")
        self.models = [
            m if isinstance(m, ModelSpec) else ModelSpec.from_dict(m) for m in self.models
        ]
        keys = [m.key for m in self.models]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate model key(s): {', '.join(duplicates)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DoubleConfig:
        """Build from a JSON-style dict. Missing keys take defaults (missing ``models`` means the
        default three LLMs + embedding model); unknown keys raise ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError("config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        models = data.get("models")
        if models is not None and not isinstance(models, list):
            raise ValueError("'models' must be a list")
        return cls(**dict(data))

    @classmethod
    def from_json_file(cls, path: str | Path) -> DoubleConfig:
        """Load a config written as JSON (same keys as ``from_dict``)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @classmethod
    def coerce(cls, config: DoubleConfig | Mapping[str, Any] | str | Path | None) -> DoubleConfig:
        """Accept a DoubleConfig, a dict, a path to a JSON file, or None (default config)."""
        if config is None:
            return cls()
        if isinstance(config, DoubleConfig):
            return copy.deepcopy(config)
        if isinstance(config, str | Path):
            return cls.from_json_file(config)
        return cls.from_dict(config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (round-trips through ``from_dict``)."""
        return dataclasses.asdict(self)


def default_config() -> DoubleConfig:
    """The config used when none is given: see module docstring and ``_default_models``."""
    return DoubleConfig()


# --------------------------------------------------------------------------------------------
# Text helpers: tokens, prompt sizes, the reply plan
# --------------------------------------------------------------------------------------------

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
_ONES += "fifteen sixteen seventeen eighteen nineteen"
_ONES_WORDS = _ONES.split()
_TENS_WORDS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    """English words for 0..999 joined by hyphens ("twenty-one"), digits beyond."""
    if n < 20:
        return _ONES_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS_WORDS[tens] + (f"-{_ONES_WORDS[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES_WORDS[hundreds]}-hundred" + (f"-{_number_words(rest)}" if rest else "")
    return str(n)


def split_tokens(text: str) -> list[str]:
    """Split text into the double's "tokens": each word with its leading whitespace.

    ``"Hello world again"`` -> ``["Hello", " world", " again"]``; joining them gives the text back
    (trailing whitespace is attached to the last token).
    """
    tokens = re.findall(r"\s*\S+", text)
    tail = text[len("".join(tokens)) :]
    if tail and tokens:
        tokens[-1] += tail
    elif tail:
        tokens = [tail]
    return tokens


def count_words(value: Any) -> int:
    """Deterministic "prompt token" count: whitespace-separated words in every text found in
    OpenAI ``messages`` (string or ``[{type: text, text}]`` content) or native ``input``."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        total = 0
        for key in ("content", "text"):
            if key in value:
                total += count_words(value[key])
        return total
    return 0


@dataclass(frozen=True)
class ReplyPlan:
    """What one request will stream: ``tokens`` as (channel, text) with channel ``"reasoning"``
    or ``"content"``, the OpenAI ``finish_reason`` and the native/v0 ``stop_reason``."""

    tokens: list[tuple[str, str]]
    finish_reason: str
    stop_reason: str

    @property
    def reasoning_count(self) -> int:
        return sum(1 for channel, _ in self.tokens if channel == "reasoning")

    def text(self, channel: str) -> str:
        return "".join(t for c, t in self.tokens if c == channel)


def _cut_at_stop(tokens: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """Truncate ``tokens`` just before the first occurrence of any stop string."""
    text = "".join(tokens)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return tokens, False
    cut = min(hits)
    kept: list[str] = []
    used = 0
    for token in tokens:
        if used + len(token) <= cut:
            kept.append(token)
            used += len(token)
            continue
        if cut > used:
            kept.append(token[: cut - used])
        break
    return kept, True


def plan_reply(
    spec: ModelSpec,
    *,
    max_tokens: Any = None,
    stop: Any = None,
    reasoning: bool = True,
    inline_think: bool | None = None,
) -> ReplyPlan:
    """Decide the tokens a request gets.

    Stop strings apply to the answer only (not to reasoning). ``max_tokens`` counts every
    emitted token, reasoning and ``<think>`` tag fragments included; ``None`` or a negative
    value (LM Studio uses -1) means no limit. ``inline_think`` defaults to the model's
    ``reasoning_field == "think_inline"``; the native route passes False because LM Studio
    always separates reasoning there.
    """
    if inline_think is None:
        inline_think = spec.reasoning_field == "think_inline"
    thinking = split_tokens(spec.reasoning) if (reasoning and spec.reasoning) else []
    answer = split_tokens(spec.reply_text())
    stop_reason = "eosFound"
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s]
    if stops:
        answer, hit = _cut_at_stop(answer, stops)
        if hit:
            stop_reason = "stopStringFound"
    tokens: list[tuple[str, str]]
    if inline_think and thinking:
        # Split both tags across chunk boundaries so clients must buffer partial tags.
        inline = ["<thi", "nk>", *thinking, "</thi", "nk>\n\n"]
        tokens = [("content", t) for t in inline] + [("content", t) for t in answer]
    else:
        tokens = [("reasoning", t) for t in thinking] + [("content", t) for t in answer]
    finish_reason = "stop"
    limit = max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None
    if limit is not None and 0 <= limit < len(tokens):
        tokens = tokens[:limit]
        finish_reason = "length"
        stop_reason = "maxPredictedTokensReached"
    return ReplyPlan(tokens=tokens, finish_reason=finish_reason, stop_reason=stop_reason)


def _iso(ts: float) -> str:
    """ISO 8601 with milliseconds and Z, like ``2025-10-03T15:33:23.496Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _random_id(prefix: str, n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _dumps(obj: Any) -> bytes:
    # Compact like Express's JSON.stringify, non-ASCII left as is.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Server state (models, loaded instances, download jobs, request log)
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    job_id: str
    key: str
    model: str
    quantization: str | None
    total: int
    started: float
    duration: float
    fails: bool
    finalised: bool = False


class _State:
    """Everything mutable, behind one lock. Per-model locks serialise loads of the same model
    while letting different models load in parallel (a race loads A, B and C at once)."""

    def __init__(self, config: DoubleConfig) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.stopping = threading.Event()
        self.records: list[dict[str, Any]] = []
        self.next_record_id = 1
        self.started_at = time.time()
        self.apply(config)

    # -- config ---------------------------------------------------------------------------
    def apply(self, config: DoubleConfig) -> None:
        """Install a config: model list, loaded instances and download jobs start afresh."""
        with self.cond:
            self.config = config
            self.models: dict[str, ModelSpec] = {m.key: m for m in config.models}
            self.instances: dict[str, list[dict[str, Any]]] = {
                m.key: ([{"id": m.key, "config": m.default_instance_config()}] if m.loaded else [])
                for m in config.models
            }
            self.jobs: dict[str, _Job] = {}
            self.model_locks: dict[str, threading.Lock] = {}

    def sleep_until(self, deadline: float) -> bool:
        """Sleep until ``time.monotonic() >= deadline``; False if the server is stopping."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not self.stopping.is_set()
            if self.stopping.wait(remaining):
                return False

    # -- models ---------------------------------------------------------------------------
    def resolve(self, model_id: str) -> tuple[ModelSpec, str | None] | None:
        """Map a request's ``model`` (a key or an instance id like ``key:2``) to
        (spec, instance id or None when not loaded); None when unknown."""
        with self.cond:
            spec = self.models.get(model_id)
            if spec is not None:
                insts = self.instances[spec.key]
                return spec, (insts[0]["id"] if insts else None)
            for key, insts in self.instances.items():
                if any(inst["id"] == model_id for inst in insts):
                    return self.models[key], model_id
        return None

    def specs(self) -> list[ModelSpec]:
        """The downloaded models, in listing order (a snapshot: downloads may add more)."""
        with self.cond:
            return list(self.models.values())

    def _model_lock(self, key: str) -> threading.Lock:
        with self.cond:
            return self.model_locks.setdefault(key, threading.Lock())

    def _add_instance(self, spec: ModelSpec, config: dict[str, Any]) -> str:
        with self.cond:
            insts = self.instances.setdefault(spec.key, [])
            taken = {inst["id"] for inst in insts}
            instance_id = spec.key
            n = 2
            while instance_id in taken:
                instance_id = f"{spec.key}:{n}"
                n += 1
            insts.append({"id": instance_id, "config": config})
            return instance_id

    def _timed_load(self, spec: ModelSpec, on_event: Callable[[str, float], None] | None) -> float:
        """Wait ``load_time_ms`` (reporting progress in quarters); returns seconds taken."""
        start = time.monotonic()
        if on_event:
            on_event("start", 0.0)
        for step in (1, 2, 3, 4):
            if not self.sleep_until(start + spec.load_time_ms / 1000 * step / 4):
                break
            if on_event:
                on_event("progress", step / 4)
        return time.monotonic() - start

    def ensure_loaded(
        self, spec: ModelSpec, on_event: Callable[[str, float], None] | None = None
    ) -> tuple[str, float | None]:
        """JIT load: return (instance id, load seconds or None if it was already loaded)."""
        with self._model_lock(spec.key):
            with self.cond:
                insts = self.instances.get(spec.key)
                if insts:
                    return insts[0]["id"], None
            seconds = self._timed_load(spec, on_event)
            return self._add_instance(spec, spec.default_instance_config()), seconds

    def load(self, spec: ModelSpec, config: dict[str, Any]) -> tuple[str, float]:
        """Explicit load: always adds an instance (``key``, then ``key:2``, ``key:3`` ...)."""
        with self._model_lock(spec.key):
            seconds = self._timed_load(spec, None)
            return self._add_instance(spec, config), seconds

    def unload(self, instance_id: str) -> bool:
        with self.cond:
            for insts in self.instances.values():
                for inst in insts:
                    if inst["id"] == instance_id:
                        insts.remove(inst)
                        return True
        return False

    # -- downloads ------------------------------------------------------------------------
    def advance_jobs(self) -> None:
        """Finalise download jobs whose time is up: completed ones add their model."""
        now = time.time()
        with self.cond:
            for job in self.jobs.values():
                if job.finalised or now - job.started < job.duration:
                    continue
                job.finalised = True
                if not job.fails and job.key not in self.models:
                    spec = ModelSpec(
                        key=job.key,
                        size_bytes=job.total,
                        quantization={"name": job.quantization or "Q4_K_M", "bits_per_weight": 4},
                        loaded=False,
                    )
                    self.models[spec.key] = spec
                    self.instances[spec.key] = []

    def job_view(self, job: _Job) -> dict[str, Any]:
        """The status object of GET /api/v1/models/download/status/:job_id (reference §7.2)."""
        now = time.time()
        fraction = 1.0 if job.duration <= 0 else min(1.0, (now - job.started) / job.duration)
        view: dict[str, Any] = {"job_id": job.job_id}
        if job.fails and fraction >= 0.5:
            # Double's choice: a failing download stops at half way.
            view.update(status="failed", total_size_bytes=job.total,
                        downloaded_bytes=job.total // 2, started_at=_iso(job.started))
        elif fraction >= 1.0:
            view.update(status="completed", total_size_bytes=job.total,
                        downloaded_bytes=job.total, started_at=_iso(job.started),
                        completed_at=_iso(job.started + job.duration))
        else:
            view.update(status="downloading", total_size_bytes=job.total,
                        downloaded_bytes=int(job.total * fraction), started_at=_iso(job.started),
                        bytes_per_second=job.total / job.duration,
                        estimated_completion=_iso(job.started + job.duration))
        return view

    # -- log ------------------------------------------------------------------------------
    def new_record(self, method: str, path: str, body: Any, received_at: float) -> dict[str, Any]:
        with self.cond:
            record: dict[str, Any] = {
                "id": self.next_record_id,
                "method": method,
                "path": path,
                "model": body.get("model") if isinstance(body, dict) else None,
                "body": body,
                "received_at": received_at,
                "first_token_at": None,
                "ended_at": None,
                "tokens_sent": 0,
                "completed": False,
                "closed_early": False,
                "status": None,
                "stream": bool(isinstance(body, dict) and body.get("stream") is True),
                "instance_id": None,
                "finish_reason": None,
                "fault": None,
            }
            self.next_record_id += 1
            self.records.append(record)
            return record

    def update(self, record: dict[str, Any], **changes: Any) -> None:
        with self.cond:
            record.update(changes)
            self.cond.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.cond:
            return copy.deepcopy(self.records)

    def clear_log(self) -> None:
        with self.cond:
            self.records.clear()

    def wait_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(
                lambda: all(r["ended_at"] is not None for r in self.records), timeout
            )


# --------------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed the connection (a write failed), or the server is stopping."""


class _DoubleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    verbose = False

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping an idle keep-alive connection (httpx does this after reading
        # [DONE] without the final chunk) is normal traffic, not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall for seconds on hosts
        # with slow DNS; the double never needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One small segment per SSE event, sent now: Nagle + delayed ACK would add up to 40 ms.
    disable_nagle_algorithm = True
    server: _DoubleHTTPServer
    record: dict[str, Any]

    # -- plumbing -------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if getattr(self.server, "verbose", False):
            sys.stderr.write(f"[double] {self.address_string()} {format % args}\n")

    def version_string(self) -> str:
        return "lmstudio-double"

    @property
    def state(self) -> _State:
        return self.server.state

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, data: bytes) -> None:
        """Write bytes now; a failed write means the client has gone (the real detection)."""
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            self.close_connection = True
            self.state.update(self.record, closed_early=True)
            raise _ClientGone from exc

    def _send_json(self, status: int, obj: Any, *, record: bool = True) -> None:
        body = _dumps(obj)
        if record:
            self.state.update(self.record, status=status)
        try:
            self.send_response(status)
            self.send_header("X-Powered-By", "Express")
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close" if self.close_connection else "keep-alive")
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            self.close_connection = True
            if record:
                self.state.update(self.record, closed_early=True)
            raise _ClientGone from exc
        if record:
            self._write(body)
            self.state.update(self.record, completed=True)
        else:
            try:
                self.wfile.write(body)
            except OSError:
                self.close_connection = True

    def _start_stream(self) -> None:
        self.state.update(self.record, status=200)
        try:
            self.send_response(200)
            self.send_header("X-Powered-By", "Express")
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "keep-alive")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            self.close_connection = True
            self.state.update(self.record, closed_early=True)
            raise _ClientGone from exc

    def _chunk(self, payload: bytes) -> None:
        """One HTTP chunk frame (hex length CRLF data CRLF) in a single write."""
        self._write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def _sse_data(self, obj: Any) -> None:
        self._chunk(b"data: " + (obj if isinstance(obj, bytes) else _dumps(obj)) + b"\n\n")

    def _sse_event(self, name: str, obj: dict[str, Any]) -> None:
        self._chunk(b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n")

    def _end_stream(self) -> None:
        self._write(b"0\r\n\r\n")
        self.state.update(self.record, completed=True)

    def _cut(self) -> None:
        """Drop the connection mid-response, like a crashed server (no terminating chunk)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _sleep_until(self, deadline: float) -> None:
        if not self.state.sleep_until(deadline):
            self._cut()
            raise _ClientGone

    # -- dispatch -------------------------------------------------------------------------
    def _dispatch(self) -> None:
        received_at = time.time()
        started = time.monotonic()
        url = urlsplit(self.path)
        path = url.path
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if path.startswith("/__double/"):
            self._control(path, url.query, raw)
            return
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, bad_json = raw.decode("utf-8", "replace"), True
        self.record = self.state.new_record(self.command, path, body, received_at)
        try:
            self._route(path, body, bad_json, started)
        except _ClientGone:
            pass
        except Exception as exc:  # a bug in the double: say so loudly instead of hanging up
            self.server.handle_error(self.request, self.client_address)
            if self.record["status"] is None:
                try:
                    self._send_json(500, {"error": f"lmstudio double crashed: {exc!r}"})
                except _ClientGone:
                    pass
            else:
                self._cut()
        finally:
            self.state.update(self.record, ended_at=time.time())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _authorized(self, token: str) -> tuple[bool, bool]:
        """(authorized, header was present)."""
        header = self.headers.get("Authorization")
        if not header:
            return False, False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and value.strip() == token, True

    def _route(self, path: str, body: Any, bad_json: bool, started: float) -> None:
        state = self.state
        cfg = state.config
        method = self.command
        lmstudio = cfg.dialect != "openai"
        native = cfg.dialect == "lmstudio-0.4"
        state.advance_jobs()

        if cfg.api_token:
            ok, present = self._authorized(cfg.api_token)
            if not ok:
                if not lmstudio:
                    body_401 = OPENAI_AUTH_BODY
                else:
                    body_401 = AUTH_INVALID_BODY if present else AUTH_REQUIRED_BODY
                self._send_json(401, body_401)
                return

        if bad_json and method == "POST":
            # Double's choice: the invalid-JSON response is UNCONFIRMED.
            if path.startswith("/api/v1/"):
                self._native_error(400, "invalid_request", "Request body is not valid JSON")
            else:
                self._openai_error(400, "Request body is not valid JSON", param=None)
            return

        route = (method, path)
        if route == ("GET", "/v1/models"):
            self._list_openai_models()
        elif route == ("POST", "/v1/chat/completions"):
            self._chat_completions(body, started, v0=False)
        elif lmstudio and route == ("GET", "/lmstudio-greeting"):
            self._send_json(200, {"lmstudio": True})
        elif lmstudio and method == "GET" and path == "/api/v0/models":
            self._send_json(200, {"data": [self._v0_model(m) for m in state.specs()],
                                  "object": "list"})
        elif lmstudio and method == "GET" and path.startswith("/api/v0/models/"):
            self._v0_single_model(unquote(path[len("/api/v0/models/") :]))
        elif lmstudio and route == ("POST", "/api/v0/chat/completions"):
            self._chat_completions(body, started, v0=True)
        elif native and route == ("GET", "/api/v1/models"):
            self._send_json(200, {"models": [self._native_model(m) for m in state.specs()]})
        elif native and route == ("POST", "/api/v1/chat"):
            self._native_chat(body, started)
        elif native and route == ("POST", "/api/v1/models/load"):
            self._load(body)
        elif native and route == ("POST", "/api/v1/models/unload"):
            self._unload(body)
        elif native and route == ("POST", "/api/v1/models/download"):
            self._download(body)
        elif native and method == "GET" and path.startswith("/api/v1/models/download/status/"):
            self._download_status(path.rsplit("/", 1)[-1])
        elif lmstudio:
            # LM Studio's real quirk: unknown routes answer 200 with a string error.
            self._send_json(200, {"error": f"Unexpected endpoint or method. ({method} {path})"})
        else:
            self._send_json(404, OPENAI_NOT_FOUND_BODY)

    # -- error bodies ---------------------------------------------------------------------
    def _native_error(
        self, status: int, type_: str, message: str, code: str | None = None,
        param: str | None = None,
    ) -> None:
        err: dict[str, Any] = {"type": type_, "message": message}
        if code is not None:
            err["code"] = code
        if param is not None:
            err["param"] = param
        self._send_json(status, {"error": err})

    def _openai_error(
        self, status: int, message: str, *, type_: str = "invalid_request_error",
        param: str | None = "model", code: str | None = None,
    ) -> None:
        self._send_json(status, {"error": {"message": message, "type": type_, "param": param,
                                           "code": code}})

    def _model_not_found_openai(self, model_id: str) -> None:
        # Reference §4.6 (older wording, HTTP 404); newer builds answer 400 "Invalid model
        # identifier" with the same code, so clients should key on code, not status.
        keys = "\n".join(m.key for m in self.state.specs())
        self._openai_error(
            404,
            f'Model "{model_id}" not found. Please specify a valid model.'
            f"\n\nYour models:\n\n{keys}",
            code="model_not_found",
        )

    # -- listings -------------------------------------------------------------------------
    def _native_model(self, spec: ModelSpec) -> dict[str, Any]:
        """One entry of GET /api/v1/models, in LM Studio's key order (reference §2)."""
        with self.state.cond:
            insts = copy.deepcopy(self.state.instances.get(spec.key, []))
        entry: dict[str, Any] = {
            "type": spec.type,
            "publisher": spec.publisher,
            "key": spec.key,
            "display_name": spec.display_name,
        }
        if spec.type == "llm":
            entry["architecture"] = spec.architecture
        entry.update(
            quantization=spec.quantization,
            size_bytes=spec.size_bytes,
            params_string=spec.params_string,
            loaded_instances=insts,
            max_context_length=spec.max_context_length,
            format=spec.format,
        )
        if spec.type == "llm":
            entry["capabilities"] = spec.capabilities
            entry["description"] = spec.description
            if spec.variants:
                entry["variants"] = spec.variants
                entry["selected_variant"] = spec.variants[0]
        return entry

    def _v0_model(self, spec: ModelSpec) -> dict[str, Any]:
        """One entry of GET /api/v0/models (reference §3.2)."""
        with self.state.cond:
            insts = list(self.state.instances.get(spec.key, []))
        caps = spec.capabilities or {}
        kind = "embeddings" if spec.type == "embedding" else "vlm" if caps.get("vision") else "llm"
        entry: dict[str, Any] = {
            "id": spec.key,
            "object": "model",
            "type": kind,
            "publisher": spec.publisher,
            "arch": spec.architecture,
            "compatibility_type": spec.format,
            "quantization": (spec.quantization or {}).get("name"),
            "state": "loaded" if insts else "not-loaded",
            "max_context_length": spec.max_context_length,
        }
        if insts:
            entry["loaded_context_length"] = insts[0]["config"]["context_length"]
        if caps.get("trained_for_tool_use"):
            entry["capabilities"] = ["tool_use"]
        return entry

    def _v0_single_model(self, model_id: str) -> None:
        spec = self.state.models.get(model_id)
        if spec is None:
            # Double's choice (UNCONFIRMED): OpenAI-compat not-found body.
            self._openai_error(404, f'Model "{model_id}" not found', code="model_not_found")
        else:
            self._send_json(200, self._v0_model(spec))

    def _list_openai_models(self) -> None:
        state = self.state
        if state.config.dialect == "openai":
            created = int(state.started_at)
            data = [{"id": m.key, "object": "model", "created": created, "owned_by": "llamacpp"}
                    for m in state.specs()]
            self._send_json(200, {"object": "list", "data": data})
            return
        if state.config.jit_loading:
            ids = [m.key for m in state.specs()]  # JIT on: every downloaded model (reference §3.1)
        else:
            with state.cond:
                ids = [i["id"] for insts in state.instances.values() for i in insts]
        data = [{"id": i, "object": "model", "owned_by": "organization_owner"} for i in ids]
        self._send_json(200, {"data": data, "object": "list"})

    # -- OpenAI-compatible chat -----------------------------------------------------------
    def _chat_completions(self, body: Any, started: float, *, v0: bool) -> None:
        state = self.state
        cfg = state.config
        if not isinstance(body, dict):
            self._openai_error(400, "Request body must be a JSON object", param=None)
            return
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            self._openai_error(400, "'model' is required", code="missing_required_parameter")
            return
        resolved = state.resolve(model_id)
        if resolved is None:
            self._model_not_found_openai(model_id)
            return
        spec, instance_id = resolved
        if spec.type != "llm":
            # Double's choice (UNCONFIRMED wording).
            self._openai_error(400, f'Model "{model_id}" is an embedding model, not an LLM')
            return
        gen_start = started
        if instance_id is None:
            if not cfg.jit_loading:
                self._openai_error(
                    404,
                    "No models loaded. Please load a model in the developer page or use the "
                    "`lms load` command.",
                    code="model_not_found",
                )
                return
            instance_id, _ = state.ensure_loaded(spec)
            gen_start = time.monotonic()  # TTFT schedule starts once the model is in memory
        state.update(self.record, instance_id=instance_id)

        fault, fault_n = spec.fault()
        if fault == "error_before_stream":
            state.update(self.record, fault=fault)
            self._send_json(500, {"error": {"message": f"Model {instance_id} crashed before "
                                            "generating (simulated)", "type": "internal_error"}})
            return
        plan = plan_reply(
            spec,
            max_tokens=body.get("max_tokens"),
            stop=body.get("stop"),
            reasoning=body.get("reasoning_effort") != "none",
        )
        prompt_tokens = count_words(body.get("messages"))
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            self._stream_openai(spec, instance_id, plan, prompt_tokens, gen_start, include_usage)
        else:
            self._complete_openai(spec, instance_id, plan, prompt_tokens, gen_start, v0=v0)

    def _slot(self, spec: ModelSpec, gen_start: float, i: int) -> float:
        """Monotonic time at which token ``i`` is due."""
        return gen_start + (spec.ttft_ms + i * spec.token_gap_ms) / 1000

    def _usage(self, plan: ReplyPlan, prompt_tokens: int, sent: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": sent,
            "total_tokens": prompt_tokens + sent,
            "completion_tokens_details": {"reasoning_tokens": plan.reasoning_count},
        }

    def _stream_openai(
        self, spec: ModelSpec, instance_id: str, plan: ReplyPlan, prompt_tokens: int,
        gen_start: float, include_usage: bool,
    ) -> None:
        state = self.state
        usage_mode = state.config.usage_mode
        base = {
            "id": _random_id("chatcmpl-", 21),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": instance_id,
            "system_fingerprint": instance_id,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        reasoning_key = "reasoning" if spec.reasoning_field == "reasoning" else "reasoning_content"
        fault, fault_n = spec.fault()
        n = len(plan.tokens)
        fault_at = min(fault_n, n) if fault in ("cut_after", "error_in_stream") else None

        self._start_stream()
        # An SSE comment before any data: clients must skip comment lines.
        self._chunk(b": keep-alive\n\n")
        sent = 0
        for i, (channel, text) in enumerate(plan.tokens):
            if i == fault_at:
                break
            self._sleep_until(self._slot(spec, gen_start, i))
            delta: dict[str, Any] = {"role": "assistant"} if i == 0 else {}
            delta[reasoning_key if channel == "reasoning" else "content"] = text
            self._sse_data(chunk(delta))
            sent += 1
            changes: dict[str, Any] = {"tokens_sent": sent}
            if i == 0:
                changes["first_token_at"] = time.time()
            state.update(self.record, **changes)
        if n == 0 and fault_at is None:
            # max_tokens=0 or an empty reply: still announce the role once.
            self._sleep_until(self._slot(spec, gen_start, 0))
            self._sse_data(chunk({"role": "assistant", "content": ""}))

        if fault_at is not None:
            self._sleep_until(self._slot(spec, gen_start, fault_at))
            state.update(self.record, fault=fault)
            if fault == "cut_after":
                self._cut()
                return
            self._sse_data({"error": {"message": f"Model {instance_id} failed while generating "
                                      "(simulated)", "type": "server_error"}})
            self._end_stream()
            return

        usage = self._usage(plan, prompt_tokens, sent)
        finish = chunk({}, plan.finish_reason)
        if include_usage and usage_mode == "on_finish":
            finish["usage"] = usage
        self._sse_data(finish)
        if include_usage and usage_mode == "separate":
            self._sse_data({**base, "choices": [], "usage": usage})
        self._sse_data(b"[DONE]")
        state.update(self.record, finish_reason=plan.finish_reason)
        self._end_stream()

    def _complete_openai(
        self, spec: ModelSpec, instance_id: str, plan: ReplyPlan, prompt_tokens: int,
        gen_start: float, *, v0: bool,
    ) -> None:
        state = self.state
        n = len(plan.tokens)
        fault, fault_n = spec.fault()
        if fault in ("cut_after", "error_in_stream"):
            self._sleep_until(self._slot(spec, gen_start, min(fault_n, n)))
            state.update(self.record, fault=fault)
            if fault == "cut_after":
                state.update(self.record, status=None)
                self._cut()  # no response at all: "Server disconnected without a response"
                return
            self._send_json(500, {"error": {"message": f"Model {instance_id} failed while "
                                            "generating (simulated)", "type": "server_error"}})
            return
        self._sleep_until(self._slot(spec, gen_start, 0))
        first = time.monotonic()
        if n:
            state.update(self.record, first_token_at=time.time())
        self._sleep_until(self._slot(spec, gen_start, max(0, n - 1)))
        last = time.monotonic()
        state.update(self.record, tokens_sent=n, finish_reason=plan.finish_reason)

        message: dict[str, Any] = {"role": "assistant", "content": plan.text("content")}
        if spec.reasoning_field == "reasoning":
            if plan.reasoning_count:
                message["reasoning"] = plan.text("reasoning")
        elif spec.reasoning_field == "reasoning_content":
            message["reasoning_content"] = plan.text("reasoning")
        message["tool_calls"] = []
        response: dict[str, Any] = {
            "id": _random_id("chatcmpl-", 21),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": instance_id,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": plan.finish_reason}],
        }
        if state.config.usage_mode != "none":
            response["usage"] = self._usage(plan, prompt_tokens, n)
        if v0:
            # /api/v0 extras (reference §4.5); runtime values are made up.
            response["stats"] = {
                "tokens_per_second": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
                "time_to_first_token": round(first - gen_start, 3),
                "generation_time": round(last - gen_start, 3),
                "stop_reason": plan.stop_reason,
            }
            response["model_info"] = {"arch": spec.architecture,
                                      "quant": (spec.quantization or {}).get("name"),
                                      "format": spec.format,
                                      "context_length": spec.context_length}
            response["runtime"] = {"name": "llama.cpp-linux-x86_64-avx2", "version": "1.0.0",
                                   "supported_formats": ["gguf"]}
        else:
            response["stats"] = {}  # always {} on /v1/chat/completions (reference §4.2)
        response["system_fingerprint"] = instance_id
        self._send_json(200, response)

    # -- native /api/v1/chat --------------------------------------------------------------
    def _validate_native_input(self, value: Any) -> str | None:
        """None if ``input`` is valid; otherwise the 400 has already been sent."""
        if isinstance(value, str):
            return None
        if not isinstance(value, list):
            self._native_error(400, "invalid_request", "Expected string or array for 'input'",
                               code="invalid_type", param="input")
            return "bad"
        for i, item in enumerate(value):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind not in ("text", "image"):
                # Exact body for a wrong discriminator (reference §1.1, DOCS#253).
                self._send_json(400, {"error": {
                    "message": "Invalid discriminator value. Expected 'text' | 'image'",
                    "type": "invalid_request", "code": "invalid_union", "param": "input"}})
                return "bad"
            field_name = "content" if kind == "text" else "data_url"
            problems = []
            if not isinstance(item.get(field_name), str):
                problems.append(f"'input.{i}.{field_name}' is required")
            extra = [k for k in item if k not in ("type", field_name)]
            if extra:
                problems.append("Unrecognized key(s) in object: "
                                + ", ".join(f"'{k}'" for k in extra))
            if problems:
                self._native_error(400, "invalid_request", ", ".join(problems),
                                   param=f"input.{i}")
                return "bad"
        return None

    def _native_chat(self, body: Any, started: float) -> None:
        state = self.state
        if not isinstance(body, dict):
            self._native_error(400, "invalid_request", "Expected object, received "
                               f"{type(body).__name__}", code="invalid_type")
            return
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            self._native_error(400, "invalid_request", '"model" is required',
                               code="missing_required_parameter", param="model")
            return
        if "input" not in body:
            self._native_error(400, "invalid_request", '"input" is required',
                               code="missing_required_parameter", param="input")
            return
        if self._validate_native_input(body["input"]) is not None:
            return
        resolved = state.resolve(model_id)
        if resolved is None:
            self._native_error(404, "model_not_found", f'Model "{model_id}" not found')
            return
        spec, instance_id = resolved
        if spec.type != "llm":
            self._native_error(400, "invalid_request",
                               f'Model "{model_id}" is an embedding model and cannot chat',
                               param="model")
            return
        reasoning_opt = body.get("reasoning")
        caps_reasoning = (spec.capabilities or {}).get("reasoning")
        if reasoning_opt is not None:
            allowed = (caps_reasoning or {}).get("allowed_options")
            if allowed is None:
                allowed = list(NATIVE_REASONING_VALUES) if spec.reasoning else ["off"]
            if reasoning_opt not in NATIVE_REASONING_VALUES or reasoning_opt not in allowed:
                # "errors if unsupported by model" (reference §8.1); wording is the double's.
                self._native_error(400, "invalid_request",
                                   f"Reasoning setting '{reasoning_opt}' is not supported by "
                                   f"model \"{spec.key}\". Supported: {', '.join(allowed)}",
                                   param="reasoning")
                return
            reasoning_on = reasoning_opt != "off"
        else:
            default = (caps_reasoning or {}).get("default", "on")
            reasoning_on = default != "off"
        previous = body.get("previous_response_id")
        if previous is not None and not (isinstance(previous, str)
                                         and previous.startswith("resp_")):
            self._native_error(400, "invalid_request",
                               "'previous_response_id' must start with 'resp_'",
                               param="previous_response_id")
            return
        fault, _ = spec.fault()
        if fault == "error_before_stream":
            state.update(self.record, fault=fault)
            self._send_json(500, {"error": {"message": f"Model {spec.key} crashed before "
                                            "generating (simulated)", "type": "internal_error"}})
            return
        plan = plan_reply(spec, max_tokens=body.get("max_output_tokens"), reasoning=reasoning_on,
                          inline_think=False)
        input_tokens = count_words(body["input"]) + count_words(body.get("system_prompt"))
        store = body.get("store", True) is not False
        if body.get("stream") is True:
            self._native_stream(spec, instance_id, plan, input_tokens, started, store)
        else:
            self._native_complete(spec, instance_id, plan, input_tokens, started, store)

    def _native_result(
        self, instance_id: str, plan: ReplyPlan, sent: list[tuple[str, str]], input_tokens: int,
        gen_start: float, first: float | None, last: float | None, load_seconds: float | None,
        store: bool,
    ) -> dict[str, Any]:
        """The non-streaming body, also carried by ``chat.end`` (reference §8.2)."""
        output = []
        reasoning_text = "".join(t for c, t in sent if c == "reasoning")
        content_text = "".join(t for c, t in sent if c == "content")
        if reasoning_text:
            output.append({"type": "reasoning", "content": reasoning_text})
        if content_text or not reasoning_text:
            output.append({"type": "message", "content": content_text})
        n = len(sent)
        stats: dict[str, Any] = {
            "input_tokens": input_tokens,
            "total_output_tokens": n,
            "reasoning_output_tokens": sum(1 for c, _ in sent if c == "reasoning"),
            # Decode speed as ATOM defines it: (tokens - 1) / (last - first token time).
            "tokens_per_second": (n - 1) / (last - first)
            if n > 1 and first is not None and last is not None and last > first else 0.0,
            "time_to_first_token_seconds": round((first or time.monotonic()) - gen_start, 3),
        }
        if load_seconds is not None:
            stats["model_load_time_seconds"] = round(load_seconds, 3)
        result: dict[str, Any] = {"model_instance_id": instance_id, "output": output,
                                  "stats": stats}
        if store:
            result["response_id"] = "resp_" + secrets.token_hex(24)
        return result

    def _native_complete(
        self, spec: ModelSpec, instance_id: str | None, plan: ReplyPlan, input_tokens: int,
        started: float, store: bool,
    ) -> None:
        state = self.state
        load_seconds = None
        gen_start = started
        if instance_id is None:
            instance_id, load_seconds = state.ensure_loaded(spec)
            gen_start = time.monotonic()
        state.update(self.record, instance_id=instance_id)
        n = len(plan.tokens)
        fault, fault_n = spec.fault()
        if fault in ("cut_after", "error_in_stream"):
            self._sleep_until(self._slot(spec, gen_start, min(fault_n, n)))
            state.update(self.record, fault=fault)
            if fault == "cut_after":
                state.update(self.record, status=None)
                self._cut()
                return
            self._send_json(500, {"error": {"message": f"Model {instance_id} failed while "
                                            "generating (simulated)", "type": "internal_error"}})
            return
        self._sleep_until(self._slot(spec, gen_start, 0))
        first = time.monotonic()
        if n:
            state.update(self.record, first_token_at=time.time())
        self._sleep_until(self._slot(spec, gen_start, max(0, n - 1)))
        last = time.monotonic()
        state.update(self.record, tokens_sent=n)
        self._send_json(200, self._native_result(instance_id, plan, plan.tokens, input_tokens,
                                                 gen_start, first if n else None, last,
                                                 load_seconds, store))

    def _native_stream(
        self, spec: ModelSpec, instance_id: str | None, plan: ReplyPlan, input_tokens: int,
        started: float, store: bool,
    ) -> None:
        state = self.state
        self._start_stream()
        self._sse_event("chat.start", {"type": "chat.start",
                                       "model_instance_id": instance_id or spec.key})
        load_seconds = None
        gen_start = started
        if instance_id is None:
            def on_load(kind: str, progress: float) -> None:
                name = "model_load.start" if kind == "start" else "model_load.progress"
                payload: dict[str, Any] = {"type": name, "model_instance_id": spec.key}
                if kind != "start":
                    payload["progress"] = progress
                try:
                    self._sse_event(name, payload)
                except _ClientGone:
                    pass  # the load still finishes, as in LM Studio; the next write re-raises

            instance_id, load_seconds = state.ensure_loaded(spec, on_load)
            if load_seconds is not None:
                self._sse_event("model_load.end", {"type": "model_load.end",
                                                   "model_instance_id": instance_id,
                                                   "load_time_seconds": round(load_seconds, 3)})
            gen_start = time.monotonic()
        state.update(self.record, instance_id=instance_id)
        self._sse_event("prompt_processing.start", {"type": "prompt_processing.start"})

        fault, fault_n = spec.fault()
        n = len(plan.tokens)
        fault_at = min(fault_n, n) if fault in ("cut_after", "error_in_stream") else None
        sent: list[tuple[str, str]] = []
        first: float | None = None
        last: float | None = None
        open_channel: str | None = None
        for i, (channel, text) in enumerate(plan.tokens):
            if i == fault_at:
                break
            self._sleep_until(self._slot(spec, gen_start, i))
            if i == 0:
                self._sse_event("prompt_processing.progress",
                                {"type": "prompt_processing.progress", "progress": 1.0})
                self._sse_event("prompt_processing.end", {"type": "prompt_processing.end"})
            block = "reasoning" if channel == "reasoning" else "message"
            if open_channel != block:
                if open_channel is not None:
                    self._sse_event(f"{open_channel}.end", {"type": f"{open_channel}.end"})
                self._sse_event(f"{block}.start", {"type": f"{block}.start"})
                open_channel = block
            self._sse_event(f"{block}.delta", {"type": f"{block}.delta", "content": text})
            last = time.monotonic()
            if first is None:
                first = last
                state.update(self.record, first_token_at=time.time())
            sent.append((channel, text))
            state.update(self.record, tokens_sent=len(sent))
        if fault_at is not None:
            self._sleep_until(self._slot(spec, gen_start, fault_at))
            state.update(self.record, fault=fault)
            if fault == "cut_after":
                self._cut()
                return
            self._sse_event("error", {"type": "error", "error": {
                "type": "internal_error",
                "message": f"Model {instance_id} failed while generating (simulated)"}})
        elif open_channel is not None:
            self._sse_event(f"{open_channel}.end", {"type": f"{open_channel}.end"})
        if first is None and fault_at is None:
            self._sleep_until(self._slot(spec, gen_start, 0))
            self._sse_event("prompt_processing.end", {"type": "prompt_processing.end"})
        # The stream always ends with chat.end, even after an error event (reference §8.3).
        result = self._native_result(instance_id, plan, sent, input_tokens, gen_start, first,
                                     last, load_seconds, store)
        self._sse_event("chat.end", {"type": "chat.end", "result": result})
        self._end_stream()

    # -- model management -----------------------------------------------------------------
    def _load(self, body: Any) -> None:
        state = self.state
        if not isinstance(body, dict):
            self._native_error(400, "invalid_request", "Expected object", code="invalid_type")
            return
        unknown = [k for k in body if k not in LOAD_KEYS]
        if unknown:
            self._native_error(400, "invalid_request", "Unrecognized key(s) in object: "
                               + ", ".join(f"'{k}'" for k in unknown),
                               code="unrecognized_keys", param=unknown[0])
            return
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            self._native_error(400, "invalid_request", '"model" is required',
                               code="missing_required_parameter", param="model")
            return
        for key in ("context_length", "eval_batch_size", "num_experts"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                self._native_error(400, "invalid_request", "Expected number, received "
                                   f"{type(value).__name__}", code="invalid_type", param=key)
                return
        for key in ("flash_attention", "offload_kv_cache_to_gpu", "echo_load_config"):
            value = body.get(key)
            if value is not None and not isinstance(value, bool):
                self._native_error(400, "invalid_request", "Expected boolean, received "
                                   f"{type(value).__name__}", code="invalid_type", param=key)
                return
        spec = state.models.get(model_id)
        if spec is None:
            self._native_error(404, "model_not_found", f'Model "{model_id}" not found')
            return
        config = spec.default_instance_config()
        for key in config:
            if key in body and key != "parallel":
                config[key] = body[key]
        # Context beyond the model's maximum is silently clamped (reference §5).
        config["context_length"] = max(1, min(config["context_length"], spec.max_context_length))
        instance_id, seconds = state.load(spec, config)
        state.update(self.record, instance_id=instance_id)
        response: dict[str, Any] = {"type": spec.type, "instance_id": instance_id,
                                    "load_time_seconds": round(seconds, 3), "status": "loaded"}
        if body.get("echo_load_config") is True:
            response["load_config"] = {k: v for k, v in config.items() if k != "parallel"}
        self._send_json(200, response)

    def _unload(self, body: Any) -> None:
        instance_id = body.get("instance_id") if isinstance(body, dict) else None
        if not isinstance(instance_id, str) or not instance_id:
            self._native_error(400, "invalid_request", '"instance_id" is required',
                               code="missing_required_parameter", param="instance_id")
            return
        if not self.state.unload(instance_id):
            # Double's choice: status and body for an unknown instance are UNCONFIRMED.
            self._native_error(404, "model_not_found",
                               f'No loaded model instance with id "{instance_id}"')
            return
        self._send_json(200, {"instance_id": instance_id})

    def _download(self, body: Any) -> None:
        state = self.state
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            self._native_error(400, "invalid_request", '"model" is required',
                               code="missing_required_parameter", param="model")
            return
        quantization = body.get("quantization")
        key = _download_key(model)
        with state.cond:
            if key in state.models:
                self._send_json(200, {"status": "already_downloaded"})
                return
            job = next((j for j in state.jobs.values() if j.key == key and not j.fails
                        and not j.finalised), None)
            if job is None:
                job = _Job(
                    job_id="job_" + secrets.token_hex(5),
                    key=key,
                    model=model,
                    quantization=quantization if isinstance(quantization, str) else None,
                    total=500_000_000 + zlib.crc32(key.encode()) % 2_500_000_000,
                    started=time.time(),
                    duration=max(0.0, state.config.download_ms / 1000),
                    fails="fail" in model.lower(),
                )
                state.jobs[job.job_id] = job
            view = state.job_view(job)
        keep = ("job_id", "status", "total_size_bytes", "started_at", "completed_at")
        self._send_json(200, {k: view[k] for k in keep if k in view})

    def _download_status(self, job_id: str) -> None:
        state = self.state
        with state.cond:
            job = state.jobs.get(job_id)
            view = state.job_view(job) if job else None
        if view is None:
            self._native_error(404, "job_not_found", f'Download job "{job_id}" not found')
            return
        self._send_json(200, view)

    # -- test-only control routes ---------------------------------------------------------
    def _control(self, path: str, query: str, raw: bytes) -> None:
        state = self.state
        route = (self.command, path)
        try:
            if route == ("GET", "/__double/health"):
                self._send_json(200, {"ok": True}, record=False)
            elif route == ("GET", "/__double/log"):
                wait = parse_qs(query).get("wait_idle")
                if wait:
                    state.wait_idle(float(wait[0]))
                self._send_json(200, state.snapshot(), record=False)
            elif route == ("POST", "/__double/reset"):
                state.clear_log()
                self._send_json(200, {"ok": True}, record=False)
            elif route == ("GET", "/__double/config"):
                self._send_json(200, state.config.to_dict(), record=False)
            elif route == ("POST", "/__double/config"):
                try:
                    config = DoubleConfig.from_dict(json.loads(raw or b"{}"))
                except (ValueError, TypeError) as exc:
                    self._send_json(400, {"error": str(exc)}, record=False)
                    return
                state.apply(config)
                self._send_json(200, {"ok": True}, record=False)
            else:
                self._send_json(404, {"error": f"unknown control route {self.command} {path}"},
                                record=False)
        except _ClientGone:
            pass


def _download_key(model: str) -> str:
    """The model key a download will add: a catalog id as is, a Hugging Face URL as
    ``owner/repo`` lowercased without a ``-gguf`` suffix (double's choice)."""
    match = re.match(r"^https?://(?:www\.)?huggingface\.co/([^/]+)/([^/?#]+)", model)
    if not match:
        return model
    repo = re.sub(r"-gguf$", "", match.group(2), flags=re.IGNORECASE)
    return f"{match.group(1)}/{repo}".lower()


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


class DoubleServer:
    """A running double. Use ``serve()`` to create one; stop it with ``stop()`` or ``with``."""

    def __init__(self, httpd: _DoubleHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def host(self) -> str:
        return self._httpd.server_name

    @property
    def port(self) -> int:
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:54321``."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def config(self) -> DoubleConfig:
        """The config in force (a copy; change it with ``set_config``)."""
        return copy.deepcopy(self._httpd.state.config)

    def log(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Copies of the request records, oldest first (control routes excluded).

        The server updates a record just *after* its last write, so a client that has read a
        whole reply can still see ``completed=False`` / ``ended_at=None`` for a moment:
        pass ``wait`` (seconds) to wait for in-flight requests to end first.
        """
        if wait > 0:
            self._httpd.state.wait_idle(wait)
        return self._httpd.state.snapshot()

    def reset(self) -> None:
        """Clear the request log (models and loaded instances are kept)."""
        self._httpd.state.clear_log()

    def set_config(self, config: DoubleConfig | Mapping[str, Any] | str | Path | None) -> None:
        """Replace the config; models, loaded instances and download jobs start afresh.
        Requests already in flight finish with the model settings they started with."""
        self._httpd.state.apply(DoubleConfig.coerce(config))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every logged request has ended (``ended_at`` set); False on timeout.
        Use it before asserting on ``closed_early``: the server only learns that a client
        left when its next write fails, i.e. up to about two ``token_gap_ms`` later."""
        return self._httpd.state.wait_idle(timeout)

    def stop(self) -> None:
        """Stop serving, cut every open connection (in-flight streams end abruptly), close."""
        state = self._httpd.state
        state.stopping.set()
        self._httpd.shutdown()
        with self._httpd.connections_lock:
            conns = list(self._httpd.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        while self._httpd.connections and time.monotonic() < deadline:
            time.sleep(0.01)  # let handler threads close their own sockets
        self._httpd.server_close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> DoubleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    config: DoubleConfig | Mapping[str, Any] | str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    verbose: bool = False,
) -> DoubleServer:
    """Start a double on a daemon thread and return it once it is accepting connections.

    ``config`` may be a DoubleConfig, a dict, a path to a JSON file or None (default config).
    ``port=0`` picks a free port (read it back from ``.port`` / ``.url``).
    """
    state = _State(DoubleConfig.coerce(config))
    httpd = _DoubleHTTPServer((host, port), state)
    httpd.verbose = verbose
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
        name=f"lmstudio-double:{httpd.server_port}", daemon=True,
    )
    thread.start()
    return DoubleServer(httpd, thread)


def iter_sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    """Tiny SSE parser for tests: yields (event name or None, data) per event; skips comments."""
    event: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield event, "\n".join(data)


def main(argv: list[str] | None = None) -> int:
    """Command line: serve until SIGINT/SIGTERM, printing ``READY <url>`` once listening."""
    parser = argparse.ArgumentParser(description="LM Studio 0.4 test double (HTTP server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234, help="0 picks a free port")
    parser.add_argument("--config", help="JSON file with a DoubleConfig")
    parser.add_argument("--dialect", choices=DIALECTS, help="overrides the config's dialect")
    parser.add_argument("--token", help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--usage-mode", choices=USAGE_MODES, help="overrides usage_mode")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    config = DoubleConfig.from_json_file(args.config) if args.config else DoubleConfig()
    if args.dialect:
        config.dialect = args.dialect
    if args.token:
        config.api_token = args.token
    if args.usage_mode:
        config.usage_mode = args.usage_mode
    server = serve(config, args.host, args.port, verbose=args.verbose)

    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"READY {server.url}", flush=True)
    while not done.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
