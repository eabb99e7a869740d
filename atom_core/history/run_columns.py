"""The runs table as typed columns: what the runs archive stores and the Stats frame is built
from, in one place so the two can never type a run differently.

`typed_columns(rows)` turns stored run rows (flat dicts) into a pandas frame column by column
(a RunRecord per row of 100,000 would take about 2 s) and a mask of the rows that do not read
as runs (an `ok` that is not true/false, a number field holding text, a time that is not a
time, a name that is not text: a hand-edited or damaged file). Those rows are kept by the
archive (with the bad values emptied) and left out, counted, by every reader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "ARCHIVE_COLUMNS",
    "CATEGORY_COLUMNS",
    "EXTRA_COLUMN",
    "FLOAT_COLUMNS",
    "FRAME_COLUMNS",
    "TEXT_COLUMNS",
    "UNREADABLE_COLUMN",
    "archive_schema",
    "check_columns",
    "run_filter",
    "runs_arrow",
    "typed_columns",
]

FLOAT_COLUMNS = (
    "ts", "ttft_s", "decode_tps", "e2e_s", "itl_p50_s", "itl_p95_s", "output_tokens",
    "prompt_tokens", "concurrency",
    # reasoning models and client-side waits (atom_core.metrics defines each)
    "first_answer_s", "thinking_s", "pool_wait_s",
    # what the server said about the same run (LM Studio's native /api/v1/chat stats,
    # llama.cpp's timings)
    "server_tps", "server_ttft_s", "server_load_s", "server_prompt_s", "server_output_tokens",
)
CATEGORY_COLUMNS = ("model", "source", "server", "state", "tokens_source", "route")
TEXT_COLUMNS = ("id", "error", "finish_reason", "conversation_id", "message_id", "sweep_id",
                "round_id",
                # a sweep's K: "model" (each model its own), "shared" (one for all); "" before
                "k_scope")
# What the Stats frame reads: a row with a bad value in one of these is unreadable.
FRAME_COLUMNS = ("ok", *FLOAT_COLUMNS, *CATEGORY_COLUMNS, *TEXT_COLUMNS)
# The rest of RunRecord's fields, kept for exports and the Machine tab; read leniently (a bad
# value is emptied, the row stays readable, as RunRecord.from_record does).
MORE_FLOAT_COLUMNS = (
    "reasoning_tokens", "cpu_percent_mean", "cpu_percent_peak", "ram_used_mb_peak",
    "gpu_util_mean", "gpu_util_peak", "vram_used_mb_peak", "hw_samples", "request_bytes")
MORE_TEXT_COLUMNS = ("machine_id", "response_id", "previous_response_id", "reasoning_setting")
UNREADABLE_COLUMN = "unreadable"
EXTRA_COLUMN = "extra"  # any other keys of the row (tags), as a JSON object; "" for none
ARCHIVE_COLUMNS = (*FRAME_COLUMNS, *MORE_FLOAT_COLUMNS, *MORE_TEXT_COLUMNS, UNREADABLE_COLUMN,
                   EXTRA_COLUMN)
_ALL_FLOATS = (*FLOAT_COLUMNS, *MORE_FLOAT_COLUMNS)
_ALL_TEXT = (*CATEGORY_COLUMNS, *TEXT_COLUMNS, *MORE_TEXT_COLUMNS, EXTRA_COLUMN)
_KNOWN = frozenset(ARCHIVE_COLUMNS) - {UNREADABLE_COLUMN, EXTRA_COLUMN}


def archive_schema() -> pa.Schema:
    """The archive's Arrow schema: ok and unreadable bool, numbers float64, text string."""
    import pyarrow as pa

    kinds = {"ok": pa.bool_(), UNREADABLE_COLUMN: pa.bool_()}
    kinds.update({c: pa.float64() for c in _ALL_FLOATS})
    kinds.update({c: pa.string() for c in _ALL_TEXT})
    return pa.schema([pa.field(c, kinds[c], nullable=c in _ALL_FLOATS) for c in ARCHIVE_COLUMNS])


