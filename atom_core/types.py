"""Plain, immutable values that cross ATOM's layers: models, load configs, sampling, events."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# How a stored reply ended: "interrupted" is what a crash leaves (the row is written before the
# request), "stopped" is the user's Stop, "error" a failure with a sentence saved beside it.
MessageState = Literal["complete", "stopped", "interrupted", "error"]


def to_int(v: Any) -> int | None:
    """A number from a server's JSON, or None when it is missing or not a number (never bool)."""
    try:
        return int(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def to_float(v: Any) -> float | None:
    """Like to_int, for floats."""
    try:
        return float(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


class Dialect(enum.StrEnum):
    """Which API family a server speaks; pages hide what a dialect cannot do."""

    LMSTUDIO_04 = "lmstudio-0.4"  # native /api/v1: every downloaded model, load/unload/download
    LMSTUDIO_03 = "lmstudio-0.3"  # /api/v0/models: models with load state, no load/unload route
    OPENAI = "openai"  # only /v1/models and /v1/chat/completions

    @property
    def label(self) -> str:
        return {
            Dialect.LMSTUDIO_04: "LM Studio 0.4+ (native API)",
            Dialect.LMSTUDIO_03: "LM Studio 0.3 (REST beta)",
            Dialect.OPENAI: "OpenAI-compatible server",
        }[self]

    @property
    def can_manage_models(self) -> bool:
        """Load, unload and download over REST (LM Studio 0.4's /api/v1 routes)."""
        return self is Dialect.LMSTUDIO_04

    @property
    def knows_load_state(self) -> bool:
        return self is not Dialect.OPENAI


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedInstance:
    """One loaded copy of a model, as `loaded_instances[]` reports it."""

    id: str  # instance id: use it as `model` in chat requests and to unload
    config: dict[str, Any] = field(default_factory=dict)  # context_length, parallel, ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """A model the server can run. Fields the server did not report are None/empty."""

    key: str  # the id to send as `model`
    type: str = "llm"  # "llm" | "embedding"
    display_name: str = ""
    publisher: str = ""
    architecture: str | None = None
    quantization: str | None = None  # e.g. "Q4_K_M", "4bit"
    bits_per_weight: float | None = None
    size_bytes: int | None = None
    params: str | None = None  # e.g. "7B", "26B-A4B"
    max_context: int | None = None
    format: str | None = None  # "gguf" | "mlx"
    capabilities: tuple[str, ...] = ()  # subset of ("vision", "tools", "reasoning")
    # reasoning settings the server accepts for it (LM Studio: capabilities.reasoning
    # .allowed_options, e.g. ("off", "on")); empty when not reported
    reasoning_options: tuple[str, ...] = ()
    loaded_instances: tuple[LoadedInstance, ...] = ()
    description: str | None = None
    # False when the listing route says nothing about load state (plain /v1/models).
    load_state_known: bool = True
    # v0 reports "loaded" without instances; keep that fact here.
    loaded_hint: bool = False

    @property
    def name(self) -> str:
        return self.display_name or self.key

    @property
    def is_llm(self) -> bool:
        return self.type in ("llm", "vlm")

    @property
    def is_loaded(self) -> bool:
        return bool(self.loaded_instances) or self.loaded_hint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelList:
    """The result of `list_models()`: the models plus what the listing route could tell."""

    models: tuple[ModelInfo, ...]
    dialect: Dialect
    route: str  # the route that answered, e.g. "/api/v1/models"
    # True when the route may list only loaded models (/v1/models with JIT off).
    loaded_only: bool = False

    @property
    def llms(self) -> list[ModelInfo]:
        return [m for m in self.models if m.is_llm]

    @property
    def loaded(self) -> list[ModelInfo]:
        return [m for m in self.models if m.is_loaded]

    def get(self, key: str) -> ModelInfo | None:
        for m in self.models:
            if m.key == key or any(i.id == key for i in m.loaded_instances):
                return m
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    """What `POST /api/v1/models/load` accepts. None means: leave it to the server."""

    context_length: int | None = None
    eval_batch_size: int | None = None
    flash_attention: bool | None = None
    num_experts: int | None = None  # mixture-of-experts models only
    offload_kv_cache_to_gpu: bool | None = None

    def to_request(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    instance_id: str
    type: str = "llm"
    load_time_s: float | None = None
    status: str = "loaded"
    applied_config: dict[str, Any] | None = None  # `load_config` when echo_load_config was set
    rejected_keys: tuple[str, ...] = ()  # keys the server refused; the load was retried without


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadJob:
    """A download's state as `POST /download` or `GET /download/status/{id}` reports it."""

    status: str  # downloading | paused | completed | failed | already_downloaded
    job_id: str | None = None
    total_bytes: int | None = None
    downloaded_bytes: int | None = None
    bytes_per_second: float | None = None
    estimated_completion: str | None = None
    started_at: str | None = None
    completed_at: str | None = None

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed", "already_downloaded")

    @property
    def fraction(self) -> float | None:
        if self.status in ("completed", "already_downloaded"):
            return 1.0
        if self.total_bytes and self.downloaded_bytes is not None:
            return min(1.0, self.downloaded_bytes / self.total_bytes)
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingOptions:
    """Sampling settings for a chat request. None means: the server's (or model's) default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def to_request(self) -> dict[str, Any]:
        body = {k: v for k, v in asdict(self).items() if v is not None and k != "stop"}
        if self.stop:
            body["stop"] = list(self.stop)
        return body


# progress: model_load / prompt_processing progress (text = the stage, `progress` 0-1);
# timings: llama.cpp's own timings object;
# response: what a stateful route said about the reply (`response_id`, the server's `stats`).
EventKind = Literal["content", "reasoning", "usage", "finish", "progress", "response",
                    "timings"]


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One thing a streamed reply told us, stamped with when its bytes arrived."""

    kind: EventKind
    t_ns: int  # time.perf_counter_ns() when the bytes carrying it were read
    text: str = ""  # content / reasoning delta
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None  # prompt_tokens, completion_tokens, total_tokens
    progress: float | None = None  # 0-1, for "progress" events
    response_id: str | None = None  # for "response" events: the id to continue from
    stats: dict[str, Any] | None = None  # for "response" events: the server's own figures
    timings: dict[str, Any] | None = None  # llama.cpp's own figures (prompt_ms, predicted_n...)


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str
    # data URLs of images sent with this message (vision models; atom_core.images makes them)
    images: tuple[str, ...] = ()

    def to_request(self) -> dict[str, Any]:
        """The OpenAI wire shape; with images, content parts: the text, then one `image_url`
        part per image."""
        if not self.images:
            return {"role": self.role, "content": self.content}
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.content}]
        parts += [{"type": "image_url", "image_url": {"url": url}} for url in self.images]
        return {"role": self.role, "content": parts}
