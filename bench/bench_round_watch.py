"""The Race view's round watcher: what one tick costs an open browser.

Every open Race view looks once a second whether its round changed in another browser (a vote,
a Reveal, the race's progress, a newer round to follow): arena.current_round (one record read,
checked) and arena.state_key. This saves N realistic rounds (four slots, 256-token replies with
their token timelines) to a temporary TinyDB store and times one tick, for a browser that shows
its own round (by id) and for one that follows the newest, at several N.

    python bench/bench_round_watch.py [--ticks 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atom_core import arena  # noqa: E402
from atom_core.arena.rounds import SlotResult  # noqa: E402
from atom_core.history.tinydb_store import TinyDBHistoryStore  # noqa: E402
from atom_core.metrics import GenerationMetrics  # noqa: E402

REPLY = " ".join(f"word{i}" for i in range(256))


def a_round(i: int) -> dict[str, object]:
    metrics = GenerationMetrics.from_dict({
        "ttft_s": 0.2, "decode_tps": 40.0, "e2e_s": 6.6, "output_tokens": 256,
        "tokens_source": "usage", "token_offsets_ms": [200.0 + 25 * t for t in range(256)]})
    slots = tuple(SlotResult(label=label, server="http://127.0.0.1:1234", model=f"m/{label}",
                             target=f"m/{label}", contestant=f"m/{label}", content=REPLY,
                             metrics=metrics, state="complete") for label in "ABCD")
    rec = arena.ArenaRound(id="x", ts=1000.0 + i, prompt=f"Question {i}", system_prompt="",
                           slots=slots, blind=True, order=(2, 0, 3, 1)).to_record()
    del rec["id"]
    return rec


def tick_us(store: TinyDBHistoryStore, wanted: str | None, ticks: int) -> float:
    times = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        arena.state_key(arena.current_round(store, wanted))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=200)
    args = ap.parse_args()
    print(f"{'rounds':>7} {'own round (µs/tick)':>20} {'newest (µs/tick)':>17}")
    for n in (10, 200, 1000):
        with tempfile.TemporaryDirectory() as tmp:
            store = TinyDBHistoryStore(Path(tmp), durable=False)
            ids = store.append_many(arena.ROUNDS_TABLE, (a_round(i) for i in range(n)))
            own = tick_us(store, ids[n // 2], args.ticks)
            newest = tick_us(store, None, args.ticks)
            print(f"{n:>7} {own:>20.0f} {newest:>17.0f}")


if __name__ == "__main__":
    main()
