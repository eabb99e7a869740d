"""How well does the bundled demo model (Gemma 3 270M, a base model) answer, prompted each way?

Starts one real demo engine process per prompting style and asks it the same 10 questions
(no max_tokens: the engine's default cap applies, as in ATOM's chat), one at a time, then prints
per style:

  ended   share of replies that ended by themselves (finish_reason "stop") before the cap
  tokens  mean reply length in tokens (the server's usage)
  junk    share of reply words that are not plain English-looking words (other scripts,
          letters run together with digits, 25+ letter "words"): the " mendatang" kind
  time    mean seconds per reply on this machine (context only; the CPU is shared)

Styles: "before" = Gemma's chat template and a 256-token cap (what shipped); "gguf" = the
template the GGUF file carries, 128-token cap; "fewshot" = a completion-style few-shot
question/answer prompt with stop sequences at the next question, 128-token cap.

Needs the demo engine (`make demo`). Run: python bench/bench_demo_prompting.py [--styles ...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from atom_core.launch import demo  # noqa: E402

PROMPTS = [
    "What is the capital of Japan?",
    "Why is the sky blue?",
    "Give me three tips for learning to cook.",
    "What is 12 times 7?",
    "Write one sentence about the ocean.",
    "Who wrote Romeo and Juliet?",
    "What does a CPU do?",
    "Translate 'good morning' into French.",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
]
STYLES = {  # name: (chat format, default max tokens)
    "before": ("gemma", 256),
    "gguf": ("gguf", 128),
    "fewshot": ("atom-fewshot", 128),
}
WORD = re.compile(r"[^\s]+")
PLAIN = re.compile(r"^[\"'(\[]*[A-Za-z][A-Za-z'’-]{0,24}[.,!?;:)\]\"'’]*$|^[\d.,:%$()+\-*/=x]+$")


def junk_share(text: str) -> float:
    words = WORD.findall(text)
    if not words:
        return 0.0
    return sum(1 for w in words if not PLAIN.match(w)) / len(words)


def run_style(name: str, fmt: str, cap: int, paths: demo.DemoPaths) -> dict[str, float]:
    engine = demo.start_engine(f"bench-{name}", paths=paths, chat_format=fmt,
                               default_max_tokens=cap)
    try:
        demo.wait_ready([engine])
        ended, tokens, junk, secs = [], [], [], []
        with httpx.Client(base_url=engine.url, timeout=300) as client:
            for prompt in PROMPTS:
                t0 = time.perf_counter()
                r = client.post("/v1/chat/completions", json={
                    "model": engine.alias, "seed": 1, "temperature": 0.7,
                    "messages": [{"role": "user", "content": prompt}]})
                secs.append(time.perf_counter() - t0)
                r.raise_for_status()
                body = r.json()
                choice = body["choices"][0]
                text = choice["message"]["content"] or ""
                ended.append(choice.get("finish_reason") == "stop")
                tokens.append(body["usage"]["completion_tokens"])
                junk.append(junk_share(text))
                print(f"  [{name}] {prompt!r} -> {text.strip()[:110]!r} "
                      f"({tokens[-1]} tokens, {choice.get('finish_reason')})", flush=True)
    finally:
        engine.stop()
    return {"ended": sum(ended) / len(ended), "tokens": statistics.mean(tokens),
            "junk": statistics.mean(junk), "time": statistics.mean(secs), "cap": cap}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--styles", nargs="*", default=list(STYLES))
    args = p.parse_args()
    paths = demo.demo_paths()
    if not demo.engine_installed(paths) or not demo.model_ready(paths):
        print("The demo engine is not installed: run `make demo` first.")
        return 1
    results = {n: run_style(n, *STYLES[n], paths) for n in args.styles}
    print("\n| style | cap | ended before cap | mean tokens | junk words | s per reply |")
    print("|---|---|---|---|---|---|")
    for n, r in results.items():
        print(f"| {n} | {r['cap']:.0f} | {r['ended']:.0%} | {r['tokens']:.0f} | "
              f"{r['junk']:.1%} | {r['time']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
