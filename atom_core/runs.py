"""One row per generation for the runs table: what chat, arena, prompt sets, sweeps and the CLI
record, as a typed, frozen RunRecord.

On disk a run is a flat JSON object (``RunRecord.to_record()``); rows written before a field
existed read back with that field None (``RunRecord.from_record()``), and keys this version does
not know (links such as ``round_id``, ``sweep_id`` or a prompt set's ``prompt_index``) travel in
``tags``, flattened into the row, so the stored shape stays what it always was.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import AtomError, StreamInterrupted
from .metrics import GenerationMetrics
from .records import stored_record
from .types import MessageState, to_float, to_int

RUN_SOURCES = ("chat", "arena", "promptset", "sweep", "cli", "judge")
TAG_TYPES = (str, int, float, bool, type(None))

# Hardware during a run: atom_core.measure.hardware sets this when its sampler starts (the base
# layer imports no room). Called with the run's end-to-end seconds as the run is recorded (just
# after it ended); returns RunRecord fields such as cpu_percent_mean and machine_id.
HardwareProbe = Callable[[float | None], Mapping[str, Any]]
_hardware_probe: HardwareProbe | None = None


def set_hardware_probe(probe: HardwareProbe | None) -> None:
    global _hardware_probe
    _hardware_probe = probe


def reply_state(error: AtomError | None, cancelled: bool) -> MessageState:
    """The message state a reply ends in: complete / stopped / interrupted / error."""
    if isinstance(error, StreamInterrupted):
        return "interrupted"
    if error is not None:
        return "error"
    if cancelled:
        return "stopped"
    return "complete"


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """One generation, as the runs table keeps it. Seconds and tokens; None where unknown.

    Token timelines stay with the message (or the arena round), not here, so the runs table
    stays small enough to read 100,000 rows quickly."""

    TABLE: ClassVar[str] = "runs"

    ts: float  # when the request was sent (epoch seconds)
    source: str  # chat, arena, promptset, sweep, cli, ... (RUN_SOURCES, open-ended)
    server: str  # base URL
    model: str
    ok: bool = True
    state: str = "complete"  # MessageState
    error: str = ""  # the sentence shown to the user
    # ATOM's measurement (atom_core.metrics defines each)
    ttft_s: float | None = None
    decode_tps: float | None = None
    e2e_s: float | None = None
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None
    tokens_source: str | None = None
    finish_reason: str | None = None
    # reasoning models: request sent -> first answer token; first answer - first token
    # (rows from before these fields read back None)
    first_answer_s: float | None = None
    thinking_s: float | None = None
    # seconds the request waited on the client for a free connection (not part of TTFT)
    pool_wait_s: float | None = None
    # the server's own figures, when it reports them (LM Studio native stats, llama.cpp timings)
    server_tps: float | None = None
    server_ttft_s: float | None = None
    server_load_s: float | None = None
    server_prompt_s: float | None = None  # llama.cpp timings.prompt_ms, in seconds
    server_output_tokens: int | None = None  # llama.cpp timings.predicted_n
    # the machine during the run's window (atom_core.measure.hardware): peak/mean of system-wide
    # CPU %, RAM and, with an NVIDIA GPU, utilisation and VRAM; None when not sampled / no GPU
    cpu_percent_mean: float | None = None
    cpu_percent_peak: float | None = None
    ram_used_mb_peak: float | None = None
    gpu_util_mean: float | None = None
    gpu_util_peak: float | None = None
    vram_used_mb_peak: float | None = None
    hw_samples: int | None = None  # how many readings the figures above come from
    machine_id: str | None = None  # the "machines" table's id of the machine that made the run
    # which chat route produced the run (server.routes.ROUTES; None: chat completions, before
    # routes existed) and, on stateful routes, the server's id for this reply and the one it
    # continued from
    route: str | None = None
    response_id: str | None = None
    previous_response_id: str | None = None
    request_bytes: int | None = None  # size of the request body sent (history vs stateful)
    # the reasoning setting asked of the server (off/on/low/medium/high); None: its default
    reasoning_setting: str | None = None
    # links and labels the caller chose (round_id, slot, sweep_id, concurrency, ...)
    tags: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None  # set by the store

    @classmethod
    def measured(
        cls,
        *,
        source: str,
        server: str,
        model: str,
        metrics: GenerationMetrics,
        error: AtomError | None = None,
        cancelled: bool = False,
        ts: float | None = None,
        **tags: Any,
    ) -> RunRecord:
        """The record of one measured generation; extra keywords become tags."""
        m = metrics
        known = {k: tags.pop(k) for k in list(tags) if k in _FIELDS}
        if m.server_tps is not None:  # llama.cpp timings; a caller's own figure wins
            known.setdefault("server_tps", m.server_tps)
        if _hardware_probe is not None:
            for k, v in _hardware_probe(m.e2e_s).items():
                known.setdefault(k, v)
        return cls(
            ts=time.time() if ts is None else ts,
            source=source,
            server=server,
            model=model,
            ok=error is None and not cancelled,
            state=reply_state(error, cancelled),
            error=error.sentence if error else "",
            ttft_s=m.ttft_s,
            decode_tps=m.decode_tps,
            e2e_s=m.e2e_s,
            itl_p50_s=m.itl_p50_s,
            itl_p95_s=m.itl_p95_s,
            output_tokens=m.output_tokens,
            prompt_tokens=m.prompt_tokens,
            reasoning_tokens=m.reasoning_tokens,
            tokens_source=m.tokens_source,
            finish_reason=m.finish_reason,
            first_answer_s=m.first_answer_s,
            thinking_s=m.thinking_s,
            pool_wait_s=m.pool_wait_s,
            server_prompt_s=m.server_prompt_s,
            server_output_tokens=m.server_output_tokens,
            tags=tags,
            **known,
        )

    def to_record(self) -> dict[str, Any]:
        """The flat JSON-able row the store keeps (tags flattened in, `id` only when set)."""
        row: dict[str, Any] = {f: getattr(self, f) for f in _FIELDS}
        if self.id is None:
            row.pop("id")
        row.update(self.tags)
        return row

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> RunRecord:
        """Reads a stored row leniently: missing fields are None, wrong types become None,
        unknown keys become tags. Never raises for a dict."""
        values: dict[str, Any] = {}
        for name, read in _FIELD_READERS.items():
            if name in row:
                values[name] = read(row[name])
        tags = {k: v for k, v in row.items() if k not in _FIELDS and isinstance(v, TAG_TYPES)}
        values.setdefault("ts", 0.0)
        values["ts"] = values["ts"] if values["ts"] is not None else 0.0
        for name in ("source", "server", "model", "error"):
            values[name] = values.get(name) or ""
        ok = values.get("ok")
        if ok is None:  # missing or not a bool: what the state says, else a success
            ok = values.get("state") in (None, "complete")
        values["ok"] = ok
        values["state"] = values.get("state") or ("complete" if ok else "error")
        return cls(tags=tags, **values)

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when an imported row's known fields do not have their types
        (strict, as JSON); unknown keys are tags and pass."""
        known = {k: row[k] for k in _FIELDS if k in row}
        for name in ("source", "server", "model"):  # rows may lack these (read as "")
            known.setdefault(name, "")
        _run_type().validate_json(json.dumps(known), strict=True)


