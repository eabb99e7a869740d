"""How the history store behaves with a big history: does a write still cost what it costs on
an empty store, and how fast are the bulk reads the Stats and Chat pages make?

    python bench/bench_store.py [--conversations 10000] [--runs 100000] [--reps 30]

Builds a temp data folder with CONVERSATIONS conversations (4 messages each, assistant replies
carrying metrics with per-token arrival offsets) and RUNS runs across 20 models, then times
single writes against the same writes on an empty store, the bulk reads cold (fresh instance,
empty parse cache) and warm, and, for contrast, one insert into a single plain TinyDB file of
10,000 documents: the layout this store avoids. Prints figures; asserts nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, ClassVar  # noqa: E402

from tinydb import TinyDB  # noqa: E402
from tinydb.storages import JSONStorage  # noqa: E402

from atom_core.history import NewConversation, NewMessage  # noqa: E402
from atom_core.history.tinydb_store import (  # noqa: E402
    DEFAULT_SHARD_ROWS,
    TinyDBHistoryStore,
)
from atom_core.metrics import GenerationMetrics  # noqa: E402
from atom_core.runs import RunRecord

MODELS = [
    f"{family}-{size}"
    for family in ("qwen3", "gemma-3", "llama-3.2", "phi-4", "mistral")
    for size in ("1b", "4b", "8b", "14b")
]
SOURCES = ("chat", "arena", "prompt-set", "cli")
WORDS = (
    "the model answered quickly with a long and careful reply about tokens latency "
    "throughput context window quantization gguf server local inference speed"
).split()


@dataclass(frozen=True, slots=True)
class ScratchRow:
    """A row of the bench's own scratch table, written through the typed store (store.add)."""

    row: dict[str, Any]
    TABLE: ClassVar[str] = "near-full"

    def to_record(self) -> dict[str, Any]:
        return self.row

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> ScratchRow:
        return cls(dict(row))

    @classmethod
    def check_import(cls, row: Mapping[str, Any]) -> None:
        pass


def fake_run(rng: random.Random, ts: float) -> dict[str, Any]:
    model = rng.choice(MODELS)
    tokens = rng.randint(16, 1024)
    tps = rng.uniform(8, 120)
    ttft = rng.uniform(0.05, 2.5)
    ok = rng.random() > 0.02
    return {
        "ts": ts,
        "source": rng.choice(SOURCES),
        "server": "http://localhost:1234",
        "model": model,
        "ok": ok,
        "ttft_s": round(ttft, 4),
        "decode_tps": round(tps, 2),
        "e2e_s": round(ttft + tokens / tps, 4),
        "output_tokens": tokens,
        "prompt_tokens": rng.randint(8, 4096),
        "tokens_source": rng.choice(("usage", "usage", "counted")),
        "finish_reason": "stop" if ok else "error",
        "itl_p50_s": round(1 / tps, 5),
        "itl_p95_s": round(1.8 / tps, 5),
    }


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build_conversations(store: TinyDBHistoryStore, count: int, rng: random.Random) -> None:
    """Writes the conversations in bulk through the store's public import path (no fsync)."""
    builder = TinyDBHistoryStore(store.data_dir, durable=False)
    start = time.time() - count * 60
    batch: list[NewConversation] = []
    for i in range(count):
        created = start + i * 60
        model = rng.choice(MODELS)
        messages = []
        for j in range(4):
            role = "user" if j % 2 == 0 else "assistant"
            content = text(rng, 12 if role == "user" else 80)
            if role == "user" and rng.random() < 0.01:
                content += " zeppelin"  # a rare word for the content search
            offsets = tuple(round(300 + k * 20.0, 1) for k in range(120)) \
                if role == "assistant" else ()
            messages.append(NewMessage(
                role=role, content=content, model=model if role == "assistant" else "",
                metrics=GenerationMetrics.from_dict({"ttft_s": 0.3, "token_offsets_ms": offsets})
                if offsets else None,
                created=created + j * 10))
        batch.append(NewConversation(
            title=text(rng, 5).capitalize(), model=model,
            system_prompt="You are a helpful assistant.", created=created,
            updated=created + 40, messages=tuple(messages)))
        if len(batch) >= 1000:
            builder.import_conversations(batch)
            batch = []
    builder.import_conversations(batch)


