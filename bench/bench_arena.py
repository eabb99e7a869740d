"""Arena race: is racing three models as fast as running the slowest one alone?

Starts the LM Studio double (its own process) with three models whose single replies take about
2 s each, then, interleaved over several rounds: each model alone (one stream through
runner.FanOut, the Arena's engine), then the three raced together through arena.ArenaRace (the
page's path, saving the round to a temporary store). Reports the race's wall time as a ratio to
the slowest single run of the same round (a sequential arena would be about 3.0; goal <= 1.10),
and each slot's measured TTFT against the TTFT the server was told to wait.

    python bench/bench_arena.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atom_core import arena  # noqa: E402
from atom_core.history import open_store  # noqa: E402
from atom_core.measure.runner import FanOut  # noqa: E402
from atom_core.server.client import LMStudioClient  # noqa: E402
from atom_core.types import ChatMessage  # noqa: E402

TOKENS = 60
MODELS = [  # (key, ttft_ms); the token gap is set so that each single reply takes ~2.0 s
    ("bench/alpha", 200),
    ("bench/beta", 300),
    ("bench/gamma", 400),
]


def config() -> dict[str, Any]:
    return {"models": [
        {"key": key, "loaded": True, "ttft_ms": ttft, "reply_tokens": TOKENS,
         "token_gap_ms": round((2000 - ttft) / (TOKENS - 1), 2)}
        for key, ttft in MODELS
    ]}


def start_double(folder: Path) -> tuple[subprocess.Popen[str], str]:
    path = folder / "double.json"
    path.write_text(json.dumps(config()))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fixtures" / "lmstudio_double.py"), "--port", "0",
         "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the double did not start: {line}")
    return proc, line.split()[1]


def single(client: LMStudioClient, key: str) -> float:
    """One model alone through FanOut: seconds from start to its stream's end."""
    started = time.perf_counter()
    with FanOut([lambda: client.stream_chat(key, [ChatMessage("user", "Go")])]) as run:
        while not run.all_done:
            run.poll(0.05)
        assert run.slots[0].ok, run.slots[0].error
    return time.perf_counter() - started


def race(client: LMStudioClient, store: Any) -> tuple[float, float, list[float]]:
    """The three raced through ArenaRace: (streams wall s, saving s, measured TTFT s per slot)."""
    setups = [arena.SlotSetup(server=client.base_url, model=key) for key, _ in MODELS]
    prepared = arena.Prepared(targets=[key for key, _ in MODELS],
                              instance_configs=[{} for _ in MODELS], load_s=[None] * 3,
                              errors=[None] * 3, notes=[])
    r = arena.ArenaRace(store=store, client_for=lambda _url: client, prompt="Go",
                        system_prompt="", setups=setups, prepared=prepared)
    started = time.perf_counter()
    r.start()
    while not r.done:
        r.poll(0.05)
    wall = time.perf_counter() - started
    rnd = r.finish()
    saving = time.perf_counter() - started - wall
    assert rnd is not None and all(s.state == "complete" for s in rnd.slots), rnd
    return wall, saving, [s.metrics.ttft_s for s in rnd.slots]  # type: ignore[union-attr,misc]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_double(Path(tmp))
        store = open_store(Path(tmp) / "data")
        try:
            with LMStudioClient(url) as client:
                for key, _ in MODELS:  # connections and the double's code paths, once
                    client.chat(key, [ChatMessage("user", "warm up")])
                rounds = []
                for _ in range(args.rounds):
                    singles = {key: single(client, key) for key, _ in MODELS}
                    wall, saving, ttfts = race(client, store)
                    rounds.append({"singles": singles, "race": wall, "saving": saving,
                                   "ttft": ttfts})
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()
    report(rounds, args.json)
    return 0


def report(rounds: list[dict[str, Any]], as_json: bool) -> None:
    ratios = [r["race"] / max(r["singles"].values()) for r in rounds]
    slowest = [max(r["singles"].values()) for r in rounds]
    summary = {
        "rounds": len(rounds),
        "single_s": {key: statistics.median(r["singles"][key] for r in rounds)
                     for key, _ in MODELS},
        "slowest_single_s_median": statistics.median(slowest),
        "race_s_median": statistics.median(r["race"] for r in rounds),
        "ratio_median": statistics.median(ratios),
        "ratio_worst": max(ratios),
        "sequential_would_be": statistics.median(
            sum(r["singles"].values()) / max(r["singles"].values()) for r in rounds),
        "saving_round_ms_median": 1000 * statistics.median(r["saving"] for r in rounds),
        "ttft": [{"model": key, "set_ms": ttft,
                  "measured_ms_median": 1000 * statistics.median(r["ttft"][i] for r in rounds),
                  "measured_ms_worst": 1000 * max(r["ttft"][i] for r in rounds)}
                 for i, (key, ttft) in enumerate(MODELS)],
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"Arena race vs single runs, {len(rounds)} interleaved rounds, median (worst)")
    for key, s in summary["single_s"].items():
        print(f"  single {key:<12} {s:6.3f} s")
    print(f"  race of all three     {summary['race_s_median']:6.3f} s   "
          f"ratio to the slowest single: {summary['ratio_median']:.3f} "
          f"(worst {summary['ratio_worst']:.3f}; goal <= 1.10; sequential would be "
          f"{summary['sequential_would_be']:.2f})")
    print(f"  saving the round after the race: {summary['saving_round_ms_median']:.1f} ms")
    print("  TTFT per slot during the race:")
    for t in summary["ttft"]:
        print(f"    {t['model']:<12} set {t['set_ms']:4d} ms   measured "
              f"{t['measured_ms_median']:6.1f} ms (worst {t['measured_ms_worst']:6.1f})")


if __name__ == "__main__":
    raise SystemExit(main())
