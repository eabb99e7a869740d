"""Model listing: which route a server lists its models on, and what the listing says.

LM Studio 0.4 lists every downloaded model with its load state at `/api/v1/models`; 0.3.x at
`/api/v0/models`; any OpenAI-compatible server at `/v1/models` (possibly only loaded models).
`list_models` tries them richest first, starting with the dialect the server spoke last time,
and the client remembers the dialect that answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import AtomError, NotSupported
from ..types import Dialect, LoadedInstance, ModelInfo, ModelList, to_float, to_int

ROUTES: tuple[tuple[str, Dialect], ...] = (
    ("/api/v1/models", Dialect.LMSTUDIO_04),
    ("/api/v0/models", Dialect.LMSTUDIO_03),
    ("/v1/models", Dialect.OPENAI),
)


def list_models(
    get_json: Callable[[str], Any], *, base_url: str, known: Dialect | None = None
) -> ModelList:
    """Every model the server offers, trying the richest route first (the `known` dialect's
    route before the others). `get_json(path)` fetches one route and raises AtomError; auth and
    connection errors stop the search at once, NotSupported and a wrong shape try the next."""
    attempts = sorted(ROUTES, key=lambda a: known is not None and a[1] is not known)
    last: AtomError | None = None
    for route, dialect in attempts:
        try:
            models = parse_listing(get_json(route), dialect)
        except (NotSupported, WrongShape) as e:
            last = e if isinstance(e, AtomError) else None
            continue
        return ModelList(
            models=tuple(models),
            dialect=dialect,
            route=route,
            loaded_only=dialect is Dialect.OPENAI,
        )
    raise last or NotSupported(
        f"The server at {base_url} answered, but not like LM Studio or an "
        "OpenAI-compatible server (no model list at /api/v1/models or /v1/models).",
        url=base_url,
    )


class WrongShape(Exception):
    """A listing route answered, but not with the shape its dialect uses."""


def parse_listing(body: Any, dialect: Dialect) -> list[ModelInfo]:
    if dialect is Dialect.LMSTUDIO_04:
        if not isinstance(body, dict) or not isinstance(body.get("models"), list):
            raise WrongShape()
        return [_native_model(m) for m in body["models"] if isinstance(m, dict) and m.get("key")]
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise WrongShape()
    items = [m for m in body["data"] if isinstance(m, dict) and m.get("id")]
    if dialect is Dialect.LMSTUDIO_03:
        if items and not any("state" in m for m in items):
            raise WrongShape()  # an OpenAI list served under /api/v0 by some proxy
        return [_v0_model(m) for m in items]
    return [_openai_model(m) for m in items]


def _native_model(m: dict[str, Any]) -> ModelInfo:
    quant = m.get("quantization") or {}
    caps = m.get("capabilities") or {}
    capabilities = tuple(
        name
        for name, present in (
            ("vision", caps.get("vision")),
            ("tools", caps.get("trained_for_tool_use")),
            ("reasoning", caps.get("reasoning")),
        )
        if present
    )
    reasoning = caps.get("reasoning") if isinstance(caps, dict) else None
    allowed = reasoning.get("allowed_options") if isinstance(reasoning, dict) else None
    reasoning_options = tuple(str(o) for o in allowed if isinstance(o, str)) if isinstance(
        allowed, list) else ()
    instances = tuple(
        LoadedInstance(id=str(i.get("id")), config=dict(i.get("config") or {}))
        for i in m.get("loaded_instances") or []
        if isinstance(i, dict) and i.get("id")
    )
    return ModelInfo(
        key=str(m["key"]),
        type=str(m.get("type") or "llm"),
        display_name=str(m.get("display_name") or ""),
        publisher=str(m.get("publisher") or ""),
        architecture=m.get("architecture"),
        quantization=quant.get("name") if isinstance(quant, dict) else None,
        bits_per_weight=to_float(quant.get("bits_per_weight")) if isinstance(quant, dict) else None,
        size_bytes=to_int(m.get("size_bytes")),
        params=m.get("params_string"),
        max_context=to_int(m.get("max_context_length")),
        format=m.get("format"),
        capabilities=capabilities,
        reasoning_options=reasoning_options,
        loaded_instances=instances,
        description=m.get("description"),
    )


def _v0_model(m: dict[str, Any]) -> ModelInfo:
    caps = m.get("capabilities") or []
    capabilities = tuple(
        c for c in (("tools" if "tool_use" in caps else None), ("vision" if m.get("type") == "vlm"
                    else None)) if c
    )
    loaded = m.get("state") == "loaded"
    instances: tuple[LoadedInstance, ...] = ()
    if loaded:
        config = {"context_length": m["loaded_context_length"]} if m.get(
            "loaded_context_length") else {}
        instances = (LoadedInstance(id=str(m["id"]), config=config),)
    mtype = str(m.get("type") or "llm")
    return ModelInfo(
        key=str(m["id"]),
        type="embedding" if mtype.startswith("embedding") else mtype,
        publisher=str(m.get("publisher") or ""),
        architecture=m.get("arch"),
        quantization=m.get("quantization"),
        max_context=to_int(m.get("max_context_length")),
        format=m.get("compatibility_type"),
        capabilities=capabilities,
        loaded_instances=instances,
    )


def _openai_model(m: dict[str, Any]) -> ModelInfo:
    key = str(m["id"])
    # /v1/models has no type; embedding models conventionally say so in their id.
    kind = "embedding" if "embed" in key.lower() else "llm"
    return ModelInfo(
        key=key,
        type=kind,
        publisher=str(m.get("owned_by") or "") if m.get("owned_by") != "organization_owner" else "",
        load_state_known=False,
    )