def median_ms(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def once_ms(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t0) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(42)
    reps = args.reps

    with tempfile.TemporaryDirectory(prefix="atom-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        big = TinyDBHistoryStore(root / "big")
        big.data_dir.mkdir(mode=0o700)
        build_conversations(big, args.conversations, rng)
        t_conv = time.perf_counter() - t0
        base_ts = time.time() - args.runs
        big.append_many("runs", (fake_run(rng, base_ts + i) for i in range(args.runs)))
        t_runs = time.perf_counter() - t0 - t_conv
        print(
            f"Built {args.conversations:,} conversations in {t_conv:.1f} s and "
            f"{args.runs:,} runs in {t_runs:.1f} s: {big.size_bytes() / 1e6:.0f} MB in "
            f"{sum(1 for _ in big.data_dir.rglob('*.json')):,} files at {big.data_dir}\n"
        )

        empty = TinyDBHistoryStore(root / "empty")
        rows: list[tuple[str, float, float]] = []

        def compare(label: str, on: Callable[[TinyDBHistoryStore], Callable[[], object]]) -> None:
            rows.append((label, median_ms(on(empty), reps), median_ms(on(big), reps)))

        empty_conv = empty.create_conversation(title="bench")
        big_conv = big.list_conversations(limit=1)[0]  # its index shard is full
        conv_of = {empty: empty_conv.id, big: big_conv.id}

        def add_message(s: TinyDBHistoryStore) -> Callable[[], object]:
            return lambda: s.add_message(conv_of[s], role="user", content=text(rng, 20))

        def add_run(s: TinyDBHistoryStore) -> Callable[[], object]:
            return lambda: s.add_run(RunRecord.from_record(fake_run(rng, time.time())))

        def update_conversation(s: TinyDBHistoryStore) -> Callable[[], object]:
            return lambda: s.update_conversation(conv_of[s], title=text(rng, 4))

        compare("add_message", add_message)
        compare("add_run", add_run)
        compare("update_conversation", update_conversation)

        # Worst case for an append at any history size: the open shard is nearly full.
        shard_rows = DEFAULT_SHARD_ROWS  # big was built with the default
        big.append_many("near-full", (fake_run(rng, 0.0) for _ in range(shard_rows - reps - 1)))
        worst = median_ms(lambda: big.add(ScratchRow(fake_run(rng, time.time()))), reps)
        rows.append((f"append, open shard ~{shard_rows} rows (worst)", rows[1][1], worst))

        print(f"Single writes, median of {reps} (ms)")
        print(f"{'operation':<38}{'empty store':>12}{'big store':>12}{'ratio':>8}")
        for label, small_ms, big_ms in rows:
            print(f"{label:<38}{small_ms:>12.2f}{big_ms:>12.2f}{big_ms / small_ms:>7.1f}x")

        # Bulk reads: a fresh instance has an empty parse cache ("cold"; the OS cache is warm).
        fresh = TinyDBHistoryStore(big.data_dir)
        runs_cold, runs = once_ms(fresh.run_rows)
        runs_warm = median_ms(fresh.run_rows, 5)
        list_cold, listed = once_ms(fresh.list_conversations)
        list_warm = median_ms(fresh.list_conversations, 5)
        sidebar = median_ms(lambda: fresh.list_conversations(limit=50), 5)
        search_cold, found = once_ms(lambda: fresh.list_conversations(query="Zeppelin"))
        search_warm = median_ms(lambda: fresh.list_conversations(query="Zeppelin"), 5)
        assert isinstance(runs, list) and isinstance(listed, list) and isinstance(found, list)
        print(f"\n{'Bulk reads (ms)':<38}{'cold':>6}{'warm':>12}")
        for label, cold, warm in (
            (f"runs() -> {len(runs):,} rows", f"{runs_cold:.0f}", runs_warm),
            (f"list_conversations() -> {len(listed):,}", f"{list_cold:.0f}", list_warm),
            ("list_conversations(limit=50)", "", sidebar),
            (f"content search -> {len(found)} hits", f"{search_cold:.0f}", search_warm),
        ):
            print(f"{label:<38}{cold:>6}{warm:>12.0f}")

        # The baseline this layout avoids: one TinyDB file that every write rewrites.
        plain_path = root / "plain.json"
        with TinyDB(str(plain_path), storage=JSONStorage) as db:
            db.insert_multiple(fake_run(rng, float(i)) for i in range(10_000))
            plain = median_ms(lambda: db.insert(fake_run(rng, time.time())), 5)
        print(
            f"\nFor contrast: one insert into a single plain TinyDB file of 10,000 documents: "
            f"{plain:.1f} ms ({plain / rows[1][2]:.0f}x this store's add_run at "
            f"{args.runs:,} runs)."
        )


if __name__ == "__main__":
    main()
