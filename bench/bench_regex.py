"""Prompt-set regex checks: how long one check of a hostile pattern takes (issue 23 §2).

The pattern `^(\\w+\\s?)*;$` against an ordinary 60-word reply makes Python's backtracking `re`
explore every way to split the words: it held the Streamlit server at ~90 % CPU. This prints the
wall time of one `search` on replies of growing length with `re` (capped: it doubles with every
word), with the `regex` module under a 0.1 s timeout, and with Google's RE2 (`google-re2`, the
engine ATOM uses for patterns it did not write), plus ordinary patterns for the everyday cost.

    python bench/bench_regex.py
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import re2  # noqa: E402
import regex  # noqa: E402

from atom_core.arena.promptsets import Check  # noqa: E402

HOSTILE = r"^(\w+\s?)*;$"
MORE_HOSTILE = [r"^(\w+\s*)+\d$", r"(?:[a-z]+\s?){2,}\d", r"^(([a-z])+.)+[A-Z]([a-z])+$"]
EVERYDAY = [r"\bParis\b", r"(?i)capital of \w+", r"\d{4}-\d{2}-\d{2}", r"^[A-Z].*\.$"]
RE_CAP_S = 5.0  # past this, `re` is not timed further (each extra word doubles it)


def reply(words: int) -> str:
    return " ".join(["lorem", "ipsum", "dolor", "sit", "amet"][i % 5] for i in range(words))


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def regex_with_timeout(pattern: str, text: str) -> str:
    try:
        regex.search(pattern, text, timeout=0.1)
    except TimeoutError:
        return "timeout"
    return "done"


def main() -> None:
    print(f"one search of /{HOSTILE}/ on a reply of N words (best of 3, seconds; `re` is cut "
          f"off past {RE_CAP_S:g} s: each word multiplies it by about 8):", flush=True)
    print(f"{'words':>6} {'re':>10} {'regex 0.1s':>12} {'RE2':>10} {'ATOM check':>11}")
    re_gave_up = False
    check = Check("regex", HOSTILE)
    for words in (3, 4, 5, 6, 60, 600, 6000):
        text = reply(words)
        if re_gave_up:
            re_s = "-"
        else:
            took = timed(lambda t=text: re.search(HOSTILE, t), repeat=1)
            re_s = f"{took:.4f}"
            re_gave_up = took * 8 > RE_CAP_S
        rx = timed(lambda t=text: regex_with_timeout(HOSTILE, t))
        r2 = timed(lambda t=text: re2.search(HOSTILE, t))
        atom = timed(lambda t=text: check.passes(t, 1.0, True))
        print(f"{words:>6} {re_s:>10} {rx:>12.4f} {r2:>10.6f} {atom:>11.6f}", flush=True)
    print("\nmore hostile patterns (seconds): regex module (0.1 s timeout) vs RE2")
    for pattern in MORE_HOSTILE:
        for words in (60, 600):
            text = reply(words)
            rx = timed(lambda p=pattern, t=text: regex_with_timeout(p, t))
            r2 = timed(lambda p=pattern, t=text: re2.search(p, t))
            out = regex_with_timeout(pattern, text)
            print(f"  /{pattern}/ on {words} words: regex {rx:.4f} ({out}), RE2 {r2:.6f}")
    text = reply(600)
    print("\neveryday patterns on a 600-word reply (median of 200, microseconds):")
    for pattern in EVERYDAY:
        a, b, c = (statistics.median(timed(lambda p=pattern, f=f: f(p), 1) for _ in range(200))
                   for f in (lambda p: re.search(p, text),
                             lambda p: regex.search(p, text, timeout=0.1),
                             lambda p: re2.search(p, text)))
        print(f"  /{pattern}/: re {a * 1e6:.1f}, regex {b * 1e6:.1f}, RE2 {c * 1e6:.1f}")


if __name__ == "__main__":
    main()
