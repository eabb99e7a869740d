"""The logic behind the Models page: the model table, load forms and what the server applied,
the `lms load` command for what REST cannot set, download bookkeeping, and auto-unload.

Nothing here draws; pages/models.py and app.py call it and show the results.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from ..errors import AtomError
from ..metrics import format_duration
from ..records import stored_record
from ..types import Dialect, DownloadJob, LoadConfig, LoadResult, ModelInfo, ModelList

if TYPE_CHECKING:
    from ..history import HistoryStore
    from .client import LMStudioClient

__all__ = [
    "DOWNLOADS_TABLE",
    "DownloadRecord",
    "LOAD_FIELDS",
    "AppliedRow",
    "DownloadView",
    "active_downloads",
    "applied_rows",
    "auto_unload_targets",
    "build_load_config",
    "download_request",
    "filter_models",
    "human_bytes",
    "instance_summary",
    "is_moe",
    "lms_load_command",
    "load_summary",
    "missing_features",
    "models_frame",
    "poll_downloads",
    "progress_line",
    "record_download",
    "recent_downloads",
    "uses_llama_cpp_options",
]

DOWNLOADS_TABLE = "downloads"  # one record per download job, so a page switch loses nothing

# The settings POST /api/v1/models/load accepts, in the order the page shows them.
LOAD_FIELDS: dict[str, str] = {
    "context_length": "Context length",
    "eval_batch_size": "Eval batch size",
    "flash_attention": "Flash attention",
    "offload_kv_cache_to_gpu": "KV cache on GPU",
    "num_experts": "Experts",
}
_INSTANCE_FIELDS = (
    ("context_length", "ctx {}"),
    ("eval_batch_size", "batch {}"),
    ("parallel", "{} parallel"),
    ("flash_attention", "flash attn {}"),
    ("offload_kv_cache_to_gpu", "KV on GPU {}"),
    ("num_experts", "{} experts"),
)
# Architectures that are mixtures of experts (llama.cpp's names). Params like "26B-A4B" (26B
# total, 4B active) say so too. LM Studio does not report it directly.
_MOE_ARCHITECTURES = frozenset(
    {"mixtral", "qwen2moe", "qwen3moe", "qwen3next", "deepseek2", "dbrx", "olmoe", "granitemoe",
     "gpt-oss", "gpt_oss", "gptoss", "llama4", "arctic", "grok", "phimoe", "jamba", "ernie4_5-moe",
     "glm4moe", "hunyuan-moe", "bailingmoe", "minimax-m2"}
)
_ACTIVE_PARAMS = re.compile(r"\d(?:\.\d+)?\s*[BM]\s*[-_ ]?A\d", re.IGNORECASE)
_HF_URL = re.compile(r"^https://(www\.)?(huggingface\.co|hf\.co)/[^/\s]+/[^/\s]+", re.IGNORECASE)
_CATALOG_ID = re.compile(r"^[\w.-]+/[\w.@:-]+$")


# -- the table --------------------------------------------------------------------------------


def _on_off(value: Any) -> str:
    return "on" if value else "off"


def instance_summary(config: Mapping[str, Any]) -> str:
    """One loaded instance's live config as the server reports it: "ctx 4096 · batch 512 · 4
    parallel · flash attn on · KV on GPU on". Keys it does not report are left out."""
    parts = []
    for key, pattern in _INSTANCE_FIELDS:
        value = config.get(key)
        if value is None or (key == "num_experts" and not value):
            continue
        parts.append(pattern.format(_on_off(value) if isinstance(value, bool) else value))
    return " · ".join(parts)


def _type_label(m: ModelInfo) -> str:
    return "Embedding" if m.type.startswith("embed") else "LLM"


