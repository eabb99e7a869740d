"""Speed per machine and model, and the "benchmark card": one JSON a user can share.

`machine_table()` groups recorded runs by (machine, model): median decode tok/s and TTFT next to
what the machine did meanwhile (mean CPU %, peak RAM, mean GPU %, peak VRAM), for the Stats page's
Machine view. `benchmark_card()` puts this machine, each model (with its quantization) and those
results in one JSON document; `read_card()` reads one back leniently (it is untrusted: it came
from someone else) and `compare_cards()` lines another machine's figures up against ours.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..metrics import DECODE_P50, TTFT_P50
from .hardware import MachineInfo

CARD_FORMAT = "atom-benchmark-card"
CARD_VERSION = 1
MAX_CARD_BYTES = 2_000_000
MAX_CARD_MODELS = 500

# (key, label) of a machine-table row's figures, in the order a table shows them
RESULT_FIELDS = (
    ("runs", "Runs"),
    ("decode_tps_p50", DECODE_P50.header),
    ("ttft_s_p50", TTFT_P50.header),  # the key cards were saved with (TTFT_P50.key elsewhere)
    ("cpu_percent_mean", "CPU % (mean)"),
    ("ram_used_mb_peak", "RAM used MB (peak)"),
    ("gpu_util_mean", "GPU % (mean)"),
    ("vram_used_mb_peak", "VRAM used MB (peak)"),
)


class CardError(ValueError):
    """A benchmark card that can't be read; `.sentence` is what the page shows."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


def _nums(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows
            if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def machine_table(runs: Sequence[Mapping[str, Any]],
                  *, exclude_sources: Sequence[str] = ("judge",)) -> list[dict[str, Any]]:
    """One row per (machine, model) over successful runs that name their machine (a
    machine_id; hardware figures only where the run was sampled). Judge requests are left
    out: their speed is not a contestant's."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        mid = r.get("machine_id")
        if not isinstance(mid, str) or not mid or r.get("ok") is False:
            continue
        if r.get("source") in exclude_sources:
            continue
        groups.setdefault((mid, str(r.get("model") or "")), []).append(r)
    out = []
    for (mid, model), rows in sorted(groups.items()):
        vram = _nums(rows, "vram_used_mb_peak")
        out.append({
            "machine_id": mid, "model": model, "runs": len(rows),
            "decode_tps_p50": _round(DECODE_P50.of(_nums(rows, "decode_tps"))),
            "ttft_s_p50": _round(TTFT_P50.of(_nums(rows, "ttft_s")), 3),
            "cpu_percent_mean": _round(_mean(_nums(rows, "cpu_percent_mean")), 1),
            "ram_used_mb_peak": _round(max(_nums(rows, "ram_used_mb_peak"), default=None), 1),
            "gpu_util_mean": _round(_mean(_nums(rows, "gpu_util_mean")), 1),
            "vram_used_mb_peak": _round(max(vram), 1) if vram else None,
        })
    return out


def machine_facts(machine: MachineInfo) -> dict[str, Any]:
    """The machine as a card or a report shares it: CPU, cores, RAM, GPUs, OS and its id,
    without the host name (a report leaves this computer; its name is nobody's business)."""
    facts = machine.to_record()
    facts.pop("hostname", None)
    return facts


def benchmark_card(machine: MachineInfo, runs: Sequence[Mapping[str, Any]],
                   quantizations: Mapping[str, str | None] | None = None,
                   *, now: float | None = None) -> dict[str, Any]:
    """This machine's card: the machine (without its host name) and, per model it ran, the
    quantization (when known) and the results."""
    facts = machine_facts(machine)
    quant = quantizations or {}
    models = [{"model": row["model"], "quantization": quant.get(row["model"]),
               **{k: row[k] for k, _ in RESULT_FIELDS}}
              for row in machine_table(runs) if row["machine_id"] == machine.id]
    return {"format": CARD_FORMAT, "version": CARD_VERSION,
            "created": time.time() if now is None else now, "machine": facts, "models": models}


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchmarkCard:
    machine: MachineInfo
    models: tuple[dict[str, Any], ...]
    created: float | None = None


def read_card(raw: bytes | str) -> BenchmarkCard:
    """Reads a card someone shared. Raises CardError (one sentence) if it is not one."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardError("That file is too big to be a benchmark card.")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CardError("That file is not a benchmark card (it is not JSON).") from None
    if not isinstance(doc, dict) or doc.get("format") != CARD_FORMAT:
        raise CardError("That JSON is not an ATOM benchmark card.")
    if not isinstance(doc.get("machine"), dict) or not isinstance(doc.get("models"), list):
        raise CardError("That benchmark card has no machine or no models in it.")
    models = []
    for m in doc["models"][:MAX_CARD_MODELS]:
        if not isinstance(m, dict) or not isinstance(m.get("model"), str):
            continue
        row: dict[str, Any] = {"model": m["model"][:300],
                               "quantization": m["quantization"][:50]
                               if isinstance(m.get("quantization"), str) else None}
        for key, _ in RESULT_FIELDS:
            v = m.get(key)
            row[key] = v if isinstance(v, int | float) and not isinstance(v, bool) else None
        models.append(row)
    created = doc.get("created")
    return BenchmarkCard(machine=MachineInfo.from_record(doc["machine"]), models=tuple(models),
                         created=float(created) if isinstance(created, int | float) else None)


def compare_cards(mine: Mapping[str, Any], theirs: BenchmarkCard) -> list[dict[str, Any]]:
    """Per model on both cards (same key and quantization when both say): decode tok/s here
    and there, and how many times faster this machine is."""
    here = {(m["model"], m.get("quantization")): m for m in mine.get("models", [])}
    out = []
    for m in theirs.models:
        ours = here.get((m["model"], m.get("quantization")))
        if ours is None:
            ours = next((v for (k, _q), v in here.items() if k == m["model"]), None)
        if ours is None:
            continue
        a, b = ours.get("decode_tps_p50"), m.get("decode_tps_p50")
        out.append({"model": m["model"], "quantization": m.get("quantization"),
                    "tps_here": a, "tps_there": b,
                    "ratio": round(a / b, 2) if a and b else None,
                    "ttft_here": ours.get("ttft_s_p50"), "ttft_there": m.get("ttft_s_p50")})
    return out
