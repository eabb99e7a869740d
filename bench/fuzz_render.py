"""The long render fuzz (issue 23): hypothesis generates hostile Markdown from the grammar in
tests/fixtures/markdown_fuzz.py; each document goes through atom_core.render.safe_markdown and a
real st.markdown (or caption, or alert) in headless Chromium; any request that leaves the app or
any element that would load something is an escape (tests/fixtures/render_fuzz.py).

Documents are drawn many to a page load (--batch, each in its own keyed container), so 100,000
take hours, not days. Runs at nice 19 (Streamlit and Chromium inherit it) so other work on the
machine goes first. Escapes are written to --out as JSON, ready to add to the regression corpus
(tests/fixtures/render_corpus.json); the exit status is 1 if there was one.

    python bench/fuzz_render.py --count 100000 --seed 23 [--batch 500] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Error as PlaywrightError  # noqa: E402

from tests.fixtures.markdown_fuzz import generate  # noqa: E402
from tests.fixtures.render_fuzz import Escape, chromium, render_fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--batch", type=int, default=500,
                    help="documents per page load (and per hypothesis run: seed, seed+1, ...)")
    ap.add_argument("--out", type=Path, default=ROOT / "test-output" / "fuzz-escapes.json")
    args = ap.parse_args()
    os.nice(19 - os.nice(0))
    started = time.monotonic()
    runs = -(-args.count // args.batch)
    # Generating a document costs about as much as drawing it: a thread generates the next
    # batch while Chromium draws this one (the browser and Streamlit are other processes).
    ready: queue.Queue[tuple[int, list[str]]] = queue.Queue(maxsize=2)

    def produce() -> None:
        for k in range(runs):
            n = min(args.batch, args.count - k * args.batch)
            ready.put((args.seed + k, generate(n, args.seed + k)))

    threading.Thread(target=produce, daemon=True).start()
    tried, escapes = 0, list[Escape]()
    with tempfile.TemporaryDirectory() as tmp, chromium() as browser, \
            render_fuzz(browser, Path(tmp)) as fuzz:
        for _ in range(runs):
            run_seed, docs = ready.get()
            for attempt in range(3):  # a page that did not finish drawing is drawn again
                try:
                    escapes += fuzz.check(docs)
                    break
                except PlaywrightError as e:
                    print(f"seed {run_seed}: page load {attempt + 1} did not finish ({e})",
                          flush=True)
            else:
                print(f"fuzz_render: seed {run_seed} could not be drawn; stopping")
                return 2
            tried += len(docs)
            rate = tried / (time.monotonic() - started)
            print(f"seed {run_seed}: {tried:,} documents, {len(escapes)} escapes "
                  f"({rate:.1f} docs/s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(e) for e in escapes], indent=1, ensure_ascii=False))
    took = time.monotonic() - started
    print(f"fuzz_render: {tried:,} documents (seeds {args.seed}..{args.seed + runs - 1}, "
          f"{args.batch:,} per seed and page load), {len(escapes)} escapes, "
          f"{took / 60:.1f} min; escapes in {args.out}")
    return 1 if escapes else 0


if __name__ == "__main__":
    sys.exit(main())
