"""Server figures beside ATOM's, from the runs that carry them.

Servers that report their own figures: LM Studio's native route (`stats`, stored as
server_tps / server_ttft_s by the Server-stats check) and llama.cpp's `llama-server`
(`timings` on its last chunk: predicted_per_second, prompt_ms, predicted_n, stored by every
run that streamed them). This table puts the medians side by side per model and server, with
ATOM's decode speed as a share of the server's: ATOM times token arrivals over the network, so
it is a little lower; the server's prompt time is the part of TTFT the server itself spent.
"""

from __future__ import annotations

import pandas as pd

from ..metrics import (
    DECODE_P50,
    SERVER_PROMPT_P50,
    SERVER_TPS_P50,
    SERVER_TTFT_P50,
    TTFT_P50,
    Stat,
)
from .summary import grouped

# (the exported column names stay as they were: ATOM's figures prefixed atom_)
SERVER_FIGURE_COLUMNS: dict[str, tuple[str, str]] = {
    "model": ("Model", "text"),
    "server": ("Server", "text"),
    "runs": ("Runs with server figures", "int"),
    "atom_tps_p50": (f"ATOM {DECODE_P50.header}", "tps"),
    SERVER_TPS_P50.key: (SERVER_TPS_P50.header, "tps"),
    "tps_ratio": ("ATOM ÷ server", "ratio"),
    "atom_ttft_p50_s": (f"ATOM {TTFT_P50.header}", "seconds"),
    SERVER_TTFT_P50.key: (SERVER_TTFT_P50.header, "seconds"),
    SERVER_PROMPT_P50.key: (SERVER_PROMPT_P50.header, "seconds"),
    "atom_tokens_mean": ("ATOM tokens (mean)", "tokens"),
    "server_tokens_mean": ("Server tokens (mean)", "tokens"),
}


def server_figures(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, server) over completed runs with any server figure."""
    cols = list(SERVER_FIGURE_COLUMNS)
    if df.empty:
        return pd.DataFrame(columns=cols)
    has = df["server_tps"].notna() | df["server_ttft_s"].notna() | df["server_prompt_s"].notna()
    runs = df[df["ok"] & has]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    g = runs.groupby([runs["model"].astype(str), runs["server"].astype(str)], sort=True)

    def of(stat: Stat) -> pd.Series:  # the catalogue's percentile, per group (summary.grouped)
        return grouped(g[stat.measure.name], [stat])[0]

    out = pd.DataFrame({
        "runs": g.size(),
        "atom_tps_p50": of(DECODE_P50),
        SERVER_TPS_P50.key: of(SERVER_TPS_P50),
        "atom_ttft_p50_s": of(TTFT_P50),
        SERVER_TTFT_P50.key: of(SERVER_TTFT_P50),
        SERVER_PROMPT_P50.key: of(SERVER_PROMPT_P50),
        "atom_tokens_mean": g["output_tokens"].mean(),
        "server_tokens_mean": g["server_output_tokens"].mean(),
    })
    out["tps_ratio"] = out["atom_tps_p50"] / out["server_tps_p50"]
    out = out.reset_index(names=["model", "server"])
    return out[cols]
