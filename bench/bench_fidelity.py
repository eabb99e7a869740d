"""Can ATOM's numbers be trusted under load? ATOM's `bench` against a plain reference client.

Both clients measure the same server (bench/fidelity_server.c, one thread on epoll, compiled on
demand by bench/fidelity_server.py; tests/fixtures/async_server.py when there is no C compiler),
run as a separate process, that answers every request with its first token 0.2 s after
receiving it and then 50 tokens per second (`--tps`). First the server's own ceiling: a raw
socket client that only reads holds K streams open while the server reports how late it wrote
each token. Then the clients take turns at each level, K = 1, 64, 256, 1,024 requests in
flight, twice each (reference first, then ATOM first), and the table compares:

- TTFT p50 (goal: ATOM within 10 % of the reference),
- decode tok/s p50 (goal: within 2 %),
- client-side errors (goal: none),
- client CPU per token (goal: ATOM at most 1.2x the reference; both clients make one request
  before the table, so one-time imports are not counted per token),
- and the server's own lateness (how late it wrote tokens: if it is late, no client can be right).

The reference is the measuring loop of vLLM's `bench serve` (benchmarks/backend_request_func.py,
`async_request_openai_chat_completions`) written plainly on httpx.AsyncClient: TTFT from just
before the request to the first chunk with content, decode speed 1 / TPOT with
TPOT = (latency - TTFT) / (output tokens - 1), a semaphore of K and a pool of K connections.

Then a reasoning model (32 reasoning tokens, then 64 answer tokens; usage counts the answer
only) is measured by ATOM against its schedule: TTFT 0.2 s, first answer 0.2 + 32/50 = 0.84 s,
thinking 0.64 s, decode 50 tok/s over all 96 tokens (goal: each within 5 %). And llama.cpp's
`timings` (the "llama" model) are checked to land on the run.

A second table runs K = 1,024 at a per-stream rate the machine's clients can carry
(`--carried-tps`, default 5 tok/s = 5,120 SSE events a second): at 50 tok/s the server emits
51,200 events a second, more than a Python client consumes on two cores; the "events/s"
columns show what each client carried.

`--threaded-ceiling` measures, with the reference client, how far the threaded test server
(tests/fixtures/lmstudio_double.py, a thread per connection) stays on the same schedule at each
level: the reason this benchmark uses the asyncio server.

Run: python bench/bench_fidelity.py [--levels 1,64,256,1024] [--rounds 2] [--tps 50]
     [--carried-tps 5] [--carried-levels 1024] [--ceiling-levels 256,1024,2048]
     [--python-server] [--threaded-ceiling]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from atom_core.cli import main as atom_cli  # noqa: E402
from atom_core.metrics import percentile  # noqa: E402
from bench.fidelity_server import start_server  # noqa: E402

TTFT_S = 0.2
TPS = 50.0
TOKENS = 64
REASONING_TOKENS = 32


# -- the reference client -------------------------------------------------------------------------


async def reference_request(http: httpx.AsyncClient, sem: asyncio.Semaphore,
                            model: str = "plain") -> dict[str, Any]:
    """One request, measured as vLLM's bench serve measures it."""
    payload = {"model": model, "messages": [{"role": "user", "content": "hi"}],
               "stream": True, "stream_options": {"include_usage": True},
               "max_tokens": TOKENS}
    async with sem:
        out: dict[str, Any] = {"ok": False, "ttft": 0.0, "tokens": 0, "latency": 0.0}
        st = time.perf_counter()
        most_recent = st
        try:
            async with http.stream("POST", "/v1/chat/completions", json=payload) as response:
                if response.status_code != 200:
                    return out
                async for raw in response.aiter_lines():
                    chunk = raw.strip()
                    if not chunk.startswith("data:"):
                        continue  # blank lines, comments
                    chunk = chunk.removeprefix("data:").strip()
                    if chunk == "[DONE]":
                        continue
                    timestamp = time.perf_counter()
                    data = json.loads(chunk)
                    if choices := data.get("choices"):
                        delta = choices[0].get("delta") or {}
                        if delta.get("content") or delta.get("reasoning_content"):
                            if out["ttft"] == 0.0:
                                out["ttft"] = timestamp - st
                            most_recent = timestamp
                    elif usage := data.get("usage"):
                        out["tokens"] = usage.get("completion_tokens") or 0
            out["latency"] = most_recent - st
            out["ok"] = out["tokens"] > 1
        except (httpx.HTTPError, ValueError) as e:
            out["error"] = repr(e)
        return out


