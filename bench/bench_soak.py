"""Memory under a long session: many Arena races in one browser session, RSS of the app.

Starts the LM Studio double (its own process: three quick models and one that breaks off every
reply) and `streamlit run app.py` on a fresh data folder, then drives one Chromium tab through
N four-model races on the Arena page (type a prompt, wait for the vote bar). Prints the app
process's resident memory (VmRSS, from /proc) and thread count after the warm-up and every
`--every` races, and the growth from warm-up to the end (goal <= 10 %).

    python bench/bench_soak.py [--races 500] [--warmup 50] [--every 50] [--json]
                               [--probe] [--env NAME=VALUE ...]

--probe loads bench/soak_probe/sitecustomize.py into the app (PYTHONPATH) and adds, at each
checkpoint, what it reports: glibc malloc's figures, pyarrow's pool, Streamlit's stores, and the
RSS after malloc_trim(0). --env sets a variable in the app's environment (one suspect at a
time: MALLOC_ARENA_MAX=2, ARROW_DEFAULT_MEMORY_POOL=system, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.browser import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_FLAGS,
    ask,
    open_app,
    start_app,
    start_double,
    stop,
    wait_idle,
)

MODELS = [
    *({"key": f"soak/m{i}", "display_name": f"Soak {i}", "loaded": True, "ttft_ms": 20,
       "token_gap_ms": 3, "reply_tokens": 120} for i in range(3)),
    {"key": "soak/crash", "display_name": "Soak crash", "loaded": True, "ttft_ms": 20,
     "token_gap_ms": 3, "reply_tokens": 120, "fail_mode": "cut_after:10"},
]


def proc_status(pid: int) -> tuple[float, int]:
    """(VmRSS in MB, threads) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def probe(pid: int, path: Path, sig: int) -> dict[str, Any]:
    """Asks the app's probe for one row (SIGUSR1: as is, SIGUSR2: after trimming)."""
    before = len(path.read_text().splitlines()) if path.exists() else 0
    os.kill(pid, sig)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > before:
            row: dict[str, Any] = json.loads(lines[-1])
            return row
        time.sleep(0.1)
    return {}


def setup_four(pg: Any) -> None:
    seg = pg.locator("[data-testid=stButtonGroup]").filter(has_text="4 models")
    seg.get_by_text("4 models").click()
    time.sleep(0.3)
    wait_idle(pg)
    for i, name in enumerate(["Soak 0", "Soak 1", "Soak 2", "Soak crash"]):
        box = pg.locator(f".st-key-arena_model_{i}").get_by_role("combobox")
        box.click()
        pg.get_by_role("option", name=name).first.click()
        time.sleep(0.2)
        wait_idle(pg)


def race(pg: Any, i: int) -> None:
    before = pg.locator("text=Which answer is better?").count()
    ask(pg, f"Soak race {i}: say something.")
    # the vote bar of the new round (the old one goes the moment the race starts)
    deadline = time.monotonic() + 60
    time.sleep(0.2)
    while time.monotonic() < deadline:
        if pg.locator(f"text=Soak race {i}:").count() and \
                pg.locator("text=Which answer is better?").count():
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"race {i} did not finish (vote bars before: {before})")
    wait_idle(pg, 60_000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--races", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", action="store_true", help="report allocator and Streamlit figures")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in the app's environment (repeatable)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="atom-soak-"))
    double = start_double({"models": MODELS}, tmp)
    extra = dict(e.split("=", 1) for e in args.env)
    probe_path = tmp / "probe.jsonl"
    if args.probe:
        extra["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "bench" / "soak_probe"), os.environ.get("PYTHONPATH", "")])
        extra["ATOM_SOAK_PROBE"] = str(probe_path)
    app = start_app(double.url, tmp / "data", tmp, extra_env=extra)
    points: list[dict[str, Any]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            pg = browser.new_page(viewport={"width": 1360, "height": 900})
            open_app(pg, f"{app.url}/arena", "[data-testid=stChatInputTextArea]")
            setup_four(pg)
            t0 = time.monotonic()
            for i in range(1, args.races + 1):
                t = time.monotonic()
                race(pg, i)
                if i <= 3 and not args.json:
                    print(f"race {i}: {time.monotonic() - t:.1f} s", flush=True)
                if i == args.warmup or (i > args.warmup and i % args.every == 0) \
                        or i == args.races:
                    rss, threads = proc_status(app.process.pid)
                    points.append({"races": i, "rss_mb": round(rss, 1), "threads": threads,
                                   "elapsed_s": round(time.monotonic() - t0, 1)})
                    if not args.json:
                        print(f"after {i:4d} races: RSS {rss:6.1f} MB, {threads} threads, "
                              f"{time.monotonic() - t0:6.0f} s", flush=True)
                    if args.probe:
                        row = probe(app.process.pid, probe_path, signal.SIGUSR1)
                        points[-1]["probe"] = row
                        if not args.json:
                            print("   probe:", json.dumps(row), flush=True)
            if args.probe:  # at the end only: trimming mid-run would hide the growth
                row = probe(app.process.pid, probe_path, signal.SIGUSR2)
                points[-1]["after_trim"] = row
                if not args.json:
                    print("   after malloc_trim + release_unused:", json.dumps(row), flush=True)
            browser.close()
    finally:
        stop(app.process)
        stop(double.process)
    warm, end = points[0], points[-1]
    growth = (end["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]
    per_race_kb = (end["rss_mb"] - warm["rss_mb"]) * 1024 / max(1, end["races"] - warm["races"])
    summary = {"points": points, "growth": round(growth, 4), "per_race_kb": round(per_race_kb, 1),
               "goal": "growth <= 10 %"}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"RSS after warm-up ({warm['races']} races) {warm['rss_mb']} MB -> end "
              f"({end['races']}) {end['rss_mb']} MB: {growth:+.1%} ({per_race_kb:.0f} KB per race; "
              "goal <= 10 %)")


if __name__ == "__main__":
    main()