def models_frame(models: Sequence[ModelInfo]) -> pd.DataFrame:
    """One row per model: what the table on the Models page shows (numbers stay numbers, so the
    table sorts them properly)."""
    rows = []
    for m in models:
        loaded = "; ".join(
            f"{i.id}: {instance_summary(i.config)}" if i.config else i.id
            for i in m.loaded_instances
        )
        if not loaded and m.loaded_hint:
            loaded = "loaded"
        rows.append({
            "Loaded": ("●" if m.is_loaded else "○") if m.load_state_known else "?",
            "Name": m.name,
            "Key": m.key,
            "Publisher": m.publisher or None,
            "Type": _type_label(m),
            "Architecture": m.architecture,
            "Params": m.params,
            "Quantization": m.quantization,
            "Format": m.format,
            "Size (GB)": round(m.size_bytes / 1e9, 2) if m.size_bytes else None,
            "Max context": m.max_context,
            "Capabilities": ", ".join(m.capabilities) or None,
            "Instances (live config)": loaded or None,
        })
    # What people compare first comes first; the rest is a scroll away.
    columns = ["Loaded", "Name", "Type", "Params", "Quantization", "Size (GB)", "Max context",
               "Capabilities", "Instances (live config)", "Publisher", "Architecture", "Format",
               "Key"]
    frame = pd.DataFrame(rows, columns=columns)
    numeric = ("Size (GB)", "Max context")
    for col in numeric:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def table_for_display(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the page shows it: columns the server never fills are dropped, and a text
    cell the server said nothing about is blank instead of the word "None"."""
    shown = frame.dropna(axis=1, how="all")
    text = [c for c in shown.columns if not pd.api.types.is_numeric_dtype(shown[c])]
    return shown.assign(**{c: shown[c].fillna("") for c in text})


def filter_models(
    models: Iterable[ModelInfo],
    *,
    query: str = "",
    types: Iterable[str] = (),
    capabilities: Iterable[str] = (),
    loaded_only: bool = False,
) -> list[ModelInfo]:
    """Models matching a free-text query (name, key, publisher, architecture, quantization,
    params), any of `types` ("LLM", "Embedding"), all of `capabilities`, and load state."""
    words = query.casefold().split()
    wanted_types = set(types)
    wanted_caps = set(capabilities)
    out = []
    for m in models:
        text = " ".join(
            str(x) for x in (m.name, m.key, m.publisher, m.architecture, m.quantization, m.params,
                             m.format) if x
        ).casefold()
        if any(w not in text for w in words):
            continue
        if wanted_types and _type_label(m) not in wanted_types:
            continue
        if not wanted_caps <= set(m.capabilities):
            continue
        if loaded_only and not m.is_loaded:
            continue
        out.append(m)
    return out


# -- loading ----------------------------------------------------------------------------------


def is_moe(m: ModelInfo) -> bool:
    """Best guess whether `num_experts` applies: a mixture-of-experts architecture, params like
    "30B-A3B", or a loaded instance that reports experts."""
    arch = (m.architecture or "").casefold()
    if arch in _MOE_ARCHITECTURES or "moe" in arch:
        return True
    if m.params and _ACTIVE_PARAMS.search(m.params):
        return True
    return any((i.config.get("num_experts") or 0) > 0 for i in m.loaded_instances)


def uses_llama_cpp_options(m: ModelInfo) -> bool:
    """Eval batch size, flash attention, KV offload and experts are llama.cpp options: they do
    not apply to MLX models or to embedding models (LM Studio's load docs)."""
    return m.is_llm and (m.format or "gguf").casefold() != "mlx"


def build_load_config(
    m: ModelInfo,
    *,
    context_length: int | None = None,
    eval_batch_size: int | None = None,
    flash_attention: bool | None = None,
    offload_kv_cache_to_gpu: bool | None = None,
    num_experts: int | None = None,
) -> LoadConfig:
    """The LoadConfig for the page's form. None leaves a setting to the server. Options that do
    not apply to this model are dropped; out-of-range values raise ValueError with a sentence."""
    if context_length is not None:
        if context_length < 1:
            raise ValueError("Context length must be at least 1 token.")
        if m.max_context and context_length > m.max_context:
            raise ValueError(
                f"Context length can be at most {m.max_context:,} tokens for {m.key}."
            )
    if eval_batch_size is not None and eval_batch_size < 1:
        raise ValueError("Eval batch size must be at least 1.")
    if num_experts is not None and num_experts < 1:
        raise ValueError("Number of experts must be at least 1.")
    if not uses_llama_cpp_options(m):
        return LoadConfig(context_length=context_length)
    return LoadConfig(
        context_length=context_length,
        eval_batch_size=eval_batch_size,
        flash_attention=flash_attention,
        offload_kv_cache_to_gpu=offload_kv_cache_to_gpu,
        num_experts=num_experts if is_moe(m) else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedRow:
    """One setting of a finished load: what ATOM asked for and what the server reports."""

    setting: str  # the label, e.g. "Context length"
    asked: str  # "16384", "on", or "server default"
    applied: str  # the server's value, or "not reported"
    note: str  # "as asked", "server changed it", "rejected: loaded without it", ...


def _show(value: Any) -> str:
    if value is None:
        return "—"
    return _on_off(value) if isinstance(value, bool) else str(value)


def applied_rows(
    asked: LoadConfig, result: LoadResult, live: Mapping[str, Any] | None = None
) -> list[AppliedRow]:
    """Compares the request with what the server applied: its echoed `load_config`, else the
    instance's config in the listing (`live`). Covers every documented setting that was asked
    for or reported, so nothing the server changed or refused goes unmentioned."""
    sent = asked.to_request()
    reported = result.applied_config if result.applied_config is not None else (live or {})
    rows = []
    for key, label in {**LOAD_FIELDS, "parallel": "Parallel slots"}.items():
        if key not in sent and (key not in reported or (key == "num_experts"
                                                          and not reported[key])):
            continue  # not asked, and not reported (0 experts: a dense model)
        value_asked = sent.get(key)
        value_applied = reported.get(key)
        if key in result.rejected_keys:
            note = "rejected by the server: loaded without it"
        elif key not in reported:
            note = "not reported by the server"
        elif key not in sent:
            note = "server default"
        elif value_applied == value_asked:
            note = "as asked"
        else:
            note = "the server applied a different value"
        rows.append(AppliedRow(
            setting=label,
            asked=_show(value_asked) if key in sent else "server default",
            applied=_show(value_applied) if key in reported else "not reported",
            note=note,
        ))
    return rows


def load_summary(key: str, result: LoadResult) -> str:
    took = f" in {result.load_time_s:.2f} s" if result.load_time_s is not None else ""
    kind = "embedding model" if result.type.startswith("embed") else "model"
    return f"Loaded {kind} {key} as instance “{result.instance_id}”{took}."


def lms_load_command(
    key: str,
    *,
    context_length: int | None = None,
    gpu: str | float | None = None,
    parallel: int | None = None,
    ttl: int | None = None,
    identifier: str | None = None,
) -> str:
    """The `lms load` line for settings LM Studio's REST load route does not take (GPU offload,
    parallel slots, load-time TTL, identifier). `gpu` is "max", "off" or a ratio 0-1."""
    parts = ["lms", "load", shlex.quote(key)]
    if context_length:
        parts += ["--context-length", str(int(context_length))]
    if gpu is not None and gpu != "":
        if isinstance(gpu, float | int):
            if not 0 <= gpu <= 1:
                raise ValueError("GPU offload must be between 0 and 1, or max, or off.")
            gpu = f"{gpu:g}"
        parts += ["--gpu", shlex.quote(str(gpu))]
    if parallel:
        parts += ["--parallel", str(int(parallel))]
    if ttl:
        parts += ["--ttl", str(int(ttl))]
    if identifier and identifier.strip():
        parts += ["--identifier", shlex.quote(identifier.strip())]
    return " ".join(parts)


def missing_features(listing: ModelList) -> list[str]:
    """What the Models page cannot do on this server, one sentence each. A listing ATOM could
    complete itself (the bundled demo engine: `describe_models`) is not said to lack what it
    shows."""
    dialect = listing.dialect
    if dialect.can_manage_models:
        return []
    out = [
        "Load, unload and download: they need LM Studio 0.4's native API (/api/v1). Use the "
        "server's own tools (for LM Studio: the app or `lms load` / `lms get`).",
    ]
    if dialect is Dialect.OPENAI:
        if not all(m.load_state_known for m in listing.models):
            out.append("Which models are loaded: the OpenAI-compatible list (/v1/models) does "
                       "not say.")
        if not all(m.quantization and m.max_context for m in listing.models):
            out.append("Model details (publisher, architecture, size, quantization, context, "
                       "capabilities): /v1/models lists only ids.")
    else:
        out.append("Live load settings of each instance: LM Studio 0.3 reports only the "
                   "loaded context length.")
    return out


# -- auto-unload ------------------------------------------------------------------------------


def auto_unload_targets(
    listing: ModelList,
    previous: str | None,
    new: str | None,
    *,
    loaded_by_atom: set[str],
    any_instance: bool = False,
) -> list[str]:
    """Instance ids to unload when the chat model changes from `previous` to `new`: the previous
    model's instances that ATOM itself loaded (or all of them if `any_instance`), never an
    instance of the new model."""
    if not previous or previous == new or not listing.dialect.can_manage_models:
        return []
    old = listing.get(previous)
    if old is None:
        return []
    fresh = listing.get(new) if new else None
    if fresh is not None and fresh.key == old.key:
        return []
    return [i.id for i in old.loaded_instances if any_instance or i.id in loaded_by_atom]


# -- downloads --------------------------------------------------------------------------------


def download_request(text: str, quantization: str | None = None) -> tuple[str, str | None]:
    """Checks a catalog id ("ibm/granite-4-micro") or Hugging Face URL and its quantization.
    Returns (model, quantization); raises ValueError with a sentence."""
    model = text.strip()
    quant = (quantization or "").strip() or None
    if not model:
        raise ValueError("Enter a model: a catalog id like ibm/granite-4-micro, or a Hugging "
                         "Face URL.")
    if model.lower().startswith(("http://", "https://")):
        if not _HF_URL.match(model):
            raise ValueError("Only Hugging Face model URLs work here, like "
                             "https://huggingface.co/lmstudio-community/gpt-oss-20b-GGUF.")
        return model, quant
    if not _CATALOG_ID.match(model):
        raise ValueError("A catalog id looks like publisher/model, for example "
                         "ibm/granite-4-micro.")
    if quant:
        raise ValueError("LM Studio takes a quantization only with a Hugging Face URL; for a "
                         "catalog id, leave it empty and LM Studio picks one.")
    return model, None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _eta_seconds(job: DownloadJob, now: float) -> float | None:
    if job.estimated_completion:
        try:
            end = datetime.fromisoformat(job.estimated_completion.replace("Z", "+00:00"))
            return max(0.0, end.timestamp() - now)
        except ValueError:
            pass
    if job.bytes_per_second and job.total_bytes and job.downloaded_bytes is not None:
        return max(0.0, (job.total_bytes - job.downloaded_bytes) / job.bytes_per_second)
    return None



def progress_line(job: DownloadJob, now: float | None = None) -> str:
    """"1.2 GB of 2.3 GB · 45.0 MB/s · about 25 s left", or what the status says when done."""
    if job.status == "already_downloaded":
        return "Already downloaded."
    if job.status == "completed":
        return f"Completed · {human_bytes(job.total_bytes)}."
    if job.status == "failed":
        return "Failed: LM Studio stopped this download. Try again, or check LM Studio's " \
               "Downloads panel."
    parts = []
    if job.total_bytes:
        parts.append(f"{human_bytes(job.downloaded_bytes or 0)} of {human_bytes(job.total_bytes)}")
    if job.bytes_per_second:
        parts.append(f"{human_bytes(job.bytes_per_second)}/s")
    eta = _eta_seconds(job, time.time() if now is None else now)
    if eta is not None and job.status == "downloading":
        parts.append(f"about {format_duration(eta)} left")
    if job.status == "paused":
        parts.append("paused")
    return " · ".join(parts) or job.status.capitalize()


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadView:
    """A download as the page shows it: the stored record plus its latest state."""

    record_id: str
    server: str
    model: str
    job: DownloadJob
    error: str = ""  # a sentence when the last status check failed

    @property
    def done(self) -> bool:
        return self.job.done


_JOB_TEXT = ("job_id", "estimated_completion", "started_at", "completed_at")
_JOB_NUMBERS = ("total_bytes", "downloaded_bytes", "bytes_per_second")


@stored_record
@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadRecord:
    """A started download as the "downloads" table keeps it (so a page switch or a reload loses
    nothing): the server, the model, and the job's last known state, flat in the row."""

    TABLE: ClassVar[str] = DOWNLOADS_TABLE

    id: str = ""  # the store's; "" before it is saved
    server: str
    model: str
    quantization: str | None = None
    job: DownloadJob

    def to_record(self) -> dict[str, Any]:
        j = self.job
        return {"id": self.id, "server": self.server, "model": self.model,
                "quantization": self.quantization, "job_id": j.job_id, "status": j.status,
                "total_bytes": j.total_bytes, "downloaded_bytes": j.downloaded_bytes,
                "bytes_per_second": j.bytes_per_second,
                "estimated_completion": j.estimated_completion, "started_at": j.started_at,
                "completed_at": j.completed_at}

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> DownloadRecord:
        """Reads a stored row leniently (a field of the wrong type reads as unknown); raises
        ValueError for a row without an id."""
        if not isinstance(row.get("id"), str) or not row["id"]:
            raise ValueError("a download is saved under its id")

        def text(k: str) -> str | None:
            return row[k] if isinstance(row.get(k), str) else None

        def number(k: str) -> Any:
            v = row.get(k)
            return v if isinstance(v, int | float) and not isinstance(v, bool) else None

        job = DownloadJob(status=str(row.get("status") or "unknown"), job_id=text("job_id"),
                          total_bytes=number("total_bytes"),
                          downloaded_bytes=number("downloaded_bytes"),
                          bytes_per_second=number("bytes_per_second"),
                          estimated_completion=text("estimated_completion"),
                          started_at=text("started_at"), completed_at=text("completed_at"))
        return cls(id=row["id"], server=str(row.get("server") or ""),
                   model=str(row.get("model") or ""), quantization=text("quantization"),
                   job=job)

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        """Raises ValueError when a row does not read as a download (strict: every field of
        its type or missing)."""
        cls.from_record(row)
        texts = ("server", "model", "status", "quantization", *_JOB_TEXT)
        if (any(not isinstance(row.get(k), str | None) for k in texts)
                or any(isinstance(row.get(k), bool)
                       or not isinstance(row.get(k), int | float | None) for k in _JOB_NUMBERS)):
            raise ValueError("a download's fields are not as saved")


def _view(record: DownloadRecord, error: str = "") -> DownloadView:
    return DownloadView(record_id=record.id, server=record.server, model=record.model,
                        job=record.job, error=error)


def record_download(
    store: HistoryStore, server: str, model: str, quantization: str | None, job: DownloadJob
) -> DownloadView:
    """Keeps a started download in the store, so its progress survives a page switch or a
    reload."""
    record = DownloadRecord(server=server, model=model, quantization=quantization, job=job)
    return _view(replace(record, id=store.add(record)))


def active_downloads(store: HistoryStore, server: str | None = None) -> list[DownloadView]:
    """Downloads not finished when last checked (optionally on one server), oldest first."""
    return [
        _view(r) for r in store.read(DownloadRecord)
        if not r.job.done and r.job.job_id and (server is None or r.server == server)
    ]


def recent_downloads(store: HistoryStore, server: str | None = None, limit: int = 5
                     ) -> list[DownloadView]:
    """The latest downloads, finished or not, newest first."""
    rows = [r for r in store.read(DownloadRecord) if server is None or r.server == server]
    return [_view(r) for r in reversed(rows[-limit:])]


def poll_downloads(
    store: HistoryStore, client_for: Callable[[str], LMStudioClient], server: str | None = None
) -> list[DownloadView]:
    """Asks each server for its unfinished downloads' status and stores the answers. A failed
    check (server down, job unknown) is reported on the view; a job the server no longer knows
    is marked failed so the page stops polling it."""
    out = []
    for view in active_downloads(store, server):
        try:
            job = client_for(view.server).download_status(str(view.job.job_id))
        except AtomError as e:
            # Unknown job: its status code is UNCONFIRMED, so look at the type in the body too.
            # An error body that says the job failed is an answer, not a failed check: polling
            # it again every second would go on for as long as the page is open.
            failed = ("no download job" in e.sentence or "job_not_found" in e.detail
                      or _says_failed(e.detail))
            if failed:
                store.update(DownloadRecord, view.record_id,
                             job=replace(view.job, status="failed"))
            out.append(DownloadView(record_id=view.record_id, server=view.server,
                                    model=view.model, error=e.sentence,
                                    job=replace(view.job, status="failed") if failed
                                    else view.job))
            continue
        # the job keeps the id it was started under (a status answer may not repeat it)
        store.update(DownloadRecord, view.record_id, job=replace(job, job_id=view.job.job_id))
        out.append(DownloadView(record_id=view.record_id, server=view.server, model=view.model,
                                job=job))
    return out


def _says_failed(detail: str) -> bool:
    """Whether an error body (as kept in AtomError.detail) is a download status of "failed"."""
    try:
        body = json.loads(detail)
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("status", "")).lower() == "failed"