async def reference_run(url: str, k: int, requests: int,
                        model: str = "plain") -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=k, max_keepalive_connections=k)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(600)) as http:
        sem = asyncio.Semaphore(k)
        return list(await asyncio.gather(*(reference_request(http, sem, model)
                                           for _ in range(requests))))


def reference(url: str, k: int, requests: int, model: str = "plain") -> dict[str, Any]:
    cpu, t0 = time.process_time(), time.perf_counter()
    rows = asyncio.run(reference_run(url, k, requests, model))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - t0
    good = [r for r in rows if r["ok"]]
    tps = [(r["tokens"] - 1) / (r["latency"] - r["ttft"]) for r in good
           if r["latency"] > r["ttft"]]
    tokens = sum(r["tokens"] for r in good)
    return {"ttft_p50": percentile([r["ttft"] for r in good], 50),
            "tps_p50": percentile(tps, 50), "errors": len(rows) - len(good),
            "cpu_per_token_us": cpu / tokens * 1e6 if tokens else None, "wall": wall,
            "events_per_s": tokens / wall if wall else None}


# -- ATOM's bench ---------------------------------------------------------------------------------


def atom_bench(url: str, model: str, k: int, requests: int) -> tuple[dict[str, Any],
                                                                     list[dict[str, Any]]]:
    out, err = io.StringIO(), io.StringIO()
    cpu, t0 = time.process_time(), time.perf_counter()
    code = atom_cli(["--server", url, "bench", "--models", model, "--prompt", "hi",
                     "--requests", str(requests), "--concurrency", str(k),
                     "--max-tokens", str(TOKENS), "--json", "--no-record"], out=out, err=err)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - t0
    lines = [json.loads(x) for x in out.getvalue().splitlines() if x.startswith("{")]
    records = [x for x in lines if x["type"] == "record"]
    good = [r for r in records if r["ok"]]
    tokens = sum(r["output_tokens"] for r in good)
    summary = {"ttft_p50": percentile([r["ttft_s"] for r in good if r["ttft_s"]], 50),
               "tps_p50": percentile([r["tokens_per_s"] for r in good if r["tokens_per_s"]],
                                     50),
               "errors": len(records) - len(good) + (0 if code == 0 or records else 1),
               "cpu_per_token_us": cpu / tokens * 1e6 if tokens else None, "wall": wall,
               "events_per_s": tokens / wall if wall else None,
               "pool_wait_max": max((r["pool_wait_s"] or 0 for r in records), default=None)}
    if code != 0 and not records:
        summary["error"] = err.getvalue().strip()[:300]
    return summary, records


# -- the server -----------------------------------------------------------------------------------


def server_stats(url: str, reset: bool = False) -> dict[str, Any]:
    return httpx.get(f"{url}/{'__reset' if reset else '__stats'}", timeout=10).json()