def typed_columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ARCHIVE_COLUMNS,
                  ) -> tuple[pd.DataFrame, np.ndarray]:
    """Every row typed, in the given order, and a mask of the rows that are unreadable.

    Columns (those of `columns` asked for; ARCHIVE_COLUMNS by default): `ok` bool (missing:
    true), numbers float64 (NaN where unknown), text str ("" where absent); `state` from `ok`
    where missing; `unreadable` the mask; `extra` the other keys as JSON."""
    import numpy as np
    import pandas as pd

    rows = [r for r in rows if isinstance(r, Mapping)]
    wanted = [c for c in columns if c not in (UNREADABLE_COLUMN, EXTRA_COLUMN)]
    for needed in ("ok", "state", "ts"):  # what the checks below stand on
        if needed not in wanted:
            wanted.append(needed)
    df = pd.DataFrame(rows, columns=wanted)
    unreadable = np.zeros(len(df), dtype=bool)
    ok = df["ok"]
    if len(df) and pd.api.types.infer_dtype(ok, skipna=True) not in ("boolean", "empty"):
        fine = ok.map(lambda v: v is None or isinstance(v, bool) or v != v).to_numpy(bool)
        unreadable |= ~fine
        ok = ok.where(fine, None)
    state = df["state"]
    if len(df):
        ok = ok.astype("boolean").fillna(True).astype(bool)
        state = state.where(state.notna(), np.where(ok, "complete", "error"))
    df["ok"] = ok.astype(bool)
    df["state"] = state
    for col in (c for c in wanted if c in _ALL_FLOATS):
        values = df[col]
        numeric = pd.to_numeric(values, errors="coerce")
        if col in FLOAT_COLUMNS and values.dtype.kind not in "fiu":  # was each one a number?
            unreadable |= (numeric.isna() & values.notna()).to_numpy(bool)
        df[col] = numeric.astype("float64")
    ts = df["ts"].to_numpy()
    with np.errstate(invalid="ignore"):
        unreadable |= ~np.isnan(ts) & ~((ts >= 0) & (ts < 1e11))  # inf, negative, year 5000+
    for col in (c for c in wanted if c in _ALL_TEXT):
        values = df[col]
        if values.dtype.kind == "f":  # a field no row has: all NaN
            values = values.astype(object)
        elif len(df) and pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            fine = values.map(lambda v: v is None or isinstance(v, str) or v != v)
            if col not in MORE_TEXT_COLUMNS:
                unreadable |= ~fine.to_numpy(bool)
            values = values.where(fine, None)
        df[col] = values.fillna("").astype(str)
    if UNREADABLE_COLUMN in columns:
        df[UNREADABLE_COLUMN] = unreadable
    if EXTRA_COLUMN in columns:
        df[EXTRA_COLUMN] = [_extra(r) for r in rows]
    return df[list(columns)], unreadable


def _extra(row: Mapping[str, Any]) -> str:
    extra = {k: v for k, v in row.items() if k not in _KNOWN}
    return json.dumps(extra, ensure_ascii=False, default=str) if extra else ""


def runs_arrow(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Stored run rows as an archive table (ARCHIVE_COLUMNS, archive_schema)."""
    import pyarrow as pa

    df, _ = typed_columns(rows)
    return pa.Table.from_pandas(df, schema=archive_schema(), preserve_index=False)


def run_filter(*, models: Sequence[str] = (), servers: Sequence[str] = (),
               since: float | None = None, until: float | None = None) -> Any:
    """The pyarrow expression of a runs read: readable rows, `since` <= ts < `until`, the
    models and servers given (empty: all)."""
    import pyarrow.compute as pc

    expr = pc.field(UNREADABLE_COLUMN) == False  # noqa: E712 (an expression, not a test)
    if since is not None:
        expr &= pc.field("ts") >= since
    if until is not None:
        expr &= pc.field("ts") < until
    if models:
        expr &= pc.field("model").isin(list(models))
    if servers:
        expr &= pc.field("server").isin(list(servers))
    return expr


def check_columns(columns: Sequence[str] | None) -> list[str]:
    """The columns of a runs read (None: every one but `unreadable`); ValueError for others."""
    if columns is None:
        return [c for c in ARCHIVE_COLUMNS if c != UNREADABLE_COLUMN]
    unknown = [c for c in columns if c not in ARCHIVE_COLUMNS]
    if unknown:
        raise ValueError(f"not a column of the runs archive: {', '.join(map(repr, unknown))}")
    return list(dict.fromkeys(columns))
