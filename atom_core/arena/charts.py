"""The Arena leaderboard as a table and a speed-versus-win-rate chart (pandas and plotly)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from ..metrics import DECODE_P50, TTFT_P50
from .ratings import Rating

COLUMNS = ["Model", "BT", "BT 95% CI", "Elo", "Elo 95% CI", "Win rate", "Battles", "W/T/L",
           "All bad", TTFT_P50.header, DECODE_P50.header]
MIN_ROUNDS_FOR_CI = 3  # fewer voted rounds: every resample is nearly the same, so say so


def _ci(low: float | None, high: float | None, rounds: int) -> str:
    if low is None or high is None:
        return ""
    if rounds < MIN_ROUNDS_FOR_CI:
        return "more votes needed"
    return f"{low:.0f}–{high:.0f}"


def leaderboard_frame(board: Sequence[Rating]) -> pd.DataFrame:
    """One row per contestant, best first, in the words the page shows."""
    rows = []
    for r in board:
        rec = r.record
        voted = rec.rounds - rec.all_bad
        rows.append({
            "Model": r.contestant,
            "BT": round(r.bt) if r.bt is not None else None,
            "BT 95% CI": _ci(r.bt_low, r.bt_high, voted),
            "Elo": round(r.elo) if r.elo is not None else None,
            "Elo 95% CI": _ci(r.elo_low, r.elo_high, voted),
            "Win rate": r.win_rate,
            "Battles": rec.battles,
            "W/T/L": f"{rec.wins}/{rec.ties}/{rec.losses}",
            "All bad": rec.all_bad,
            TTFT_P50.header: r.ttft_p50_s,
            DECODE_P50.header: r.tps_p50,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def speed_vs_win_rate(board: Sequence[Rating]) -> go.Figure:
    """Median decode tok/s (x) against pairwise win rate (y), one bubble per contestant sized by
    its battles. Contestants without a speed or a win rate are left out."""
    points = [r for r in board if r.tps_p50 is not None and r.win_rate is not None]
    xs = [float(r.tps_p50) for r in points if r.tps_p50 is not None]
    pad = max((max(xs) - min(xs)) * 0.15, 1.0) if xs else 1.0
    fig = go.Figure(go.Scatter(
        x=[r.tps_p50 for r in points],
        y=[r.win_rate for r in points],
        mode="markers+text",
        text=[r.contestant for r in points],
        textposition="top center",
        cliponaxis=False,
        marker={"size": [12 + 2 * min(r.record.battles, 100) ** 0.5 for r in points],
                "color": "#4338ca", "opacity": 0.75},
        customdata=[[r.bt, r.record.battles, r.ttft_p50_s] for r in points],
        hovertemplate=("<b>%{text}</b><br>%{x:.1f} tok/s · win rate %{y:.0%}<br>"
                       "BT rating %{customdata[0]:.0f} · %{customdata[1]} battles"
                       "<extra></extra>"),
    ))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#9ca3af")
    fig.update_layout(
        xaxis_title="Median decode speed (tok/s) — faster →",
        yaxis_title="Win rate (pairwise, ties ½)", yaxis_tickformat=".0%",
        yaxis_range=[-0.05, 1.12], height=380,
        xaxis_range=[min(xs) - pad, max(xs) + pad] if xs else None,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Fast and good sits top right",
    )
    return fig