async def raw_streams(url: str, k: int) -> dict[str, Any]:
    """K streams held open by a client that only reads (raw sockets, no parsing): the server's
    own ceiling, with as little client as possible on the same cores."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "plain", "stream": True, "max_tokens": TOKENS,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\ncontent-type: "
               b"application/json\r\ncontent-length: %d\r\n\r\n%s"
               % (host.encode(), len(body), body))
    loop = asyncio.get_running_loop()
    received = [0]

    class Reader(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.done, self.tail = done, b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(request)  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            received[0] += len(data)
            self.tail = (self.tail + data)[-5:]
            if self.tail == b"0\r\n\r\n" and not self.done.done():  # the last chunk
                self.done.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_exception(exc or ConnectionError("closed early"))

    async def one() -> None:
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Reader(done), host, int(port))
        try:
            await done
        finally:
            transport.close()

    cpu, t0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(k)), return_exceptions=True)
    return {"errors": sum(1 for r in results if isinstance(r, BaseException)),
            "wall": time.perf_counter() - t0, "client_cpu": time.process_time() - cpu,
            "bytes": received[0]}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def server_ceiling(url: str, kind: str, pid: int, levels: list[int], tps: float) -> None:
    """Prints how late the server itself writes tokens with K streams open, and its CPU."""
    print(f"\nThe {kind} server's own ceiling ({TTFT_S} s to the first token, then {tps:g} "
          f"tok/s, {TOKENS} tokens; a raw socket client that only reads):\n")
    print("| K | SSE events/s | server late p50 (ms) | p99 (ms) | max (ms) | tokens | "
          "client errors | wall (s) | raw client CPU (s) | server CPU (s) | server µs/token |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in levels:
        server_stats(url, reset=True)
        cpu = process_cpu_s(pid)
        r = asyncio.run(raw_streams(url, k))
        cpu = process_cpu_s(pid) - cpu
        st = server_stats(url)
        per_token = cpu / st["tokens"] * 1e6 if st.get("tokens") else None
        print(f"| {k:,} | {k * tps:,.0f} | {_f(st.get('late_p50_ms'), '.2f')} | "
              f"{_f(st.get('late_p99_ms'), '.2f')} | {_f(st.get('late_max_ms'), '.2f')} | "
              f"{st.get('tokens')} | {r['errors']} | {r['wall']:.2f} | {r['client_cpu']:.2f} | "
              f"{cpu:.2f} | {_f(per_token, '.1f')} |", flush=True)


# -- the table ------------------------------------------------------------------------------------


def threaded_ceiling(levels: list[int]) -> None:
    """The reference client against the threaded test server on the same schedule."""
    import tempfile

    config = {"models": [{"key": "plain", "loaded": True, "ttft_ms": TTFT_S * 1000,
                          "token_gap_ms": 1000 / TPS, "reply_tokens": TOKENS}]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    proc = subprocess.Popen([sys.executable, "tests/fixtures/lmstudio_double.py", "--port", "0",
                             "--config", f.name], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().split()[1]
    print("| K | TTFT p50 (s) | ÷ set | tok/s p50 | ÷ set | errors | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    try:
        for k in levels:
            r = reference(url, k, max(k, 8))
            print(f"| {k} | {_f(r['ttft_p50'], '.3f')} | {_f(_over(r['ttft_p50'], TTFT_S), '.2f')}"
                  f" | {_f(r['tps_p50'], '.2f')} | {_f(_over(r['tps_p50'], TPS), '.3f')} | "
                  f"{r['errors']} | {r['wall']:.1f} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


def _over(v: float | None, base: float) -> float | None:
    return None if v is None else v / base


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def compare(url: str, levels: list[int], rounds: int, tps: float) -> list[dict[str, Any]]:
    """Both clients, taking turns, at each level; one row per level."""
    rows = []
    for k in levels:
        requests = max(k, 8)
        ref_runs: list[dict[str, Any]] = []
        atom_runs: list[dict[str, Any]] = []
        lateness = []
        for rnd in range(rounds):
            order = ("ref", "atom") if rnd % 2 == 0 else ("atom", "ref")
            for who in order:
                server_stats(url, reset=True)
                if who == "ref":
                    ref_runs.append(reference(url, k, requests))
                else:
                    atom_runs.append(atom_bench(url, "plain", k, requests)[0])
                lateness.append(server_stats(url))
                print(f"{tps:g} tok/s K={k} round {rnd + 1} {who}: "
                      f"{(ref_runs if who == 'ref' else atom_runs)[-1]} server "
                      f"{lateness[-1]}", file=sys.stderr, flush=True)

        def med(runs: list[dict[str, Any]], key: str) -> float | None:
            vals = [r[key] for r in runs if r.get(key) is not None]
            return statistics.median(vals) if vals else None

        r_ttft, a_ttft = med(ref_runs, "ttft_p50"), med(atom_runs, "ttft_p50")
        r_tps, a_tps = med(ref_runs, "tps_p50"), med(atom_runs, "tps_p50")
        r_cpu, a_cpu = med(ref_runs, "cpu_per_token_us"), med(atom_runs, "cpu_per_token_us")
        rows.append({
            "K": k, "requests": requests, "tps": tps,
            "ref_ttft": r_ttft, "atom_ttft": a_ttft,
            "ttft_ratio": a_ttft / r_ttft if a_ttft and r_ttft else None,
            "ref_tps": r_tps, "atom_tps": a_tps,
            "tps_ratio": a_tps / r_tps if a_tps and r_tps else None,
            "ref_err": sum(r["errors"] for r in ref_runs),
            "atom_err": sum(r["errors"] for r in atom_runs),
            "ref_cpu": r_cpu, "atom_cpu": a_cpu,
            "cpu_ratio": a_cpu / r_cpu if a_cpu and r_cpu else None,
            # events a second each client consumed, over its whole run (ramp-up included)
            "ref_eps": med(ref_runs, "events_per_s"), "atom_eps": med(atom_runs, "events_per_s"),
            "pool_wait_max": max((r.get("pool_wait_max") or 0 for r in atom_runs),
                                 default=None),
            "server_late_p99_ms": max((s.get("late_p99_ms") or 0 for s in lateness),
                                      default=None),
            "ref_wall": med(ref_runs, "wall"), "atom_wall": med(atom_runs, "wall"),
        })
    return rows


def print_table(rows: list[dict[str, Any]], tps: float) -> None:
    print(f"\nAt {tps:g} tok/s per stream (first token {TTFT_S} s, {TOKENS} tokens):\n")
    head = ("| K | SSE events/s offered | TTFT p50 ref | TTFT p50 ATOM | ratio | tok/s p50 ref "
            "| tok/s p50 ATOM | ratio | errors ref/ATOM | CPU µs/token ref | ATOM | ratio "
            "| events/s carried ref/ATOM | ATOM pool wait max (s) | server late p99 (ms) "
            "| wall ref/ATOM (s) | ATOM TTFT ÷ set | ATOM tok/s ÷ set | ref TTFT ÷ set "
            "| ref tok/s ÷ set |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(f"| {r['K']:,} | {r['K'] * tps:,.0f} | {_f(r['ref_ttft'], '.3f')} | "
              f"{_f(r['atom_ttft'], '.3f')} | "
              f"{_f(r['ttft_ratio'], '.3f')} | {_f(r['ref_tps'], '.2f')} | "
              f"{_f(r['atom_tps'], '.2f')} | {_f(r['tps_ratio'], '.4f')} | "
              f"{r['ref_err']}/{r['atom_err']} | {_f(r['ref_cpu'], '.0f')} | "
              f"{_f(r['atom_cpu'], '.0f')} | {_f(r['cpu_ratio'], '.2f')} | "
              f"{_f(r['ref_eps'], ',.0f')}/{_f(r['atom_eps'], ',.0f')} | "
              f"{_f(r['pool_wait_max'], '.4f')} | {_f(r['server_late_p99_ms'], '.1f')} | "
              f"{_f(r['ref_wall'], '.1f')}/{_f(r['atom_wall'], '.1f')} | "
              f"{_f(_over(r['atom_ttft'], TTFT_S), '.3f')} | "
              f"{_f(_over(r['atom_tps'], tps), '.3f')} | "
              f"{_f(_over(r['ref_ttft'], TTFT_S), '.3f')} | "
              f"{_f(_over(r['ref_tps'], tps), '.3f')} |", flush=True)


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,64,256,1024")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tps", type=float, default=TPS, help="tokens a second per stream")
    ap.add_argument("--carried-tps", type=float, default=5.0,
                    help="the second table's rate per stream (0: no second table)")
    ap.add_argument("--carried-levels", default="1024")
    ap.add_argument("--ceiling-levels", default="256,1024,2048",
                    help="levels of the server's own ceiling ('' to skip)")
    ap.add_argument("--python-server", action="store_true",
                    help="use tests/fixtures/async_server.py even when a C compiler exists")
    ap.add_argument("--threaded-ceiling", action="store_true",
                    help="measure the threaded test server's ceiling instead")
    args = ap.parse_args()
    levels = _levels(args.levels)
    if args.threaded_ceiling:
        threaded_ceiling(levels)
        return 0
    with start_server(ttft_s=TTFT_S, tokens_per_s=args.tps, reply_tokens=TOKENS,
                      reasoning_tokens=REASONING_TOKENS, python=args.python_server) as srv:
        url = srv.url
        name = ("bench/fidelity_server.c" if srv.kind == "c"
                else "tests/fixtures/async_server.py")
        print(f"Test server: {name} at {url}", flush=True)
        if args.ceiling_levels:
            server_ceiling(url, srv.kind, srv.proc.pid, _levels(args.ceiling_levels),
                           args.tps)
        # one request each first: imports and caches a client loads on its first request
        # (about 0.1 s of CPU for ATOM's) are not per-token costs
        reference(url, 1, 1)
        atom_bench(url, "plain", 1, 1)
        rows = compare(url, levels, args.rounds, args.tps)
        print_table(rows, args.tps)
        reasoning_records: list[dict[str, Any]] = []
        llama_records: list[dict[str, Any]] = []
        if args.tps == TPS:
            reasoning, _ = atom_bench(url, "reasoner", 4, 8)
            _, reasoning_records = atom_bench(url, "reasoner", 4, 8)
            _, llama_records = atom_bench(url, "llama", 1, 3)
    if args.carried_tps:
        with start_server(ttft_s=TTFT_S, tokens_per_s=args.carried_tps, reply_tokens=TOKENS,
                          reasoning_tokens=REASONING_TOKENS, python=args.python_server) as srv:
            if not rows:
                reference(srv.url, 1, 1)
                atom_bench(srv.url, "plain", 1, 1)
            if args.ceiling_levels:
                server_ceiling(srv.url, srv.kind, srv.proc.pid, _levels(args.carried_levels),
                               args.carried_tps)
            carried = compare(srv.url, _levels(args.carried_levels), args.rounds,
                              args.carried_tps)
            print_table(carried, args.carried_tps)
    if not reasoning_records:
        return 0

    def p50(key: str, recs: list[dict[str, Any]]) -> float | None:
        return percentile([r[key] for r in recs if r.get(key) is not None], 50)

    rec = reasoning_records
    answer_at = TTFT_S + REASONING_TOKENS / TPS
    checks = [("TTFT (s)", p50("ttft_s", rec), TTFT_S),
              ("First answer (s)", p50("first_answer_s", rec), answer_at),
              ("Thinking (s)", p50("thinking_s", rec), REASONING_TOKENS / TPS),
              ("Decode tok/s", p50("tokens_per_s", rec), TPS),
              ("Output tokens", p50("output_tokens", rec), REASONING_TOKENS + TOKENS)]
    print("\n| Reasoning model (K=4, 8 requests) | ATOM p50 | schedule | ratio |")
    print("|---|---|---|---|")
    for name, got, want in checks:
        ratio = got / want if got is not None else None
        print(f"| {name} | {_f(got, '.3f')} | {want:.3f} | {_f(ratio, '.3f')} |")
    print(f"\nreasoning summary (first run): {reasoning}", file=sys.stderr)
    lr = llama_records[0] if llama_records else {}
    print(f"\nllama.cpp timings on the run: server_tps {lr.get('server_tps')}, "
          f"server_prompt_s {lr.get('server_prompt_s')}, ATOM decode {lr.get('tokens_per_s')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