_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "tags")


def _keep(kind: type) -> Callable[[Any], Any]:
    return lambda v: v if isinstance(v, kind) else None


# How a stored value is read for each field, chosen by the field's declared type (resolved, not
# its text): numbers leniently (a string "0.5" reads as 0.5), bools and strings only as such.
_READ_AS: dict[type, Callable[[Any], Any]] = {
    float: to_float, int: to_int, bool: _keep(bool), str: _keep(str)}


def _reader(hint: Any) -> Callable[[Any], Any]:
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if len(kinds) != 1 or kinds[0] not in _READ_AS:
        raise TypeError(f"RunRecord cannot read a field of type {hint!r}")
    return _READ_AS[kinds[0]]


_FIELD_READERS: dict[str, Callable[[Any], Any]] = {
    name: _reader(hint) for name, hint in typing.get_type_hints(RunRecord).items()
    if name in _FIELDS}


@functools.cache
def _run_type() -> Any:
    from pydantic import TypeAdapter  # here: only an import needs it

    return TypeAdapter(RunRecord)


def run_record(
    *,
    source: str,
    server: str,
    model: str,
    metrics: GenerationMetrics,
    error: AtomError | None = None,
    cancelled: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The stored row of one measured generation (``RunRecord.measured(...).to_record()``)."""
    return RunRecord.measured(source=source, server=server, model=model, metrics=metrics,
                              error=error, cancelled=cancelled, **extra).to_record()
